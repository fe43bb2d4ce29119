"""Construct ids from the names a user gives (clusters' groups, components)."""

from __future__ import annotations


def pascal(name: str) -> str:
    """``gpu-large`` -> ``GpuLarge``: construct ids from names, stable across reorderings."""
    return "".join(part.capitalize() for part in name.split("-"))
