"""What the commands share: their error, and tables (bold headers on a terminal, plain when piped)."""

from __future__ import annotations

from collections.abc import Callable


class CommandError(Exception):
    """A command that cannot go on, in words for the operator (exit 1)."""


def styler(styled: bool) -> Callable[[str], str]:
    def bold(text: str) -> str:
        return f"\033[1m{text}\033[0m" if styled else text

    return bold


def table(header: list[str], rows: list[list[str]], bold: Callable[[str], str]) -> list[str]:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()

    return [bold(line(header)), *(line(row) for row in rows)]
