#!/usr/bin/env python3
"""Render the cluster's Slurm configuration (standard library only).

The controller renders ``slurm.conf`` and ``gres.conf`` with this code at boot, and the project's
tests render them with the same code to run a real Slurm. Compute nodes are dynamic
(``slurmd -Z``) and configless: they register with their instance group as a feature, and each
partition is the node sets of its instance groups. Jobs on a node that goes down are requeued.

    slurm_config.py --cluster demo --controller ip-10-0-128-5 --group gpu:8 --group login:0 \\
        --partition gpu=gpu [--state-dir /fsx/slurm/state] > /etc/slurm/slurm.conf
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Group:
    name: str
    gpus: int = 0


@dataclass(frozen=True)
class Paths:
    state_dir: str = "/var/spool/slurmctld"
    spool_dir: str = "/var/spool/slurmd"
    log_dir: str = "/var/log/slurm"
    run_dir: str = "/run/slurm"
    health_check: str = "/opt/training-cluster/hooks/slurm-health-check"
    munge_socket: str = "/run/munge/munge.socket.2"


def render_slurm_conf(
    *,
    cluster: str,
    controller: str,
    groups: Sequence[Group],
    partitions: Mapping[str, Sequence[str]],
    paths: Paths = Paths(),
    controller_port: int = 6817,
    node_port: int = 6818,
    max_nodes: int = 4096,
    user: str = "slurm",
) -> str:
    """``slurm.conf``: configless, dynamic nodes, one node set per instance group."""
    known = {g.name for g in groups}
    for partition, members in partitions.items():
        unknown = sorted(set(members) - known)
        if unknown:
            raise ValueError(f"partition {partition} names unknown instance groups: {', '.join(unknown)}")
    lines = [
        f"ClusterName={cluster}",
        f"SlurmctldHost={controller}",
        f"SlurmctldPort={controller_port}",
        f"SlurmdPort={node_port}",
        "SlurmctldParameters=enable_configless",
        f"SlurmUser={user}",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={paths.munge_socket}",
        f"StateSaveLocation={paths.state_dir}",
        f"SlurmdSpoolDir={paths.spool_dir}",
        f"SlurmctldPidFile={paths.run_dir}/slurmctld.pid",
        f"SlurmdPidFile={paths.run_dir}/slurmd.pid",
        f"SlurmctldLogFile={paths.log_dir}/slurmctld.log",
        f"SlurmdLogFile={paths.log_dir}/slurmd.log",
        f"MaxNodeCount={max_nodes}",
        "TreeWidth=65533",  # dynamic nodes: every node talks to the controller directly
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        "GresTypes=gpu",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "MpiDefault=none",
        "SchedulerType=sched/backfill",
        # A node that fails takes its jobs down with it: they go back to the queue and start again
        # (from their last checkpoint) on the replacement, or on the node once it is back.
        "JobRequeue=1",
        "ReturnToService=2",
        f"HealthCheckProgram={paths.health_check}",
        "HealthCheckInterval=60",
        "HealthCheckNodeState=ANY,CYCLE",
    ]
    for group in groups:
        lines.append(f"Nodeset={group.name} Feature={group.name}")
    for index, (partition, members) in enumerate(partitions.items()):
        default = "YES" if index == 0 else "NO"
        lines.append(f"PartitionName={partition} Nodes={','.join(members)} Default={default} MaxTime=INFINITE State=UP")
    return "\n".join(lines) + "\n"


def node_conf(group: Group) -> str:
    """What a compute node passes to ``slurmd -Z --conf``: its group as a feature, its GPUs."""
    return f"Feature={group.name}" + (f" Gres=gpu:{group.gpus}" if group.gpus else "")


def render_gres_conf() -> str:
    """``gres.conf``: GPUs found through NVML on each node."""
    return "AutoDetect=nvml\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cluster", required=True)
    parser.add_argument("--controller", required=True)
    parser.add_argument("--group", action="append", default=[], help="NAME:GPUS, once per instance group")
    parser.add_argument("--partition", action="append", default=[], help="NAME=GROUP[,GROUP...]")
    parser.add_argument("--state-dir", default=Paths.state_dir)
    parser.add_argument("--gres", action="store_true", help="print gres.conf instead")
    args = parser.parse_args(argv)
    if args.gres:
        sys.stdout.write(render_gres_conf())
        return 0
    groups = [Group(name, int(gpus)) for name, _, gpus in (g.partition(":") for g in args.group)]
    partitions = {name: members.split(",") for name, _, members in (p.partition("=") for p in args.partition)}
    sys.stdout.write(
        render_slurm_conf(
            cluster=args.cluster,
            controller=args.controller,
            groups=groups,
            partitions=partitions or {g.name: [g.name] for g in groups},
            paths=Paths(state_dir=args.state_dir),
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
