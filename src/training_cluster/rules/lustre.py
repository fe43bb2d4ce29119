"""An FSx for Lustre file system's props, by deployment type.

Keys are :class:`training_cluster.constructs.LustreFileSystem`'s props; the config moves them to
``storage.lustre``'s fields (``kms_key`` to ``kms_key_arn``).
"""

from __future__ import annotations

import posixpath
import re

from .. import node_image
from ..errors import Finding, show
from ..patterns import MOUNT_PATH_PATTERN, PATTERN_HINTS, S3_URI_PATTERN
from ..types import LUSTRE_DEPLOYMENT_TYPES, LustreDeploymentType
from . import got, pattern_problem
from .settings import setting_value_problem

COMPRESSION = ("NONE", "LZ4")
DEFAULT_QUOTA_GIB = 100_800
"""FSx for Lustre's default storage quota per account and Region for SSD file systems (adjustable
in Service Quotas; Amazon SageMaker's FSxLustreConfig caps SizeInGiB at the same 100,800 GiB).
Above it the deployment fails unless the quota was raised: a warning, not an error."""
GIB_PER_STORAGE_SERVER = 2400
"""Storage behind one file server, each with an address in the file system's subnet (FSx for Lustre
User Guide, "IP addresses for file systems": 2.4 TiB per storage server for SSD types)."""
MAX_STORAGE_CAPACITY_GIB = (65_536 - 5 - 1) * GIB_PER_STORAGE_SERVER
"""157,272,000 GiB: a bound of this project's, not a documented FSx maximum. FSx documents no largest
Lustre file system (the API's StorageCapacity is any 32-bit integer), but one server per 2,400 GiB
must find an address in one subnet, and the largest subnet AWS allows (a /16) has 65,536, less the
5 AWS reserves and one for the metadata server. Far above the default quota (:data:`DEFAULT_QUOTA_GIB`)."""

THROUGHPUT_MBPS_PER_TIB: dict[str, tuple[int, ...]] = {
    "PERSISTENT_1": (50, 100, 200),
    "PERSISTENT_2": (125, 250, 500, 1000),
}
"""The throughput a persistent SSD type allows, per TiB of storage; scratch types have no setting."""
DEFAULT_THROUGHPUT_MBPS_PER_TIB: dict[str, int] = {"PERSISTENT_1": 200, "PERSISTENT_2": 250}
METADATA_IOPS = (1500, 3000, 6000, *range(12000, 192001, 12000))
"""PERSISTENT_2's user-provisioned metadata IOPS."""
CAPACITY_STEP_GIB: dict[str, int] = {
    "SCRATCH_1": 3600,
    "SCRATCH_2": 2400,
    "PERSISTENT_1": 2400,
    "PERSISTENT_2": 2400,
}
"""Above 2400 GiB (3600 GiB on SCRATCH_1), storage grows in steps of this size."""


def default_throughput(deployment_type: LustreDeploymentType) -> int | None:
    """The throughput a file system gets when none is given: 250 MB/s/TiB on PERSISTENT_2, 200
    on PERSISTENT_1; ``None`` on scratch types, which have no throughput setting."""
    return DEFAULT_THROUGHPUT_MBPS_PER_TIB.get(deployment_type)


def is_scratch(deployment_type: str) -> bool:
    return deployment_type.startswith("SCRATCH")


def storage_capacity_problem(storage_capacity_gib: int) -> str | None:
    """Why no subnet could hold the file servers of ``storage_capacity_gib``, or ``None`` (the sizes
    each deployment type takes are :func:`lustre_findings`' to say)."""
    if storage_capacity_gib > MAX_STORAGE_CAPACITY_GIB:
        return f"must be between 1,200 and {MAX_STORAGE_CAPACITY_GIB:,} GiB"
    return None


def s3_uri_problem(uri: str) -> str | None:
    """Why ``uri`` cannot name an S3 bucket (and prefix), or ``None``. S3 refuses bucket names
    formatted as an IPv4 address, which the URI's shape alone allows."""
    shape = pattern_problem(S3_URI_PATTERN, uri)
    if shape is not None:
        return shape
    bucket = uri.removeprefix("s3://").split("/", 1)[0]
    if re.fullmatch(r"\d{1,3}(\.\d{1,3}){3}", bucket, re.ASCII):
        return f"{PATTERN_HINTS[S3_URI_PATTERN]}: a bucket name is never formatted as an IP address"
    return None


def mount_path_problem(path: str) -> str | None:
    """Why a file system cannot be mounted at ``path`` on every node, or ``None``."""
    shape = pattern_problem(MOUNT_PATH_PATTERN, path)
    if shape is not None:
        return f"{shape} (got {show(path)})"
    normalized = "/" + posixpath.normpath(path).lstrip("/")
    if path != normalized:
        shape = "must be a normalized absolute path (no '.', '..', '//' or trailing '/')"
        return f"{shape}: {normalized!r} (got {show(path)})"
    setting = setting_value_problem(path)
    if setting is not None:
        return f"{setting} (got {show(path)})"
    return node_image.mount_path_problem(path)


def kms_key_region_problem(key_arn: str, region: str) -> str | None:
    """Why FSx in ``region`` cannot use the key ``key_arn`` (a key of another region), or ``None``."""
    parts = key_arn.split(":")
    key_region = parts[3] if len(parts) > 3 else ""
    if key_region == region:
        return None
    return f"the key is in {key_region}, the cluster in {region}: use a key of {region}"


def lustre_findings(
    *,
    deployment_type: str,
    storage_capacity_gib: int,
    throughput_mbps_per_tib: int | None = None,
    metadata_iops: int | None = None,
    compression: str = "LZ4",
    kms_key: bool = False,
    s3_import_path: str | None = None,
    mount_path: str = "/fsx",
    kms_key_arn: str | None = None,
    region: str | None = None,
) -> list[Finding]:
    """Every problem with a file system's props (errors, and warnings). ``kms_key``: whether a
    customer managed key is given; ``kms_key_arn`` and ``region``, when both are known, the key's
    ARN and the file system's region."""
    kind = deployment_type
    if kind not in LUSTRE_DEPLOYMENT_TYPES:
        return got("deployment_type", f"must be one of {', '.join(LUSTRE_DEPLOYMENT_TYPES)}", kind)
    out = []
    cap = storage_capacity_gib
    step = CAPACITY_STEP_GIB[kind]
    allowed_sizes = "1200, 2400" + (", 3600" if step == 3600 else "")
    too_large = storage_capacity_problem(cap)
    if too_large is not None:
        out += got("storage_capacity_gib", too_large, cap)
    elif cap not in (1200, 2400) and (cap <= 0 or cap % step):
        out.append(
            Finding(
                path="storage_capacity_gib",
                message=f"{kind} takes {allowed_sizes} or a multiple of {step} GiB (got {show(cap)})",
            )
        )
    elif cap > DEFAULT_QUOTA_GIB:
        out.append(
            Finding(
                path="storage_capacity_gib",
                level="warning",
                message=f"{cap} GiB is above FSx for Lustre's default quota of {DEFAULT_QUOTA_GIB:,} GiB per "
                "account and Region: raise the quota in Service Quotas before deploying",
            )
        )
    allowed = THROUGHPUT_MBPS_PER_TIB.get(kind)
    if allowed is None and throughput_mbps_per_tib is not None:
        out.append(Finding(path="throughput_mbps_per_tib", message=f"{kind} has no throughput setting; remove it"))
    if allowed is not None and throughput_mbps_per_tib is not None and throughput_mbps_per_tib not in allowed:
        out.append(
            Finding(
                path="throughput_mbps_per_tib",
                message=f"{kind} allows {', '.join(map(str, allowed))} MB/s/TiB (got {show(throughput_mbps_per_tib)})",
            )
        )
    if metadata_iops is not None:
        if kind != "PERSISTENT_2":
            out.append(
                Finding(path="metadata_iops", message=f"only PERSISTENT_2 has a metadata configuration, not {kind}")
            )
        elif metadata_iops not in METADATA_IOPS:
            out.append(
                Finding(
                    path="metadata_iops",
                    message="allowed: 1500, 3000, 6000, 12000, then multiples of 12000 up to 192000 "
                    f"(got {show(metadata_iops)})",
                )
            )
    if compression not in COMPRESSION:
        out += got("compression", f"must be one of {', '.join(COMPRESSION)}", compression)
    if kms_key and is_scratch(kind):
        out.append(
            Finding(path="kms_key", message=f"{kind} file systems use the AWS managed key only; use a PERSISTENT type")
        )
    if kms_key_arn is not None and region is not None:
        problem = kms_key_region_problem(kms_key_arn, region)
        if problem is not None:
            out.append(Finding(path="kms_key", message=problem))
    if s3_import_path is not None:
        out += got("s3_import_path", s3_uri_problem(s3_import_path), s3_import_path)
    problem = mount_path_problem(mount_path)
    if problem is not None:
        out.append(Finding(path="mount_path", message=problem))
    return out
