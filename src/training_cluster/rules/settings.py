"""Values the nodes read as settings, and the names that become tags, resource names and settings."""

from __future__ import annotations

from ..patterns import NAME_PATTERN, PATTERN_HINTS
from . import pattern_problem

MAX_CLUSTER_NAME_LENGTH = 32
MAX_GROUP_NAME_LENGTH = 24
NOT_A_SETTING = "must not contain quotes, newlines or NUL characters"


def setting_problem(value: str) -> str | None:
    """Why ``value`` cannot be a setting (each is written as ``KEY='value'`` into a shell file
    that every node script sources), or ``None``."""
    if "'" in value or "\n" in value or "\r" in value or "\0" in value:
        return NOT_A_SETTING
    return None


def setting_value_problem(value: str) -> str | None:
    """:func:`setting_problem` in the words a prop's or a field's finding uses."""
    problem = setting_problem(value)
    return None if problem is None else f"{problem}: the nodes read it from a settings file"


def name_problem(value: str, max_length: int) -> str | None:
    """Why ``value`` cannot name a cluster or an instance group, or ``None``: names become
    resource names, tags and node settings."""
    if not value:
        return PATTERN_HINTS[NAME_PATTERN]
    if len(value) > max_length:
        return f"must be at most {max_length} characters"
    return pattern_problem(NAME_PATTERN, value)
