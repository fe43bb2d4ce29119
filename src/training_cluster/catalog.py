"""Instance-type facts the cluster needs, read from the committed ``catalog.json``.

The catalog is generated from the EC2 ``DescribeInstanceTypes`` records that moto ships
(``scripts/generate_catalog.py``), so synthesis never calls AWS.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any, Literal

InterfaceType = Literal["interface", "efa", "efa-only"]


@dataclass(frozen=True, kw_only=True)
class NetworkCard:
    """One network card of an instance type."""

    index: int
    efa: bool
    max_interfaces: int
    gbps: float


@dataclass(frozen=True, kw_only=True)
class NetworkInterfaceSlot:
    """One network interface of a launch template: where it sits and what it is."""

    network_card_index: int
    device_index: int
    interface_type: InterfaceType

    @property
    def takes_ip_address(self) -> bool:
        """``efa-only`` interfaces carry only EFA traffic and take no IP address."""
        return self.interface_type != "efa-only"


@dataclass(frozen=True, kw_only=True)
class InstanceTypeInfo:
    """What the catalog knows about one EC2 instance type."""

    name: str
    architectures: tuple[str, ...]
    vcpus: int
    memory_mib: int
    gpus: int
    gpu_name: str | None
    gpu_memory_mib: int
    neuron_devices: int
    neuron_name: str | None
    max_efa_interfaces: int
    ipv4_per_interface: int
    network_cards: tuple[NetworkCard, ...]
    usage_classes: tuple[str, ...]
    placement_strategies: tuple[str, ...]
    offered_in: dict[str, tuple[str, ...]]

    @property
    def efa_supported(self) -> bool:
        return self.max_efa_interfaces > 0

    @property
    def supports_capacity_blocks(self) -> bool:
        return "capacity-block" in self.usage_classes

    @property
    def accelerator(self) -> Literal["nvidia", "neuron", "none"]:
        """What drives its accelerators. A type with a fraction of a GPU (g6f) counts no whole
        GPU (``gpus`` 0) but still runs the NVIDIA software."""
        if self.gpus or self.gpu_name:
            return "nvidia"
        return "neuron" if self.neuron_devices else "none"

    @property
    def network_gbps(self) -> float:
        return sum(card.gbps for card in self.network_cards)

    def is_offered_in(self, availability_zone: str) -> bool:
        return any(availability_zone in zones for zones in self.offered_in.values())

    def efa_layout(self) -> tuple[NetworkInterfaceSlot, ...]:
        """The network interfaces that give this type its full EFA bandwidth.

        Follows the EC2 User Guide ("Maximize network bandwidth on Amazon EC2 instances with
        multiple network cards"): card 0 device 0 is the primary ENA interface (an ``efa-only``
        interface cannot be primary); card 0 device 1 is ``efa-only`` where card 0 supports EFA;
        device 0 of every further EFA card is ``efa-only``. Cards without EFA (card 0 of
        p6-b300) carry only the primary interface. Never more EFA interfaces than the type
        supports.
        """
        slots = [NetworkInterfaceSlot(network_card_index=0, device_index=0, interface_type="interface")]
        for card in self.network_cards:
            if len(slots) - 1 >= self.max_efa_interfaces:
                break
            if not card.efa:
                continue
            device = 1 if card.index == 0 else 0
            if device >= card.max_interfaces:
                continue
            slots.append(
                NetworkInterfaceSlot(network_card_index=card.index, device_index=device, interface_type="efa-only")
            )
        return tuple(slots)


def efa_interfaces(slots: tuple[NetworkInterfaceSlot, ...]) -> int:
    """The EFA interfaces among a node's network interfaces (each EFA card's ``efa-only`` one)."""
    return sum(1 for slot in slots if slot.interface_type == "efa-only")


@cache
def _data() -> dict[str, Any]:
    text = files("training_cluster").joinpath("catalog.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


@cache
def get(instance_type: str) -> InstanceTypeInfo | None:
    """The catalog entry for ``instance_type``, or ``None`` when the catalog does not know it."""
    raw = _data()["instance_types"].get(instance_type)
    if raw is None:
        return None
    return InstanceTypeInfo(
        name=instance_type,
        architectures=tuple(raw["architectures"]),
        vcpus=raw["vcpus"],
        memory_mib=raw["memory_mib"],
        gpus=raw["gpus"],
        gpu_name=raw["gpu_name"],
        gpu_memory_mib=raw["gpu_memory_mib"],
        neuron_devices=raw["neuron_devices"],
        neuron_name=raw["neuron_name"],
        max_efa_interfaces=raw["max_efa_interfaces"],
        ipv4_per_interface=raw["ipv4_per_interface"],
        network_cards=tuple(NetworkCard(**card) for card in raw["network_cards"]),
        usage_classes=tuple(raw["usage_classes"]),
        placement_strategies=tuple(raw["placement_strategies"]),
        offered_in={
            region: tuple(region + suffix for suffix in zones.split()) for region, zones in raw["offered_in"].items()
        },
    )


def instance_types() -> tuple[str, ...]:
    """Every instance type the catalog knows, sorted."""
    return tuple(sorted(_data()["instance_types"]))


def availability_zones(region: str) -> tuple[str, ...]:
    """The availability zones of ``region`` (empty when the catalog does not know the region)."""
    return tuple(_data()["availability_zones"].get(region, ()))
