"""The synthesized stacks created in moto's CloudFormation: the fleets come up where they should."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from conftest import ROOT, Synthesized
from offline_deploy import deploy

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # moto names each type it skips


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        yield


def create(sy: Synthesized) -> dict[str, Any]:
    region = sy.config.region
    ec2 = boto3.client("ec2", region_name=region)
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    name = deploy(sy.template_json, sy.outdir, sy.stack.artifact_id, region, image)
    resources = boto3.client("cloudformation", region_name=region).list_stack_resources(StackName=name)
    return {r["LogicalResourceId"]: r for r in resources["StackResourceSummaries"]}


@pytest.mark.parametrize("example", ["default.yaml", "p4d-reservation.yaml", "eks.yaml"])
def test_fleets_launch_their_count_in_the_compute_subnet(
    aws: None, synth: Callable[..., Synthesized], example: str
) -> None:
    sy = synth(ROOT / "examples" / example)
    resources = create(sy)
    region = sy.config.region
    ec2 = boto3.client("ec2", region_name=region)
    compute_id = sy.stack.resolve(sy.stack.network.compute_subnet.subnet_id)["Ref"]
    compute = ec2.describe_subnets(SubnetIds=[resources[compute_id]["PhysicalResourceId"]])
    subnet = compute["Subnets"][0]
    assert subnet["AvailabilityZone"] == sy.config.availability_zone
    assert ipaddress.IPv4Network(subnet["CidrBlock"]).prefixlen == sy.config.network.compute_subnet_prefix_length
    groups = {
        g["AutoScalingGroupName"]: g
        for g in boto3.client("autoscaling", region_name=region).describe_auto_scaling_groups()["AutoScalingGroups"]
    }
    # The instance groups, and Slurm's controller and login groups or EKS's system group.
    assert set(sy.stack.fleets) >= {g.name for g in sy.config.instance_groups}
    for name, fleet in sy.stack.fleets.items():
        (asg_id,) = [
            k
            for k in sy.logical_ids(fleet)
            if sy.template_json["Resources"][k]["Type"] == "AWS::AutoScaling::AutoScalingGroup"
        ]
        asg = groups[resources[asg_id]["PhysicalResourceId"]]
        assert len(asg["Instances"]) == fleet.count, name
        ids = [i["InstanceId"] for i in asg["Instances"]]
        instances = [i for r in ec2.describe_instances(InstanceIds=ids)["Reservations"] for i in r["Instances"]]
        expected = {(fleet.instance_type.name, subnet["SubnetId"])}
        assert {(i["InstanceType"], i["SubnetId"]) for i in instances} == expected
    if sy.stack.slurm is not None:  # the controller's address waits for the controller to write it
        name = f"/training-cluster/{sy.config.name}/slurm/controller-address"
        parameter = boto3.client("ssm", region_name=region).get_parameter(Name=name)["Parameter"]
        assert parameter["Value"] == "pending"


def test_launch_template_keeps_the_efa_layout(aws: None, default_cluster: Synthesized) -> None:
    resources = create(default_cluster)
    ec2 = boto3.client("ec2", region_name="us-east-1")
    (lt_id,) = [
        k
        for k in default_cluster.logical_ids(default_cluster.stack.fleets["gpu"])
        if default_cluster.template_json["Resources"][k]["Type"] == "AWS::EC2::LaunchTemplate"
    ]
    versions = ec2.describe_launch_template_versions(LaunchTemplateId=resources[lt_id]["PhysicalResourceId"])
    interfaces = versions["LaunchTemplateVersions"][0]["LaunchTemplateData"]["NetworkInterfaces"]
    assert len(interfaces) == 33
    assert sum(i["InterfaceType"] == "efa-only" for i in interfaces) == 32
    node_sg_id = default_cluster.stack.resolve(default_cluster.stack.network.security_group.security_group_id)
    node_sg = resources[node_sg_id["Fn::GetAtt"][0]]["PhysicalResourceId"]
    assert all(i["Groups"] == [node_sg] for i in interfaces)
