"""Pydantic's validation errors, rendered as findings a user can act on: the field's path, what
is allowed there, and the value received (bounded, see :func:`training_cluster.errors.show`)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ValidationError

from .errors import Finding, field_path, show
from .patterns import PATTERN_HINTS


def findings(model: type[BaseModel], exc: ValidationError) -> list[Finding]:
    """Every error in ``exc`` (raised validating ``model``), one finding each."""
    return [_finding(model, err) for err in exc.errors()]


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed at ``loc`` (the parent of an unknown key)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        annotation = current.model_fields[part].annotation
        args = getattr(annotation, "__args__", ())
        candidates = [annotation, *args, *(a for arg in args for a in getattr(arg, "__args__", ()))]
        current = next(c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel))
    return list(current.model_fields)


def _as_yaml(value: Any) -> str:
    """A key YAML read as a value, as YAML writes it."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return show(value)


def _finding(model: type[BaseModel], err: Any) -> Finding:
    loc = tuple(err["loc"])
    key = ""
    if loc and loc[-1] == "[key]":  # a bad key of a mapping: name the mapping and the key
        key, loc = f"key {loc[-2]!r} ", loc[:-2]
    path = field_path(loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        allowed = ", ".join(_allowed_keys(model, loc[:-1]))
        return Finding(path=path, message=f"unknown key; allowed keys here: {allowed}")
    if kind == "missing":
        return Finding(path=path, message="required, but missing")
    if kind == "invalid_key":  # null: 1, 5: x: a key YAML reads as a value; its loc is the key, made text
        parent = loc[:-1]
        return Finding(
            path=field_path(parent),
            message=f"key {_as_yaml(err['input'])} is not a name: YAML reads an unquoted null, ~, true, false, yes, "
            "no, on, off or number as a value (quote it if you mean it as a name); allowed keys here: "
            + ", ".join(_allowed_keys(model, parent)),
        )
    message = re.sub(r"^(Value error|Assertion failed), ", "", err["msg"])
    message = message[0].lower() + message[1:]
    if kind == "string_pattern_mismatch":
        message = PATTERN_HINTS.get(err["ctx"]["pattern"], message)
    return Finding(path=path, message=f"{key}{message} (got {show(err['input'])})")
