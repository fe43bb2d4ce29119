"""What a checked config will deploy, in figures an operator reads before a 25-minute deploy:
nodes and accelerators per group, EFA interfaces and network bandwidth, capacity, addresses in
the compute subnet, and the file system. Pure: the config and the catalog, no aws-cdk-lib."""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass
from typing import Any, Literal

from . import addresses, catalog
from .config import ClusterConfig
from .rules.eks import SYSTEM_GROUP
from .validation import SLURM_CONTROLLER_GROUP, SLURM_LOGIN_GROUP

Role = Literal["compute", "controller", "login", "system"]


@dataclass(frozen=True, kw_only=True)
class GroupPlan:
    name: str
    role: Role
    instance_type: str
    count: int
    gpus_per_node: int
    neuron_devices_per_node: int
    efa_interfaces_per_node: int
    network_gbps_per_node: float
    capacity: str
    """``on-demand``, ``reservation cr-...`` or ``capacity-block cr-...``."""
    addresses_per_node: int
    spares: int = 0
    """Hot spares beside ``count`` (Slurm holds them out of jobs)."""

    @property
    def network_gbps(self) -> float:
        return self.network_gbps_per_node * self.count


@dataclass(frozen=True, kw_only=True)
class FileSystemPlan:
    deployment_type: str
    storage_capacity_gib: int
    throughput_mbps_per_tib: int | None
    mount_path: str

    @property
    def throughput_mbps(self) -> int | None:
        """The file system's aggregate throughput (per-TiB throughput times capacity); ``None`` where
        the type sets no figure per TiB."""
        if self.throughput_mbps_per_tib is None:
            return None
        return self.throughput_mbps_per_tib * self.storage_capacity_gib // 1024


@dataclass(frozen=True, kw_only=True)
class Plan:
    cluster: str
    region: str
    availability_zone: str
    groups: tuple[GroupPlan, ...]
    backend: str
    """``self-managed`` or ``hyperpod``."""
    subnet_addresses_needed: int
    """Addresses the compute subnet must hold (nodes with 25% headroom for replacements, file
    servers, endpoints, AWS's 5 reserved): what the subnet check compares."""
    subnet_addresses: int | None
    """Addresses in the compute subnet; ``None`` for a subnet of yours whose range the config does
    not give (``network.subnet_cidr``)."""
    file_system: FileSystemPlan | None

    @property
    def nodes(self) -> int:
        return sum(g.count for g in self.groups)

    @property
    def gpus(self) -> int:
        return sum(g.gpus_per_node * g.count for g in self.groups)

    @property
    def neuron_devices(self) -> int:
        return sum(g.neuron_devices_per_node * g.count for g in self.groups)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["groups"] = [{**asdict(g), "network_gbps": g.network_gbps} for g in self.groups]
        if self.file_system is not None:
            out["file_system"] = {**asdict(self.file_system), "throughput_mbps": self.file_system.throughput_mbps}
        out.update(nodes=self.nodes, gpus=self.gpus, neuron_devices=self.neuron_devices)
        return out


def plan(config: ClusterConfig) -> Plan:
    """The plan of a config that passed its checks (every instance type is in the catalog)."""
    groups = [
        GroupPlan(
            name=group.name,
            role="compute",
            instance_type=group.instance_type,
            count=group.count,
            gpus_per_node=group.instance_info.gpus,
            neuron_devices_per_node=group.instance_info.neuron_devices,
            efa_interfaces_per_node=catalog.efa_interfaces(group.instance_info.efa_layout())
            if group.efa_enabled
            else 0,
            network_gbps_per_node=group.instance_info.network_gbps,
            capacity="training plan"
            if group.training_plan_arn
            else " ".join(filter(None, (group.capacity.type, group.capacity.reservation_id))),
            addresses_per_node=addresses.group_ip_addresses(group),
            spares=group.spares,
        )
        for group in config.instance_groups
    ]
    orchestrator = config.orchestrator
    cpu: list[tuple[str, Role, str, int]] = []
    if orchestrator.enabled:
        cpu = [(SLURM_CONTROLLER_GROUP, "controller", orchestrator.controller_instance_type, 1)]
        if orchestrator.login_nodes:
            cpu.append((SLURM_LOGIN_GROUP, "login", orchestrator.login_instance_type, orchestrator.login_nodes))
    if orchestrator.eks:
        cpu = [(SYSTEM_GROUP, "system", orchestrator.system_instance_type, orchestrator.system_nodes)]
    if cpu:
        for name, role, instance_type, count in cpu:
            info = catalog.get(instance_type)
            assert info is not None  # checked
            groups.append(
                GroupPlan(
                    name=name,
                    role=role,
                    instance_type=instance_type,
                    count=count,
                    gpus_per_node=info.gpus,
                    neuron_devices_per_node=info.neuron_devices,
                    efa_interfaces_per_node=0,
                    network_gbps_per_node=info.network_gbps,
                    capacity="on-demand",
                    addresses_per_node=1,
                )
            )
    net = config.network
    if net.uses_existing_vpc:
        size = ipaddress.IPv4Network(net.subnet_cidr).num_addresses if net.subnet_cidr else None
    else:
        size = 2 ** (32 - net.compute_subnet_prefix_length)
    lustre = config.storage.lustre
    file_system = (
        FileSystemPlan(
            deployment_type=lustre.deployment_type,
            storage_capacity_gib=lustre.storage_capacity_gib,
            throughput_mbps_per_tib=lustre.throughput,
            mount_path=lustre.mount_path,
        )
        if lustre is not None
        else None
    )
    return Plan(
        cluster=config.name,
        region=config.region,
        availability_zone=config.availability_zone,
        groups=tuple(groups),
        backend=config.backend,
        subnet_addresses_needed=addresses.compute_subnet_addresses_needed(config),
        subnet_addresses=size,
        file_system=file_system,
    )
