"""Config problems, collected and reported together in words a user can act on."""

from __future__ import annotations

import re
import reprlib
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
        elif not _PLAIN_KEY.match(str(part)):  # a key a user may not see when written bare: '', 'a b', 'x\n'
            out += f"[{show(part)}]"
        else:
            out += f".{part}" if out else str(part)
    return out


_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}$")


SHOW_LIMIT = 80
"""The longest a received value is shown in a message, in characters."""

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxtuple, _REPR.maxset = 2, 4, 4, 4, 4
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = SHOW_LIMIT


def show(value: Any) -> str:
    """A received value as the message shows it: short, and YAML-like.

    Bounded in time as well as length: a huge or deeply nested value (an alias bomb, a number
    of thousands of digits) is never turned into a string whole."""
    if isinstance(value, bool) or value is None:
        text = str(value)
    elif isinstance(value, int):
        digits = value.bit_length() * 0.30103
        text = str(value) if digits < SHOW_LIMIT else f"a number of about {digits:.0f} digits"
    elif isinstance(value, str):
        text = repr(value[: SHOW_LIMIT + 1])
    elif isinstance(value, (list, tuple, dict, set, frozenset)):
        text = _REPR.repr(value)
    else:
        text = str(value)
    return text if len(text) <= SHOW_LIMIT else text[: SHOW_LIMIT - 3] + "..."
