"""Where a VPC or a subnet may lie: the IPv4 ranges AWS refuses, and those it allows that are
probably not meant.

The Amazon VPC User Guide ("VPC CIDR blocks", IPv4 VPC CIDR blocks): a VPC's IPv4 block is
between /16 and /28; a block from RFC 1918 is recommended, and a publicly routable block outside
it is allowed; some AWS services use 172.17.0.0/16, so avoid it. What no network can use (this
host, loopback, link-local, multicast, reserved) no VPC can either.
"""

from __future__ import annotations

import ipaddress

MIN_PREFIX_LENGTH, MAX_PREFIX_LENGTH = 16, 28
"""The sizes AWS allows for a VPC's block and for a subnet: /16 (65,536 addresses) to /28 (16)."""

REFUSED_RANGES = {
    ipaddress.IPv4Network("0.0.0.0/8"): "'this network' (RFC 1122)",
    ipaddress.IPv4Network("127.0.0.0/8"): "loopback",
    ipaddress.IPv4Network("169.254.0.0/16"): "link-local, where the instance metadata service lives",
    ipaddress.IPv4Network("224.0.0.0/4"): "multicast",
    ipaddress.IPv4Network("240.0.0.0/4"): "reserved (with the broadcast address)",
}
"""Ranges no VPC may use, and what each is."""

PRIVATE_RANGES = tuple(
    ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10")
)
"""RFC 1918, and the shared address space of RFC 6598: not routed on the internet."""

DOCKER_BRIDGE = ipaddress.IPv4Network("172.17.0.0/16")
"""The range of Docker's default bridge (``docker0``) on the nodes' Deep Learning AMIs."""


def cidr_problem(value: str) -> str | None:
    """Why AWS would refuse ``value`` as the block of a VPC or a subnet, or ``None``."""
    try:
        network = ipaddress.IPv4Network(value, strict=True)
    except ValueError:
        return "not an IPv4 CIDR block like 10.0.0.0/16 (an address, a slash, a prefix length)"
    if not MIN_PREFIX_LENGTH <= network.prefixlen <= MAX_PREFIX_LENGTH:
        return (
            f"prefix length must be between /{MIN_PREFIX_LENGTH} and /{MAX_PREFIX_LENGTH}, "
            "as AWS allows for VPCs and subnets"
        )
    for refused, what in REFUSED_RANGES.items():
        if network.overlaps(refused):
            return f"overlaps {refused} ({what}), which no VPC can use; use a private range such as 10.0.0.0/16"
    return None


def cidr_cautions(value: str) -> list[str]:
    """What is allowed about ``value`` (a block :func:`cidr_problem` accepts) but probably not meant."""
    network = ipaddress.IPv4Network(value)
    cautions = []
    if not any(network.subnet_of(r) for r in PRIVATE_RANGES):
        cautions.append(
            f"{value} is publicly routable (outside RFC 1918 and 100.64.0.0/10): AWS allows it, but the nodes "
            "can then never reach the internet hosts in that range, whose addresses the VPC keeps for itself; "
            "use it only for addresses you own, or use a private range such as 10.0.0.0/16"
        )
    if network.overlaps(DOCKER_BRIDGE):
        cautions.append(
            f"{value} overlaps {DOCKER_BRIDGE}, the range of Docker's default bridge (docker0) on the nodes: "
            "containers there cannot reach the VPC's addresses in it, and the VPC User Guide says to avoid it; "
            "use another range such as 10.0.0.0/16"
        )
    return cautions
