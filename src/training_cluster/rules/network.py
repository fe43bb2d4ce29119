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


def zone_region_problem(availability_zone: str, region: str) -> str | None:
    """Why ``availability_zone`` is not a zone of ``region`` by its name (a zone is named after
    its region, then a letter: us-east-1a; a Local Zone's name goes on with a hyphen), or ``None``."""
    rest = availability_zone[len(region) :]
    if availability_zone.startswith(region) and rest and not rest[0].isdigit():
        return None
    return (
        f"{availability_zone!r} is not in region {region!r}; an availability zone of {region} is named like {region}a"
    )


def network_findings(
    *, vpc_cidr: str | None, availability_zone: str | None = None, region: str | None = None
) -> list[Finding]:
    """The range of a new VPC (``None``: your own VPC): what AWS refuses (errors) and what it
    allows but is probably not meant (warnings); and the zone against the region, when both are
    given."""
    out: list[Finding] = []
    if availability_zone is not None and region is not None:
        problem = zone_region_problem(availability_zone, region)
        if problem is not None:
            out.append(Finding(path="availability_zone", message=problem))
    return out + _cidr_findings(vpc_cidr)


def _cidr_findings(vpc_cidr: str | None) -> list[Finding]:
    if vpc_cidr is None:
        return []
    problem = cidr_problem(vpc_cidr)
    if problem is not None:
        return got("vpc_cidr", problem, vpc_cidr)
    return [Finding(path="vpc_cidr", level="warning", message=caution) for caution in cidr_cautions(vpc_cidr)]
