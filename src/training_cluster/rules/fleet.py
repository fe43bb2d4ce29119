"""A fleet's props: its instance type, size, EFA, capacity and placement group, and its names.

Keys are :class:`training_cluster.constructs.Fleet`'s props; the config moves them to
``instance_groups[i]``'s fields.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from .. import _yaml, catalog
from ..errors import Finding, show
from ..patterns import EC2_NAME_PATTERN
from ..types import CAPACITY_TYPES, OPERATING_SYSTEMS, CapacityType
from . import got, pattern_problem
from .settings import MAX_CLUSTER_NAME_LENGTH, MAX_GROUP_NAME_LENGTH, name_problem

MAX_GROUP_COUNT = 2000
MIN_ROOT_VOLUME_GIB, MAX_ROOT_VOLUME_GIB = 40, 16384
"""A gp3 volume holds at most 16 TiB; below 40 GiB the default images do not fit with room to work."""
"""Instances in one group: an Auto Scaling group can be larger, but a cluster placement group
of more than a couple of thousand GPU nodes is not a real request, and a typo (20000) should not deploy."""
MAX_LIFECYCLE_SCRIPT_BYTES = 1024 * 1024
"""A lifecycle script is a shell script; a megabyte is far more than one needs."""
SYSTEM_FOLDERS = ("/proc", "/sys", "/dev")
"""Where a path that looks like a file leads to the kernel or a device: reads fail, change or never end."""
RESERVATION_ID_EXAMPLE = "cr-0123456789abcdef0"
RESERVATION_ID_DIGITS = "0123456789abcdef"


def count_problem(count: int) -> str | None:
    """Why ``count`` instances cannot make a fleet, or ``None``."""
    if not 1 <= count <= MAX_GROUP_COUNT:
        return f"must be between 1 and {MAX_GROUP_COUNT} instances"
    return None


MAX_SPARES = 64
"""Hot spares a group may keep: enough for the largest group's failures while one is replaced."""


def spares_problem(spares: int, count: int) -> str | None:
    """Why ``spares`` hot spares beside ``count`` instances cannot be, or ``None``."""
    if not 0 <= spares <= MAX_SPARES:
        return f"must be between 0 and {MAX_SPARES}"
    if count + spares > MAX_GROUP_COUNT:
        return f"count + spares must be at most {MAX_GROUP_COUNT} instances; count is {count}"
    return None


def root_volume_problem(size_gib: int) -> str | None:
    """Why a root volume of ``size_gib`` GiB cannot be, or ``None``."""
    if not MIN_ROOT_VOLUME_GIB <= size_gib <= MAX_ROOT_VOLUME_GIB:
        return f"must be between {MIN_ROOT_VOLUME_GIB} and {MAX_ROOT_VOLUME_GIB} GiB"
    return None


def instance_type_problem(instance_type: str) -> str | None:
    """Why the catalog does not know ``instance_type``, with the closest names it knows."""
    if catalog.get(instance_type) is not None:
        return None
    close = difflib.get_close_matches(instance_type, catalog.instance_types(), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return (
        f"unknown instance type {show(instance_type)}{hint} (the catalog lists GPU, Trainium, Inferentia and x86 "
        "m/c/r types: training_cluster.catalog.instance_types())"
    )


def efa_problem(instance_type: str, efa: bool | None) -> str | None:
    """EFA asked for (``True``) on a type without it. ``None`` means EFA where the type has it."""
    info = catalog.get(instance_type)
    if efa and info is not None and not info.efa_supported:
        return f"{info.name} does not support EFA; leave EFA off or automatic, or use an instance type with EFA"
    return None


def efa_enabled(instance_type: str, efa: bool | None) -> bool:
    """Whether the fleet's instances get EFA interfaces: ``efa``, or by default where the type has EFA."""
    info = catalog.get(instance_type)
    supported = info is not None and info.efa_supported
    return supported if efa is None else efa


def _in_system_folder(path: str) -> bool:
    return any(path == folder or path.startswith(folder + "/") for folder in SYSTEM_FOLDERS)


def lifecycle_script_findings(prop: str, file: str | Path) -> list[Finding]:
    """Why ``file`` cannot be a lifecycle script (a regular, readable file of at most
    :data:`MAX_LIFECYCLE_SCRIPT_BYTES`, not under /proc, /sys or /dev as written or once links
    are resolved), as findings about ``prop``. Reads the file system."""
    script = str(file)
    try:
        written = "/" + os.path.abspath(script).lstrip("/")  # '..' and '//' resolved, not links
    except (ValueError, OSError):  # a NUL character (read_regular_file says so), or no working folder
        written = script
    try:
        real = "/" + os.path.realpath(script).lstrip("/")  # links too
    except ValueError:
        real = written
    except OSError as exc:  # a link this user may not follow (/proc/1/fd/0)
        if not _in_system_folder(written):
            return [
                Finding(
                    path=prop,
                    message=f"must be a regular, readable file of at most {MAX_LIFECYCLE_SCRIPT_BYTES:,} bytes: "
                    f"{exc.strerror} (got {show(script)})",
                )
            ]
        real = written
    if _in_system_folder(written) or _in_system_folder(real):
        leads = "" if real == script else f", which is {show(real)}"
        return [
            Finding(
                path=prop,
                message="must be a regular file of yours, not one of the system's special files "
                f"(got {show(script)}{leads})",
            )
        ]
    try:
        _yaml.read_regular_file(Path(script), MAX_LIFECYCLE_SCRIPT_BYTES)
    except FileNotFoundError:
        return [Finding(path=prop, message=f"no such file: {show(script)}")]
    except OSError as exc:
        return [
            Finding(
                path=prop,
                message=f"must be a regular, readable file of at most {MAX_LIFECYCLE_SCRIPT_BYTES:,} bytes: "
                f"{exc.strerror} (got {show(script)})",
            )
        ]
    return []


def capacity_findings(instance_type: str, capacity_type: CapacityType, reservation_id: str | None) -> list[Finding]:
    """The capacity's type against its reservation id and the instance type."""
    rid = reservation_id
    if capacity_type not in CAPACITY_TYPES:
        return got("capacity.type", f"must be one of {', '.join(CAPACITY_TYPES)}", capacity_type)
    if capacity_type == "on-demand":
        if rid is None:
            return []
        return [
            Finding(
                path="capacity.reservation_id",
                message="only used with capacity type reservation or capacity-block; remove it or set the type",
            )
        ]
    out = []
    if rid is None:
        out.append(
            Finding(
                path="capacity.reservation_id",
                message=f"required for capacity type {capacity_type}, like {RESERVATION_ID_EXAMPLE}",
            )
        )
    elif not (len(rid) == 20 and rid.startswith("cr-") and all(c in RESERVATION_ID_DIGITS for c in rid[3:])):
        out.append(
            Finding(
                path="capacity.reservation_id",
                message=f"must be 'cr-' and 17 hex digits, like {RESERVATION_ID_EXAMPLE} (got {show(rid)})",
            )
        )
    info = catalog.get(instance_type)
    if capacity_type == "capacity-block" and info is not None and not info.supports_capacity_blocks:
        out.append(
            Finding(
                path="capacity.type",
                message=f"{info.name} is not sold as Capacity Blocks for ML; use on-demand or reservation",
            )
        )
    return out


def creates_placement_group(
    create_placement_group: bool | None, placement_group_name: str | None, capacity_type: CapacityType
) -> bool:
    """Whether the fleet creates a cluster placement group: ``create_placement_group``, or by
    default for on-demand capacity that names no existing group; never by default for a
    reservation (it was created in, or outside, a placement group of its own) or a Capacity
    Block (its instances are placed close together already)."""
    if create_placement_group is not None:
        return create_placement_group
    return placement_group_name is None and capacity_type == "on-demand"


def placement_findings(
    *,
    create_placement_group: bool | None,
    placement_group_name: str | None,
    capacity_type: CapacityType,
    efa: bool,
) -> list[Finding]:
    """The placement group against the capacity, and EFA without one (a warning)."""
    out = []
    create, name = create_placement_group, placement_group_name
    if name is not None:
        out += got("placement_group_name", pattern_problem(EC2_NAME_PATTERN, name), name)
    if create and name is not None:
        out.append(
            Finding(
                path="create_placement_group",
                message="creating a placement group and launching into an existing one (placement_group_name) "
                "exclude each other; choose one",
            )
        )
    if create and capacity_type == "reservation":
        out.append(
            Finding(
                path="create_placement_group",
                message="a capacity reservation can only be used in the placement group it was created in, and that "
                "cannot be one this stack creates; create none, or name the reservation's group in "
                "placement_group_name",
            )
        )
    if capacity_type == "capacity-block" and (create or name is not None):
        out.append(
            Finding(
                path="create_placement_group" if create else "placement_group_name",
                message="a Capacity Block already places its instances close together; a placement group on top can "
                "fail launches with insufficient capacity while the block has room. Remove it",
            )
        )
    placed = creates_placement_group(create, name, capacity_type) or name is not None
    if efa and not placed and capacity_type == "on-demand":
        out.append(
            Finding(
                path="create_placement_group",
                level="warning",
                message="EFA without a cluster placement group: instances may land far apart, with less bandwidth "
                "and more latency",
            )
        )
    return out


def fleet_findings(
    *,
    cluster_name: str | None = None,
    group_name: str | None = None,
    instance_type: str,
    count: int,
    spares: int = 0,
    efa: bool | None = None,
    capacity_type: CapacityType = "on-demand",
    reservation_id: str | None = None,
    create_placement_group: bool | None = None,
    placement_group_name: str | None = None,
    os: str | None = None,
    root_volume_size_gib: int | None = None,
    key_pair_name: str | None = None,
) -> list[Finding]:
    """Every problem with a fleet's props (errors, and warnings). The lifecycle script is
    :func:`lifecycle_script_findings`' to check: it reads the file system."""
    out: list[Finding] = []
    if root_volume_size_gib is not None:
        out += got("root_volume_size_gib", root_volume_problem(root_volume_size_gib), root_volume_size_gib)
    if cluster_name is not None:
        out += got("cluster_name", name_problem(cluster_name, MAX_CLUSTER_NAME_LENGTH), cluster_name)
    if group_name is not None:
        out += got("group_name", name_problem(group_name, MAX_GROUP_NAME_LENGTH), group_name)
    out += got("count", count_problem(count), count)
    out += got("spares", spares_problem(spares, count), spares)
    if key_pair_name is not None:
        out += got("key_pair_name", pattern_problem(EC2_NAME_PATTERN, key_pair_name), key_pair_name)
    unknown = instance_type_problem(instance_type)
    if unknown is not None:
        out.append(Finding(path="instance_type", message=unknown))
    problem = efa_problem(instance_type, efa)
    if problem is not None:
        out.append(Finding(path="efa", message=problem))
    if os is not None and os not in OPERATING_SYSTEMS:
        out += got("os", f"must be one of {', '.join(OPERATING_SYSTEMS)}", os)
    out += capacity_findings(instance_type, capacity_type, reservation_id)
    out += placement_findings(
        create_placement_group=create_placement_group,
        placement_group_name=placement_group_name,
        capacity_type=capacity_type,
        efa=efa_enabled(instance_type, efa),
    )
    return out
