#!/usr/bin/env python3
"""Render the cluster's Slurm configuration (standard library only).

The controller renders ``slurm.conf``, ``gres.conf``, ``cgroup.conf`` and ``slurmdbd.conf`` with
this code at boot, compute nodes take their ``slurmd --conf`` line from it, and the project's tests
render with the same code to run a real Slurm. Compute nodes are dynamic (``slurmd -Z``) and
configless: each registers under its instance id with its instance group as a feature, and each
partition is the node sets of its instance groups. Jobs on a node that goes down are requeued.

The layout (``SLURM_LAYOUT`` in the node's settings) is JSON written at synthesis::

    {"cluster": "demo", "accounting": true,
     "groups": [{"name": "gpu", "gpus": 8, "memory_mib": 2097152}],
     "partitions": {"gpu": ["gpu"]}}

    slurm_config.py render --layout FILE --controller HOST(ADDRESS) --state-dir DIR --out-dir /etc/slurm
    slurm_config.py node-conf --layout FILE --group gpu
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SYSTEM_MEMORY_MIB = 1024  # kept back for the operating system and daemons on top of the 5% below
CRED_EXPIRE_SECONDS = 60  # Slurm's default 120
SCHED_INTERVAL_SECONDS = 15  # Slurm's default 60


@dataclass(frozen=True)
class Group:
    name: str
    gpus: int = 0
    memory_mib: int = 0  # the catalog's figure; 0: let slurmd report what it finds
    vcpus: int = 0


@dataclass(frozen=True)
class Layout:
    cluster: str
    groups: tuple[Group, ...]
    partitions: Mapping[str, Sequence[str]] = field(default_factory=dict)
    accounting: bool = False

    @classmethod
    def from_json(cls, text: str) -> Layout:
        data: dict[str, Any] = json.loads(text)
        groups = tuple(
            Group(g["name"], int(g.get("gpus", 0)), int(g.get("memory_mib", 0)), int(g.get("vcpus", 0)))
            for g in data["groups"]
        )
        return cls(
            cluster=data["cluster"],
            groups=groups,
            partitions=data.get("partitions") or {g.name: [g.name] for g in groups},
            accounting=bool(data.get("accounting", False)),
        )

    def group(self, name: str) -> Group:
        for group in self.groups:
            if group.name == name:
                return group
        raise KeyError(
            f"no instance group {name!r} in the Slurm layout; groups: {', '.join(g.name for g in self.groups)}"
        )


@dataclass(frozen=True)
class Paths:
    state_dir: str = "/var/spool/slurmctld"
    spool_dir: str = "/var/spool/slurmd"
    log_dir: str = "/var/log/slurm"
    run_dir: str = "/run/slurm"
    health_check: str = "/opt/training-cluster/hooks/slurm-health-check"
    prolog: str = "/opt/training-cluster/hooks/slurm-prolog"
    epilog: str = "/opt/training-cluster/hooks/slurm-epilog"
    munge_socket: str = "/run/munge/munge.socket.2"


def usable_memory_mib(nominal_mib: int) -> int:
    """What Slurm may hand out: the catalog's memory less what the kernel keeps (a few percent)
    and a reserve for the system. Below what the node reports, so it never registers as invalid."""
    return max(0, int(nominal_mib * 0.95) - SYSTEM_MEMORY_MIB)


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
    accounting_host: str | None = None,
    cgroups: bool = True,
) -> str:
    """``slurm.conf``: configless, dynamic nodes, one node set per instance group.

    ``controller`` is ``HOSTNAME`` or ``HOSTNAME(ADDRESS)``: the controller's short host name (which
    slurmctld checks) and the address nodes reach it at. ``cgroups`` off only where cgroups cannot
    be delegated (the tests' containers)."""
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
        # A requeued job waits out the job credential's lifetime before it may start again (120 s
        # by default): 60 s still leaves srun a minute to launch a step on a thousand nodes.
        f"AuthInfo=socket={paths.munge_socket},cred_expire={CRED_EXPIRE_SECONDS}",
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
        "ProctrackType=proctrack/cgroup" if cgroups else "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/cgroup,task/affinity" if cgroups else "TaskPlugin=task/none",
        "MpiDefault=none",  # jobs choose: srun --mpi=pmix
        "SchedulerType=sched/backfill",
        # The main scheduling pass every 15 s instead of 60: a requeued job that has waited out its
        # credential starts within 15 s (measured in benchmarks/fault_to_running.py).
        f"SchedulerParameters=sched_interval={SCHED_INTERVAL_SECONDS}",
        # A node that fails takes its jobs down with it: they go back to the queue and start again
        # (from their last checkpoint) on the replacement, or on the node once it is back.
        "JobRequeue=1",
        "ReturnToService=2",
        f"HealthCheckProgram={paths.health_check}",
        "HealthCheckInterval=60",
        "HealthCheckNodeState=ANY,CYCLE",
        # The job's id on the node's metrics, from allocation to the end (slurm-prolog.sh).
        f"Prolog={paths.prolog}",
        f"Epilog={paths.epilog}",
        "PrologFlags=Alloc",
    ]
    if accounting_host:
        lines += [
            "AccountingStorageType=accounting_storage/slurmdbd",
            f"AccountingStorageHost={accounting_host}",
            "JobAcctGatherType=jobacct_gather/cgroup" if cgroups else "JobAcctGatherType=jobacct_gather/linux",
        ]
    for group in groups:
        lines.append(f"Nodeset={group.name} Feature={group.name}")
    by_name = {g.name: g for g in groups}
    for index, (partition, members) in enumerate(partitions.items()):
        default = "YES" if index == 0 else "NO"
        line = f"PartitionName={partition} Nodes={','.join(members)} Default={default} MaxTime=INFINITE State=UP"
        lines.append(line + default_memory([by_name[m] for m in members]))
    return "\n".join(lines) + "\n"


def default_memory(groups: Sequence[Group]) -> str:
    """A job that does not ask for memory gets its share of the node by the GPUs (or CPUs) it
    asks for, not the whole node: `` DefMemPerGPU=...`` (or ``DefMemPerCPU``) for a partition
    of these groups, the smallest share among them. Nothing where memory is not known."""
    if not groups or any(not g.memory_mib for g in groups):
        return ""
    if all(g.gpus for g in groups):
        return f" DefMemPerGPU={min(usable_memory_mib(g.memory_mib) // g.gpus for g in groups)}"
    if all(g.vcpus for g in groups):
        return f" DefMemPerCPU={min(usable_memory_mib(g.memory_mib) // g.vcpus for g in groups)}"
    return ""


def node_conf(group: Group) -> str:
    """What a compute node passes to ``slurmd -Z --conf``: its group as a feature, its GPUs and
    the memory Slurm may allocate, from the catalog. CPUs are left to slurmd, which reads their
    sockets, cores and threads from the hardware; a CPU count alone would make Slurm invent a
    layout and bind tasks by it."""
    parts = [f"Feature={group.name}"]
    if group.gpus:
        parts.append(f"Gres=gpu:{group.gpus}")
    if group.memory_mib:
        parts.append(f"RealMemory={usable_memory_mib(group.memory_mib)}")
    return " ".join(parts)


def render_gres_conf() -> str:
    """``gres.conf``: GPUs found through NVML on each node."""
    return "AutoDetect=nvml\n"


def render_cgroup_conf() -> str:
    """``cgroup.conf``: jobs see only the cores, memory and GPUs they were given."""
    return "ConstrainCores=yes\nConstrainDevices=yes\nConstrainRAMSpace=yes\n"


def render_slurmdbd_conf(
    *, paths: Paths = Paths(), user: str = "slurm", database: Mapping[str, Any] | None = None
) -> str:
    """``slurmdbd.conf``. Without ``database``: MariaDB on the controller, reached over its local
    socket with the socket's own authentication (the ``slurm`` account has no password to keep).
    With it (the RDS secret: host, port, username, password): that database."""
    lines = [
        "AuthType=auth/munge",
        f"AuthInfo=socket={paths.munge_socket}",
        "DbdHost=localhost",
        f"SlurmUser={user}",
        f"PidFile={paths.run_dir}/slurmdbd.pid",
        f"LogFile={paths.log_dir}/slurmdbd.log",
        "StorageType=accounting_storage/mysql",
        "StorageLoc=slurm_acct_db",
    ]
    if database is None:
        lines += ["StorageHost=localhost", f"StorageUser={user}"]
    else:
        password = str(database["password"])
        if not password.isalnum():  # slurmdbd.conf has no quoting: '#' would start a comment
            raise ValueError("the database password must be letters and digits")
        lines += [
            f"StorageHost={database['host']}",
            f"StoragePort={database['port']}",
            f"StorageUser={database['username']}",
            f"StoragePass={password}",
        ]
    return "\n".join(lines) + "\n"


def render(
    layout: Layout,
    *,
    controller: str,
    paths: Paths,
    database: Mapping[str, Any] | None = None,
    **options: Any,
) -> dict[str, str]:
    """Every file the controller serves (and ``slurmdbd.conf``), by name. ``database``: see
    :func:`render_slurmdbd_conf`; ``options`` go to :func:`render_slurm_conf`."""
    files = {
        "slurm.conf": render_slurm_conf(
            cluster=layout.cluster,
            controller=controller,
            groups=layout.groups,
            partitions=layout.partitions,
            paths=paths,
            accounting_host=_address(controller) if layout.accounting else None,
            **options,
        ),
        "gres.conf": render_gres_conf(),
        "cgroup.conf": render_cgroup_conf(),
    }
    if layout.accounting:
        files["slurmdbd.conf"] = render_slurmdbd_conf(paths=paths, database=database)
    return files


def _address(controller: str) -> str:
    """``host(address)`` -> ``address``; ``host`` -> ``host``."""
    host, _, address = controller.partition("(")
    return address.rstrip(")") or host


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    render_cmd = commands.add_parser("render", help="write the controller's configuration files")
    render_cmd.add_argument("--layout", required=True, type=Path)
    render_cmd.add_argument("--controller", required=True, help="HOSTNAME or HOSTNAME(ADDRESS)")
    render_cmd.add_argument("--state-dir", default=Paths.state_dir)
    render_cmd.add_argument("--out-dir", required=True, type=Path)
    render_cmd.add_argument("--database", type=Path, help="the accounting database's secret (JSON), if remote")
    node_cmd = commands.add_parser("node-conf", help="print a compute node's slurmd --conf line")
    node_cmd.add_argument("--layout", required=True, type=Path)
    node_cmd.add_argument("--group", required=True)
    args = parser.parse_args(argv)
    layout = Layout.from_json(args.layout.read_text(encoding="utf-8"))
    if args.command == "node-conf":
        print(node_conf(layout.group(args.group)))
        return 0
    database = json.loads(args.database.read_text(encoding="utf-8")) if args.database else None
    paths = Paths(state_dir=args.state_dir)
    for name, text in render(layout, controller=args.controller, paths=paths, database=database).items():
        target = args.out_dir / name
        staged = target.with_suffix(".tmp")
        staged.touch(mode=0o600)
        staged.write_text(text, encoding="utf-8")
        staged.chmod(0o600 if name == "slurmdbd.conf" else 0o644)
        staged.replace(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
