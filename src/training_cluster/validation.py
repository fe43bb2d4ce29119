"""Cross-field rules: what the field types alone cannot say, checked before anything deploys.

``check(config)`` returns every finding at once; errors stop synthesis, warnings become CDK
warning annotations on the stack.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Iterator

from . import _yaml, addresses, catalog, node_image
from .config import SLURM_OS, ClusterConfig, InstanceGroupConfig, LustreConfig
from .errors import Finding, show
from .node_bootstrap import setting_problem

RESERVATION_ID = "cr-0123456789abcdef0"
MAX_LIFECYCLE_SCRIPT_BYTES = 1024 * 1024
"""A lifecycle script is a shell script; a megabyte is far more than one needs."""
LUSTRE_DEFAULT_QUOTA_GIB = 100_800
"""FSx for Lustre's default storage quota per account and Region for SSD file systems (adjustable
in Service Quotas; Amazon SageMaker's FSxLustreConfig caps SizeInGiB at the same 100,800 GiB).
Above it the deployment fails unless the quota was raised: a warning, not an error."""

LUSTRE_SSD_THROUGHPUT = {"PERSISTENT_1": (50, 100, 200), "PERSISTENT_2": (125, 250, 500, 1000)}
METADATA_IOPS = (1500, 3000, 6000, *range(12000, 192001, 12000))


def check(config: ClusterConfig) -> list[Finding]:
    """Every problem with ``config``: errors and warnings."""
    return [
        *_observability(config),
        *_zone(config),
        *addresses.network(config),
        *_groups(config),
        *(_lustre(config.storage.lustre) if config.storage.lustre else ()),
        *addresses.subnet_capacity(config),
        *_orchestrator(config),
        *_node_settings(config),
    ]


def _node_settings(config: ClusterConfig) -> Iterator[Finding]:
    """Config values that nodes read as settings (:class:`NodeBootstrap`), with the bootstrap's own rule."""
    values: list[tuple[str, str]] = [("name", config.name), ("region", config.region)]
    values += [(f"instance_groups[{i}].name", g.name) for i, g in enumerate(config.instance_groups)]
    values += [(f"orchestrator.users.{user}", user) for user in config.orchestrator.users]
    if config.storage.lustre is not None:
        values.append(("storage.lustre.mount_path", config.storage.lustre.mount_path))
    for path, value in values:
        problem = setting_problem(value)
        if problem is not None:
            yield Finding(path=path, message=f"{problem}: the nodes read it from a settings file (got {show(value)})")


def _observability(config: ClusterConfig) -> Iterator[Finding]:
    if config.observability.grafana and not config.observability.prometheus:
        yield Finding(
            path="observability.grafana",
            message="Grafana reads the Prometheus workspace: set prometheus: true, or grafana: false",
        )


def _zone(config: ClusterConfig) -> Iterator[Finding]:
    zones = catalog.availability_zones(config.region)
    az = config.availability_zone
    if not az.startswith(config.region) or az == config.region:
        yield Finding(
            path="availability_zone",
            message=f"{az!r} is not in region {config.region!r}; an availability zone of {config.region} "
            f"is named like {config.region}a",
        )
    elif zones and az not in zones:
        yield Finding(
            path="availability_zone",
            message=f"{az!r} is not a zone of {config.region}; allowed: {', '.join(zones)}",
        )
    if not zones:
        yield Finding(
            path="region",
            level="warning",
            message=f"{config.region!r} is not in the instance-type catalog; zone and offering checks were skipped",
        )


def _groups(config: ClusterConfig) -> Iterator[Finding]:
    for name, n in Counter(g.name for g in config.instance_groups).items():
        if n > 1:
            yield Finding(
                path="instance_groups", message=f"group name {name!r} is used {n} times; names must be unique"
            )
    by_id: dict[str, list[str]] = {}
    for name in dict.fromkeys(g.name for g in config.instance_groups):
        by_id.setdefault(name.replace("-", ""), []).append(name)
    for names in by_id.values():
        if len(names) > 1:
            yield Finding(
                path="instance_groups",
                message=f"group names {' and '.join(map(repr, names))} differ only in hyphens and would give their "
                "resources the same ids; rename one",
            )
    for i, group in enumerate(config.instance_groups):
        yield from _group(config, f"instance_groups[{i}]", group)


def _group(config: ClusterConfig, path: str, group: InstanceGroupConfig) -> Iterator[Finding]:
    info = catalog.get(group.instance_type)
    if info is None:
        close = difflib.get_close_matches(group.instance_type, catalog.instance_types(), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        yield Finding(
            path=f"{path}.instance_type",
            message=f"unknown instance type {group.instance_type!r}{hint} (the catalog lists GPU, Trainium, "
            "Inferentia and x86 m/c/r types: training_cluster.catalog.instance_types())",
        )
        return
    if group.efa == "on" and not info.efa_supported:
        yield Finding(
            path=f"{path}.efa",
            message=f"{info.name} does not support EFA; use efa: auto or off, or an EFA type",
        )
    if info.offered_in and not info.is_offered_in(config.availability_zone):
        yield Finding(
            path=f"{path}.instance_type",
            level="warning",
            message=f"{info.name} was not offered in {config.availability_zone} when the catalog was made; "
            "check DescribeInstanceTypeOfferings for your account before deploying",
        )
    yield from _capacity(path, group, info)
    yield from _placement(path, group)
    if group.lifecycle_script is not None:
        script = str(group.lifecycle_script)
        if script.startswith(("/proc/", "/sys/", "/dev/")):
            yield Finding(
                path=f"{path}.lifecycle_script",
                message=f"must be a regular file of yours, not one of the system's special files (got {show(script)})",
            )
            return
        try:
            _yaml.read_regular_file(group.lifecycle_script, MAX_LIFECYCLE_SCRIPT_BYTES)
        except FileNotFoundError:
            yield Finding(path=f"{path}.lifecycle_script", message=f"no such file: {show(script)}")
        except OSError as exc:
            yield Finding(
                path=f"{path}.lifecycle_script",
                message=f"must be a regular, readable file of at most {MAX_LIFECYCLE_SCRIPT_BYTES:,} bytes: "
                f"{exc.strerror} (got {show(script)})",
            )


def _capacity(path: str, group: InstanceGroupConfig, info: catalog.InstanceTypeInfo) -> Iterator[Finding]:
    capacity = group.capacity
    rid = capacity.reservation_id
    if capacity.type == "on-demand":
        if rid is not None:
            yield Finding(
                path=f"{path}.capacity.reservation_id",
                message="only used with capacity type reservation or capacity-block; remove it or set the type",
            )
        return
    if rid is None:
        yield Finding(
            path=f"{path}.capacity.reservation_id",
            message=f"required for capacity type {capacity.type}, like {RESERVATION_ID}",
        )
    elif not (len(rid) == 20 and rid.startswith("cr-") and all(c in "0123456789abcdef" for c in rid[3:])):
        yield Finding(
            path=f"{path}.capacity.reservation_id",
            message=f"must be 'cr-' and 17 hex digits, like {RESERVATION_ID} (got {rid!r})",
        )
    if capacity.type == "capacity-block" and not info.supports_capacity_blocks:
        yield Finding(
            path=f"{path}.capacity.type",
            message=f"{info.name} is not sold as Capacity Blocks for ML; use on-demand or reservation",
        )


def _placement(path: str, group: InstanceGroupConfig) -> Iterator[Finding]:
    kind = group.capacity.type
    if group.placement_group and group.placement_group_name:
        yield Finding(
            path=f"{path}.placement_group",
            message="placement_group: true creates a new group, placement_group_name uses an existing one; choose one",
        )
    if group.placement_group and kind == "reservation":
        yield Finding(
            path=f"{path}.placement_group",
            message="a capacity reservation can only be used in the placement group it was created in, and that "
            "cannot be one this stack creates; set placement_group: false, or name the reservation's group in "
            "placement_group_name",
        )
    if kind == "capacity-block" and (group.placement_group or group.placement_group_name):
        key = "placement_group" if group.placement_group else "placement_group_name"
        yield Finding(
            path=f"{path}.{key}",
            message="a Capacity Block already places its instances close together; a placement group on top can fail "
            "launches with insufficient capacity while the block has room. Remove it",
        )
    placed = group.creates_placement_group or group.placement_group_name is not None
    if group.efa_enabled and not placed and kind == "on-demand":
        yield Finding(
            path=f"{path}.placement_group",
            level="warning",
            message="EFA without a cluster placement group: instances may land far apart, with less bandwidth "
            "and more latency",
        )


def _lustre(lustre: LustreConfig) -> Iterator[Finding]:
    path = "storage.lustre"
    kind = lustre.deployment_type
    cap = lustre.storage_capacity_gib
    if cap not in (1200, 2400) and (cap <= 0 or cap % 2400):
        yield Finding(
            path=f"{path}.storage_capacity_gib",
            message=f"{kind} takes 1200, 2400 or a multiple of 2400 GiB (got {show(cap)})",
        )
    elif cap > LUSTRE_DEFAULT_QUOTA_GIB:
        yield Finding(
            path=f"{path}.storage_capacity_gib",
            level="warning",
            message=f"{cap} GiB is above FSx for Lustre's default quota of {LUSTRE_DEFAULT_QUOTA_GIB:,} GiB per "
            "account and Region: raise the quota in Service Quotas before deploying",
        )
    allowed = LUSTRE_SSD_THROUGHPUT.get(kind)
    if allowed is None and lustre.throughput_mbps_per_tib is not None:
        yield Finding(path=f"{path}.throughput_mbps_per_tib", message=f"{kind} has no throughput setting; remove it")
    if allowed is not None and lustre.throughput not in allowed:
        yield Finding(
            path=f"{path}.throughput_mbps_per_tib",
            message=f"{kind} allows {', '.join(map(str, allowed))} MB/s/TiB (got {lustre.throughput})",
        )
    if lustre.metadata_iops is not None:
        if kind != "PERSISTENT_2":
            yield Finding(
                path=f"{path}.metadata_iops",
                message=f"only PERSISTENT_2 has a metadata configuration, not {kind}",
            )
        elif lustre.metadata_iops not in METADATA_IOPS:
            yield Finding(
                path=f"{path}.metadata_iops",
                message="allowed: 1500, 3000, 6000, 12000, then multiples of 12000 up to 192000 "
                f"(got {lustre.metadata_iops})",
            )
    if lustre.kms_key_arn is not None and kind.startswith("SCRATCH"):
        yield Finding(
            path=f"{path}.kms_key_arn",
            message=f"{kind} file systems use the AWS managed key only; use a PERSISTENT type",
        )
    problem = node_image.mount_path_problem(lustre.mount_path)
    if problem is not None:
        yield Finding(path=f"{path}.mount_path", message=problem)


SLURM_RESERVED_GROUP_NAMES = ("controller", "login")


def _orchestrator(config: ClusterConfig) -> Iterator[Finding]:
    orchestrator = config.orchestrator
    if config.network.database_subnet_ids and not (orchestrator.enabled and orchestrator.accounting == "rds"):
        yield Finding(
            path="network.database_subnet_ids",
            message="only used by the Slurm accounting database: set orchestrator.accounting: rds, or remove it",
        )
    if not orchestrator.enabled:
        return
    for key in ("controller_instance_type", "login_instance_type"):
        name = getattr(orchestrator, key)
        info = catalog.get(name)
        if info is None or "x86_64" not in info.architectures or info.accelerator != "none":
            close = difflib.get_close_matches(name, catalog.instance_types(), n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            yield Finding(
                path=f"orchestrator.{key}",
                message="must be an x86_64 CPU instance type from the catalog, such as m7i.4xlarge "
                f"(got {name!r}{hint if info is None else ''})",
            )
    for i, group in enumerate(config.instance_groups):
        if group.name in SLURM_RESERVED_GROUP_NAMES:
            yield Finding(
                path=f"instance_groups[{i}].name",
                message=f"{group.name!r} is the name of the Slurm {group.name} group; "
                f"with orchestrator slurm, groups cannot be named {' or '.join(SLURM_RESERVED_GROUP_NAMES)}",
            )
        if group.os != SLURM_OS:
            yield Finding(
                path=f"instance_groups[{i}].os",
                message=f"Slurm nodes run {SLURM_OS} (its archive has Slurm 23.11 with dynamic nodes; Ubuntu 22.04 has "
                f"21.08 without them and Amazon Linux 2023 has none); allowed with orchestrator slurm: {SLURM_OS} "
                f"(got {group.os!r})",
            )
    names = [g.name for g in config.instance_groups]
    for partition, members in (orchestrator.partitions or {}).items():
        for member in members:
            if member not in names:
                yield Finding(
                    path=f"orchestrator.partitions.{partition}",
                    message=f"no instance group named {member!r}; instance groups: {', '.join(names)}",
                )
    if config.storage.lustre is None:
        yield Finding(
            path="orchestrator.type",
            message="Slurm keeps its state, the accounting database and users' homes on the file system: "
            "add storage.lustre, or set orchestrator.type: none",
        )
    if orchestrator.accounting == "rds":
        if config.network.uses_existing_vpc and not config.network.database_subnet_ids:
            yield Finding(
                path="network.database_subnet_ids",
                message="required with orchestrator.accounting: rds in your own VPC: two or more subnets in "
                "different zones for the database",
            )
        elif not config.network.uses_existing_vpc and len(catalog.availability_zones(config.region)) < 2:
            yield Finding(
                path="orchestrator.accounting",
                message=f"rds needs a second availability zone and the catalog knows none for {config.region}; "
                "use local or off",
            )
    for partition in orchestrator.partitions or {}:
        if partition.lower() == "default":
            yield Finding(
                path="orchestrator.partitions",
                message="'default' is the name of Slurm's defaults line, not a partition: choose another name",
            )
    for user in orchestrator.users:
        if node_image.is_system_name(user):
            yield Finding(
                path=f"orchestrator.users.{user}",
                message=f"{user!r} is a user or group the node images have already (the operating system, Docker, "
                "Slurm, munge, MariaDB or Session Manager; useradd makes a group of the user's name): "
                "choose another name",
            )
    uids = Counter(orchestrator.users.values())
    for user, uid in orchestrator.users.items():
        if uids[uid] > 1:
            yield Finding(path=f"orchestrator.users.{user}", message=f"uid {uid} is given to more than one user")
