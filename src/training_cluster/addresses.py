"""Whether the cluster fits its network: the range of the VPC or subnet, the new VPC's layout, and
the addresses the compute subnet must hold. Part of :func:`training_cluster.validation.check`."""

from __future__ import annotations

import ipaddress
import math
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from . import catalog, ip_ranges
from .errors import Finding
from .rules import eks as eks_rules
from .rules import lustre as lustre_rules
from .rules.network import DATABASE_SUBNET_PREFIX_LENGTH, PUBLIC_SUBNET_PREFIX_LENGTH

if TYPE_CHECKING:  # the config imports the checks that import this module
    from .config import ClusterConfig, InstanceGroupConfig, LustreConfig

AWS_RESERVED_ADDRESSES_PER_SUBNET = 5
INTERFACE_ENDPOINTS = 5  # ssm, ssmmessages, ec2messages, logs, monitoring: one address each
REPLACEMENT_HEADROOM = 0.25  # replacements in flight hold a second address for a while


def _cautions(path: str, cidr: str) -> Iterator[Finding]:
    for caution in ip_ranges.cidr_cautions(cidr):
        yield Finding(path=path, level="warning", message=caution)


def network(config: ClusterConfig) -> Iterator[Finding]:
    """Your own VPC and subnet, or the new VPC: given together, in ranges meant, and big enough."""
    net = config.network
    if (net.vpc_id is None) != (net.subnet_id is None):
        missing = "subnet_id" if net.subnet_id is None else "vpc_id"
        yield Finding(
            path=f"network.{missing}",
            message="required when using your own VPC: give both vpc_id and subnet_id",
        )
    if net.database_subnet_ids:
        for subnet, n in Counter(net.database_subnet_ids).items():
            if n > 1:
                yield Finding(
                    path="network.database_subnet_ids",
                    message=f"{subnet} is listed {n} times; give two or more different subnets, in different zones",
                )
    if net.uses_existing_vpc:
        for key in ("vpc_cidr", "compute_subnet_prefix_length", "interface_endpoints", "flow_logs"):
            if key in net.model_fields_set:
                yield Finding(path=f"network.{key}", message="applies to a new VPC only; remove it, or remove vpc_id")
        if net.subnet_cidr is not None:
            yield from _cautions("network.subnet_cidr", net.subnet_cidr)
        return
    yield from _cautions("network.vpc_cidr", net.vpc_cidr)
    if net.subnet_cidr is not None:
        yield Finding(path="network.subnet_cidr", message="applies to your own subnet only (with vpc_id and subnet_id)")
    vpc = ipaddress.IPv4Network(net.vpc_cidr)
    prefix = net.compute_subnet_prefix_length
    database = _new_vpc_database_subnets(config)
    if _layout_size(prefix, database) > vpc.num_addresses:
        fitting = [p for p in range(16, 27) if _layout_size(p, database) <= vpc.num_addresses]
        smallest = 32 - (_layout_size(prefix, database) - 1).bit_length()
        layout = f"a public /{PUBLIC_SUBNET_PREFIX_LENGTH} subnet and the /{prefix} compute subnet" + (
            f" and {database} /{DATABASE_SUBNET_PREFIX_LENGTH} database subnets" if database else ""
        )
        if "compute_subnet_prefix_length" in net.model_fields_set and fitting:
            yield Finding(
                path="network.compute_subnet_prefix_length",
                message=f"/{prefix} does not fit in the VPC {net.vpc_cidr} beside its other subnets; allowed: "
                f"/{fitting[0]} to /26, or a VPC of /{smallest} or larger",
            )
        else:
            yield Finding(
                path="network.vpc_cidr",
                message=f"{net.vpc_cidr} is too small for {layout}; the smallest VPC that holds them is a "
                f"/{smallest}, such as 10.0.0.0/{smallest}"
                + ("" if smallest >= 16 else "; VPCs go up to /16, so choose a smaller compute_subnet_prefix_length"),
            )


def _new_vpc_database_subnets(config: ClusterConfig) -> int:
    """Small isolated subnets a new VPC gets: two for Slurm's RDS database, two for the EKS control plane."""
    orchestrator = config.orchestrator
    return 2 if (orchestrator.enabled and orchestrator.accounting == "rds") or orchestrator.eks else 0


def _layout_size(compute_prefix: int, database_subnets: int) -> int:
    """The smallest VPC (in addresses, a power of two) that holds the new VPC's subnets as the
    CDK lays them out: the public subnet, then the compute subnet, each aligned to its size;
    then the database subnets in the first free blocks."""
    public, compute = 1 << (32 - PUBLIC_SUBNET_PREFIX_LENGTH), 1 << (32 - compute_prefix)
    compute_start = -(-public // compute) * compute
    end = compute_start + compute
    database = 1 << (32 - DATABASE_SUBNET_PREFIX_LENGTH)
    gap_blocks = (compute_start - public) // database
    end += database * max(0, database_subnets - gap_blocks)
    return 1 << (end - 1).bit_length()


def lustre_ip_addresses(lustre: LustreConfig) -> int:
    """Addresses a file system takes in its subnet: one per metadata server and per storage server
    (FSx for Lustre User Guide, "IP addresses for file systems": 2.4 TiB per storage server for
    SSD types without EFA; one more metadata server per 12,000 provisioned metadata IOPS)."""
    storage_servers = math.ceil(lustre.storage_capacity_gib / lustre_rules.GIB_PER_STORAGE_SERVER)
    metadata_servers = max(1, (lustre.metadata_iops or 0) // 12000)
    return storage_servers + metadata_servers


def group_ip_addresses(group: InstanceGroupConfig) -> int:
    """Addresses one instance of the group takes: its interfaces that carry an IP address."""
    if not group.efa_enabled:
        return 1
    return sum(1 for slot in group.instance_info.efa_layout() if slot.takes_ip_address)


def compute_subnet_addresses_needed(config: ClusterConfig) -> int:
    fleet = sum(group_ip_addresses(g) * (g.count + g.spares) for g in config.instance_groups)
    if config.orchestrator.enabled:
        fleet += 1 + config.orchestrator.login_nodes  # the controller and login nodes: one ENA interface each
    if config.orchestrator.eks:
        fleet += config.orchestrator.system_nodes  # the system group: one ENA interface each
        nodes = sum(g.count + g.spares for g in config.instance_groups) + config.orchestrator.system_nodes
        # and every node's pods, their addresses from the same subnet (the VPC CNI)
        fleet += nodes * eks_rules.pod_addresses_per_node(config.orchestrator.pod_addresses_per_node)
    lustre = lustre_ip_addresses(config.storage.lustre) if config.storage.lustre else 0
    endpoints = (
        INTERFACE_ENDPOINTS if config.network.interface_endpoints and not config.network.uses_existing_vpc else 0
    )
    return math.ceil(fleet * (1 + REPLACEMENT_HEADROOM)) + lustre + endpoints + AWS_RESERVED_ADDRESSES_PER_SUBNET


def subnet_capacity(config: ClusterConfig) -> Iterator[Finding]:
    if any(catalog.get(g.instance_type) is None for g in config.instance_groups):
        return  # reported already
    lustre = config.storage.lustre
    if lustre is not None and lustre_rules.storage_capacity_problem(lustre.storage_capacity_gib) is not None:
        return  # more file servers than any subnet holds: reported on storage_capacity_gib
    net = config.network
    if net.uses_existing_vpc:
        if net.subnet_cidr is None:
            return
        path, size = "network.subnet_cidr", ipaddress.IPv4Network(net.subnet_cidr).num_addresses
    else:
        path, size = "network.compute_subnet_prefix_length", 2 ** (32 - net.compute_subnet_prefix_length)
    needed = compute_subnet_addresses_needed(config)
    if needed > size:
        fits = 32 - (needed - 1).bit_length()
        advice = f"use /{fits} or larger" if fits >= 16 else "more than a /16 subnet holds: split the cluster"
        yield Finding(
            path=path,
            message=f"the compute subnet has {size} addresses but the cluster needs {needed:,} (fleet"
            + (" and its pods (orchestrator.pod_addresses_per_node)" if config.orchestrator.eks else "")
            + f" with {int(REPLACEMENT_HEADROOM * 100)}% headroom for replacements, file system, endpoints, 5 AWS "
            f"reserves); {advice}",
        )
