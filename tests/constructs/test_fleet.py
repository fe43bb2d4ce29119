"""Fleet: the launch template (EFA layout, capacity) and the fixed-size Auto Scaling group."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_ec2 as ec2
from syrupy.assertion import SnapshotAssertion

from conftest import ROOT, Synthesized, mask_asset_hashes
from training_cluster import catalog
from training_cluster.constructs import Fleet, FleetCapacity
from training_cluster.node_bootstrap import expand


def asg(sy: Synthesized, group: str) -> dict[str, Any]:
    return sy.only(sy.stack.fleets[group], "AWS::AutoScaling::AutoScalingGroup")


def test_snapshot(example: Synthesized, snapshot_json: SnapshotAssertion) -> None:
    fleets = {name: mask_asset_hashes(example.resources_of(f)) for name, f in example.stack.fleets.items()}
    assert fleets == snapshot_json


@pytest.mark.parametrize(
    ("fixture", "group", "instance_type"),
    [
        ("default_cluster", "gpu", "p5.48xlarge"),
        ("p4d", "gpu", "p4d.24xlarge"),
        ("trn2", "trainium", "trn2.48xlarge"),
        ("b300", "gpu", "p6-b300.48xlarge"),
    ],
)
def test_every_efa_card_gets_an_interface(
    request: pytest.FixtureRequest, fixture: str, group: str, instance_type: str
) -> None:
    """A P5 with one EFA interface instead of 32 would run at 1/32 of its network speed."""
    sy: Synthesized = request.getfixturevalue(fixture)
    info = catalog.get(instance_type)
    assert info is not None
    interfaces = sy.launch_data(group)["NetworkInterfaces"]
    node_sg = sy.stack.resolve(sy.stack.network.security_group.security_group_id)
    assert [(i["NetworkCardIndex"], i["DeviceIndex"], i["InterfaceType"]) for i in interfaces] == [
        (s.network_card_index, s.device_index, s.interface_type) for s in info.efa_layout()
    ]
    assert sum(i["InterfaceType"] == "efa-only" for i in interfaces) == info.max_efa_interfaces
    for interface in interfaces:
        assert interface["Groups"] == [node_sg]
        assert interface["DeleteOnTermination"] is True
        assert "SubnetId" not in interface  # the Auto Scaling group supplies the subnet
        assert "PrivateIpAddress" not in interface and "AssociatePublicIpAddress" not in interface
    assert "SecurityGroupIds" not in sy.launch_data(group)  # groups go on each interface


def test_cpu_and_efa_off_groups_get_one_interface(p4d: Synthesized, lean: Synthesized) -> None:
    for sy, group in ((p4d, "login"), (lean, "controller"), (lean, "l40s")):
        interfaces = sy.launch_data(group)["NetworkInterfaces"]
        assert [(i["NetworkCardIndex"], i["DeviceIndex"], i["InterfaceType"]) for i in interfaces] == [
            (0, 0, "interface")
        ]


def test_launch_template_security_and_root_volume(default_cluster: Synthesized, lean: Synthesized) -> None:
    data = default_cluster.launch_data("gpu")
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["BlockDeviceMappings"] == [
        {
            "DeviceName": "/dev/sda1",
            "Ebs": {"DeleteOnTermination": True, "Encrypted": True, "VolumeSize": 500, "VolumeType": "gp3"},
        }
    ]
    assert lean.launch_data("controller")["BlockDeviceMappings"][0]["DeviceName"] == "/dev/xvda"
    assert lean.launch_data("controller")["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] == 100
    assert data["InstanceType"] == "p5.48xlarge"
    assert "IamInstanceProfile" in data


def default_image(sy: Synthesized, group: str) -> str:
    ref = sy.launch_data(group)["ImageId"]["Ref"]
    parameter = sy.template_json["Parameters"][ref]
    assert parameter["Type"] == "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>"  # resolved at deploy time
    return str(parameter["Default"])


def test_default_images_resolve_from_ssm_public_parameters(
    default_cluster: Synthesized, trn2: Synthesized, lean: Synthesized
) -> None:
    # The default cluster runs Slurm: Ubuntu 24.04 unless a group names its os.
    assert default_image(default_cluster, "gpu") == (
        "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-24.04/latest/ami-id"
    )
    assert default_image(default_cluster, "controller") == (
        "/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id"
    )
    assert default_image(trn2, "trainium") == "/aws/service/neuron/dlami/base/ubuntu-22.04/latest/image_id"
    # CPU groups get the distribution's own image, not the GPU one.
    assert default_image(lean, "controller") == "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
    assert lean.launch_data("l40s")["ImageId"] == "ami-0123456789abcdef0"


def test_fixed_size_group_never_replaces_running_nodes(example: Synthesized) -> None:
    if example.config.backend == "hyperpod":  # HyperPod's nodes: no Auto Scaling group of ours
        assert example.resources("AWS::AutoScaling::AutoScalingGroup") == {}
        return
    for group in example.config.instance_groups:
        resource = asg(example, group.name)
        props = resource["Properties"]
        assert props["MinSize"] == props["MaxSize"] == str(group.count)
        assert props.get("DesiredCapacity", props["MinSize"]) == str(group.count)
        assert props["HealthCheckType"] == "EC2" and props["HealthCheckGracePeriod"] == 900
        # No rolling or replacing update: a new launch template version is used by new launches only.
        assert not {"AutoScalingRollingUpdate", "AutoScalingReplacingUpdate"} & set(resource.get("UpdatePolicy", {}))
        assert props["VPCZoneIdentifier"] == [example.stack.resolve(example.stack.network.compute_subnet.subnet_id)]
        topic = example.stack.resolve(example.stack.events_topic.topic_arn)
        assert props["NotificationConfigurations"][0]["TopicARN"] == topic


def test_cluster_placement_group_per_group(default_cluster: Synthesized) -> None:
    group = default_cluster.only(default_cluster.stack.fleets["gpu"], "AWS::EC2::PlacementGroup")
    assert group["Properties"]["Strategy"] == "cluster"
    (logical_id,) = [
        k for k, v in default_cluster.resources_of(default_cluster.stack.fleets["gpu"]).items() if v is group
    ]
    assert default_cluster.launch_data("gpu")["Placement"] == {"GroupName": {"Fn::GetAtt": [logical_id, "GroupName"]}}


def test_targeted_reservation_in_its_own_placement_group(p4d: Synthesized) -> None:
    data = p4d.launch_data("gpu")
    assert data["CapacityReservationSpecification"] == {
        "CapacityReservationTarget": {"CapacityReservationId": "cr-0a1b2c3d4e5f60718"}
    }
    assert "InstanceMarketOptions" not in data
    assert data["Placement"] == {"GroupName": "a100-reserved-pg"}
    p4d.template.resource_count_is("AWS::EC2::PlacementGroup", 0)
    assert "Placement" not in p4d.launch_data("login")


def test_capacity_block(trn2: Synthesized) -> None:
    data = trn2.launch_data("trainium")
    assert data["InstanceMarketOptions"] == {"MarketType": "capacity-block"}
    assert data["CapacityReservationSpecification"] == {
        "CapacityReservationTarget": {"CapacityReservationId": "cr-0123456789abcdef0"}
    }
    assert "Placement" not in data
    trn2.template.resource_count_is("AWS::EC2::PlacementGroup", 0)


def test_nodes_can_use_session_manager(default_cluster: Synthesized) -> None:
    role = default_cluster.only(default_cluster.stack.fleets["gpu"], "AWS::IAM::Role")
    assert role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
        "Service": "ec2.amazonaws.com"
    }
    arns = [str(a) for a in role["Properties"]["ManagedPolicyArns"]]
    assert len(arns) == 1 and "AmazonSSMManagedInstanceCore" in arns[0]


def test_user_data_writes_settings_and_runs_the_bootstrap(default_cluster: Synthesized) -> None:
    text = default_cluster.user_data("gpu")
    assert text.startswith("#!/bin/bash\n")
    assert "CLUSTER_NAME='demo'\n" in text and "INSTANCE_GROUP='gpu'\n" in text and "NODE_OS='ubuntu-24.04'\n" in text
    assert "FSX_DNS_NAME='<ref>.fsx.us-east-1.<ref>'\n" in text
    assert "FSX_MOUNT_NAME='<ref>'\n" in text and "FSX_MOUNT_PATH='/fsx'\n" in text
    bootstrap = (ROOT / "node" / "bootstrap.sh").read_text()
    assert bootstrap.rstrip("\n") in text
    assert text.rstrip("\n").endswith("/opt/training-cluster/bootstrap.sh")
    # EC2 takes at most 16 KB of user data before base64 encoding (references stay short).
    assert len(text.encode()) < 16 * 1024


def test_no_file_system_means_no_mount_settings(synth: Callable[..., Synthesized]) -> None:
    from conftest import minimal_config
    from training_cluster import ClusterConfig

    sy = synth(ClusterConfig.from_dict(minimal_config(name="nofs", storage={})))
    assert "FSX_DNS_NAME=" not in sy.user_data("gpu")
    sy.template.resource_count_is("AWS::FSx::FileSystem", 0)


def test_lifecycle_script_is_an_asset_the_node_alone_can_read(b300: Synthesized) -> None:
    text = b300.user_data("gpu")
    assert "LIFECYCLE_SCRIPT_S3_URI='s3://<ref>" in text or "LIFECYCLE_SCRIPT_S3_URI='<ref>" in text
    policies = [r for r in b300.resources_of(b300.stack.fleets["gpu"]).values() if r["Type"] == "AWS::IAM::Policy"]
    statements = [s for p in policies for s in p["Properties"]["PolicyDocument"]["Statement"]]
    (statement,) = [s for s in statements if ".sh" in str(s["Resource"])]
    assert statement["Action"] == "s3:GetObject"
    resource = str(statement["Resource"])
    assert "cdk-hnb659fds-assets" in resource and "*" not in resource


def test_instances_are_tagged_with_cluster_and_group(default_cluster: Synthesized) -> None:
    tags = {t["Key"]: t["Value"] for t in default_cluster.launch_data("gpu")["TagSpecifications"][0]["Tags"]}
    assert tags == {
        "Name": "demo-gpu",
        "training-cluster:cluster": "demo",
        "training-cluster:instance-group": "gpu",
    }
    asg_tags = {
        t["Key"]: (t["Value"], t["PropagateAtLaunch"]) for t in asg(default_cluster, "gpu")["Properties"]["Tags"]
    }
    assert asg_tags["training-cluster:instance-group"] == ("gpu", True)


def _fleet(**overrides: Any) -> Fleet:
    stack = Stack(App(), "S")
    vpc = ec2.Vpc(stack, "V")
    props: dict[str, Any] = {
        "cluster_name": "demo",
        "group_name": "gpu",
        "vpc": vpc,
        "subnet": vpc.private_subnets[0],
        "security_group": ec2.SecurityGroup(stack, "G", vpc=vpc),
        "instance_type": "p5.48xlarge",
        "count": 1,
    }
    props.update(overrides)
    return Fleet(stack, "F", **props)


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"instance_type": "x9.large"}, "unknown instance type 'x9.large'"),
        ({"instance_type": "m7i.large", "efa": True}, "m7i.large does not support EFA"),
        ({"count": 0}, r"count: must be between 1 and 2000 instances \(got 0\)"),
    ],
)
def test_fleet_rejects_what_cannot_work(overrides: dict[str, Any], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        _fleet(**overrides)


def test_capacity_needs_a_reservation_id_exactly_when_reserved() -> None:
    # The fleet checks its capacity with its other props (training_cluster.rules.fleet).
    with pytest.raises(ValueError, match=r"capacity\.reservation_id: required for capacity type reservation"):
        _fleet(capacity=FleetCapacity(type="reservation"))
    with pytest.raises(ValueError, match=r"capacity\.reservation_id: only used with capacity type reservation or"):
        _fleet(capacity=FleetCapacity(reservation_id="cr-0123456789abcdef0"))
    assert FleetCapacity.capacity_block("cr-0123456789abcdef0").type == "capacity-block"


def test_stages_added_after_the_fleet_still_run() -> None:
    fleet = _fleet()
    fleet.bootstrap.add_stage("metrics", "echo metrics agent")
    data = Stack.of(fleet).resolve(fleet.launch_template.node.default_child.launch_template_data)  # type: ignore[union-attr]
    user_data = data["userData"]["Fn::Base64"]
    assert isinstance(user_data, str)  # this fleet's has no deploy-time values
    assert "echo metrics agent" in expand(user_data)
