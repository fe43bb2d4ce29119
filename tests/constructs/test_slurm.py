"""Slurm: the controller and login groups, the munge key and controller address, permissions,
each role's bootstrap settings, the repair hook, and the RDS accounting database."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_ec2 as ec2
from syrupy.assertion import SnapshotAssertion

from conftest import Synthesized, mask_asset_hashes, slurm_rds
from training_cluster.constructs import Fleet, Slurm

SLURM_FLEETS = ("gpu", "controller", "login")


@pytest.fixture(scope="module")
def rds(synth: Callable[..., Synthesized]) -> Synthesized:
    return synth(slurm_rds())


def settings(sy: Synthesized, group: str) -> dict[str, str]:
    """The node's settings file (values with references shown as <ref>)."""
    text = sy.user_data(group)
    assert len(text.encode()) < 16 * 1024
    block = text.split("<<'TRAINING_CLUSTER_EOF'\n", 1)[1].split("\nTRAINING_CLUSTER_EOF", 1)[0]
    return dict(re.fullmatch(r"([A-Z_0-9]+)='(.*)'", line).groups() for line in block.splitlines())  # type: ignore[union-attr]


def statements(sy: Synthesized, group: str) -> list[dict[str, Any]]:
    role = sy.stack.resolve(sy.stack.fleets[group].role.role_name)
    policies = [
        p for p in sy.resources("AWS::IAM::Policy").values() if role in p["Properties"]["Roles"]
    ]  # fmt: skip
    return [s for p in policies for s in p["Properties"]["PolicyDocument"]["Statement"]]


def allows(sy: Synthesized, group: str, action: str, resource: Any) -> bool:
    for s in statements(sy, group):
        actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
        resources = s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]]
        if action in actions and resource in resources:
            return True
    return False


def test_snapshot(default_cluster: Synthesized, snapshot_json: SnapshotAssertion) -> None:
    assert default_cluster.stack.slurm is not None
    slurm = default_cluster.resources_of(default_cluster.stack.slurm)
    groups = {
        name: default_cluster.resources_of(default_cluster.stack.fleets[name]) for name in ("controller", "login")
    }
    assert mask_asset_hashes({"slurm": slurm, **groups}) == snapshot_json


def test_controller_and_login_groups_are_cpu_nodes_in_the_compute_subnet(default_cluster: Synthesized) -> None:
    sy = default_cluster
    subnet = sy.stack.resolve(sy.stack.network.compute_subnet.subnet_id)
    for name, instance_type, count in (("controller", "m7i.4xlarge", 1), ("login", "m7i.2xlarge", 1)):
        asg = sy.only(sy.stack.fleets[name], "AWS::AutoScaling::AutoScalingGroup")["Properties"]
        assert asg["MinSize"] == asg["MaxSize"] == str(count) and asg["VPCZoneIdentifier"] == [subnet]
        data = sy.only(sy.stack.fleets[name], "AWS::EC2::LaunchTemplate")["Properties"]["LaunchTemplateData"]
        assert data["InstanceType"] == instance_type
        assert [i["InterfaceType"] for i in data["NetworkInterfaces"]] == ["interface"]  # no EFA
        assert "Placement" not in data and "KeyName" not in data
        assert data["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] == 100
        parameter = sy.template_json["Parameters"][data["ImageId"]["Ref"]]["Default"]
        assert parameter == "/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id"
    assert not sy.resources_of(sy.stack.fleets["controller"]).keys() & {
        k for k, v in sy.resources("AWS::EC2::PlacementGroup").items()
    }


def test_each_role_gets_its_settings_and_slurm_runs_last(default_cluster: Synthesized) -> None:
    sy = default_cluster
    for name, role in (("gpu", "compute"), ("controller", "controller"), ("login", "login")):
        env = settings(sy, name)
        assert env["SLURM_ROLE"] == role and env["SLURM_ACCOUNTING"] == "true" and env["SLURM_CONTAINERS"] == "false"
        assert env["SLURM_USERS"] == "researcher:2001" and env["FSX_MOUNT_PATH"] == "/fsx"
        assert env["SLURM_USERS_USE_NODE_ROLE"] == "false"  # only root reaches the role
        assert env["SLURM_CONTROLLER_PARAMETER"] == "<ref>"
        assert sy.stack.fleets[name].bootstrap.stage_names[-1] == "slurm"  # after the health agent and metrics
        assert "SLURM_DATABASE_SECRET_ARN" not in env  # local accounting
    layout = json.loads(settings(sy, "gpu")["SLURM_LAYOUT"])
    assert layout == {
        "accounting": True,
        "cluster": "demo",
        "groups": [{"gpus": 8, "memory_mib": 2097152, "name": "gpu", "vcpus": 192}],
        "partitions": {"gpu": ["gpu"]},
    }
    assert settings(sy, "gpu")["SLURM_GPUS"] == "8" and settings(sy, "controller")["SLURM_GPUS"] == "0"
    parameter = sy.only(sy.stack.slurm, "AWS::SSM::Parameter")["Properties"]
    assert (parameter["Name"], parameter["Value"]) == ("/training-cluster/demo/slurm/controller-address", "pending")


def test_the_munge_key_is_generated_and_only_slurm_nodes_read_it(default_cluster: Synthesized) -> None:
    sy = default_cluster
    assert sy.stack.slurm is not None
    secret = sy.only(sy.stack.slurm.munge_key, "AWS::SecretsManager::Secret")["Properties"]
    assert secret["GenerateSecretString"] == {"ExcludePunctuation": True, "PasswordLength": 1024}
    ref = sy.stack.resolve(sy.stack.slurm.munge_key.secret_arn)
    for name in SLURM_FLEETS:
        assert allows(sy, name, "secretsmanager:GetSecretValue", ref), name
    readers = [
        k
        for k, p in sy.resources("AWS::IAM::Policy").items()
        for s in p["Properties"]["PolicyDocument"]["Statement"]
        if ref in (s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]])
    ]
    assert len(readers) == len(SLURM_FLEETS)  # no other role (repair function, Grafana) reads it


def test_only_the_controller_writes_its_address(default_cluster: Synthesized) -> None:
    sy = default_cluster
    assert sy.stack.slurm is not None
    arn = sy.stack.resolve(sy.stack.slurm.controller_address.parameter_arn)
    assert allows(sy, "controller", "ssm:PutParameter", arn)
    assert allows(sy, "gpu", "ssm:GetParameter", arn)
    assert not allows(sy, "gpu", "ssm:PutParameter", arn) and not allows(sy, "login", "ssm:PutParameter", arn)
    # The reaper's and the topology task's unscoped actions are read only.
    unscoped = [s for s in statements(sy, "controller") if s["Resource"] == "*"]
    assert {a for s in unscoped for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])} == {
        "ec2:DescribeInstances",
        "ec2:DescribeInstanceTopology",
        "cloudwatch:PutMetricData",
    }
    # cdk-nag's one finding for both keeps both reasons.
    (finding,) = [
        f
        for report in sy.nag_report["pluginReports"]
        for f in report.get("suppressedViolations", [])
        if f["ruleName"] == "AwsSolutions-IAM5[Resource::*]" and f["acknowledgedAt"] == "Cluster/ControllerFleet/Role"
    ]
    assert all(
        action in finding["reason"] for action in ("DescribeInstances", "DescribeInstanceTopology", "PutMetricData")
    )


def test_auto_repair_drains_through_the_controller(default_cluster: Synthesized, p4d: Synthesized) -> None:
    sy = default_cluster
    assert sy.stack.auto_repair is not None
    variables = sy.only(sy.stack.auto_repair.function, "AWS::Lambda::Function")["Properties"]["Environment"][
        "Variables"
    ]
    assert variables["DRAIN_COMMAND"] == "/opt/training-cluster/slurm/slurm-drain.sh"
    controller = sy.stack.fleets["controller"].auto_scaling_group.auto_scaling_group_name
    assert variables["DRAIN_GROUP"] == sy.stack.resolve(controller)
    # Without Slurm there is nothing to drain.
    assert p4d.stack.slurm is None and p4d.stack.auto_repair is not None
    plain = p4d.only(p4d.stack.auto_repair.function, "AWS::Lambda::Function")
    assert "DRAIN_GROUP" not in plain["Properties"]["Environment"]["Variables"]
    assert not p4d.resources("AWS::SecretsManager::Secret") and "controller" not in p4d.stack.fleets


def test_rds_accounting_in_two_new_subnets(rds: Synthesized) -> None:
    subnets = {
        v["Properties"]["CidrBlock"]: v["Properties"]["AvailabilityZone"]
        for k, v in rds.resources("AWS::EC2::Subnet").items()
        if "DatabaseSubnet" in k
    }
    # The first free blocks of 10.0.0.0/16 (public /24 first, compute /17 last), in two zones.
    assert subnets == {"10.0.1.0/27": "us-east-1a", "10.0.1.32/27": "us-east-1b"}
    (db,) = rds.resources("AWS::RDS::DBInstance").values()
    props = db["Properties"]
    assert (props["Engine"], props["EngineVersion"], props["DBInstanceClass"]) == (
        "mariadb",
        "10.11.16",
        "db.r7g.large",
    )
    assert props["StorageEncrypted"] is True and props["DeletionProtection"] is True and props["MultiAZ"] is False
    assert db["DeletionPolicy"] == db["UpdateReplacePolicy"] == "Snapshot"
    (group,) = rds.resources("AWS::RDS::DBSubnetGroup").values()
    assert len(group["Properties"]["SubnetIds"]) == 2
    node_sg = rds.stack.resolve(rds.stack.network.security_group.security_group_id)
    db_sg = db["Properties"]["VPCSecurityGroups"][0]["Fn::GetAtt"][0]
    (ingress,) = [
        r["Properties"]
        for r in rds.resources("AWS::EC2::SecurityGroupIngress").values()
        if r["Properties"]["GroupId"] == {"Fn::GetAtt": [db_sg, "GroupId"]}
    ]
    (db_id,) = rds.resources("AWS::RDS::DBInstance")
    port = {"Fn::GetAtt": [db_id, "Endpoint.Port"]}  # MariaDB's 3306
    assert (ingress["SourceSecurityGroupId"], ingress["FromPort"], ingress["ToPort"]) == (node_sg, port, port)
    # The nodes' group allows little out: the way to the database is opened too.
    egress = [
        r["Properties"]
        for r in rds.resources("AWS::EC2::SecurityGroupEgress").values()
        if r["Properties"]["GroupId"] == node_sg and r["Properties"].get("FromPort") == port
    ]
    assert [e["DestinationSecurityGroupId"] for e in egress] == [{"Fn::GetAtt": [db_sg, "GroupId"]}]
    env = settings(rds, "controller")
    assert env["SLURM_DATABASE_SECRET_ARN"] == "<ref>" and env["SLURM_CONTAINERS"] == "true"
    assert "SLURM_DATABASE_SECRET_ARN" not in settings(rds, "gpu")
    assert rds.stack.slurm is not None and rds.stack.slurm.accounting_database is not None
    secret = rds.stack.resolve(rds.stack.slurm.accounting_database.secret.secret_arn)
    assert allows(rds, "controller", "secretsmanager:GetSecretValue", secret)
    assert not allows(rds, "gpu", "secretsmanager:GetSecretValue", secret)
    assert not allows(rds, "login", "secretsmanager:GetSecretValue", secret)


def test_options_reach_the_groups_and_layout(rds: Synthesized) -> None:
    assert settings(rds, "l40s")["SLURM_USERS_USE_NODE_ROLE"] == "true"
    layout = json.loads(settings(rds, "l40s")["SLURM_LAYOUT"])
    assert layout["partitions"] == {"train": ["gpu"], "all": ["gpu", "l40s"]}
    assert [g["name"] for g in layout["groups"]] == ["gpu", "l40s"]
    # One hot spare beside the gpu group's two: three instances, and the controller holds one back.
    assert (layout["groups"][0]["count"], layout["groups"][0]["spares"]) == (2, 1)
    assert "spares" not in layout["groups"][1]
    for name, size in (("gpu", "3"), ("l40s", "2")):
        group = rds.only(rds.stack.fleets[name], "AWS::AutoScaling::AutoScalingGroup")["Properties"]
        assert group["MinSize"] == group["MaxSize"] == size
    login = rds.only(rds.stack.fleets["login"], "AWS::AutoScaling::AutoScalingGroup")["Properties"]
    assert login["MinSize"] == "2"
    for name, instance_type in (("controller", "m7i.8xlarge"), ("login", "m7i.xlarge")):
        data = rds.only(rds.stack.fleets[name], "AWS::EC2::LaunchTemplate")["Properties"]["LaunchTemplateData"]
        assert data["InstanceType"] == instance_type and data["KeyName"] == "ops"


def test_own_vpc_database_subnets(b300: Synthesized) -> None:
    (group,) = b300.resources("AWS::RDS::DBSubnetGroup").values()
    assert group["Properties"]["SubnetIds"] == ["subnet-0aaaaaaaaaaaaaaa1", "subnet-0bbbbbbbbbbbbbbb2"]
    assert "login" not in b300.stack.fleets and not b300.resources("AWS::EC2::Subnet")


def test_the_construct_refuses_what_cannot_work() -> None:
    stack = Stack(App(), "S")
    vpc = ec2.Vpc(stack, "Vpc", max_azs=1)
    sg = ec2.SecurityGroup(stack, "Sg", vpc=vpc)
    subnet = vpc.private_subnets[0]

    def fleet(name: str, instance_type: str, count: int) -> Fleet:
        return Fleet(
            stack,
            name,
            cluster_name="c",
            group_name=name.lower(),
            vpc=vpc,
            subnet=subnet,
            security_group=sg,
            instance_type=instance_type,
            count=count,
            os="ubuntu-24.04",
        )

    controllers, gpu = fleet("Controllers", "m7i.4xlarge", 2), fleet("Gpu", "p5.48xlarge", 2)
    with pytest.raises(ValueError, match=r"controller.count: the Slurm controller has one node \(got 2\)"):
        Slurm(stack, "A", controller=controllers, compute=[gpu], file_system_mount_path="/fsx")
    controller = fleet("Controller", "m7i.4xlarge", 1)
    with pytest.raises(ValueError, match="compute: Slurm needs at least one compute fleet"):
        Slurm(stack, "B", controller=controller, compute=[], file_system_mount_path="/fsx")
    from training_cluster.constructs import SlurmOptions

    with pytest.raises(
        ValueError, match=r"options\.partitions\.x: no instance group named 'cpu'; instance groups: gpu"
    ):
        Slurm(
            stack,
            "C",
            controller=controller,
            compute=[gpu],
            file_system_mount_path="/fsx",
            options=SlurmOptions(partitions={"x": ["cpu"]}),
        )


def test_slurm_refuses_a_mount_path_other_than_the_file_systems() -> None:
    from training_cluster.constructs import LustreFileSystem
    from training_cluster.rules import PropsError

    stack = Stack(App(), "S", env={"region": "us-east-1"})
    vpc = ec2.Vpc(stack, "Vpc", max_azs=1)
    subnet = vpc.private_subnets[0]
    props: dict[str, Any] = {"cluster_name": "c", "vpc": vpc, "subnet": subnet, "os": "ubuntu-24.04"}
    controller = Fleet(stack, "Controller", group_name="controller", instance_type="m7i.4xlarge", count=1, **props)
    gpu = Fleet(stack, "Gpu", group_name="gpu", instance_type="p5.48xlarge", count=2, **props)
    lustre = LustreFileSystem(stack, "Lustre", vpc=vpc, subnet=subnet, mount_path="/lustre")
    for fleet in (controller, gpu):
        lustre.mount_on(fleet.bootstrap)
    with pytest.raises(PropsError) as info:
        Slurm(stack, "Slurm", controller=controller, compute=[gpu], file_system_mount_path="/fsx")
    (finding,) = info.value.findings
    assert finding.path == "file_system_mount_path"
    assert "'/fsx'" in finding.message and "'/lustre'" in finding.message
    assert gpu.bootstrap.environment["FSX_MOUNT_PATH"] == "/lustre"
    # The file system's own path is taken.
    Slurm(stack, "Same", controller=controller, compute=[gpu], file_system_mount_path="/lustre")
    assert gpu.bootstrap.environment["FSX_MOUNT_PATH"] == "/lustre"
