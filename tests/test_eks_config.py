"""The EKS part of the config: every rule names its field and what is allowed."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from conftest import errors_of, minimal_config
from training_cluster import ClusterConfig
from training_cluster.rules.eks import (
    DEFAULT_KUBERNETES_VERSION,
    KUBERNETES_VERSIONS,
    TABLE_DATE,
    image_parameter,
    taint_problem,
)

EXISTING = {"vpc_id": "vpc-0123456789abcdef0", "subnet_id": "subnet-0123456789abcdef0"}


ADMIN = "arn:aws:iam::111122223333:role/Admin"


def with_eks(orchestrator: dict[str, Any] | None = None, **group_overrides: Any) -> dict[str, Any]:
    group = {"name": "gpu", "instance_type": "p5.48xlarge", "count": 2, **group_overrides}
    eks = {"type": "eks", "admin_role_arns": [ADMIN], **(orchestrator or {})}
    return minimal_config(instance_groups=[group], orchestrator=eks)


RULES: dict[str, tuple[dict[str, Any], str, str]] = {
    "version not supported": (
        with_eks({"kubernetes_version": "1.30"}),
        "orchestrator.kubernetes_version",
        f"allowed: {', '.join(KUBERNETES_VERSIONS)} (got '1.30')",
    ),
    "version as a YAML number": (
        with_eks({"kubernetes_version": 1.3}),
        "orchestrator.kubernetes_version",
        'write the version in quotes, such as "1.35"',
    ),
    "public endpoint for a private range": (
        with_eks({"endpoint_public_cidrs": ["10.0.0.0/8"]}),
        "orchestrator.endpoint_public_cidrs[0]",
        "is a private range",
    ),
    "public endpoint not a CIDR": (
        with_eks({"endpoint_public_cidrs": ["203.0.113.7/24"]}),
        "orchestrator.endpoint_public_cidrs[0]",
        "with no host bits set (got '203.0.113.7/24')",
    ),
    "admin not a role": (
        with_eks({"admin_role_arns": ["arn:aws:iam::111122223333:user/alice"]}),
        "orchestrator.admin_role_arns[0]",
        "must be an IAM role ARN",
    ),
    "admin listed twice": (
        with_eks({"admin_role_arns": ["arn:aws:iam::111122223333:role/A"] * 2}),
        "orchestrator.admin_role_arns",
        "is listed 2 times",
    ),
    "system group on a GPU type": (
        with_eks({"system_instance_type": "g5.xlarge"}),
        "orchestrator.system_instance_type",
        "x86_64 CPU nodes",
    ),
    "system group on an Arm type": (
        with_eks({"system_instance_type": "m7g.xlarge"}),
        "orchestrator.system_instance_type",
        "x86_64 CPU nodes",
    ),
    "system group size": (
        with_eks({"system_nodes": 0}),
        "orchestrator.system_nodes",
        "greater than or equal to 1",
    ),
    "reserved group name": (
        with_eks(name="system"),
        "instance_groups[0].name",
        "'system' is the name of the EKS system group",
    ),
    "ubuntu on EKS": (
        with_eks(os="ubuntu-24.04"),
        "instance_groups[0].os",
        "allowed: amazon-linux-2023 (got 'ubuntu-24.04')",
    ),
    "taint of no group": (
        with_eks({"taints": {"cpu": ["a=b:NoSchedule"]}}),
        "orchestrator.taints",
        "no instance group named 'cpu'",
    ),
    "taint effect": (
        with_eks({"taints": {"gpu": ["a=b:NoWay"]}}),
        "orchestrator.taints.gpu[0]",
        "effect must be one of NoSchedule, PreferNoSchedule, NoExecute",
    ),
    "taint on the cluster's own prefix": (
        with_eks({"taints": {"gpu": ["training-cluster/node-health-status=Schedulable:NoSchedule"]}}),
        "orchestrator.taints.gpu[0]",
        "are the cluster's own",
    ),
    "two taints of one key and effect": (
        with_eks({"taints": {"gpu": ["a=b:NoSchedule", "a=c:NoSchedule"]}}),
        "orchestrator.taints.gpu[1]",
        "'a=b:NoSchedule' has the same key and effect",
    ),
    "a taint key's prefix over 253 characters": (
        with_eks({"taints": {"gpu": ["a" * 250 + ".com/k:NoSchedule"]}}),
        "orchestrator.taints.gpu[0]",
        "at most 253 characters",
    ),
    "too many taints": (
        with_eks({"taints": {"gpu": [f"k{i}:NoSchedule" for i in range(21)]}}),
        "orchestrator.taints.gpu",
        "at most 20 taints (got 21)",
    ),
    "multicast endpoint range": (
        with_eks({"endpoint_public_cidrs": ["224.0.0.0/4"]}),
        "orchestrator.endpoint_public_cidrs[0]",
        "no internet client has",
    ),
    "this-network endpoint range": (
        with_eks({"endpoint_public_cidrs": ["0.0.0.0/8"]}),
        "orchestrator.endpoint_public_cidrs[0]",
        "no internet client has",
    ),
    "endpoint range twice": (
        with_eks({"endpoint_public_cidrs": ["8.8.8.0/24", "8.8.8.0/24"]}),
        "orchestrator.endpoint_public_cidrs",
        "'8.8.8.0/24' is listed 2 times",
    ),
    "more endpoint ranges than EKS takes": (
        with_eks({"endpoint_public_cidrs": [f"8.8.{i}.0/24" for i in range(41)]}),
        "orchestrator.endpoint_public_cidrs",
        "at most 40 ranges, as EKS allows (got 41)",
    ),
    "too many admins": (
        with_eks({"admin_role_arns": [f"arn:aws:iam::111122223333:role/a{i}" for i in range(26)]}),
        "orchestrator.admin_role_arns",
        "at most 25 roles (got 26)",
    ),
    "service range not private": (
        with_eks({"service_cidr": "8.8.0.0/16"}),
        "orchestrator.service_cidr",
        "must be a private (RFC 1918) range of /12 to /24",
    ),
    "service range in the VPC": (
        {**with_eks(), "network": {"vpc_cidr": "172.20.0.0/16"}},
        "orchestrator.service_cidr",
        "overlaps network.vpc_cidr 172.20.0.0/16",
    ),
    "service range in your subnet": (
        {
            **with_eks(),
            "network": {
                **EXISTING,
                "subnet_cidr": "172.20.16.0/20",
                "control_plane_subnet_ids": ["subnet-0aaaaaaaaaaaaaaa1", "subnet-0bbbbbbbbbbbbbbb2"],
            },
        },
        "orchestrator.service_cidr",
        "overlaps network.subnet_cidr 172.20.16.0/20",
    ),
    "a control-plane subnet twice": (
        {
            **with_eks(),
            "network": {
                **EXISTING,
                "control_plane_subnet_ids": ["subnet-0aaaaaaaaaaaaaaa1", "subnet-0aaaaaaaaaaaaaaa1"],
            },
        },
        "network.control_plane_subnet_ids",
        "a subnet is listed twice",
    ),
    "EKS without auto-repair": (
        {**with_eks(), "auto_repair": {"enabled": False}},
        "auto_repair.enabled",
        "keep auto-repair on, or set orchestrator.components.training_operator: false",
    ),
    "Slurm setting with EKS": (
        with_eks({"login_nodes": 2}),
        "orchestrator.login_nodes",
        "only used with orchestrator.type: slurm; remove it",
    ),
    "EKS setting with Slurm": (
        minimal_config(orchestrator={"type": "slurm", "system_nodes": 3}),
        "orchestrator.system_nodes",
        "only used with orchestrator.type: eks; remove it",
    ),
    "EKS setting with no orchestrator": (
        minimal_config(orchestrator={"type": "none", "kubernetes_version": "1.35"}),
        "orchestrator.kubernetes_version",
        "only used with orchestrator.type: eks; remove it",
    ),
    "own VPC without control-plane subnets": (
        {**with_eks(), "network": EXISTING},
        "network.control_plane_subnet_ids",
        "required with orchestrator.type: eks in your own VPC",
    ),
    "control-plane subnets with a new VPC": (
        {
            **with_eks(),
            "network": {"control_plane_subnet_ids": ["subnet-0aaaaaaaaaaaaaaa1", "subnet-0bbbbbbbbbbbbbbb2"]},
        },
        "network.control_plane_subnet_ids",
        "only with your own VPC",
    ),
    "control-plane subnets without EKS": (
        {
            **minimal_config(),
            "network": {
                **EXISTING,
                "control_plane_subnet_ids": ["subnet-0aaaaaaaaaaaaaaa1", "subnet-0bbbbbbbbbbbbbbb2"],
            },
        },
        "network.control_plane_subnet_ids",
        "only used by the EKS control plane",
    ),
    "one control-plane subnet": (
        {**with_eks(), "network": {**EXISTING, "control_plane_subnet_ids": ["subnet-0aaaaaaaaaaaaaaa1"]}},
        "network.control_plane_subnet_ids",
        "two or more subnets in different zones",
    ),
}


@pytest.mark.parametrize("rule", sorted(RULES))
def test_each_rule_names_the_field_and_what_is_allowed(rule: str) -> None:
    data, path, words = RULES[rule]
    messages = errors_of(copy.deepcopy(data))
    assert any(m.startswith(f"{path}: ") and words in m for m in messages), messages


def test_eks_defaults() -> None:
    config = ClusterConfig.from_dict(with_eks())
    orchestrator = config.orchestrator
    assert (orchestrator.eks, orchestrator.enabled) == (True, False)
    assert orchestrator.kubernetes_version == DEFAULT_KUBERNETES_VERSION
    assert (orchestrator.endpoint_public_cidrs, orchestrator.admin_role_arns) == ([], [ADMIN])
    assert (orchestrator.system_instance_type, orchestrator.system_nodes) == ("m7i.xlarge", 2)
    assert orchestrator.install_components is True
    assert (
        config.instance_groups[0].os == "amazon-linux-2023" and config.warnings() == []
    )  # the EKS images' OS, unless written
    assert config.warnings() == []


def test_no_admin_is_a_warning() -> None:
    data = with_eks()
    del data["orchestrator"]["admin_role_arns"]
    warnings = [str(w) for w in ClusterConfig.from_dict(data).warnings()]
    assert [w.split(":")[0] for w in warnings] == ["orchestrator.admin_role_arns"]
    assert "nobody can use kubectl" in warnings[0]


def test_a_version_past_standard_support_is_a_warning() -> None:
    old = next(v for v, (end, _) in KUBERNETES_VERSIONS.items() if end <= TABLE_DATE)
    warnings = [str(w) for w in ClusterConfig.from_dict(with_eks({"kubernetes_version": old})).warnings()]
    assert any(w.startswith("orchestrator.kubernetes_version: ") and "extended support" in w for w in warnings)


def test_the_whole_internet_on_the_endpoint_is_a_warning() -> None:
    config = ClusterConfig.from_dict(with_eks({"endpoint_public_cidrs": ["0.0.0.0/0"]}))
    assert [w.path for w in config.warnings()] == ["orchestrator.endpoint_public_cidrs[0]"]
    halves = ClusterConfig.from_dict(with_eks({"endpoint_public_cidrs": ["0.0.0.0/1", "128.0.0.0/1"]}))
    assert [w.path for w in halves.warnings()] == ["orchestrator.endpoint_public_cidrs"]
    one = ClusterConfig.from_dict(with_eks({"endpoint_public_cidrs": ["198.51.100.0/24"]}))
    assert one.warnings() == []


@pytest.mark.parametrize(
    ("taint", "ok"),
    [
        ("dedicated=gpu:NoSchedule", True),
        ("nvidia.com/gpu:NoSchedule", True),
        ("example.com/x=y:NoExecute", True),
        ("dedicated=gpu", False),
        ("node.kubernetes.io/unschedulable:NoSchedule", False),
        ("a=b:NoSchedule,c=d:NoSchedule", False),  # one taint per entry: a comma would add a second
        ("a=b c:NoSchedule", False),
        ("a=b:NoSchedule\n", False),
    ],
)
def test_taints(taint: str, ok: bool) -> None:
    assert (taint_problem(taint) is None) is ok


def test_image_parameters_follow_the_accelerator() -> None:
    base = "/aws/service/eks/optimized-ami/1.35/amazon-linux-2023/x86_64"
    assert image_parameter("1.35", "p5.48xlarge") == f"{base}/nvidia/recommended/image_id"
    assert image_parameter("1.35", "trn2.48xlarge") == f"{base}/neuron/recommended/image_id"
    assert image_parameter("1.35", "inf2.xlarge") == f"{base}/neuron/recommended/image_id"
    assert image_parameter("1.35", "m7i.xlarge") == f"{base}/standard/recommended/image_id"


def _families() -> dict[str, str]:
    """One instance type per accelerator family in the catalog (the largest of each)."""
    from training_cluster import catalog

    out: dict[str, str] = {}
    for name in catalog.instance_types():
        info = catalog.get(name)
        assert info is not None
        if info.accelerator != "none":
            family = name.split(".")[0]
            if family not in out or (info.vcpus > catalog.get(out[family]).vcpus):  # type: ignore[union-attr]
                out[family] = name
    return out


def test_the_families_include_fractional_gpus_and_ultraservers() -> None:
    """g6f has a fraction of an L4 (no whole GPU counted); trn2u's EC2 record lacks its Neuron devices."""
    assert {"g6f", "trn2u"} <= set(_families())


@pytest.mark.parametrize("instance_type", sorted(_families().values()))
def test_every_catalogued_accelerator_family_runs_on_eks(instance_type: str) -> None:
    from training_cluster import catalog

    info = catalog.get(instance_type)
    assert info is not None
    region, zone = next(
        (region, zone)
        for region in ("us-east-1", "us-east-2", "us-west-2", *sorted(info.offered_in))
        for zone in catalog.availability_zones(region)
        if info.is_offered_in(zone)
    )
    data = with_eks()
    data.update(region=region, availability_zone=zone)
    data["instance_groups"][0]["instance_type"] = instance_type
    config = ClusterConfig.from_dict(data)
    assert config.instance_groups[0].os == "amazon-linux-2023" and config.warnings() == []
    variant = {"nvidia": "nvidia", "neuron": "neuron"}[info.accelerator]
    assert f"/{variant}/recommended/image_id" in image_parameter(DEFAULT_KUBERNETES_VERSION, instance_type)


def test_a_bare_address_is_not_a_public_range() -> None:
    data = with_eks({"endpoint_public_cidrs": ["203.0.113.5"]})
    assert [e for e in errors_of(data) if e.startswith("orchestrator.endpoint_public_cidrs")] == [
        "orchestrator.endpoint_public_cidrs[0]: must be an IPv4 CIDR block such as 203.0.113.0/24, with no host bits "
        "set (got '203.0.113.5')"
    ]


def test_an_overlap_suggests_only_free_ranges_and_an_unknowable_one_warns() -> None:
    data = with_eks({"service_cidr": "172.20.0.0/16"})
    data["network"] = {"vpc_cidr": "172.20.0.0/16"}
    (error,) = [e for e in errors_of(data) if e.startswith("orchestrator.service_cidr")]
    assert "such as 192.168.0.0/16 or 10.100.0.0/16" in error
    own = with_eks()
    own["network"] = {**EXISTING}  # no subnet_cidr
    own["network"]["control_plane_subnet_ids"] = ["subnet-0aaaaaaaaaaaaaaa1", "subnet-0bbbbbbbbbbbbbbb2"]
    warnings = [str(w) for w in ClusterConfig.from_dict(own).warnings() if w.path == "orchestrator.service_cidr"]
    assert len(warnings) == 1 and "without network.subnet_cidr" in warnings[0]


def test_the_subnet_check_counts_each_nodes_pod_addresses_at_a_thousand_nodes() -> None:
    """The VPC CNI gives pods addresses of the compute subnet: 1,024 p5 nodes and two system nodes
    at 16 + 2 each, with the 25% headroom, need 24,380 of a /17's 32,768, more than a /18 has."""
    data = with_eks({"pod_addresses_per_node": 16})
    data["instance_groups"] = [{"name": "gpu", "instance_type": "p5.48xlarge", "count": 1024}]
    data["network"] = {"compute_subnet_prefix_length": 18}
    assert [e for e in errors_of(data) if e.startswith("network.")] == [
        "network.compute_subnet_prefix_length: the compute subnet has 16384 addresses but the cluster needs 24,380 "
        "(fleet and its pods (orchestrator.pod_addresses_per_node) with 25% headroom for replacements, "
        "file system, endpoints, 5 AWS reserves); use /17 or larger"
    ]
    data["network"] = {"compute_subnet_prefix_length": 17}
    ClusterConfig.from_dict(data)  # fits
    data["orchestrator"]["pod_addresses_per_node"] = 3
    assert errors_of(data) == [
        "orchestrator.pod_addresses_per_node: must be between 4 and 250 addresses per node (got 3)"
    ]
