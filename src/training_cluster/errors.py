"""Config problems, collected and reported together in words a user can act on."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Level = Literal["error", "warning"]


@dataclass(frozen=True, kw_only=True)
class Finding:
    """One problem with a config: where it is, what is wrong, and what is allowed."""

    path: str
    message: str
    level: Level = "error"

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(ValueError):
    """A cluster config that cannot be deployed. ``findings`` lists every problem found."""

    def __init__(self, findings: Sequence[Finding], source: str | None = None) -> None:
        self.findings = tuple(findings)
        self.source = source
        where = f" in {source}" if source else ""
        count = len(self.findings)
        header = f"{count} problem{'s' if count != 1 else ''}{where}:"
        super().__init__("\n".join([header, *(f"  - {f}" for f in self.findings)]))


def field_path(loc: Iterable[Any]) -> str:
    """``("instance_groups", 0, "count")`` -> ``instance_groups[0].count``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def show(value: Any) -> str:
    """A received value as the message shows it: short, and YAML-like."""
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 80 else text[:77] + "..."
