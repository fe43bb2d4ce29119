#!/usr/bin/env python3
"""Hot spares on the Slurm controller (standard library only).

A group with ``spares: N`` runs ``count + N`` instances in its Auto Scaling group. This keeps N of
its healthy, idle nodes in a reservation of their own (``spares-<group>``, for root only), so no job
takes them, and lets one go the moment the group is short: whenever fewer than ``count + N`` of the
group's nodes are healthy, the pool shrinks to what is left over ``count``. A node that fails, drains
or is taken down by a repair therefore puts a spare into the partition at once, and the requeued job
can start on it without waiting for a replacement to boot. When the replacement registers, healthy
nodes are ``count + N`` again and the idle newcomer refills the pool.

Run by a systemd timer every 30 seconds and by the repair's hook (``slurm-drain.sh``) right after it
takes a node down. It writes the pool's size as metrics for node_exporter's textfile collector (an
empty pool is an alert). Node names are instance ids; a group is the node's feature.

    slurm_spares.py reconcile --layout FILE [--textfile-dir DIR]
    slurm_spares.py show --layout FILE        (spares <group> <held>/<wanted> <node> ...)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

RESERVATION_PREFIX = "spares-"
# What keeps a node out of the pool and out of the healthy count (Slurm's state flags).
UNHEALTHY = frozenset(
    {"DOWN", "DRAIN", "DRAINED", "DRAINING", "FAIL", "FAILING", "NOT_RESPONDING", "NO_RESPOND", "REBOOT_REQUESTED",
     "REBOOT_ISSUED", "POWERED_DOWN", "POWERING_DOWN", "POWERING_UP", "FUTURE", "UNKNOWN", "INVALID_REG"}
)  # fmt: skip
IDLE = "IDLE"


@dataclass(frozen=True)
class Node:
    name: str
    group: str | None  # its instance group (the feature that names one), if any
    states: frozenset[str]  # e.g. {"IDLE", "DYNAMIC_NORM"}

    @property
    def healthy(self) -> bool:
        return not (self.states & UNHEALTHY)

    @property
    def idle(self) -> bool:
        return self.healthy and IDLE in self.states and not self.states & {"COMPLETING", "PLANNED"}


@dataclass(frozen=True)
class GroupPlan:
    group: str
    wanted: int  # the configured N
    pool: tuple[str, ...]  # the spares after this pass
    promoted: tuple[str, ...] = ()  # left the pool for the partition
    added: tuple[str, ...] = ()  # joined the pool
    dropped: tuple[str, ...] = ()  # left the pool because they are unhealthy or busy

    @property
    def changed(self) -> bool:
        return bool(self.promoted or self.added or self.dropped)


@dataclass(frozen=True)
class Pools:
    counts: Mapping[str, int]  # group -> count (what the partition is sized for)
    spares: Mapping[str, int] = field(default_factory=dict)  # group -> N

    @classmethod
    def from_layout(cls, text: str) -> Pools:
        data = json.loads(text)
        groups = data.get("groups", [])
        return cls(
            counts={g["name"]: int(g.get("count", 0)) for g in groups if int(g.get("spares", 0)) > 0},
            spares={g["name"]: int(g["spares"]) for g in groups if int(g.get("spares", 0)) > 0},
        )


def plan(pools: Pools, nodes: Iterable[Node], reserved: Mapping[str, Sequence[str]]) -> list[GroupPlan]:
    """What each group's pool should hold. ``reserved``: group -> the nodes its reservation has now.

    The pool is ``min(N, healthy - count)`` nodes, chosen among idle healthy nodes of the group:
    current members first (a spare is not swapped for no reason), then others by name. Only nodes
    whose feature names the group are considered; anything else in a reservation is let go."""
    by_group: dict[str, list[Node]] = {}
    for node in nodes:
        if node.group is not None:
            by_group.setdefault(node.group, []).append(node)
    plans = []
    for group in sorted(pools.spares):
        members = by_group.get(group, [])
        healthy = [n for n in members if n.healthy]
        target = max(0, min(pools.spares[group], len(healthy) - pools.counts[group]))
        current = list(reserved.get(group, ()))
        idle = {n.name for n in members if n.idle}
        keep = [name for name in current if name in idle]
        dropped = tuple(name for name in current if name not in idle)
        promoted: tuple[str, ...] = ()
        if len(keep) > target:
            keep, promoted = keep[:target], tuple(keep[target:])
        added = tuple(sorted(idle - set(keep) - set(current))[: max(0, target - len(keep))])
        plans.append(
            GroupPlan(
                group=group,
                wanted=pools.spares[group],
                pool=tuple(sorted([*keep, *added])),
                promoted=promoted,
                added=added,
                dropped=dropped,
            )
        )
    return plans


def parse_nodes(text: str, groups: Iterable[str]) -> list[Node]:
    """``scontrol show nodes --oneliner``: each node's name, group (its feature that names a group)
    and state flags."""
    known = set(groups)
    nodes = []
    for line in text.splitlines():
        fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
        name = fields.get("NodeName")
        if not name:
            continue
        features = set(fields.get("AvailableFeatures", "").split(","))
        group = next(iter(sorted(features & known)), None)
        states = frozenset(s.rstrip("*~#!%$@^-") for s in fields.get("State", "UNKNOWN").split("+"))
        nodes.append(Node(name, group, states))
    return nodes


class Scontrol:
    """The few scontrol calls the pool needs."""

    def run(self, *args: str, check: bool = True) -> str:
        done = subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=60)
        if check and done.returncode != 0:
            raise RuntimeError(f"scontrol {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

    def nodes(self, groups: Iterable[str]) -> list[Node]:
        return parse_nodes(self.run("show", "nodes", "--oneliner", check=False), groups)

    def reserved(self, groups: Iterable[str]) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for group in groups:
            text = self.run("show", "reservation", f"{RESERVATION_PREFIX}{group}", "--oneliner", check=False)
            fields = dict(part.split("=", 1) for part in text.split() if "=" in part)
            expression = fields.get("Nodes", "")
            if fields.get("ReservationName") == f"{RESERVATION_PREFIX}{group}" and expression not in ("", "(null)"):
                found[group] = self.run("show", "hostnames", expression).split()
            elif fields.get("ReservationName"):
                found[group] = []
        return found

    def apply(self, group_plan: GroupPlan, exists: bool) -> None:
        name = f"{RESERVATION_PREFIX}{group_plan.group}"
        nodes = ",".join(group_plan.pool)
        if not group_plan.pool:
            if exists:  # a reservation cannot be emptied: it goes, and comes back with the next spare
                self.run("delete", "reservation", name)
        elif exists:
            self.run("update", f"reservation={name}", f"Nodes={nodes}")
        else:
            self.run(
                "create", "reservation", f"ReservationName={name}", f"Nodes={nodes}", "StartTime=now",
                "Duration=infinite", "Users=root", "Flags=IGNORE_JOBS",
            )  # fmt: skip


def metrics(plans: Sequence[GroupPlan]) -> str:
    lines = [
        "# HELP training_cluster_slurm_spares Idle healthy nodes held as hot spares (a reservation of their own).",
        "# TYPE training_cluster_slurm_spares gauge",
        *(f'training_cluster_slurm_spares{{group="{p.group}"}} {len(p.pool)}' for p in plans),
        "# HELP training_cluster_slurm_spares_wanted The group's configured spares.",
        "# TYPE training_cluster_slurm_spares_wanted gauge",
        *(f'training_cluster_slurm_spares_wanted{{group="{p.group}"}} {p.wanted}' for p in plans),
    ]
    return "\n".join(lines) + "\n"


def reconcile(
    pools: Pools, scontrol: Scontrol, textfile_dir: Path | None = None, failed: Iterable[str] = ()
) -> list[GroupPlan]:
    """Bring every pool to its plan. ``failed``: nodes a repair has just taken down, counted as
    down whatever Slurm shows (a node whose slurmd still answers may show idle again at once)."""
    groups = sorted(pools.spares)
    reserved = scontrol.reserved(groups)
    gone = set(failed)
    nodes = [Node(n.name, n.group, n.states | {"DOWN"}) if n.name in gone else n for n in scontrol.nodes(groups)]
    plans = plan(pools, nodes, reserved)
    for group_plan in plans:
        before = reserved.get(group_plan.group)
        if group_plan.changed or (before is None and group_plan.pool):
            scontrol.apply(group_plan, exists=before is not None)
        for name in group_plan.promoted:
            print(f"{group_plan.group}: spare {name} promoted (the group is short)")
        for name in group_plan.added:
            print(f"{group_plan.group}: {name} is a spare")
        for name in group_plan.dropped:
            print(f"{group_plan.group}: {name} left the spares (unhealthy, busy or gone)")
    if textfile_dir is not None and plans:
        textfile_dir.mkdir(parents=True, exist_ok=True)
        staged = textfile_dir / "slurm-spares.prom.tmp"
        staged.write_text(metrics(plans), encoding="utf-8")
        staged.replace(textfile_dir / "slurm-spares.prom")
    return plans


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for command in ("reconcile", "show"):
        sub = commands.add_parser(command)
        sub.add_argument("--layout", required=True, type=Path)
        sub.add_argument("--textfile-dir", type=Path, default=os.environ.get("TEXTFILE_DIR"))
        sub.add_argument("--failed", action="append", default=[], help="a node a repair has just taken down")
    args = parser.parse_args(argv)
    pools = Pools.from_layout(args.layout.read_text(encoding="utf-8"))
    if not pools.spares:
        return 0
    scontrol = Scontrol()
    if args.command == "show":
        reserved = scontrol.reserved(pools.spares)
        for group in sorted(pools.spares):  # the control plane reads these lines (scheduler_state.py)
            print(
                " ".join(
                    ["spares", group, f"{len(reserved.get(group, []))}/{pools.spares[group]}", *reserved.get(group, [])]
                )
            )
        return 0
    reconcile(pools, scontrol, args.textfile_dir, failed=args.failed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
