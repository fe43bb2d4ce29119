"""The rules each construct checks its props against, as plain functions with no CDK import.

A construct calls its rules in its constructor (or from ``node.add_validation`` for values known
later) and raises one :class:`PropsError` listing every problem; the config layer
(:mod:`training_cluster.validation`) calls the same functions and moves each finding from the
construct's prop name to the config's field path (:func:`relocate`). So a direct user and a
config user read the same message, and a CLI can run the rules without aws-cdk-lib.

Each finding's ``path`` is the prop it is about, as the construct names it: ``count``,
``capacity.reservation_id``, ``options.partitions.train``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from ..errors import Finding, show
from ..patterns import PATTERN_HINTS


class PropsError(ValueError):
    """A construct's props that cannot deploy. ``findings`` lists every problem, by prop name."""

    def __init__(self, construct: str, findings: Sequence[Finding]) -> None:
        self.construct = construct
        self.findings = tuple(findings)
        count = len(self.findings)
        header = f"{count} problem{'s' if count != 1 else ''} with the props of {construct}:"
        super().__init__("\n".join([header, *(f"  - {f}" for f in self.findings)]))


def raise_errors(construct: str, findings: Iterable[Finding]) -> list[Finding]:
    """Raise one :class:`PropsError` for the errors among ``findings``; return the warnings."""
    findings = list(findings)
    errors = [f for f in findings if f.level == "error"]
    if errors:
        raise PropsError(construct, errors)
    return [f for f in findings if f.level == "warning"]


def got(prop: str, problem: str | None, value: object) -> list[Finding]:
    """A one-value rule's ``problem`` as a finding that shows ``value``, as the config shows a
    field's error: ``<problem> (got <value>)``."""
    return [] if problem is None else [Finding(path=prop, message=f"{problem} (got {show(value)})")]


def pattern_problem(pattern: str, value: str) -> str | None:
    """What a value of the shape ``pattern`` (one of :mod:`training_cluster.patterns`) must be,
    in the words the config uses for the same field, or ``None`` when it matches. The whole value
    must match: ``$`` alone would take a trailing newline."""
    return None if re.fullmatch(pattern, value) else PATTERN_HINTS[pattern]


def relocate(findings: Iterable[Finding], paths: Mapping[str, str]) -> list[Finding]:
    """Move findings from a construct's prop names to a config's field paths: a finding about
    ``prop`` (or under it: ``prop.x``, ``prop[0]``) goes to ``paths[prop]`` (and under it)."""
    out = []
    for finding in findings:
        for prop in sorted(paths, key=len, reverse=True):
            rest = finding.path[len(prop) :]
            if finding.path.startswith(prop) and (not rest or rest[0] in ".["):
                finding = Finding(path=paths[prop] + rest, message=finding.message, level=finding.level)
                break
        out.append(finding)
    return out
