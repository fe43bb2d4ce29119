"""Reading a config file's YAML as a hostile file: bounded, and strict about what YAML lets slide.

PyYAML's ``safe_load`` takes the last of two equal keys without a word, follows anchors and
aliases without a bound (a few hundred bytes can stand for 10^8 values), recurses once per level
of nesting, and reads YAML 1.1's other ways of writing an integer (``010`` is 8, ``0x4F`` 79,
``1_3`` 13, ``1:30`` 90). ``load`` reports each of these as a problem instead. Merge keys
(``<<: *anchor``) work as YAML specifies: the mapping's own keys win over the merged ones.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import deque
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from .errors import field_path, show

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
    """A SafeLoader that bounds nesting and alias expansion, reads integers too long for Python as
    numbers as long, and merges keys in the order YAML specifies."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
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

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        """Merge keys (``<<: *a`` or ``<<: [*a, *b]``) as YAML specifies: the mapping's own keys
        win over merged ones, and a mapping listed earlier over one listed later. (PyYAML lets
        the later one win.) The pairs are ordered so that the winner comes last."""
        merged: list[tuple[yaml.Node, yaml.Node]] = []
        own: list[tuple[yaml.Node, yaml.Node]] = []
        for key, value in node.value:
            if key.tag != MERGE_TAG:
                own.append((key, value))
                continue
            sources = value.value if isinstance(value, yaml.SequenceNode) else [value]
            for source in reversed(sources):
                if not isinstance(source, yaml.MappingNode):
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"expected a mapping or a list of mappings to merge, but found {source.id}",
                        source.start_mark,
                    )
                self.flatten_mapping(source)
                merged.extend(source.value)
        if merged:
            node.value = merged + own
        super().flatten_mapping(node)  # what else SafeLoader does there (the '=' key)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        try:
            return int(super().construct_yaml_int(node))
        except ValueError:
            # More digits than Python turns into a number (sys.get_int_max_str_digits): a number
            # as long, so that the field's own rule refuses it with its range and the field's path.
            digits = sum(c.isdigit() for c in node.value)
            largest: int = 10**digits - 1  # the largest number of that many digits
            return -largest if node.value.lstrip().startswith("-") else largest


INT_TAG = "tag:yaml.org,2002:int"
MERGE_TAG = "tag:yaml.org,2002:merge"
_Loader.add_constructor(INT_TAG, _Loader.construct_yaml_int)


def _other_integer_form(text: str) -> str | None:
    """What kind of YAML 1.1 integer ``text`` (a scalar resolved as one) is, when it is not written
    in plain decimal digits: octal (a leading 0), hexadecimal, binary, base 60, digits with ``_``."""
    digits = text.lstrip("+-")
    if digits.startswith("0x"):
        return "hexadecimal"
    if digits.startswith("0b"):
        return "binary"
    if ":" in digits:
        return "base 60"
    if digits.startswith("0") and digits != "0":
        return "octal"
    if "_" in digits:
        return "with _ between its digits"
    return None


def _problems(root: yaml.Node, loader: _Loader) -> Iterator[str]:
    """What the composed document says that ``safe_load`` would read without a word: a key written
    twice in one mapping (merged keys aside), an integer in a YAML 1.1 form other than plain
    decimal digits (with the field path it is at). Breadth first (outer mappings first), without
    recursion, each node once."""
    seen: set[int] = set()
    queue: deque[tuple[yaml.Node, tuple[Any, ...], bool]] = deque([(root, (), False)])
    while queue:
        node, loc, is_key = queue.popleft()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.ScalarNode):
            kind = _other_integer_form(node.value) if node.tag == INT_TAG else None
            if kind is not None:
                line = node.start_mark.line + 1
                where = f"{field_path(loc)}: " if loc else ""
                yield (
                    f"{where}{'key ' if is_key else ''}{node.value[:40]} (line {line}) is a YAML 1.1 {kind} number, "
                    f"which YAML reads as {show(loader.construct_yaml_int(node))}; write the number in plain "
                    "decimal digits, or quote it if you mean text"
                )
        elif isinstance(node, yaml.SequenceNode):
            queue.extend((child, (*loc, i), False) for i, child in enumerate(node.value))
        elif isinstance(node, yaml.MappingNode):
            yield from _duplicate_keys(node, loader)
            for key, value in node.value:
                queue.append((key, loc, True))
                queue.append((value, (*loc, key.value if isinstance(key, yaml.ScalarNode) else "?"), False))


def _duplicate_keys(node: yaml.MappingNode, loader: _Loader) -> Iterator[str]:
    """Keys written twice in the mapping, as the values they are (``yes`` and ``true`` are one)."""
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == MERGE_TAG:
            continue  # a mapping or list as a key: SafeLoader refuses it; merged keys may repeat
        line = key_node.start_mark.line + 1
        try:
            key = loader.construct_object(key_node)
        except (yaml.YAMLError, ValueError):  # reported when the document is constructed
            continue
        if key in seen:
            yield f"key {show(key)} appears twice in one mapping, on lines {seen[key]} and {line}; keep one"
        else:
            seen[key] = line


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
        root = loader.get_single_node()
        problems = list(_problems(root, loader)) if root is not None else []
        document = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        raise LoadProblem(f"not valid YAML: {_bounded(str(exc))}") from None
    except ValueError as exc:  # a value Python cannot make (a date that does not exist, say)
        raise LoadProblem(f"not a readable value: {_bounded(str(exc))}") from None
    finally:
        loader.dispose()
    if problems:
        raise LoadProblem(*dict.fromkeys(problems))
    return document


def _bounded(text: str, limit: int = 400) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
