"""Auto-repair over fleets: one cluster, each group once, and options the control plane can act on.

Keys are :class:`training_cluster.constructs.AutoRepair`'s props (``fleets``, ``fleets[i]``,
``options.<field>``, ``options.policy.<section>.<key>``); the config moves them to ``auto_repair``'s
fields and ``instance_groups``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..errors import Finding
from ..repair_policy import policy_problems
from . import got
from .lustre import mount_path_problem

MAX_PARALLEL_REPLACEMENTS = 25
"""Replacements in flight at once in one group: more is a cluster rebuilding itself, not a repair."""
CHECK_INTERVAL_SECONDS = (10, 3600)
"""How often the agent may check a node: no more often than its checks take, at least hourly."""


@dataclass(frozen=True, kw_only=True)
class RepairFleet:
    """What the auto-repair rules read of a fleet."""

    cluster_name: str
    group_name: str


def _between(prop: str, value: int, low: int, high: int, unit: str = "") -> list[Finding]:
    problem = None if low <= value <= high else f"must be between {low} and {high}{unit}"
    return got(prop, problem, value)


DEFAULT_MAX_UNHEALTHY_PER_GROUP = 16
"""Nodes of one group unhealthy at once before the breaker opens, whatever the group's size: at
1,024 nodes and 3.8 failures per 1,000 node-days a node fails every six hours or so; sixteen at
once is a fault of the fleet (a driver, a network event), not of nodes, and repairing them one by
one would not fix it."""
DEFAULT_MAX_UNHEALTHY_IN_CLUSTER = 32
"""The same across the cluster: a spine or a bad image touches several groups at once."""
MAX_UNHEALTHY = 1000


def auto_repair_findings(
    *,
    fleets: Sequence[RepairFleet],
    max_parallel_replacements: int = 1,
    unhealthy_threshold_percent: int = 20,
    max_unhealthy_per_group: int = DEFAULT_MAX_UNHEALTHY_PER_GROUP,
    max_unhealthy_in_cluster: int = DEFAULT_MAX_UNHEALTHY_IN_CLUSTER,
    check_interval_seconds: int = 30,
    policy: Mapping[str, Mapping[str, str]] | None = None,
    lustre_mount_path: str | None = None,
) -> list[Finding]:
    """Every problem with the fleets and options given to auto-repair."""
    out: list[Finding] = []
    if lustre_mount_path is not None:
        problem = mount_path_problem(lustre_mount_path)
        if problem is not None:
            out.append(Finding(path="lustre_mount_path", message=problem))
    if not fleets:
        out.append(Finding(path="fleets", message="auto-repair needs at least one fleet to watch"))
    clusters = sorted({fleet.cluster_name for fleet in fleets})
    if len(clusters) > 1:
        out.append(
            Finding(
                path="fleets",
                message="the fleets belong to different clusters; one AutoRepair watches one cluster "
                f"(got {', '.join(repr(c) for c in clusters)})",
            )
        )
    for name, n in Counter(fleet.group_name for fleet in fleets).items():
        if n > 1:
            out.append(
                Finding(path="fleets", message=f"group name {name!r} is given {n} times; each group is watched once")
            )
    out += _between("options.max_parallel_replacements", max_parallel_replacements, 1, MAX_PARALLEL_REPLACEMENTS)
    out += _between("options.unhealthy_threshold_percent", unhealthy_threshold_percent, 1, 100, " percent")
    out += _between("options.max_unhealthy_per_group", max_unhealthy_per_group, 1, MAX_UNHEALTHY, " nodes")
    out += _between("options.max_unhealthy_in_cluster", max_unhealthy_in_cluster, 1, MAX_UNHEALTHY, " nodes")
    if 1 <= max_unhealthy_in_cluster < max_unhealthy_per_group <= MAX_UNHEALTHY:
        out.append(
            Finding(
                path="options.max_unhealthy_in_cluster",
                level="warning",
                message=f"{max_unhealthy_in_cluster} is below max_unhealthy_per_group ({max_unhealthy_per_group}): "
                "the cluster's limit is the one that holds",
            )
        )
    out += _between("options.check_interval_seconds", check_interval_seconds, *CHECK_INTERVAL_SECONDS, " seconds")
    for where, problem in policy_problems(policy or {}):
        out.append(Finding(path=f"options.policy.{where}", message=problem))
    return out
