"""What the commands share: their error, and tables (bold headers on a terminal, plain when piped).

Every cell and every line of a story is :func:`printable`: text from the ledger, the scheduler or
S3 may come from a node (a Slurm drain reason, an evidence object's name), and a terminal must
not take it for control sequences."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..contract import printable as contract_printable

CELL_LIMIT = 80
"""Characters of one table cell (the rest is ``...``: ASCII, for any terminal's encoding)."""


class CommandError(Exception):
    """A command that cannot go on, in words for the operator (exit ``code``: 1, 2 for a config
    with errors)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def printable(value: Any, limit: int | None = CELL_LIMIT) -> str:
    """``value`` as text a terminal shows as it is: what is not printable (escape sequences,
    carriage returns, C1 codes, bidirectional overrides, zero-width characters) as ``?``, cut at
    ``limit`` characters with ``...``."""
    text = contract_printable(value)
    return text if limit is None or len(text) <= limit else text[: limit - 3] + "..."


def styler(styled: bool) -> Callable[[str], str]:
    def bold(text: str) -> str:
        return f"\033[1m{text}\033[0m" if styled else text

    return bold


RED, YELLOW, GREEN = "31", "33", "32"
WORD_COLOURS = {
    **dict.fromkeys(("unhealthy", "impaired", "open", "failed", "failure", "refused"), RED),
    **dict.fromkeys(
        ("unknown", "no", "unreadable", "initializing", "insufficient-data", "pending", "deferred"), YELLOW
    ),
    **dict.fromkeys(("healthy", "ok", "closed", "running", "inservice"), GREEN),
}
"""A cell's colour on a terminal, by its first word (a health, a state, a breaker)."""
COUNT_COLOURS = {"UNHEALTHY": RED, "UNKNOWN": YELLOW, "REPAIRING": YELLOW}
"""Columns of counts coloured when not 0."""


def table(header: list[str], rows: list[list[str]], bold: Callable[[str], str]) -> list[str]:
    """Rows under a bold header, columns aligned; on a terminal (``bold`` styles), health, state
    and breaker words coloured, and counts of unhealthy, unknown and repairing nodes when not 0."""
    rows = [[printable(cell) for cell in row] for row in rows]
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    styled = bold("x") != "x"

    def paint(cell: str, padded: str, column: str) -> str:
        colour = COUNT_COLOURS.get(column) if cell.isdigit() and cell != "0" else None
        colour = colour or WORD_COLOURS.get(cell.split(" ", 1)[0].lower()) if cell else None
        return f"\033[{colour}m{padded}\033[0m" if styled and colour else padded

    def line(cells: list[str], colour: bool = True) -> str:
        padded = [
            paint(cell, cell.ljust(width), column) if colour else cell.ljust(width)
            for cell, width, column in zip(cells, widths, header, strict=True)
        ]
        return "  ".join(padded).rstrip()

    return [bold(line(header, colour=False)), *(line(row) for row in rows)]
