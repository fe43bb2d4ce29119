"""SageMaker HyperPod as the cluster's backend: which types, regions and options it has.

Keys are :class:`training_cluster.constructs.HyperPodCluster`'s props (``groups[i]``: its
``instance_type``, ``count``, ``deep_health_checks``, ``training_plan_arn``); the config moves
them to its fields, and names the self-managed options HyperPod has no use for with what takes
their place.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from functools import cache

from .. import catalog
from ..errors import Finding
from ..patterns import HYPERPOD_NAME_PATTERN

ML_PREFIX = "ml."
DEEP_HEALTH_CHECKS = ("InstanceStress", "InstanceConnectivity")
"""HyperPod's deep health checks on a new node (``OnStartDeepHealthChecks``)."""
KUBERNETES_VERSIONS = ("1.28", "1.29", "1.30", "1.31", "1.32", "1.33")
"""The Kubernetes versions HyperPod's EKS prerequisites page listed when this release was made."""
MAX_GROUPS = 100
"""Instance groups per HyperPod cluster (``InstanceGroups``, 1 to 100)."""
MAX_INSTANCES_PER_GROUP = 6758
"""``InstanceCount``'s bound in the resource's schema."""
REGIONS = (
    # Where CloudFormation has AWS::SageMaker::Cluster, per cfn-lint 1.58's region schemas (a test
    # compares them); AWS may be ahead of that list: a region outside it is refused.
    "ap-northeast-1", "ap-northeast-2", "ap-south-1", "ap-south-2", "ap-southeast-1", "ap-southeast-2",
    "ap-southeast-3", "ap-southeast-4", "ca-central-1", "eu-central-1", "eu-isoe-west-1", "eu-north-1",
    "eu-south-2", "eu-west-1", "eu-west-2", "eusc-de-east-1", "sa-east-1", "us-east-1", "us-east-2",
    "us-iso-east-1", "us-iso-west-1", "us-isob-east-1", "us-isob-west-1", "us-isof-east-1", "us-isof-south-1",
    "us-west-1", "us-west-2",
)  # fmt: skip
TRAINING_PLAN_ARN = re.compile(
    r"arn:aws[a-z-]*:sagemaker:[a-z0-9-]+:[0-9]{12}:training-plan/[A-Za-z0-9](-*[A-Za-z0-9]){0,62}", re.ASCII
)


@cache
def offered_types() -> frozenset[str]:
    """The ``ml.`` instance types HyperPod clusters take, from botocore's SageMaker service model
    (``ClusterInstanceType``), which ships with boto3: no network."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    return frozenset(model.shape_for("ClusterInstanceType").enum)


def ml_type(instance_type: str) -> str:
    """HyperPod's name of an EC2 instance type: ``p5.48xlarge`` -> ``ml.p5.48xlarge``."""
    return instance_type if instance_type.startswith(ML_PREFIX) else ML_PREFIX + instance_type


def instance_type_problem(instance_type: str) -> str | None:
    """Why HyperPod cannot run a group of ``instance_type`` (an EC2 name), or ``None``."""
    if instance_type.startswith(ML_PREFIX):
        return f"write the EC2 type's name ({instance_type[len(ML_PREFIX) :]}): ml. is added for HyperPod"
    wanted = ml_type(instance_type)
    offered = offered_types()
    if wanted in offered:
        return None
    family = wanted.split(".")[1] if wanted.count(".") >= 2 else ""
    known = sorted(t for t in offered if catalog.get(t[len(ML_PREFIX) :]) is not None)  # what the config takes
    same_family = sorted(t[len(ML_PREFIX) :] for t in known if t.split(".")[1] == family)
    close = same_family or [t[len(ML_PREFIX) :] for t in difflib.get_close_matches(wanted, known, n=5)]
    hint = f"; of that family: {', '.join(close)}" if same_family else (f"; close: {', '.join(close)}" if close else "")
    return f"SageMaker HyperPod does not offer {wanted} (botocore's ClusterInstanceType){hint}"


def region_problem(region: str) -> str | None:
    if region in REGIONS:
        return None
    return f"AWS::SageMaker::Cluster is not available in {region}; allowed: {', '.join(REGIONS)}"


def deep_health_checks_problem(instance_type: str, checks: Sequence[str]) -> str | None:
    """Deep health checks stress accelerators and their network: only accelerator groups have them."""
    unknown = [c for c in checks if c not in DEEP_HEALTH_CHECKS]
    if unknown:
        return f"unknown deep health checks {', '.join(map(repr, unknown))}; allowed: {', '.join(DEEP_HEALTH_CHECKS)}"
    if len(set(checks)) != len(checks):
        return "a deep health check is listed twice"
    info = catalog.get(instance_type)
    if checks and info is not None and info.accelerator == "none":
        return f"deep health checks run only on accelerator (GPU or Trainium) groups; {instance_type} has none: use []"
    return None


def default_deep_health_checks(instance_type: str) -> tuple[str, ...]:
    """On by default for accelerator groups: a new node proves its accelerators first, and its
    EFA (``InstanceConnectivity``: EFA and NCCL tests) where the type has EFA."""
    info = catalog.get(instance_type)
    if info is None or info.accelerator == "none":
        return ()
    return DEEP_HEALTH_CHECKS if info.efa_supported else ("InstanceStress",)


def partitions_problem(partitions: Sequence[str]) -> str | None:
    """Why HyperPod cannot put a group in ``partitions``, or ``None``: one partition at most,
    named as HyperPod names things."""
    if len(partitions) > 1 or any(not re.fullmatch(HYPERPOD_NAME_PATTERN, p) for p in partitions):
        return "HyperPod puts a group in one partition at most, named with letters, digits and hyphens"
    return None


def partition_of(region: str) -> str:
    """The AWS partition a region is in."""
    for prefix, partition in (("cn-", "aws-cn"), ("us-gov-", "aws-us-gov"), ("us-isob-", "aws-iso-b"),
                              ("us-isof-", "aws-iso-f"), ("eu-isoe-", "aws-iso-e"), ("us-iso-", "aws-iso"),
                              ("eusc-", "aws-eusc")):  # fmt: skip
        if region.startswith(prefix):
            return partition
    return "aws"


def training_plan_problem(arn: str) -> str | None:
    if TRAINING_PLAN_ARN.fullmatch(arn):
        return None
    return "must be a SageMaker training plan ARN, arn:aws:sagemaker:<region>:<account>:training-plan/<name>"


def hyperpod_group_findings(
    path: str,
    *,
    instance_type: str,
    count: int,
    deep_health_checks: Sequence[str] | None,
    training_plan_arn: str | None,
    region: str | None,
) -> list[Finding]:
    """The rules of one HyperPod instance group, at the config's ``path``; a training plan is
    compared with ``region`` when it is known (None: an environment-agnostic stack)."""
    findings: list[Finding] = []
    problem = instance_type_problem(instance_type)
    if problem is not None:
        findings.append(Finding(path=f"{path}.instance_type", message=problem))
    if count > MAX_INSTANCES_PER_GROUP:
        findings.append(Finding(path=f"{path}.count", message=f"at most {MAX_INSTANCES_PER_GROUP} in a HyperPod group"))
    if deep_health_checks is not None:
        problem = deep_health_checks_problem(instance_type, deep_health_checks)
        if problem is not None:
            findings.append(Finding(path=f"{path}.deep_health_checks", message=problem))
    if training_plan_arn is not None:
        problem = training_plan_problem(training_plan_arn)
        parts = training_plan_arn.split(":")
        if problem is None and region is not None and parts[3] != region:
            problem = f"the training plan is in {parts[3]}, not in the cluster's region {region}"
        elif problem is None and region is not None and parts[1] != partition_of(region):
            problem = f"the training plan's partition is {parts[1]}, not {partition_of(region)}, the region's"
        if problem is not None:
            findings.append(Finding(path=f"{path}.training_plan_arn", message=problem))
    return findings


def kubernetes_version_warning(version: str) -> str | None:
    """Why an EKS cluster of ``version`` may not take HyperPod's nodes (a warning: HyperPod adds
    versions after EKS, and this release cannot ask), or ``None``."""
    if version in KUBERNETES_VERSIONS:
        return None
    return (
        f"HyperPod's documentation listed Kubernetes {KUBERNETES_VERSIONS[0]} to {KUBERNETES_VERSIONS[-1]} when this "
        f"release was made, not {version}: check that HyperPod supports {version} before deploying"
    )
