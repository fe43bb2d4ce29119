"""Cross-field rules: what the field types alone cannot say, checked before anything deploys.

``check(config)`` returns every finding at once; errors stop synthesis, warnings become CDK
warning annotations on the stack.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
from collections import Counter
from collections.abc import Iterator

from . import catalog
from .config import SLURM_OS, ClusterConfig, InstanceGroupConfig, LustreConfig
from .errors import Finding

RESERVATION_ID = "cr-0123456789abcdef0"
AWS_RESERVED_ADDRESSES_PER_SUBNET = 5
INTERFACE_ENDPOINTS = 5  # ssm, ssmmessages, ec2messages, logs, monitoring: one address each
PUBLIC_SUBNET_PREFIX_LENGTH = 24
REPLACEMENT_HEADROOM = 0.25  # replacements in flight hold a second address for a while

LUSTRE_SSD_THROUGHPUT = {"PERSISTENT_1": (50, 100, 200), "PERSISTENT_2": (125, 250, 500, 1000)}
METADATA_IOPS = (1500, 3000, 6000, *range(12000, 192001, 12000))


def check(config: ClusterConfig) -> list[Finding]:
    """Every problem with ``config``: errors and warnings."""
    return [
        *_observability(config),
        *_zone(config),
        *_network(config),
        *_groups(config),
        *(_lustre(config.storage.lustre) if config.storage.lustre else ()),
        *_subnet_capacity(config),
        *_orchestrator(config),
    ]


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


def _network(config: ClusterConfig) -> Iterator[Finding]:
    net = config.network
    if (net.vpc_id is None) != (net.subnet_id is None):
        missing = "subnet_id" if net.subnet_id is None else "vpc_id"
        yield Finding(
            path=f"network.{missing}",
            message="required when using your own VPC: give both vpc_id and subnet_id",
        )
    if net.uses_existing_vpc:
        for key in ("vpc_cidr", "compute_subnet_prefix_length", "interface_endpoints", "flow_logs"):
            if key in net.model_fields_set:
                yield Finding(path=f"network.{key}", message="applies to a new VPC only; remove it, or remove vpc_id")
        return
    if net.subnet_cidr is not None:
        yield Finding(path="network.subnet_cidr", message="applies to your own subnet only (with vpc_id and subnet_id)")
    vpc = ipaddress.IPv4Network(net.vpc_cidr)
    prefix = net.compute_subnet_prefix_length
    if prefix <= vpc.prefixlen:
        yield Finding(
            path="network.compute_subnet_prefix_length",
            message=f"/{prefix} does not fit in the VPC {net.vpc_cidr} beside its public subnet; "
            f"allowed: /{vpc.prefixlen + 1} to /26",
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
    if group.lifecycle_script is not None and not group.lifecycle_script.is_file():
        yield Finding(path=f"{path}.lifecycle_script", message=f"no such file: {str(group.lifecycle_script)!r}")


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
            message=f"{kind} takes 1200, 2400 or a multiple of 2400 GiB (got {cap})",
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
    if lustre.mount_path in ("/", "/tmp", "/home", "/opt", "/var", "/etc", "/usr"):
        yield Finding(
            path=f"{path}.mount_path",
            message=f"{lustre.mount_path!r} is a system folder; use a folder of its own such as /fsx",
        )


def lustre_ip_addresses(lustre: LustreConfig) -> int:
    """Addresses a file system takes in its subnet: one per metadata server and per storage server
    (FSx for Lustre User Guide, "IP addresses for file systems": 2.4 TiB per storage server for
    SSD types without EFA; one more metadata server per 12,000 provisioned metadata IOPS)."""
    storage_servers = math.ceil(lustre.storage_capacity_gib / 2400)
    metadata_servers = max(1, (lustre.metadata_iops or 0) // 12000)
    return storage_servers + metadata_servers


SLURM_RESERVED_GROUP_NAMES = ("controller", "login")
# Accounts the node images (Ubuntu 24.04, its Slurm, munge, MariaDB, Session Manager) have already.
SYSTEM_ACCOUNTS = frozenset((
    "root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news", "uucp", "proxy", "www-data",
    "backup", "list", "irc", "nobody", "_apt", "systemd-network", "systemd-resolve", "systemd-timesync",
    "messagebus", "syslog", "sshd", "polkitd", "ubuntu", "lxd", "slurm", "munge", "mysql", "ssm-user",
))  # fmt: skip


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
        if user in SYSTEM_ACCOUNTS:
            yield Finding(
                path=f"orchestrator.users.{user}",
                message=f"{user!r} is an account of the operating system or of Slurm on the nodes: choose another name",
            )
    uids = Counter(orchestrator.users.values())
    for user, uid in orchestrator.users.items():
        if uids[uid] > 1:
            yield Finding(path=f"orchestrator.users.{user}", message=f"uid {uid} is given to more than one user")


def group_ip_addresses(group: InstanceGroupConfig) -> int:
    """Addresses one instance of the group takes: its interfaces that carry an IP address."""
    if not group.efa_enabled:
        return 1
    return sum(1 for slot in group.instance_info.efa_layout() if slot.takes_ip_address)


def compute_subnet_addresses_needed(config: ClusterConfig) -> int:
    fleet = sum(group_ip_addresses(g) * g.count for g in config.instance_groups)
    if config.orchestrator.enabled:
        fleet += 1 + config.orchestrator.login_nodes  # the controller and login nodes: one ENA interface each
    lustre = lustre_ip_addresses(config.storage.lustre) if config.storage.lustre else 0
    endpoints = (
        INTERFACE_ENDPOINTS if config.network.interface_endpoints and not config.network.uses_existing_vpc else 0
    )
    return math.ceil(fleet * (1 + REPLACEMENT_HEADROOM)) + lustre + endpoints + AWS_RESERVED_ADDRESSES_PER_SUBNET


def _subnet_capacity(config: ClusterConfig) -> Iterator[Finding]:
    if any(catalog.get(g.instance_type) is None for g in config.instance_groups):
        return  # reported already
    net = config.network
    if net.uses_existing_vpc:
        if net.subnet_cidr is None:
            return
        path, size = "network.subnet_cidr", ipaddress.IPv4Network(net.subnet_cidr).num_addresses
    else:
        path, size = "network.compute_subnet_prefix_length", 2 ** (32 - net.compute_subnet_prefix_length)
    needed = compute_subnet_addresses_needed(config)
    if needed > size:
        fits = 32 - math.ceil(math.log2(needed))
        yield Finding(
            path=path,
            message=f"the compute subnet has {size} addresses but the cluster needs {needed} (fleet with "
            f"{int(REPLACEMENT_HEADROOM * 100)}% headroom for replacements, file system, endpoints, 5 AWS reserves); "
            f"use /{fits} or larger",
        )
