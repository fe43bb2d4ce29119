#!/usr/bin/env python3
"""The cluster's network topology for Slurm, from EC2 (on the controller; boto3).

EC2's ``DescribeInstanceTopology`` gives each instance the network nodes above it, from the top
layer down to the one it hangs from. Every two minutes, and so whenever nodes come and go, this:

- writes ``topology.conf`` (Slurm's ``topology/tree``): one switch per network node, the instances
  under the lowest, and one ``root`` over the top layer (instances under different top nodes still
  reach each other through the spine above them);
- gives every node a feature per network node above it (``nn-...``), beside its group's feature,
  and writes the features with their node counts to ``topology-features``.

Slurm before 25.05 cannot put dynamic nodes (ours: each registers under its instance id) into a
``topology/tree``: nodes missing from the tree at start make multi-node jobs "never runnable". So
the tree is written for operators and later Slurm, and jobs use the features: with
``--constraint="[nn-a|nn-b|...]"`` all of a job's nodes share one of the network nodes listed.

    slurm_topology.py refresh --out-dir DIR [--region REGION]
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PAGE = 100  # DescribeInstanceTopology takes at most 100 instance ids a request
FEATURE_PREFIX = "nn-"
ROOT_SWITCH = "root"


@dataclass(frozen=True)
class Placement:
    instance_id: str
    network_nodes: tuple[str, ...]  # top layer first, as EC2 lists them


def describe(ec2: Any, instance_ids: Sequence[str]) -> list[Placement]:
    """The network nodes above each instance, 100 ids a request, every page of each. Instances EC2
    does not describe (gone, or of a type without topology) are left out."""
    found: list[Placement] = []
    for start in range(0, len(instance_ids), PAGE):
        request: dict[str, Any] = {"InstanceIds": list(instance_ids[start : start + PAGE])}
        while True:
            page = ec2.describe_instance_topology(**request)
            for instance in page.get("Instances", []):
                nodes = tuple(str(n) for n in instance.get("NetworkNodes", []))
                if nodes:
                    found.append(Placement(str(instance["InstanceId"]), nodes))
            token = page.get("NextToken")
            if not token:
                break
            request["NextToken"] = token
    return sorted(found, key=lambda p: p.instance_id)


def switch_name(network_node: str) -> str:
    """A network node's switch and feature name (EC2's ids are ``nn-`` and hex already)."""
    name = network_node if network_node.startswith(FEATURE_PREFIX) else FEATURE_PREFIX + network_node
    if not all(c.isalnum() or c in "-_" for c in name):
        raise ValueError(f"unexpected network node id {network_node!r}")
    return name


def render_topology_conf(placements: Iterable[Placement]) -> str:
    """``topology.conf`` for ``topology/tree``: leaves hold instances, every upper network node its
    children, and ``root`` the top layer. Sorted, so the same topology gives the same file."""
    children: dict[str, set[str]] = {}
    leaves: dict[str, set[str]] = {}
    tops: set[str] = set()
    for placement in placements:
        names = [switch_name(n) for n in placement.network_nodes]
        tops.add(names[0])
        for upper, lower in itertools.pairwise(names):
            children.setdefault(upper, set()).add(lower)
        leaves.setdefault(names[-1], set()).add(placement.instance_id)
    lines = ["# Written by slurm_topology.py from EC2 DescribeInstanceTopology; do not edit."]
    lines += [f"SwitchName={leaf} Nodes={','.join(sorted(nodes))}" for leaf, nodes in sorted(leaves.items())]
    lines += [f"SwitchName={upper} Switches={','.join(sorted(lower))}" for upper, lower in sorted(children.items())]
    if tops:
        lines.append(f"SwitchName={ROOT_SWITCH} Switches={','.join(sorted(tops))}")
    return "\n".join(lines) + "\n"


def features(placement: Placement) -> list[str]:
    """The network-node features of one instance, top layer first."""
    return [switch_name(n) for n in placement.network_nodes]


def feature_counts(placements: Iterable[Placement]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for placement in placements:
        for feature in features(placement):
            counts[feature] = counts.get(feature, 0) + 1
    return dict(sorted(counts.items()))


class Scontrol:
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = dict(env) if env is not None else None

    def run(self, *args: str) -> str:
        done = subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=60, env=self.env)
        if done.returncode != 0:
            raise RuntimeError(f"scontrol {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

    def nodes(self) -> Iterator[tuple[str, list[str]]]:
        """Each instance node's name and its available features."""
        for line in self.run("show", "nodes", "--oneliner").splitlines():
            fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
            name = fields.get("NodeName", "")
            if name.startswith("i-"):
                listed = fields.get("AvailableFeatures", "")
                yield name, [] if listed in ("", "(null)") else listed.split(",")


def label(scontrol: Scontrol, placements: Sequence[Placement]) -> list[str]:
    """Give each node its network nodes' features (keeping its other features, dropping stale
    ``nn-`` ones); only nodes whose features change are updated. Returns the nodes updated."""
    by_id = {p.instance_id: p for p in placements}
    updated = []
    for name, current in scontrol.nodes():
        placement = by_id.get(name)
        if placement is None:
            continue
        kept = [f for f in current if not f.startswith(FEATURE_PREFIX)]
        wanted = kept + features(placement)
        if wanted != current:
            joined = ",".join(wanted)
            scontrol.run("update", f"nodename={name}", f"AvailableFeatures={joined}", f"ActiveFeatures={joined}")
            updated.append(name)
    return updated


def _write(path: Path, text: str) -> bool:
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    staged = path.with_name(path.name + ".tmp")
    staged.write_text(text, encoding="utf-8")
    staged.replace(path)
    return True


def refresh(ec2: Any, scontrol: Scontrol, out_dir: Path) -> list[Placement]:
    names = [name for name, _ in scontrol.nodes()]
    placements = describe(ec2, names)
    out_dir.mkdir(parents=True, exist_ok=True)
    if _write(out_dir / "topology.conf", render_topology_conf(placements)):
        print(f"topology.conf: {len(placements)} of {len(names)} nodes placed")
    counts = feature_counts(placements)
    _write(out_dir / "topology-features", "".join(f"{feature} {n}\n" for feature, n in counts.items()))
    for name in label(scontrol, placements):
        print(f"{name}: network node features updated")
    return placements


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    sub = commands.add_parser("refresh")
    sub.add_argument("--out-dir", required=True, type=Path)
    sub.add_argument("--region")
    args = parser.parse_args(argv)
    import boto3  # the controller's python3-boto3; only this command needs it

    ec2 = boto3.client("ec2", region_name=args.region)
    refresh(ec2, Scontrol(), args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
