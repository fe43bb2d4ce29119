"""A new VPC's range. Keys are :class:`training_cluster.constructs.ClusterNetwork`'s props; the
config moves them to ``network``'s fields."""

from __future__ import annotations

from ..errors import Finding
from ..ip_ranges import cidr_cautions, cidr_problem
from . import got

PUBLIC_SUBNET_PREFIX_LENGTH = 24
"""The new VPC's public subnet (the NAT gateway's), before the compute subnet."""
DATABASE_SUBNET_PREFIX_LENGTH = 27
"""The small subnets a new VPC gets for a database (:meth:`ClusterNetwork.add_database_subnets`)."""


def network_findings(*, vpc_cidr: str | None) -> list[Finding]:
    """The range of a new VPC (``None``: your own VPC): what AWS refuses (errors) and what it
    allows but is probably not meant (warnings)."""
    if vpc_cidr is None:
        return []
    problem = cidr_problem(vpc_cidr)
    if problem is not None:
        return got("vpc_cidr", problem, vpc_cidr)
    return [Finding(path="vpc_cidr", level="warning", message=caution) for caution in cidr_cautions(vpc_cidr)]
