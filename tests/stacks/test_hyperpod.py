"""``backend: hyperpod``: the same config as a SageMaker HyperPod cluster (AWS::SageMaker::Cluster)."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aws_cdk import App, Stack
from cfnlint.api import ManualArgs, lint

from conftest import CDK_CONTEXT, GATED, ROOT, Synthesized, errors_of, synthesize
from training_cluster import ClusterConfig
from training_cluster.config import ConfigError
from training_cluster.constructs import ClusterNetwork, LustreFileSystem
from training_cluster.constructs.hyperpod import HyperPodCluster, HyperPodGroup
from training_cluster.contract import LABEL_GROUP
from training_cluster.rules import hyperpod as rules

COMPARED = (
    "AWS::EC2::VPC",
    "AWS::EC2::Subnet",
    "AWS::EC2::SecurityGroup",
    "AWS::FSx::FileSystem",
    "AWS::APS::Workspace",
    "AWS::Grafana::Workspace",
)
"""What must be the same under either backend: the network, the file system, observability."""


@pytest.fixture(scope="module")
def hp_eks(synth: Callable[..., Synthesized]) -> Synthesized:
    return synth(ROOT / "examples" / "hyperpod-eks.yaml")


@pytest.fixture(scope="module")
def hp_slurm(synth: Callable[..., Synthesized]) -> Synthesized:
    return synth(ROOT / "examples" / "hyperpod-slurm.yaml")


def _cluster(s: Synthesized) -> dict[str, Any]:
    (cluster,) = s.resources("AWS::SageMaker::Cluster").values()
    return dict(cluster["Properties"])


def _groups(s: Synthesized) -> dict[str, dict[str, Any]]:
    return {g["InstanceGroupName"]: g for g in _cluster(s)["InstanceGroups"]}


def _logical_id(s: Synthesized, type_name: str) -> str:
    (logical_id,) = s.resources(type_name)
    return logical_id


# The cluster resource ------------------------------------------------------------------------------


def test_the_groups_are_hyperpods_with_ml_types_counts_and_deep_checks(hp_eks: Synthesized) -> None:
    cluster = _cluster(hp_eks)
    assert cluster["ClusterName"] == "demo-hyperpod-eks" and cluster["NodeRecovery"] == "Automatic"
    groups = _groups(hp_eks)
    assert {n: (g["InstanceType"], g["InstanceCount"]) for n, g in groups.items()} == {
        "gpu": ("ml.p5.48xlarge", 2),
        "trn": ("ml.trn1.32xlarge", 2),
        "system": ("ml.m7i.xlarge", 2),
    }
    both = ["InstanceStress", "InstanceConnectivity"]
    assert groups["gpu"]["OnStartDeepHealthChecks"] == both and groups["trn"]["OnStartDeepHealthChecks"] == both
    assert "OnStartDeepHealthChecks" not in groups["system"]  # a CPU group has none
    assert groups["trn"]["ThreadsPerCore"] == 1 and "ThreadsPerCore" not in groups["gpu"]
    taint = {"Key": "aws.amazon.com/neuron", "Value": "true", "Effect": "NoSchedule"}
    assert groups["trn"]["KubernetesConfig"] == {"Labels": {LABEL_GROUP: "trn"}, "Taints": [taint]}
    assert groups["gpu"]["KubernetesConfig"] == {"Labels": {LABEL_GROUP: "gpu"}}  # what jobs select a group by
    roles = {json.dumps(g["ExecutionRole"]) for g in groups.values()}
    assert len(roles) == 1


def test_the_nodes_use_the_clusters_network_and_file_system(hp_eks: Synthesized) -> None:
    cluster = _cluster(hp_eks)
    subnet = hp_eks.stack.network.compute_subnet.node.default_child
    group = hp_eks.stack.network.security_group.node.default_child
    eks_id = _logical_id(hp_eks, "AWS::EKS::Cluster")
    assert cluster["VpcConfig"] == {
        # the EFA group, and the EKS cluster's: the nodes reach the private API endpoint, the
        # control plane their kubelets (review 13, H1)
        "SecurityGroupIds": [
            {"Fn::GetAtt": [hp_eks.stack.get_logical_id(group), "GroupId"]},
            {"Fn::GetAtt": [eks_id, "ClusterSecurityGroupId"]},
        ],
        "Subnets": [{"Ref": hp_eks.stack.get_logical_id(subnet)}],
    }
    fsx = _logical_id(hp_eks, "AWS::FSx::FileSystem")
    for name, group_spec in _groups(hp_eks).items():
        storage = group_spec["InstanceStorageConfigs"]
        # the group's root_volume_gib (500 by default), 100 GiB for the system group as self-managed
        assert storage[0] == {"EbsVolumeConfig": {"VolumeSizeInGB": 100 if name == "system" else 500}}
        assert storage[1] == {
            "FsxLustreConfig": {
                "DnsName": hp_eks.stack.resolve(hp_eks.stack.file_system.dns_name),  # type: ignore[union-attr]
                "MountName": {"Fn::GetAtt": [fsx, "LustreMountName"]},
                "MountPath": "/fsx",
            }
        }


def test_eks_orchestrator_names_the_cluster_and_adds_no_access_entry_of_its_own(hp_eks: Synthesized) -> None:
    cluster = _cluster(hp_eks)
    eks_id = _logical_id(hp_eks, "AWS::EKS::Cluster")
    assert cluster["Orchestrator"] == {"Eks": {"ClusterArn": {"Fn::GetAtt": [eks_id, "Arn"]}}}
    entries = hp_eks.resources("AWS::EKS::AccessEntry").values()
    assert [e["Properties"].get("Type", "STANDARD") for e in entries] == ["STANDARD"]
    assert [e["Properties"]["PrincipalArn"] for e in entries] == ["arn:aws:iam::111122223333:role/Admin"]
    # HyperPod installs its own components: no kubectl provider, no manifests of ours
    assert not [r for r in hp_eks.resources() if "Manifest" in r or "KubectlProvider" in r]
    assert hp_eks.stack.kubernetes_manifests == {}
    # networking add-ons before the nodes; coredns (its pods need nodes) after them
    hyperpod = _logical_id(hp_eks, "AWS::SageMaker::Cluster")
    addons = {r["Properties"]["AddonName"]: (i, r) for i, r in hp_eks.resources("AWS::EKS::Addon").items()}
    assert addons["vpc-cni"][0] in hp_eks.resources()[hyperpod]["DependsOn"]
    assert hyperpod in addons["coredns"][1]["DependsOn"]


def test_no_fleet_or_repair_of_ours_runs_beside_hyperpods(hp_eks: Synthesized, hp_slurm: Synthesized) -> None:
    for s in (hp_eks, hp_slurm):
        for type_name in ("AWS::AutoScaling::AutoScalingGroup", "AWS::EC2::LaunchTemplate", "AWS::EC2::PlacementGroup"):
            assert s.resources(type_name) == {}, type_name
        assert s.stack.auto_repair is None and s.stack.fleets == {} and s.stack.slurm is None
        outputs = s.template_json["Outputs"]
        assert "HyperPodClusterArn" in outputs and "HyperPodLifecycleScripts" in outputs
        assert not [o for o in outputs if o.endswith("AutoScalingGroupName")]


def test_slurm_groups_have_their_node_types_and_partitions(hp_slurm: Synthesized) -> None:
    cluster = _cluster(hp_slurm)
    assert cluster["Orchestrator"] == {"Slurm": {"SlurmConfigStrategy": "Managed"}}
    groups = _groups(hp_slurm)
    assert {n: g["SlurmConfig"] for n, g in groups.items()} == {
        "gpu": {"NodeType": "Compute", "PartitionNames": ["gpu"]},
        "controller": {"NodeType": "Controller"},
        "login": {"NodeType": "Login"},
    }
    assert (groups["controller"]["InstanceType"], groups["login"]["InstanceType"]) == (
        "ml.m7i.4xlarge",
        "ml.m7i.2xlarge",
    )


# The execution role ---------------------------------------------------------------------------------


def _statements(s: Synthesized) -> dict[str, dict[str, Any]]:
    role = s.stack.hyperpod.role  # type: ignore[union-attr]
    policy = s.only(role, "AWS::IAM::Policy")
    return {st["Sid"]: st for st in policy["Properties"]["PolicyDocument"]["Statement"]}


def test_the_execution_role_has_the_instance_policy_and_exactly_what_nodes_need(hp_eks: Synthesized) -> None:
    role = hp_eks.only(hp_eks.stack.hyperpod.role, "AWS::IAM::Role")  # type: ignore[union-attr]
    assert role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
        "Service": "sagemaker.amazonaws.com"
    }
    managed = json.dumps(role["Properties"]["ManagedPolicyArns"])
    for policy in (
        "AmazonSageMakerClusterInstanceRolePolicy",
        "AmazonEC2ContainerRegistryPullOnly",
        "AmazonEKSWorkerNodePolicy",
    ):
        assert policy in managed, policy  # HyperPod's, image pulls, kubelet's and Pod Identity's (review 13, H3)
    statements = _statements(hp_eks)
    assert set(statements) == {
        "NetworkInterfacesInTheClusterSubnet",
        "NewNetworkInterfaces",
        "TagsOnlyWhenCreated",
        "NetworkInterfacesInTheSubnet",
        "DescribeTheNetwork",
        "ListLifecycleScripts",
        "ReadLifecycleScripts",
    }
    assert statements["TagsOnlyWhenCreated"]["Condition"] == {
        "StringEquals": {"ec2:CreateAction": "CreateNetworkInterface"}
    }
    subnet = statements["NetworkInterfacesInTheSubnet"]
    assert "ec2:Subnet" in subnet["Condition"]["ArnEquals"] and "ec2:DeleteNetworkInterface" in subnet["Action"]
    prefix = hp_eks.stack.hyperpod.lifecycle_prefix  # type: ignore[union-attr]
    assert statements["ListLifecycleScripts"]["Condition"] == {"StringLike": {"s3:prefix": [prefix, f"{prefix}*"]}}
    assert statements["ReadLifecycleScripts"]["Action"] == "s3:GetObject"
    assert json.dumps(statements["ReadLifecycleScripts"]["Resource"]).endswith(f'/{prefix}*"]]}}')


# Lifecycle scripts ----------------------------------------------------------------------------------


def test_the_lifecycle_scripts_are_under_a_prefix_named_by_their_content(
    hp_slurm: Synthesized, synth: Callable[..., Synthesized]
) -> None:
    prefix = hp_slurm.stack.hyperpod.lifecycle_prefix  # type: ignore[union-attr]
    assert prefix.startswith("lifecycle/") and prefix.endswith("/") and len(prefix) == len("lifecycle/") + 17
    source = {json.dumps(g["LifeCycleConfig"], sort_keys=True) for g in _groups(hp_slurm).values()}
    (config,) = (json.loads(c) for c in source)
    # after HyperPod's own setup (OnInitComplete; OnCreate would leave the node's setup to us: review 13, H4)
    assert config["OnInitComplete"] == "on_create.sh" and prefix in json.dumps(config["SourceS3Uri"])
    (deployment,) = hp_slurm.resources("Custom::CDKBucketDeployment").values()
    assert deployment["Properties"]["DestinationBucketKeyPrefix"] == prefix
    assert deployment["Properties"]["Prune"] is False and deployment["Properties"]["RetainOnDelete"] is True
    # another user: other settings, so another prefix (nodes made from the old set keep theirs)
    data = hp_slurm.config.model_dump(exclude_unset=True, mode="json")
    data["orchestrator"]["users"] = {"researcher": 2001, "guest": 2002}
    other = synth(ClusterConfig.from_dict(data))
    assert other.stack.hyperpod.lifecycle_prefix != prefix  # type: ignore[union-attr]


def _stand_ins(tmp_path: Path, mounted: bool) -> tuple[Path, Path]:
    """A folder as HyperPod leaves it (the scripts of the prefix), and commands that record calls."""
    from training_cluster.node_bootstrap import node_library

    folder = tmp_path / "lifecycle"
    folder.mkdir()
    (folder / "on_create.sh").write_text((ROOT / "src/training_cluster/hyperpod/on_create.sh").read_text())
    for name, text in node_library().items():
        (folder / name).write_text(text)
    (folder / "settings.env").write_text(
        f"CLUSTER_NAME=demo\nFSX_MOUNT_PATH={tmp_path}/fsx\nCLUSTER_USERS='researcher:2001 guest:2002'\n"
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    scripts = {
        "mountpoint": f'echo "mountpoint $*" >> {calls}; exit {0 if mounted else 1}',
        "getent": f'echo "getent $*" >> {calls}; exit 2',
        "groupadd": f'echo "groupadd $*" >> {calls}',
        "useradd": f'echo "useradd $*" >> {calls}',
        "id": 'case "$2" in researcher) echo 2001;; guest) echo 2002;; esac',
        "chown": f'echo "chown $*" >> {calls}',
        "iptables": f'echo "iptables $*" >> {calls}',
        "systemctl": f'echo "systemctl $*" >> {calls}',
        "apt-get": f'echo "apt-get $*" >> {calls}; exit 1',
        "sleep": "true",
    }
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/bash\n{body}\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return folder, bin_dir


def _run(tmp_path: Path, folder: Path, bin_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "TRAINING_CLUSTER_ETC": str(tmp_path / "etc"),
        "TRAINING_CLUSTER_LOG": str(tmp_path / "lifecycle.log"),
        "TRAINING_CLUSTER_SYSTEMD_DIR": str(tmp_path / "systemd"),
        "MOUNT_WAIT_SECONDS": "10",
    }
    (tmp_path / "systemd").mkdir(exist_ok=True)
    return subprocess.run(["bash", str(folder / "on_create.sh")], env=env, capture_output=True, text=True)


def test_on_create_checks_the_mount_and_makes_the_users_with_homes_on_the_file_system(tmp_path: Path) -> None:
    folder, bin_dir = _stand_ins(tmp_path, mounted=True)
    result = _run(tmp_path, folder, bin_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    homes = f"{tmp_path}/fsx/home"
    assert f"mountpoint -q {tmp_path}/fsx" in calls
    assert "groupadd --gid 2001 researcher" in calls and "groupadd --gid 2002 guest" in calls
    assert (
        f"useradd --uid 2001 --gid 2001 --home-dir {homes}/researcher --no-create-home --shell /bin/bash researcher"
        in calls
    )
    assert (Path(homes) / "guest").is_dir() and oct((Path(homes) / "guest").stat().st_mode)[-3:] == "750"
    assert (tmp_path / "etc" / "cluster.env").read_text() == (folder / "settings.env").read_text()
    assert "done" in (tmp_path / "lifecycle.log").read_text()
    # only root reaches the instance metadata service (the execution role), as on our Slurm nodes
    unit = (tmp_path / "systemd" / "training-cluster-imds.service").read_text()
    assert "OUTPUT -d 169.254.169.254 -m owner ! --uid-owner 0 -j REJECT" in unit
    assert "systemctl start training-cluster-imds.service" in calls


def test_on_create_lets_users_reach_the_role_only_when_the_config_says_so(tmp_path: Path) -> None:
    folder, bin_dir = _stand_ins(tmp_path, mounted=True)
    with (folder / "settings.env").open("a") as settings:
        settings.write("USERS_CAN_USE_NODE_ROLE=true\n")
    assert _run(tmp_path, folder, bin_dir).returncode == 0
    assert not (tmp_path / "systemd" / "training-cluster-imds.service").exists()


def test_on_create_waits_for_the_mount_hyperpod_is_still_making(tmp_path: Path) -> None:
    folder, bin_dir = _stand_ins(tmp_path, mounted=True)
    tries = tmp_path / "tries"
    (bin_dir / "mountpoint").write_text(f"#!/bin/bash\necho x >> {tries}\n[ $(wc -l < {tries}) -ge 3 ]\n")
    assert _run(tmp_path, folder, bin_dir).returncode == 0
    assert len(tries.read_text().split()) == 3  # not mounted twice, then mounted


def test_on_create_fails_the_node_when_the_file_system_is_not_mounted(tmp_path: Path) -> None:
    folder, bin_dir = _stand_ins(tmp_path, mounted=False)
    result = _run(tmp_path, folder, bin_dir)
    assert result.returncode == 1
    assert "not mounted at" in result.stdout and "after 10 s" in result.stdout
    assert "useradd" not in (tmp_path / "calls").read_text()


def test_on_create_passes_shellcheck() -> None:
    script = ROOT / "src/training_cluster/hyperpod/on_create.sh"
    result = subprocess.run(
        ["shellcheck", "--severity=style", "-x", str(script)], capture_output=True, text=True, cwd=script.parent
    )
    assert result.returncode == 0, result.stdout


# The same config under both backends ---------------------------------------------------------------


def test_one_line_switches_the_backend_and_only_the_compute_differs(
    default_cluster: Synthesized, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """``examples/default.yaml`` with ``backend: hyperpod`` added: the network, the file system
    and the observability workspaces are the same resources, with the same properties."""
    data = yaml.safe_load((ROOT / "examples" / "default.yaml").read_text())
    data["backend"] = "hyperpod"
    config = ClusterConfig.from_dict(data)
    # what the default config writes out and HyperPod does its own way is said, not lost
    assert [f.path for f in config.warnings()] == ["instance_groups[0].placement_group", "orchestrator.accounting"]
    hyperpod = synthesize(config, tmp_path_factory.mktemp("default-hyperpod"))
    for type_name in COMPARED:
        mine, theirs = default_cluster.resources(type_name), hyperpod.resources(type_name)
        assert mine and mine == theirs, type_name
    assert default_cluster.resources("AWS::SageMaker::Cluster") == {}
    assert hyperpod.resources("AWS::AutoScaling::AutoScalingGroup") == {}


# The construct alone ---------------------------------------------------------------------------------


def _alone(tmp_path: Path, **kwargs: Any) -> dict[str, Any]:
    app = App(context=CDK_CONTEXT, outdir=str(tmp_path))
    stack = Stack(app, "Alone", env={"region": "us-east-1", "account": "111122223333"})
    network = ClusterNetwork(stack, "Network", availability_zone="us-east-1a")
    file_system = LustreFileSystem(stack, "Fsx", vpc=network.vpc, subnet=network.compute_subnet)
    file_system.allow_clients(network)
    groups = kwargs.pop(
        "groups",
        [
            HyperPodGroup("gpu", "p5.48xlarge", 2, slurm_node_type="Compute"),
            HyperPodGroup("controller", "m7i.4xlarge", 1, slurm_node_type="Controller"),
        ],
    )
    HyperPodCluster(
        stack, "HyperPod", cluster_name="alone", network=network, groups=groups, file_system=file_system, **kwargs
    )
    return dict(app.synth().get_stack_by_name("Alone").template)


def test_the_construct_stands_alone_and_lints_clean(tmp_path: Path) -> None:
    template = _alone(tmp_path)
    (cluster,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::SageMaker::Cluster"]
    assert cluster["Properties"]["Orchestrator"] == {"Slurm": {"SlurmConfigStrategy": "Managed"}}
    ignored = yaml.safe_load((ROOT / ".cfnlintrc.yaml").read_text())["ignore_checks"]
    settings = ManualArgs(regions=["us-east-1"], ignore_checks=ignored)
    assert [f"{m.rule.id} {m.message}" for m in lint(json.dumps(template), config=settings)] == []


@pytest.mark.parametrize(
    ("group", "error"),
    [
        (
            HyperPodGroup("old", "p3.2xlarge", 1),
            "groups[0].instance_type: SageMaker HyperPod does not offer ml.p3.2xlarge",
        ),
        (HyperPodGroup("cpu", "m7i.xlarge", 1, deep_health_checks=["InstanceStress"]), "only on accelerator"),
        (HyperPodGroup("gpu", "p5.48xlarge", 1, deep_health_checks=["Burn"]), "unknown deep health checks 'Burn'"),
        (HyperPodGroup("gpu", "p5.48xlarge", 1, training_plan_arn="plan"), "training plan ARN"),
        (
            HyperPodGroup(
                "gpu", "p5.48xlarge", 1, training_plan_arn="arn:aws:sagemaker:us-west-2:111122223333:training-plan/x"
            ),
            "in us-west-2, not in the cluster's region us-east-1",
        ),
    ],
)
def test_the_construct_refuses_groups_hyperpod_cannot_run(tmp_path: Path, group: HyperPodGroup, error: str) -> None:
    controller = HyperPodGroup("controller", "m7i.4xlarge", 1, slurm_node_type="Controller")
    with pytest.raises(ValueError, match="Alone/HyperPod: .*" + re.escape(error)):
        _alone(tmp_path, groups=[group, controller])


def test_settings_must_be_literal_and_named_as_shell_variables(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="settings must be literal"):
        _alone(tmp_path, settings={"lower": "x"})


# The config's rules ----------------------------------------------------------------------------------


def _hyperpod(**overrides: Any) -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "examples" / "hyperpod-slurm.yaml").read_text())
    for path, value in overrides.items():
        target = data
        *parents, last = path.split(".")
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target.setdefault(key, {})
        target[last] = value
    return data


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"instance_groups.0.capacity": {"type": "capacity-block", "reservation_id": "cr-0123456789abcdef0"}},
            "instance_groups[0].capacity: capacity-block is EC2's; HyperPod takes reserved capacity (Capacity Blocks "
            "included) from a SageMaker training plan: set training_plan_arn instead",
        ),
        (
            {"instance_groups.0.placement_group_name": "pg"},
            "instance_groups[0].placement_group_name: HyperPod places a group's instances itself; remove it",
        ),
        ({"instance_groups.0.efa": "off"}, "instance_groups[0].efa: HyperPod sets up every EFA interface"),
        (
            {"instance_groups.0.image_id": "ami-0123456789abcdef0"},
            "instance_groups[0].image_id: HyperPod's Slurm runs its own image",
        ),
        (
            {"region": "af-south-1", "availability_zone": "af-south-1a"},
            "region: AWS::SageMaker::Cluster is not available in af-south-1",
        ),
        ({"orchestrator": {"type": "none"}}, "orchestrator.type: a HyperPod cluster runs slurm or eks"),
        ({"orchestrator.accounting": "rds"}, "orchestrator.accounting: HyperPod runs its own Slurm"),
        (
            {"orchestrator.controller_instance_type": "m7i.metal-48xl"},
            "orchestrator.controller_instance_type: SageMaker HyperPod does not offer",
        ),
        ({"auto_repair": {"deep_checks": True}}, "auto_repair.deep_checks: HyperPod runs its own deep health checks"),
        (
            {"instance_groups.0.deep_health_checks": ["InstanceStress", "InstanceStress"]},
            "instance_groups[0].deep_health_checks: a deep health check is listed twice",
        ),
        ({"instance_groups.0.threads_per_core": 3}, "instance_groups[0].threads_per_core"),
    ],
)
def test_the_config_refuses_what_hyperpod_cannot_do_naming_what_takes_its_place(
    overrides: dict[str, Any], expected: str
) -> None:
    errors = errors_of(_hyperpod(**overrides))
    assert [e for e in errors if e.startswith(expected)], errors


def test_hyperpod_fields_are_refused_on_the_self_managed_backend() -> None:
    data = _hyperpod(
        **{"instance_groups.0.training_plan_arn": "arn:aws:sagemaker:us-east-1:111122223333:training-plan/p"}
    )
    data["backend"] = "self-managed"
    assert errors_of(data) == [
        "instance_groups[0].deep_health_checks: only used with backend: hyperpod; remove it",
        "instance_groups[0].training_plan_arn: only used with backend: hyperpod; remove it",
    ]


def test_our_kubernetes_components_are_refused_beside_hyperpods() -> None:
    data = yaml.safe_load((ROOT / "examples" / "hyperpod-eks.yaml").read_text())
    data["orchestrator"]["components"] = {"nvidia_device_plugin": True}
    assert errors_of(data) == [
        "orchestrator.components: HyperPod on EKS installs its own health agent and device plugins; ours are not "
        "installed beside them: remove it"
    ]


def test_every_instance_group_limit_is_hyperpods() -> None:
    data = _hyperpod()
    data["instance_groups"] = [{"name": f"g{i}", "instance_type": "p5.48xlarge", "count": 1} for i in range(99)]
    data["orchestrator"]["partitions"] = {"gpu": ["g0"]}
    assert [e for e in errors_of(data) if e.startswith("instance_groups:")] == [
        "instance_groups: a HyperPod cluster has at most 100 instance groups, 2 of them the orchestrator's; got 99 "
        "of yours"
    ]


def test_the_region_table_is_cfn_lints() -> None:
    """Where CloudFormation has AWS::SageMaker::Cluster, by cfn-lint's region schemas."""
    import cfnlint

    providers = Path(cfnlint.__file__).parent / "data" / "schemas" / "providers"
    regions = sorted(p.stem for p in providers.glob("*.json") if "AWS::SageMaker::Cluster" in p.read_text())
    assert list(rules.REGIONS) == regions


def test_the_types_come_from_botocores_model() -> None:
    offered = rules.offered_types()
    assert {"ml.p5.48xlarge", "ml.trn2.48xlarge", "ml.p6-b300.48xlarge", "ml.m7i.xlarge"} <= offered
    assert rules.instance_type_problem("p5.48xlarge") is None
    problem = rules.instance_type_problem("p5.96xlarge")
    assert problem is not None and "of that family: p5.48xlarge, p5.4xlarge" in problem


def test_a_hostile_config_gets_field_errors_not_a_traceback() -> None:
    data = _hyperpod(
        **{"instance_groups.0.deep_health_checks": "InstanceStress", "instance_groups.0.training_plan_arn": 7}
    )
    with pytest.raises(ConfigError) as raised:
        ClusterConfig.from_dict(data)
    paths = [f.path for f in raised.value.findings]
    assert "instance_groups[0].deep_health_checks" in paths and "instance_groups[0].training_plan_arn" in paths


def test_the_own_vpc_variant_is_gated() -> None:
    assert "hyperpod-own-vpc.yaml" in GATED


# HyperPod's repairs in the ledger --------------------------------------------------------------------


def test_hyperpods_events_of_this_cluster_reach_the_ledger_function_which_acts_on_nothing(hp_eks: Synthesized) -> None:
    ledger = hp_eks.stack.hyperpod_ledger
    assert ledger is not None
    hyperpod = _logical_id(hp_eks, "AWS::SageMaker::Cluster")
    rules = hp_eks.resources_of(ledger)
    patterns = [r["Properties"].get("EventPattern") for r in rules.values() if r["Type"] == "AWS::Events::Rule"]
    assert {
        "source": ["aws.sagemaker"],
        "detail-type": ["SageMaker HyperPod Cluster Node Health Event", "SageMaker HyperPod Cluster State Change"],
        "detail": {"ClusterName": ["demo-hyperpod-eks"]},
    } in patterns
    assert {
        "source": ["aws.sagemaker"],
        "detail-type": ["SageMaker HyperPod Cluster Event"],
        "detail": {"EventDetails": {"ClusterName": ["demo-hyperpod-eks"]}},
    } in patterns
    schedules = [r["Properties"].get("ScheduleExpression") for r in rules.values() if r["Type"] == "AWS::Events::Rule"]
    assert "rate(5 minutes)" in schedules
    function = hp_eks.only(ledger.function, "AWS::Lambda::Function")["Properties"]
    assert function["Handler"] == "handler.hyperpod" and function["ReservedConcurrentExecutions"] == 1
    statements = hp_eks.only(ledger.function.role, "AWS::IAM::Policy")["Properties"]["PolicyDocument"]["Statement"]
    actions = sorted({a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])})
    assert not [a for a in actions if a.startswith(("ec2:", "autoscaling:", "ssm:"))]
    assert [a for a in actions if a.startswith("sagemaker:")] == [
        "sagemaker:DescribeClusterNode",
        "sagemaker:ListClusterNodes",
    ]
    (read,) = [s for s in statements if s.get("Sid") == "ReadTheClustersNodes"]
    assert read["Resource"] == {"Fn::GetAtt": [hyperpod, "ClusterArn"]}
    assert "RepairLedgerTableName" in hp_eks.template_json["Outputs"]


def test_without_auto_repair_no_ledger_is_made(synth: Callable[..., Synthesized]) -> None:
    data = yaml.safe_load((ROOT / "examples" / "hyperpod-slurm.yaml").read_text())
    data["auto_repair"] = {"enabled": False}
    s = synth(ClusterConfig.from_dict(data))
    assert s.stack.hyperpod_ledger is None and s.resources("AWS::DynamoDB::Table") == {}


def test_the_dashboard_shows_what_hyperpod_found_per_group(hp_slurm: Synthesized) -> None:
    (dashboard,) = hp_slurm.resources("AWS::CloudWatch::Dashboard").values()
    body = json.dumps(dashboard["Properties"]["DashboardBody"])
    assert "Nodes HyperPod found unhealthy" in body and "Nodes in service" not in body
    for group in ("gpu", "controller", "login"):
        assert f'\\"InstanceGroup\\",\\"{group}\\"' in body, group
    with pytest.raises(ValueError, match="one of the cluster's groups"):
        hp_slurm.stack.hyperpod_ledger.metric_incidents("nope")  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("groups", "settings", "error"),
    [
        (
            [HyperPodGroup("gpu", "p5.48xlarge", 1, slurm_node_type="Compute")] * 2
            + [HyperPodGroup("controller", "m7i.4xlarge", 1, slurm_node_type="Controller")],
            {},
            "'gpu' is given twice",
        ),
        (
            [HyperPodGroup("gpu", "p5.48xlarge", 1, slurm_node_type="Compute")],
            {},
            "exactly one group of slurm_node_type Controller",
        ),
        (
            [
                HyperPodGroup("gpu", "p5.48xlarge", 1, slurm_node_type="Compute", taints=["a=b:NoSchedule"]),
                HyperPodGroup("controller", "m7i.4xlarge", 1, slurm_node_type="Controller"),
            ],
            {},
            "labels and taints are EKS's",
        ),
        (
            [
                HyperPodGroup("gpu", "p5.48xlarge", 1, slurm_node_type="Compute", partitions=["a", "b"]),
                HyperPodGroup("controller", "m7i.4xlarge", 1, slurm_node_type="Controller"),
            ],
            {},
            "one partition at most",
        ),
        (
            [
                HyperPodGroup("gpu", "p5.48xlarge", 1, slurm_node_type="Compute", image_id="ami-0123456789abcdef0"),
                HyperPodGroup("controller", "m7i.4xlarge", 1, slurm_node_type="Controller"),
            ],
            {},
            "a custom image only with EKS",
        ),
        (None, {"PATH": "/tmp"}, "PATH would change how the lifecycle script runs"),
    ],
)
def test_the_construct_refuses_shapes_hyperpod_would_refuse_at_deploy_time(
    tmp_path: Path, groups: list[HyperPodGroup] | None, settings: dict[str, str], error: str
) -> None:
    """Review 13, L1: said at synthesis, with the construct's path."""
    extra: dict[str, Any] = {"settings": settings}
    if groups is not None:
        extra["groups"] = groups
    with pytest.raises(ValueError, match="Alone/HyperPod: .*" + re.escape(error)):
        _alone(tmp_path, **extra)


def test_a_users_lifecycle_script_runs_after_ours_on_its_group(
    synth: Callable[..., Synthesized], tmp_path: Path
) -> None:
    script = tmp_path / "mine.sh"
    script.write_text("#!/bin/bash\necho mine\n")
    data = yaml.safe_load((ROOT / "examples" / "hyperpod-slurm.yaml").read_text())
    data["instance_groups"][0]["lifecycle_script"] = str(script)
    s = synth(ClusterConfig.from_dict(data))
    groups = _groups(s)
    assert groups["gpu"]["LifeCycleConfig"]["OnInitComplete"] == "start-gpu.sh"
    assert groups["controller"]["LifeCycleConfig"]["OnInitComplete"] == "on_create.sh"
    (deployment,) = s.resources("Custom::CDKBucketDeployment").values()
    # on_create.sh, lib.sh, contract.sh, settings.env, and the group's user-gpu.sh and start-gpu.sh
    assert len(deployment["Properties"]["SourceObjectKeys"]) == 6


def test_review_13s_config_cases() -> None:
    """Partitions HyperPod refuses, the ml. prefix, a plan of another partition: errors naming the
    field; repair and scrape settings HyperPod does its own way: warnings, not silence."""
    two = _hyperpod(**{"orchestrator.partitions": {"gpu": ["gpu"], "all": ["gpu"]}})
    assert [e for e in errors_of(two) if e.startswith("orchestrator.partitions")] == [
        "orchestrator.partitions: HyperPod puts a group in one partition at most, named with letters, digits and "
        "hyphens: gpu is in all, gpu"
    ]
    underscore = _hyperpod(**{"orchestrator.partitions": {"big_gpu": ["gpu"]}})
    assert [e for e in errors_of(underscore) if e.startswith("orchestrator.partitions")]
    ml = _hyperpod(**{"instance_groups.0.instance_type": "ml.p5.48xlarge"})
    assert (
        "instance_groups[0].instance_type: write the EC2 type's name (p5.48xlarge): ml. is added for HyperPod"
        in errors_of(ml)
    )
    plan = _hyperpod(
        **{"instance_groups.0.training_plan_arn": "arn:aws-cn:sagemaker:us-east-1:111122223333:training-plan/p"}
    )
    assert (
        "instance_groups[0].training_plan_arn: the training plan's partition is aws-cn, not aws, the region's"
        in errors_of(plan)
    )
    tuned = ClusterConfig.from_dict(
        _hyperpod(
            auto_repair={"max_parallel_replacements": 3, "dry_run": True}, observability={"scrape_interval_seconds": 30}
        )
    )
    assert [w.path for w in tuned.warnings()] == [
        "auto_repair.max_parallel_replacements",
        "observability.scrape_interval_seconds",
    ]


def test_dry_run_lets_hyperpod_label_and_act_on_nothing(synth: Callable[..., Synthesized]) -> None:
    s = synth(ClusterConfig.from_dict(_hyperpod(auto_repair={"dry_run": True})))
    assert _cluster(s)["NodeRecovery"] == "None"


def test_connectivity_checks_only_where_the_type_has_efa() -> None:
    assert rules.default_deep_health_checks("g5.xlarge") == ("InstanceStress",)
    assert rules.default_deep_health_checks("p5.48xlarge") == ("InstanceStress", "InstanceConnectivity")
    assert rules.default_deep_health_checks("m7i.xlarge") == ()


def test_plain_cfn_lint_passes_a_type_its_region_schema_lags_on_with_the_reason_on_the_resource(
    synth: Callable[..., Synthesized],
) -> None:
    """Review 13, L6: trn2.48xlarge is HyperPod's in us-east-1 (botocore) but cfn-lint's schema
    lists it in us-east-2 only: E3644 is acknowledged on the cluster resource, nowhere else."""
    data = _hyperpod(**{"instance_groups.0.instance_type": "trn2.48xlarge"})
    s = synth(ClusterConfig.from_dict(data))
    ignored = yaml.safe_load((ROOT / ".cfnlintrc.yaml").read_text())["ignore_checks"]
    matches = lint(s.template_path.read_text(), config=ManualArgs(regions=["us-east-1"], ignore_checks=ignored))
    assert [f"{m.rule.id} {m.message}" for m in matches] == []
    (cluster,) = s.resources("AWS::SageMaker::Cluster").values()
    assert cluster["Metadata"]["cfn-lint"] == {"config": {"ignore_checks": ["E3644"]}}
    assert "ml.trn2.48xlarge" in cluster["Metadata"]["training-cluster:cfn-lint-E3644"]
    with_e3644 = [r for r in s.template_json["Resources"].values() if "cfn-lint" in r.get("Metadata", {})]
    assert len(with_e3644) == 1


def test_a_kubernetes_version_hyperpods_documentation_did_not_list_is_a_warning() -> None:
    data = yaml.safe_load((ROOT / "examples" / "hyperpod-eks.yaml").read_text())
    warnings = [str(w) for w in ClusterConfig.from_dict(data).warnings()]
    version = data["orchestrator"].get("kubernetes_version", "1.35")
    assert (
        f"orchestrator.kubernetes_version: HyperPod's documentation listed Kubernetes 1.28 to 1.33 when this "
        f"release was made, not {version}: check that HyperPod supports {version} before deploying" in warnings
    )
    assert rules.kubernetes_version_warning("1.33") is None


def test_the_hyperpod_job_example_selects_by_hyperpods_labels_and_can_resume() -> None:
    """examples/hyperpod/pytorchjob.yaml: a PyTorchJob the training SDK's model accepts, in a
    namespace HyperPod's auto-resume works in, on Schedulable nodes (HyperPod's label) of the gpu
    group (the label each HyperPod group gets), with the file system where HyperPod mounts it."""
    from test_kube_manifests import model_problems

    job = yaml.safe_load((ROOT / "examples" / "hyperpod" / "pytorchjob.yaml").read_text())
    assert model_problems(job, "KubeflowOrgV1PyTorchJob") == []
    namespace = job["metadata"]["namespace"]
    assert namespace == "kubeflow" or namespace.startswith("hyperpod")
    assert job["metadata"]["annotations"]["sagemaker.amazonaws.com/enable-job-auto-resume"] == "true"
    worker = job["spec"]["pytorchReplicaSpecs"]["Worker"]
    assert worker["restartPolicy"] == "OnFailure"
    assert worker["template"]["spec"]["nodeSelector"] == {
        "sagemaker.amazonaws.com/node-health-status": "Schedulable",
        LABEL_GROUP: "gpu",
    }
    config = ClusterConfig.from_yaml(ROOT / "examples" / "hyperpod-eks.yaml")
    assert "gpu" in {g.name for g in config.instance_groups}
    (fsx,) = [v for v in worker["template"]["spec"]["volumes"] if v["name"] == "fsx"]
    assert config.storage.lustre is not None and fsx["hostPath"]["path"] == config.storage.lustre.mount_path
