"""Slurm on fleets: which fleets can be Slurm nodes, and the options' partitions and users.

Keys are :class:`training_cluster.constructs.Slurm`'s props (``controller``, ``login``,
``compute[i]``, ``options.partitions``, ``options.users``); the config moves them to its fields.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .. import catalog, node_image
from ..errors import Finding, show
from ..patterns import SLURM_NAME_PATTERN, USER_NAME_PATTERN
from ..types import SLURM_OS
from . import got, pattern_problem
from .lustre import mount_path_problem

CONTROLLER_EXAMPLE = "m7i.4xlarge"
MAX_NODE_RECORDS = 4096
"""slurm.conf's MaxNodeCount (node/slurm/slurm_config.py): the dynamic nodes slurmctld holds."""
MAX_COMPUTE_NODES = MAX_NODE_RECORDS // 2
"""Compute instances (counts and spares) a Slurm cluster may have: half the records, so that every
node's replacement can register before the failed node's record is deleted."""
MIN_UID, MAX_UID = 2000, 59999
"""Cluster users' uids: above the node images' own users and groups (system ones below 1000,
the images' first login user at 1000), below 60000, where Debian's dynamic ranges begin."""


def user_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a cluster user, or ``None``."""
    return pattern_problem(USER_NAME_PATTERN, name)


def uid_problem(uid: int) -> str | None:
    """Why ``uid`` cannot be a cluster user's uid, or ``None``."""
    return None if MIN_UID <= uid <= MAX_UID else f"must be between {MIN_UID} and {MAX_UID}"


def partition_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a Slurm partition, or ``None``."""
    return pattern_problem(SLURM_NAME_PATTERN, name)


def _key(prop: str, problem: str | None, key: str) -> list[Finding]:
    """A mapping's bad key, as the config shows one: at the mapping, ``key '<key>' <problem>``."""
    return [] if problem is None else [Finding(path=prop, message=f"key {key!r} {problem} (got {show(key)})")]


@dataclass(frozen=True, kw_only=True)
class SlurmFleet:
    """What the Slurm rules read of a fleet."""

    group_name: str
    instance_type: str
    count: int
    os: str
    spares: int = 0


def default_partitions(compute_groups: Sequence[str]) -> dict[str, list[str]]:
    """One partition per compute group, named after it; the first is the default partition."""
    return {name: [name] for name in compute_groups}


def _os(prop: str, fleet: SlurmFleet) -> list[Finding]:
    if fleet.os == SLURM_OS:
        return []
    return [
        Finding(
            path=f"{prop}.os",
            message=f"Slurm nodes run {SLURM_OS} (its archive has Slurm 23.11 with dynamic nodes; Ubuntu 22.04 has "
            f"21.08 without them and Amazon Linux 2023 has none); allowed: {SLURM_OS} (got {show(fleet.os)})",
        )
    ]


def _server_type(prop: str, fleet: SlurmFleet) -> list[Finding]:
    info = catalog.get(fleet.instance_type)
    if info is not None and "x86_64" in info.architectures and info.accelerator == "none":
        return []
    close = difflib.get_close_matches(fleet.instance_type, catalog.instance_types(), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close and info is None else ""
    return [
        Finding(
            path=f"{prop}.instance_type",
            message=f"must be an x86_64 CPU instance type from the catalog, such as {CONTROLLER_EXAMPLE} "
            f"(got {show(fleet.instance_type)}{hint})",
        )
    ]


def slurm_findings(
    *,
    controller: SlurmFleet,
    login: SlurmFleet | None,
    compute: Sequence[SlurmFleet],
    partitions: Mapping[str, Sequence[str]] | None = None,
    users: Mapping[str, int] | None = None,
    file_system_mount_path: str | None = None,
) -> list[Finding]:
    """Every problem with the fleets and options given to Slurm."""
    out: list[Finding] = []
    if file_system_mount_path is not None:
        problem = mount_path_problem(file_system_mount_path)
        if problem is not None:
            out.append(Finding(path="file_system_mount_path", message=problem))
    if controller.count != 1:
        out.append(
            Finding(path="controller.count", message=f"the Slurm controller has one node (got {controller.count})")
        )
    servers = [("controller", controller)] + ([("login", login)] if login is not None else [])
    for prop, fleet in servers:
        out += _server_type(prop, fleet)
        out += _os(prop, fleet)
    if not compute:
        out.append(Finding(path="compute", message="Slurm needs at least one compute fleet"))
    taken = {fleet.group_name: role for role, fleet in servers}
    for i, fleet in enumerate(compute):
        role = taken.get(fleet.group_name)
        if role is not None:
            out.append(
                Finding(
                    path=f"compute[{i}].group_name",
                    message=f"{fleet.group_name!r} is the name of the Slurm {role} group; every Slurm group needs a "
                    "name of its own",
                )
            )
        out += _os(f"compute[{i}]", fleet)
    total = sum(fleet.count + fleet.spares for fleet in compute)
    if total > MAX_COMPUTE_NODES:
        out.append(
            Finding(
                path="compute",
                message=f"Slurm takes at most {MAX_COMPUTE_NODES} compute instances (counts and spares) in a cluster, "
                f"got {total}: it keeps {MAX_NODE_RECORDS} node records, half of them for replacements",
            )
        )
    names = [fleet.group_name for fleet in compute]
    for name, n in Counter(names).items():
        if n > 1:
            out.append(Finding(path="compute", message=f"group name {name!r} is used {n} times; names must be unique"))
    for partition, members in (partitions or {}).items():
        out += _key("options.partitions", partition_name_problem(partition), partition)
        if partition.lower() == "default":
            out.append(
                Finding(
                    path="options.partitions",
                    message="'default' is the name of Slurm's defaults line, not a partition: choose another name",
                )
            )
        for member, n in Counter(members).items():
            if n > 1:
                out.append(
                    Finding(
                        path=f"options.partitions.{partition}",
                        message=f"instance group {member!r} is listed {n} times; list each group once",
                    )
                )
        for member in dict.fromkeys(members):
            if member not in names:
                out.append(
                    Finding(
                        path=f"options.partitions.{partition}",
                        message=f"no instance group named {member!r}; instance groups: {', '.join(names)}",
                    )
                )
    users = users or {}
    for user, uid in users.items():
        out += _key("options.users", user_name_problem(user), user)
        out += got(f"options.users.{user}", uid_problem(uid), uid)
        if node_image.is_system_name(user):
            out.append(
                Finding(
                    path=f"options.users.{user}",
                    message=f"{user!r} is a user or group the node images have already (the operating system, "
                    "Docker, Slurm, munge, MariaDB or Session Manager; useradd makes a group of the user's name): "
                    "choose another name",
                )
            )
    uids = Counter(users.values())
    for user, uid in users.items():
        if uids[uid] > 1:
            out.append(Finding(path=f"options.users.{user}", message=f"uid {uid} is given to more than one user"))
    return out
