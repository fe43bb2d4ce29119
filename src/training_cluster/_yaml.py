"""Reading a config file's YAML as a hostile file: bounded, and strict about what YAML lets slide.

PyYAML's ``safe_load`` takes the last of two equal keys without a word, follows anchors and
aliases without a bound (a few hundred bytes can stand for 10^8 values), and recurses once per
level of nesting. ``load`` reports each of these as a problem instead.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .errors import show

MAX_DEPTH = 50
"""Levels of nesting a config may have; the deepest real config has fewer than 10."""
MAX_VALUES = 100_000
"""Values (scalars, lists and mappings) a config may stand for once its aliases are followed;
a real config has a few hundred."""


class LoadProblem(Exception):
    """A config that cannot be read safely: ``problems`` says why, in words for the user."""

    def __init__(self, *problems: str) -> None:
        super().__init__(*problems)
        self.problems = problems


class _Loader(yaml.SafeLoader):
    """A SafeLoader that bounds nesting and alias expansion and records duplicate keys."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[str] = []
        self._depth = 0
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):  # a value read already (or being read): sized where it is
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise LoadProblem(f"values are nested more than {MAX_DEPTH} levels deep (line {mark.line + 1})")
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if node is None:
            return None
        size = 1
        if isinstance(node, yaml.SequenceNode | yaml.MappingNode):
            children = node.value if isinstance(node, yaml.SequenceNode) else [n for pair in node.value for n in pair]
            for child in children:
                if id(child) not in self._sizes:  # an alias of a value still being read: it contains itself
                    raise LoadProblem(
                        f"an alias on line {node.start_mark.line + 1} refers to a value that contains it; "
                        "recursive anchors are not allowed"
                    )
                size += self._sizes[id(child)]
        if size > MAX_VALUES:
            raise LoadProblem(
                f"the value on line {node.start_mark.line + 1} stands for more than {MAX_VALUES:,} values once its "
                "aliases are followed; write the config out, or use fewer aliases"
            )
        self._sizes[id(node)] = size
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            line = key_node.start_mark.line + 1
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: SafeLoader reports it
                continue
            if first is None:
                seen[key] = line
            else:
                self.duplicates.append(
                    f"key {show(key)} appears twice in one mapping, on lines {first} and {line}; keep one"
                )
        return super().construct_mapping(node, deep=deep)


MAX_CONFIG_BYTES = 1024 * 1024
"""A config file is a few kilobytes; a megabyte is plenty."""


def read_regular_file(path: Path, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes. ``OSError`` says why not: a folder,
    a device or FIFO (reading could block or never end), a file under /proc or /sys whose reads
    fail or change, or a file too large."""
    try:
        info = os.stat(path)
    except ValueError:  # an embedded NUL byte
        raise OSError(errno.EINVAL, "the path has a NUL character") from None
    if not stat.S_ISREG(info.st_mode):
        raise OSError(errno.EINVAL, "not a regular file")
    if info.st_size > limit:
        raise OSError(errno.EFBIG, f"larger than {limit:,} bytes ({info.st_size:,})")
    with open(path, "rb") as file:
        data = file.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit:,} bytes")
    return data


def shape_problem(data: Any) -> str | None:
    """A config from code or YAML that no real config has the shape of: nested deeper than
    :data:`MAX_DEPTH` levels, or standing for more than :data:`MAX_VALUES` values (shared
    lists count once per place they appear). Checked without recursion, and stops early."""
    count = 0
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        count += 1
        if depth > MAX_DEPTH:
            return f"values are nested more than {MAX_DEPTH} levels deep"
        if count > MAX_VALUES:
            return f"the config stands for more than {MAX_VALUES:,} values"
        if isinstance(value, Mapping):
            stack.extend((v, depth + 1) for pair in value.items() for v in pair)
        elif isinstance(value, list | tuple | set | frozenset):
            stack.extend((v, depth + 1) for v in value)
    return None


def load(data: bytes) -> Any:
    """The YAML document in ``data``; raises :class:`LoadProblem` (one or more problems, one per line)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LoadProblem(
            f"not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start} cannot be decoded; "
            "save the file as UTF-8"
        ) from None
    try:
        loader = _Loader(text)
    except yaml.YAMLError as exc:  # a character YAML does not allow
        raise LoadProblem(f"not valid YAML: {_bounded(str(exc))}") from None
    try:
        document = loader.get_single_data()
    except yaml.YAMLError as exc:
        raise LoadProblem(f"not valid YAML: {_bounded(str(exc))}") from None
    except ValueError as exc:  # a number too long for Python to read (more than 4,300 digits)
        raise LoadProblem(f"not a readable value: {_bounded(str(exc))}") from None
    finally:
        loader.dispose()
    if loader.duplicates:
        raise LoadProblem(*dict.fromkeys(loader.duplicates))
    return document


def _bounded(text: str, limit: int = 400) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
