"""Fleet, AutoRepair, Slurm, Observability and the events topic composed by hand in a plain Stack, with no
TrainingClusterStack: what they create and tag must be right whoever composes them (issue 10)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, CfnElement, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ec2 as ec2
from aws_cdk.assertions import Template
from constructs import IConstruct

from conftest import CDK_CONTEXT
from iam_tags import launched_tags, unmet_tag_conditions
from training_cluster.constructs import (
    AutoRepair,
    AutoRepairOptions,
    ClusterEvents,
    Fleet,
    FleetCapacity,
    Observability,
    ObservabilityOptions,
    Slurm,
)
from training_cluster.node_bootstrap import NodeBootstrap

RESERVATION = "cr-0123456789abcdef0"


class Plain:
    """A plain stack with a one-zone VPC, and its template once synthesized."""

    def __init__(self) -> None:
        self.stack = Stack(App(context=CDK_CONTEXT), "Plain", env={"region": "us-east-1"})
        self.vpc = ec2.Vpc(self.stack, "Vpc", max_azs=1)
        self._template: dict[str, Any] | None = None

    def fleet(self, construct_id: str, **props: Any) -> Fleet:
        props = {"cluster_name": "alone", "vpc": self.vpc, "subnet": self.vpc.private_subnets[0], "count": 2, **props}
        return Fleet(self.stack, construct_id, **props)

    def slurm_fleets(self, cluster: str = "alone") -> tuple[Fleet, Fleet, list[Fleet]]:
        def fleet(group: str, instance_type: str, count: int) -> Fleet:
            return self.fleet(
                f"{group.capitalize()}{cluster.capitalize()}",
                cluster_name=cluster,
                group_name=group,
                instance_type=instance_type,
                count=count,
                os="ubuntu-24.04",
            )

        return (
            fleet("controller", "m7i.4xlarge", 1),
            fleet("login", "m7i.xlarge", 1),
            [fleet("gpu", "p5.48xlarge", 2), fleet("l40s", "g6e.48xlarge", 2)],
        )

    @property
    def template(self) -> dict[str, Any]:
        if self._template is None:
            self._template = Template.from_stack(self.stack).to_json()
        return self._template

    def of(self, scope: IConstruct, type_name: str) -> list[dict[str, Any]]:
        """The resources of ``type_name`` under ``scope``."""
        ids = {self.stack.resolve(c.logical_id) for c in scope.node.find_all() if isinstance(c, CfnElement)}
        return [r for k, r in self.template["Resources"].items() if k in ids and r["Type"] == type_name]

    def logical_id(self, construct: Any) -> str:
        return str(self.stack.resolve(construct.node.default_child.logical_id))

    def launch_data(self, fleet: Fleet) -> dict[str, Any]:
        (template,) = self.of(fleet, "AWS::EC2::LaunchTemplate")
        data: dict[str, Any] = template["Properties"]["LaunchTemplateData"]
        return data

    def settings(self, fleet: Fleet) -> dict[str, str]:
        joined = self.launch_data(fleet)["UserData"]["Fn::Base64"]
        text = (
            joined
            if isinstance(joined, str)
            else "".join(p if isinstance(p, str) else "<ref>" for p in joined["Fn::Join"][1])
        )
        block = text.split("<<'TRAINING_CLUSTER_EOF'\n", 1)[1].split("\nTRAINING_CLUSTER_EOF", 1)[0]
        return dict(re.fullmatch(r"([A-Z_0-9]+)='(.*)'", line).groups() for line in block.splitlines())  # type: ignore[union-attr]

    def statements(self, fleet: Fleet) -> list[dict[str, Any]]:
        """Every statement of the policies attached to the fleet's role."""
        role = self.stack.resolve(fleet.role.role_name)
        policies = [
            p for p in self.template["Resources"].values()
            if p["Type"] == "AWS::IAM::Policy" and role in p["Properties"]["Roles"]
        ]  # fmt: skip
        return [s for p in policies for s in p["Properties"]["PolicyDocument"]["Statement"]]


def listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def object_reads(plain: Plain, fleet: Fleet) -> list[str]:
    """The S3 objects the fleet's role may read, as text."""
    return [
        json.dumps(r)
        for s in plain.statements(fleet)
        if "s3:GetObject" in listed(s["Action"])
        for r in listed(s["Resource"])
    ]


# Fleet


@pytest.mark.parametrize(
    ("capacity", "placement_group"),
    [
        (FleetCapacity.on_demand(), True),
        (FleetCapacity.reservation(RESERVATION), False),
        (FleetCapacity.capacity_block(RESERVATION), False),
    ],
    ids=["on-demand", "reservation", "capacity-block"],
)
def test_a_fleet_alone_tags_what_it_launches(capacity: FleetCapacity, placement_group: bool) -> None:
    """AutoRepair's IAM conditions name the cluster tag: a hand-composed fleet must carry it (and
    its group and Name) on its Auto Scaling group, propagated at launch, and on the launch
    template's instances and volumes. A placement group only by default for on-demand capacity."""
    plain = Plain()
    fleet = plain.fleet("Gpu", group_name="gpu", instance_type="p5.48xlarge", capacity=capacity)
    expected = {"training-cluster:cluster": "alone", "training-cluster:instance-group": "gpu", "Name": "alone-gpu"}
    (asg,) = plain.of(fleet, "AWS::AutoScaling::AutoScalingGroup")
    tags = {t["Key"]: (t["Value"], t["PropagateAtLaunch"]) for t in asg["Properties"]["Tags"]}
    assert tags == {key: (value, True) for key, value in expected.items()}
    specifications = plain.launch_data(fleet)["TagSpecifications"]
    assert {s["ResourceType"] for s in specifications} == {"instance", "volume"}
    for specification in specifications:
        assert {t["Key"]: t["Value"] for t in specification["Tags"]} == expected
    settings = plain.settings(fleet)
    assert (settings["CLUSTER_NAME"], settings["INSTANCE_GROUP"]) == ("alone", "gpu")
    assert fleet.cluster_name == "alone" and fleet.group_name == "gpu"
    assert len(plain.of(fleet, "AWS::EC2::PlacementGroup")) == int(placement_group)
    assert ("Placement" in plain.launch_data(fleet)) == placement_group


def test_a_fleet_without_a_security_group_gets_one_for_efa() -> None:
    plain = Plain()
    fleet = plain.fleet("Gpu", group_name="gpu", instance_type="p5.48xlarge")
    (group,) = plain.of(fleet, "AWS::EC2::SecurityGroup")
    group_id = plain.stack.resolve(fleet.security_group.security_group_id)
    assert all(i["Groups"] == [group_id] for i in plain.launch_data(fleet)["NetworkInterfaces"])
    assert fleet.connections.security_groups == [fleet.security_group]
    ingress = [r["Properties"] for r in plain.of(fleet, "AWS::EC2::SecurityGroupIngress")]
    egress = [r["Properties"] for r in plain.of(fleet, "AWS::EC2::SecurityGroupEgress")]
    # EFA needs all traffic to and from the group itself; nothing comes in from outside.
    assert [(i["IpProtocol"], i["SourceSecurityGroupId"]) for i in ingress] == [("-1", group_id)]
    assert ("-1", group_id) in [(e["IpProtocol"], e.get("DestinationSecurityGroupId")) for e in egress]
    assert "SecurityGroupIngress" not in group["Properties"]
    assert {e["FromPort"] for e in group["Properties"]["SecurityGroupEgress"]} == {80, 443}


def test_a_given_security_group_is_used_and_none_is_created() -> None:
    plain = Plain()
    given = ec2.SecurityGroup(plain.stack, "Given", vpc=plain.vpc)
    fleet = plain.fleet("Cpu", group_name="cpu", instance_type="m7i.4xlarge", security_group=given)
    assert not plain.of(fleet, "AWS::EC2::SecurityGroup") and fleet.security_group is given
    (interface,) = plain.launch_data(fleet)["NetworkInterfaces"]
    assert interface["Groups"] == [plain.stack.resolve(given.security_group_id)]


def test_create_placement_group_overrides_the_default() -> None:
    plain = Plain()
    off = plain.fleet("Off", group_name="off", instance_type="p5.48xlarge", create_placement_group=False)
    named = plain.fleet("Named", group_name="named", instance_type="p5.48xlarge", placement_group_name="mine")
    assert not plain.of(off, "AWS::EC2::PlacementGroup") and "Placement" not in plain.launch_data(off)
    assert plain.launch_data(named)["Placement"] == {"GroupName": "mine"}
    assert not plain.of(named, "AWS::EC2::PlacementGroup")


def test_the_lifecycle_script_is_the_fleets_own_asset(tmp_path: Path) -> None:
    script = tmp_path / "setup.sh"
    script.write_text("#!/bin/bash\necho ready\n")
    plain = Plain()
    fleet = plain.fleet("Gpu", group_name="gpu", instance_type="p5.48xlarge", lifecycle_script=script)
    other = plain.fleet("Cpu", group_name="cpu", instance_type="m7i.4xlarge")
    assert plain.settings(fleet)["LIFECYCLE_SCRIPT_S3_URI"]
    assert "LIFECYCLE_SCRIPT_S3_URI" not in plain.settings(other)
    (read,) = object_reads(plain, fleet)  # that one object, not the asset bucket
    assert ".sh" in read and "/*" not in read and "cdk-hnb659fds-assets" in read
    assert not object_reads(plain, other)


def test_a_bootstrap_belongs_to_one_fleet() -> None:
    plain = Plain()
    bootstrap = NodeBootstrap()
    plain.fleet("Gpu", group_name="gpu", instance_type="p5.48xlarge", bootstrap=bootstrap)
    with pytest.raises(ValueError, match="bootstrap: its INSTANCE_GROUP is 'gpu' already, not this fleet's 'cpu'"):
        plain.fleet("Cpu", group_name="cpu", instance_type="m7i.4xlarge", bootstrap=bootstrap)


@pytest.mark.parametrize(
    ("props", "words"),
    [
        ({"cluster_name": "Alone"}, "cluster_name: must be lower case letters, digits and single hyphens"),
        ({"group_name": "gpu_1"}, "group_name: must be lower case letters, digits and single hyphens"),
        ({"group_name": "g" * 25}, "group_name: must be at most 24 characters"),
        ({"root_volume_size_gib": 20000}, r"root_volume_size_gib: must be between 40 and 16384 GiB \(got 20000\)"),
    ],
)
def test_a_fleet_refuses_props_that_cannot_tag_name_or_launch(props: dict[str, Any], words: str) -> None:
    plain = Plain()
    with pytest.raises(ValueError, match=words):
        plain.fleet("Gpu", **{"group_name": "gpu", "instance_type": "p5.48xlarge", **props})


def test_a_fleet_reports_a_lifecycle_script_it_may_not_resolve() -> None:
    """/proc/1/fd/0 cannot be resolved by another user (PermissionError): a finding, not a traceback."""
    from training_cluster.rules import PropsError

    plain = Plain()
    with pytest.raises(PropsError) as info:
        plain.fleet("Gpu", group_name="gpu", instance_type="p5.48xlarge", lifecycle_script="/proc/1/fd/0")
    (finding,) = info.value.findings
    assert finding.path == "lifecycle_script"
    assert "must be a regular file of yours" in finding.message


def test_a_fleet_refuses_a_lifecycle_script_over_a_mebibyte(tmp_path: Path) -> None:
    script = tmp_path / "big.sh"
    script.write_bytes(b"#" * (1024 * 1024 + 1))
    plain = Plain()
    with pytest.raises(ValueError, match="lifecycle_script: must be a regular, readable file of at most 1,048,576"):
        plain.fleet("Gpu", group_name="gpu", instance_type="p5.48xlarge", lifecycle_script=script)


def test_the_zone_is_checked_against_a_resolved_region_only() -> None:
    from aws_cdk import Aws

    from training_cluster.constructs import ClusterNetwork
    from training_cluster.rules import PropsError

    with pytest.raises(PropsError, match="availability_zone: 'us-west-2a' is not in region 'us-east-1'"):
        ClusterNetwork(Plain().stack, "Network", availability_zone="us-west-2a")
    ClusterNetwork(Plain().stack, "Network", availability_zone="us-east-1b")
    agnostic = Stack(App(context=CDK_CONTEXT), "Agnostic")
    assert agnostic.region == Aws.REGION
    ClusterNetwork(agnostic, "Network", availability_zone="us-west-2a")


def test_the_customer_key_is_checked_against_a_resolved_region_only() -> None:
    from aws_cdk import aws_kms as kms

    from training_cluster.constructs import LustreFileSystem
    from training_cluster.rules import PropsError

    west = "arn:aws:kms:us-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    plain = Plain()
    key = kms.Key.from_key_arn(plain.stack, "Key", west)
    subnet = plain.vpc.private_subnets[0]
    with pytest.raises(PropsError, match="kms_key: the key is in us-west-2, the cluster in us-east-1"):
        LustreFileSystem(plain.stack, "Lustre", vpc=plain.vpc, subnet=subnet, kms_key=key)
    LustreFileSystem(plain.stack, "Own", vpc=plain.vpc, subnet=subnet, kms_key=kms.Key(plain.stack, "OwnKey"))
    agnostic = Stack(App(context=CDK_CONTEXT), "Agnostic")
    vpc = ec2.Vpc(agnostic, "Vpc", max_azs=1)
    key = kms.Key.from_key_arn(agnostic, "Key", west)
    LustreFileSystem(agnostic, "Lustre", vpc=vpc, subnet=vpc.private_subnets[0], kms_key=key)


def test_fleet_metrics() -> None:
    plain = Plain()
    fleet = plain.fleet("Gpu", group_name="gpu", instance_type="p5.48xlarge")
    in_service, healthy = fleet.metric_in_service_instances(), fleet.metric_healthy_nodes()
    dashboard = cloudwatch.Dashboard(plain.stack, "Dashboard")
    dashboard.add_widgets(cloudwatch.GraphWidget(left=[in_service, healthy]))
    assert (in_service.namespace, in_service.metric_name, in_service.statistic) == (
        "AWS/AutoScaling",
        "GroupInServiceInstances",
        "Minimum",
    )
    (asg,) = plain.of(fleet, "AWS::AutoScaling::AutoScalingGroup")
    assert plain.stack.resolve(in_service.dimensions)["AutoScalingGroupName"] == {
        "Ref": plain.logical_id(fleet.auto_scaling_group)
    }
    assert asg["Properties"]["MetricsCollection"]  # the group metrics are on
    assert isinstance(healthy, cloudwatch.MathExpression)
    # Each node's minimum of the agent's Healthy metric (1 or 0, per instance), added up: the
    # group's nodes that were healthy at every check of the minute.
    assert healthy.expression == (
        'SUM(SEARCH(\'{TrainingCluster/Health,Cluster,InstanceGroup,InstanceId} MetricName="Healthy" '
        'Cluster="alone" InstanceGroup="gpu"\', \'Minimum\', 60))'
    )
    body = json.dumps(plain.template["Resources"][plain.logical_id(dashboard)]["Properties"]["DashboardBody"])
    assert "GroupInServiceInstances" in body and "TrainingCluster/Health" in body


# AutoRepair


def repair_over_two_fleets(plain: Plain) -> tuple[AutoRepair, Fleet, Fleet]:
    gpu = plain.fleet("Gpu", group_name="gpu", instance_type="p5.48xlarge", count=4)
    cpu = plain.fleet("Cpu", group_name="cpu", instance_type="m7i.4xlarge", count=2)
    events = ClusterEvents(plain.stack, "Events", cluster_name="alone")
    repair = AutoRepair(plain.stack, "Repair", fleets=[gpu, cpu], topic=events.topic)
    return repair, gpu, cpu


def test_auto_repair_alone_over_two_hand_made_fleets() -> None:
    plain = Plain()
    repair, gpu, cpu = repair_over_two_fleets(plain)
    assert repair.cluster_name == "alone"
    (function,) = [f for f in plain.of(repair, "AWS::Lambda::Function") if "CLUSTER_NAME" in json.dumps(f)
                   and "LEDGER_TABLE" in json.dumps(f) and "TOPIC_ARN" in json.dumps(f)]  # fmt: skip
    environment = function["Properties"]["Environment"]["Variables"]
    assert environment["CLUSTER_NAME"] == "alone"
    joined = environment["AUTO_SCALING_GROUPS"]["Fn::Join"][1]
    groups = json.loads("".join(p if isinstance(p, str) else p["Ref"] for p in joined))
    assert groups == {plain.logical_id(gpu.auto_scaling_group): "gpu", plain.logical_id(cpu.auto_scaling_group): "cpu"}
    for fleet in (gpu, cpu):
        # Each fleet's nodes run the agent with their own identity and devices.
        settings = json.loads(plain.settings(fleet)["HEALTH_AGENT_SETTINGS"])
        assert (settings["cluster"], settings["instance_group"]) == ("alone", fleet.group_name)
        assert settings["expected_gpus"] == fleet.instance_type.gpus
        assert settings["expected_efa_devices"] == fleet.efa_interface_count
    # AWS's tag-change events for this cluster's nodes reach the control plane.
    rules = [
        r["Properties"]["EventPattern"]
        for r in plain.of(repair, "AWS::Events::Rule")
        if "EventPattern" in r["Properties"]
    ]
    (tag_changes,) = [r for r in rules if r["source"] == ["aws.tag"]]
    assert tag_changes["detail"]["tags"] == {"training-cluster:cluster": ["alone"]}


def test_every_tag_an_auto_repair_condition_names_is_on_the_instances_it_targets() -> None:
    plain = Plain()
    repair, gpu, cpu = repair_over_two_fleets(plain)
    role = repair.function.role
    assert role is not None
    asgs = [plain.logical_id(fleet.auto_scaling_group) for fleet in (gpu, cpu)]
    checked, problems = unmet_tag_conditions(plain.template, plain.logical_id(role), asgs)
    assert {"ec2:RebootInstances", "ssm:SendCommand"} <= checked and problems == []
    for asg in asgs:
        assert launched_tags(plain.template, asg)["training-cluster:cluster"] == "alone"


def test_the_tag_check_finds_instances_without_the_tag() -> None:
    """The check above can fail: a template whose fleet lost the cluster tag is found."""
    plain = Plain()
    repair, gpu, cpu = repair_over_two_fleets(plain)
    role = repair.function.role
    assert role is not None
    asgs = [plain.logical_id(fleet.auto_scaling_group) for fleet in (gpu, cpu)]
    template = json.loads(json.dumps(plain.template))
    group = template["Resources"][asgs[1]]["Properties"]
    group["Tags"] = [t for t in group["Tags"] if t["Key"] != "training-cluster:cluster"]
    launch = template["Resources"][group["LaunchTemplate"]["LaunchTemplateId"]["Ref"]]["Properties"]
    for spec in launch["LaunchTemplateData"].get("TagSpecifications", []):
        spec["Tags"] = [t for t in spec["Tags"] if t["Key"] != "training-cluster:cluster"]
    _, problems = unmet_tag_conditions(template, plain.logical_id(role), asgs)
    assert problems and all(asgs[1] in p and asgs[0] not in p for p in problems)


@pytest.mark.parametrize("change", ["remove", "override on the stack", "override on a parent"])
def test_synthesis_refuses_fleets_whose_cluster_tag_was_changed(change: str) -> None:
    """AutoRepair's permissions and rule need the tag: a change around the fleets that takes it
    away fails synthesis, naming the fleet, instead of denying every repair at run time."""
    from aws_cdk import Tags

    plain = Plain()
    _, _, cpu = repair_over_two_fleets(plain)
    if change == "remove":
        Tags.of(cpu).remove("training-cluster:cluster")
    elif change == "override on the stack":
        Tags.of(plain.stack).add("training-cluster:cluster", "team-x", priority=300)
    else:
        Tags.of(cpu).add("training-cluster:cluster", "team-x", priority=150)
    with pytest.raises(Exception, match=r"fleet 'cpu': its instances would carry training-cluster:cluster"):
        Template.from_stack(plain.stack)


def test_auto_repair_refuses_fleets_in_another_stack() -> None:
    plain = Plain()
    gpu = plain.fleet("Gpu", group_name="gpu", instance_type="p5.48xlarge")
    other = Stack(plain.stack.node.root, "Other", env={"region": "us-east-1"})
    topic = ClusterEvents(other, "Events", cluster_name="alone").topic
    with pytest.raises(ValueError, match="fleets: gpu: in another stack"):
        AutoRepair(other, "Repair", fleets=[gpu], topic=topic)


def test_auto_repair_refuses_fleets_of_two_clusters_or_a_group_twice() -> None:
    plain = Plain()
    topic = ClusterEvents(plain.stack, "Events", cluster_name="alone").topic
    gpu = plain.fleet("Gpu", group_name="gpu", instance_type="p5.48xlarge")
    other = plain.fleet("Other", cluster_name="other", group_name="cpu", instance_type="m7i.4xlarge")
    with pytest.raises(ValueError, match="fleets"):
        AutoRepair(plain.stack, "A", fleets=[gpu, other], topic=topic)
    twice = plain.fleet("Twice", group_name="gpu", instance_type="p5.48xlarge")
    with pytest.raises(ValueError, match="gpu"):
        AutoRepair(plain.stack, "B", fleets=[gpu, twice], topic=topic)
    with pytest.raises(ValueError, match="fleets"):
        AutoRepair(plain.stack, "C", fleets=[], topic=topic)
    with pytest.raises(ValueError, match=r"max_parallel_replacements"):
        AutoRepair(plain.stack, "D", fleets=[gpu], topic=topic, options=AutoRepairOptions(max_parallel_replacements=0))


@pytest.mark.parametrize("path", ["/etc", "/etc'x", "fsx", "/fsx\n"])
def test_auto_repair_refuses_a_lustre_mount_path_no_file_system_takes(path: str) -> None:
    from training_cluster.rules import PropsError
    from training_cluster.rules.lustre import mount_path_problem

    plain = Plain()
    gpu = plain.fleet("Gpu", group_name="gpu", instance_type="p5.48xlarge")
    events = ClusterEvents(plain.stack, "Events", cluster_name="alone")
    with pytest.raises(PropsError) as info:
        AutoRepair(plain.stack, "Repair", fleets=[gpu], topic=events.topic, lustre_mount_path=path)
    assert [(f.path, f.message) for f in info.value.findings] == [("lustre_mount_path", mount_path_problem(path))]


def test_auto_repair_metrics_are_per_group_of_its_cluster() -> None:
    plain = Plain()
    repair, _, _ = repair_over_two_fleets(plain)
    reboots = repair.metric_reboots("cpu")
    assert (reboots.namespace, reboots.metric_name, reboots.statistic) == ("TrainingCluster/Repair", "Reboots", "Sum")
    assert reboots.dimensions == {"Cluster": "alone", "InstanceGroup": "cpu"}
    assert repair.metric_seconds_to_repair("gpu").statistic == "Maximum"
    with pytest.raises(ValueError, match="group_name must be one of the groups watched: gpu, cpu"):
        repair.metric_incidents("nope")


# Slurm


def test_slurm_alone_takes_its_identity_from_the_fleets() -> None:
    plain = Plain()
    controller, login, compute = plain.slurm_fleets()
    slurm = Slurm(
        plain.stack, "Slurm", controller=controller, login=login, compute=compute, file_system_mount_path="/fsx"
    )
    assert slurm.cluster_name == "alone" and list(slurm.compute) == ["gpu", "l40s"]
    layout = json.loads(plain.settings(compute[0])["SLURM_LAYOUT"])
    assert layout["cluster"] == "alone"
    assert [g["name"] for g in layout["groups"]] == ["gpu", "l40s"]
    assert layout["partitions"] == {"gpu": ["gpu"], "l40s": ["l40s"]}
    (parameter,) = plain.of(slurm, "AWS::SSM::Parameter")
    assert parameter["Properties"]["Name"] == "/training-cluster/alone/slurm/controller-address"
    munge = plain.stack.resolve(slurm.munge_key.secret_arn)
    for fleet, role in ((controller, "controller"), (login, "login"), *((f, "compute") for f in compute)):
        settings = plain.settings(fleet)
        assert settings["SLURM_ROLE"] == role and settings["FSX_MOUNT_PATH"] == "/fsx"
        assert settings["CLUSTER_NAME"] == "alone" and settings["INSTANCE_GROUP"] == fleet.group_name
        assert fleet.bootstrap.stage_names[-1] == "slurm"
        grants = plain.statements(fleet)
        assert any(
            munge in listed(s["Resource"]) and "secretsmanager:GetSecretValue" in listed(s["Action"]) for s in grants
        )
        (scripts,) = object_reads(plain, fleet)  # the Slurm scripts' one object
        assert ".zip" in scripts and "/*" not in scripts


def test_slurm_refuses_fleets_of_two_clusters() -> None:
    plain = Plain()
    controller, login, compute = plain.slurm_fleets("one")
    _, _, others = plain.slurm_fleets("two")
    with pytest.raises(
        ValueError, match=r"the fleets must be of one cluster \(their cluster_name\); got controller 'one'"
    ):
        Slurm(plain.stack, "Slurm", controller=controller, login=login, compute=[*compute, others[0]],
              file_system_mount_path="/fsx")  # fmt: skip


def test_slurm_refuses_a_group_given_twice() -> None:
    plain = Plain()
    controller, login, compute = plain.slurm_fleets()
    with pytest.raises(ValueError, match="group name 'gpu' is used 2 times"):
        Slurm(plain.stack, "Slurm", controller=controller, login=login, compute=[compute[0], compute[0]],
              file_system_mount_path="/fsx")  # fmt: skip


# Observability


def test_observability_alone_takes_the_cluster_from_its_nodes() -> None:
    plain = Plain()
    events = ClusterEvents(plain.stack, "Events", cluster_name="alone")
    gpu = plain.fleet("Gpu", group_name="gpu", instance_type="p5.48xlarge")
    cpu = plain.fleet("Cpu", group_name="cpu", instance_type="m7i.4xlarge")
    observability = Observability(plain.stack, "Observability", topic=events.topic, topic_key=events.key)
    observability.add_nodes(fleets=[gpu])
    observability.add_nodes(fleets=[cpu], scrape_interval_seconds=30)  # a second call: the same collectors asset
    assert observability.cluster_name == "alone"
    (workspace,) = plain.of(observability, "AWS::APS::Workspace")
    assert workspace["Properties"]["Alias"] == "alone-metrics"
    (rules,) = plain.of(observability, "AWS::APS::RuleGroupsNamespace")
    assert rules["Properties"]["Name"] == "alone-alerts"
    (grafana,) = plain.of(observability, "AWS::Grafana::Workspace")
    assert grafana["Properties"]["Name"] == "alone-grafana"
    (provisioning,) = plain.of(observability, "Custom::GrafanaProvisioning")
    assert "tc-alone-gpu" in json.dumps(provisioning["Properties"]["Dashboards"])
    assert "[alone]" in json.dumps(workspace["Properties"]["AlertManagerDefinition"])
    workspace_arn = {"Fn::GetAtt": [plain.stack.resolve(observability.workspace.logical_id), "Arn"]}
    for fleet, interval in ((gpu, "15"), (cpu, "30")):
        assert "metrics" in fleet.bootstrap.stage_names
        assert plain.settings(fleet)["SCRAPE_INTERVAL_SECONDS"] == interval
        grants = plain.statements(fleet)
        assert any(s["Action"] == "aps:RemoteWrite" and s["Resource"] == workspace_arn for s in grants)
        (collectors,) = object_reads(plain, fleet)
        assert ".zip" in collectors and "/*" not in collectors
    assert len({json.dumps(object_reads(plain, f)) for f in (gpu, cpu)}) == 1  # one asset for both


def test_observability_names_given_must_match_the_nodes() -> None:
    plain = Plain()
    events = ClusterEvents(plain.stack, "Events", cluster_name="alone")
    other = plain.fleet("Gpu", cluster_name="other", group_name="gpu", instance_type="p5.48xlarge")
    observability = Observability(plain.stack, "Observability", topic=events.topic, cluster_name="alone",
                                  options=ObservabilityOptions(grafana=False))  # fmt: skip
    with pytest.raises(ValueError, match="observability covers one cluster: fleets must be of the same cluster, got "
                       "cluster_name 'alone', gpu of 'other'"):  # fmt: skip
        observability.add_nodes(fleets=[other])


def test_observability_without_a_name_or_nodes_fails_synthesis() -> None:
    plain = Plain()
    events = ClusterEvents(plain.stack, "Events", cluster_name="alone")
    Observability(plain.stack, "Observability", topic=events.topic, options=ObservabilityOptions(grafana=False))
    with pytest.raises(RuntimeError, match="observability needs cluster_name, or fleets"):
        Template.from_stack(plain.stack)


# The events topic


def test_the_events_topic_alone() -> None:
    plain = Plain()
    events = ClusterEvents(plain.stack, "Events", cluster_name="alone")
    fleet = plain.fleet("Gpu", group_name="gpu", instance_type="p5.48xlarge", notification_topic=events.topic)
    resources = plain.template["Resources"]
    topic_id = plain.logical_id(events.topic)
    # The topic is the construct's main child (Default): the ids of a topic Events in the stack.
    assert topic_id == "EventsD32975C2"
    (topic,) = plain.of(events, "AWS::SNS::Topic")
    assert topic["Properties"]["TopicName"] == "alone-events"
    key_id = topic["Properties"]["KmsMasterKeyId"]["Fn::GetAtt"][0]
    assert key_id == plain.logical_id(events.key)
    statements = resources[key_id]["Properties"]["KeyPolicy"]["Statement"]
    assert topic_id not in json.dumps(statements)  # the key names the topic by name: no cycle
    principals = json.dumps([s["Principal"] for s in statements])
    assert "AWSServiceRoleForAutoScaling" in principals and "cloudwatch.amazonaws.com" in principals
    (asg,) = plain.of(fleet, "AWS::AutoScaling::AutoScalingGroup")
    assert asg["Properties"]["NotificationConfigurations"][0]["TopicARN"] == {"Ref": topic_id}


def test_the_events_topic_refuses_a_bad_cluster_name() -> None:
    with pytest.raises(ValueError, match="cluster_name: must be lower case letters, digits and single hyphens"):
        ClusterEvents(Plain().stack, "Events", cluster_name="Alone!")
