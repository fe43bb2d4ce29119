"""Auto-repair end to end, offline: the synthesized stack created in moto's CloudFormation, the
report intake and the repair handler run in-process with the deployed functions' environments,
fed real event shapes, each to the function its rule targets: the agent's events to the intake,
which forwards the confirmed ones to the repair function (an asynchronous invoke, kept here and
delivered in order: moto would run the function in Docker); AWS's events to the repair function."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import boto3
import kube_stub
import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_ec2 as ec2
from botocore.stub import Stubber
from kube_stub import ACCESS_KEY, SECRET_KEY, Authority, KubeStub, Running, node, pod
from moto import mock_aws

import handler
import offline_deploy
from auto_repair.aws import Clients
from auto_repair.intake import Intake, IntakeSettings
from auto_repair.kubernetes import KubernetesDrain
from auto_repair.node_hooks import KubernetesNodes
from auto_repair.repair import Repairer
from auto_repair.settings import Settings
from conftest import CDK_CONTEXT, ROOT, Synthesized, minimal_config
from iam_tags import unmet_tag_conditions
from offline_deploy import deploy
from repair_world import health_tag, impaired, tag_event
from training_cluster import ClusterConfig, contract, kube_manifests, kube_operator
from training_cluster.constructs import AutoRepair, ClusterEvents, Fleet
from training_cluster.contract import LABEL_HEALTH

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # moto names each type it skips
REGION = "us-east-1"
SESSION = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)


def cluster(**repair: Any) -> ClusterConfig:
    return ClusterConfig.from_dict(
        minimal_config(
            name="e2e",
            instance_groups=[{"name": "gpu", "instance_type": "p5.48xlarge", "count": 8}],
            storage={},
            auto_repair=repair,
        )
    )


@dataclass
class Deployed:
    environment: dict[str, str]
    now: list[float]
    answers: dict[str, Callable[..., dict[str, Any]]]  # API operations answered by hand
    events: list[dict[str, Any]]  # what the handler put on EventBridge
    intake_environment: dict[str, str]
    repair_arn: str  # the deployed repair function's
    invoked: list[dict[str, Any]]  # the intake's asynchronous invokes of the repair function, not yet delivered

    def repairer(self, clients: Clients | None = None) -> Repairer:
        settings = Settings.from_env(self.environment)
        return Repairer(
            settings, clients or Clients(region=REGION, session=SESSION), clock=lambda: self.now[0], sleep=self._sleep
        )

    def _sleep(self, seconds: float) -> None:
        self.now[0] += seconds

    def intake(self) -> Intake:
        settings = IntakeSettings.from_env(self.intake_environment)
        return Intake(settings, Clients(region=REGION, session=SESSION), clock=lambda: self.now[0], sleep=self._sleep)

    def send(self, event: dict[str, Any], clients: Clients | None = None) -> list[dict[str, Any]]:
        """``event`` to the function its rule targets. For the agent's events, what the intake
        did, a forwarded report standing for what the repair function then did with it."""
        if event.get("source") == "training-cluster.health":
            received: list[dict[str, Any]] = handler.intake(event, use=self.intake())["received"]
            return [o for r in received for o in (self.deliver(clients) if r["result"] == "forwarded" else [r])]
        outcomes: list[dict[str, Any]] = handler.handler(event, use=self.repairer(clients))["outcomes"]
        return outcomes

    def deliver(self, clients: Clients | None = None) -> list[dict[str, Any]]:
        """Lambda's asynchronous queue: the intake's forwards to the repair function, in order."""
        outcomes: list[dict[str, Any]] = []
        while self.invoked:
            outcomes += handler.handler(self.invoked.pop(0), use=self.repairer(clients))["outcomes"]
        return outcomes

    @property
    def asg(self) -> str:
        """The first Auto Scaling group of the settings (by instance group name)."""
        return self.groups()[0]

    def groups(self) -> list[str]:
        """The Auto Scaling groups the control plane repairs, in the order of its settings (by group name)."""
        return list(json.loads(self.environment["AUTO_SCALING_GROUPS"]))

    def group(self, name: str) -> str:
        """The Auto Scaling group of instance group ``name``."""
        (asg,) = [asg for asg, group in json.loads(self.environment["AUTO_SCALING_GROUPS"]).items() if group == name]
        return str(asg)

    def agent(
        self,
        instance_id: str,
        *failures: dict[str, Any],
        state: str = "unhealthy",
        boot: str = "b1",
        group: str = "gpu",
    ) -> dict[str, Any]:
        """An honest agent: it tags its own instance, then sends its event."""
        self.tag(instance_id, health_tag(*failures, state=state, boot=boot))
        return agent(instance_id, *failures, state=state, boot=boot, group=group)

    def tag(self, instance_id: str, value: str) -> None:
        tags = [{"Key": "training-cluster:health", "Value": value}]
        SESSION.client("ec2", region_name=REGION).create_tags(Resources=[instance_id], Tags=tags)

    def instances(self, asg: str | None = None) -> list[str]:
        groups = SESSION.client("autoscaling", region_name=REGION).describe_auto_scaling_groups(
            AutoScalingGroupNames=[asg or self.asg]
        )
        return sorted(i["InstanceId"] for i in groups["AutoScalingGroups"][0]["Instances"])

    def state(self, instance_id: str) -> str:
        found = SESSION.client("ec2", region_name=REGION).describe_instances(InstanceIds=[instance_id])
        return str(found["Reservations"][0]["Instances"][0]["State"]["Name"])

    def story(self, instance_id: str) -> list[str]:
        ledger = self.repairer().ledger
        incident = ledger.instance(instance_id)["incident_id"]
        return [s["step"] for s in ledger.story(incident)]


@pytest.fixture
def deployed(synth: Callable[..., Synthesized], request: pytest.FixtureRequest) -> Iterator[Deployed]:
    repair = getattr(request, "param", {})
    sy = synth(cluster(**repair))
    assert sy.stack.auto_repair is not None
    with deployed_world(sy.stack, sy.stack.auto_repair, sy.template_json, sy.outdir) as world:
        yield world


@contextmanager
def deployed_world(stack: Stack, repair: AutoRepair, template: dict[str, Any], outdir: Path) -> Iterator[Deployed]:
    """``stack`` (synthesized into ``outdir``) created in moto, and ``repair``'s functions as deployed."""
    with mock_aws():
        deploy(template, outdir, stack.artifact_id, REGION, "ami-0123456789abcdef0")
        resources = SESSION.client("cloudformation", region_name=REGION).list_stack_resources(
            StackName=stack.artifact_id
        )["StackResourceSummaries"]

        def configuration(function: Any) -> dict[str, Any]:
            logical_id = stack.resolve(function.function_name)["Ref"]
            name = next(r["PhysicalResourceId"] for r in resources if r["LogicalResourceId"] == logical_id)
            found: dict[str, Any] = SESSION.client("lambda", region_name=REGION).get_function_configuration(
                FunctionName=name
            )
            return found

        function, intake = configuration(repair.function), configuration(repair.intake)
        world = Deployed(
            environment=function["Environment"]["Variables"],
            now=[1_800_000_000.0],
            answers={},
            events=[],
            intake_environment=intake["Environment"]["Variables"],
            repair_arn=function["FunctionArn"],
            invoked=[],
        )

        def put_events(**params: Any) -> dict[str, Any]:
            world.events.extend(params["Entries"])
            return {"FailedEntryCount": 0, "Entries": [{"EventId": str(len(world.events))}]}

        def invoke(**params: Any) -> dict[str, Any]:
            assert (params["FunctionName"], params["InvocationType"]) == (world.repair_arn, "Event"), params
            world.invoked.append(json.loads(params["Payload"]))
            return {"StatusCode": 202}

        # moto's EventBridge cannot match rules that CloudFormation created: the events are kept here.
        world.answers["PutEvents"] = put_events
        world.answers["Invoke"] = invoke
        intercept = _intercept(world.answers)
        with mock.patch("botocore.client.BaseClient._make_api_call", autospec=True, side_effect=intercept):
            yield world


def agent(
    instance_id: str, *failures: dict[str, Any], state: str = "unhealthy", boot: str = "b1", group: str = "gpu"
) -> dict[str, Any]:
    detail = {"cluster": "e2e", "instance_group": group, "instance_id": instance_id, "boot_id": boot, "state": state}
    return {
        "source": "training-cluster.health",
        "detail-type": "Node Health Changed",
        "detail": {**detail, "failures": list(failures)},
    }


def xid(code: int) -> dict[str, Any]:
    return {"check": "xid", "code": str(code), "message": f"NVRM: Xid (PCI:0000:53:00): {code}, pid=1"}


SWEEP = {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}


def test_the_deployed_functions_are_configured_for_this_cluster(deployed: Deployed) -> None:
    intake = deployed.intake_environment
    assert intake["REPAIR_FUNCTION"] == deployed.repair_arn and intake["CLUSTER_NAME"] == "e2e"
    assert intake["LEDGER_TABLE"] == deployed.environment["LEDGER_TABLE"]
    assert intake["AUTO_SCALING_GROUPS"] == deployed.environment["AUTO_SCALING_GROUPS"]
    env = deployed.environment
    assert env["CLUSTER_NAME"] == "e2e" and env["DRY_RUN"] == "false" and env["MAX_PARALLEL_REPLACEMENTS"] == "1"
    assert env["INSTANCE_ARN_PREFIX"] == "arn:aws:ec2:us-east-1:123456789012:instance/"
    assert list(json.loads(env["AUTO_SCALING_GROUPS"]).values()) == ["gpu"]
    assert len(deployed.instances()) == 8


def test_replace_class_xid(deployed: Deployed) -> None:
    bad, *healthy = deployed.instances()
    (outcome,) = deployed.send(deployed.agent(bad, xid(79)))
    assert outcome["result"] == "replaced"
    assert deployed.state(bad) in ("shutting-down", "terminated") and all(
        deployed.state(i) == "running" for i in healthy
    )
    assert len(deployed.instances()) == 8
    assert deployed.story(bad) == ["signal", "decision", "evidence", "action"]
    ledger = deployed.repairer().ledger
    (evidence,) = [s for s in ledger.story(ledger.instance(bad)["incident_id"]) if s["step"] == "evidence"]
    assert f"/evidence/e2e/arn:aws:ec2:us-east-1:123456789012:instance/{bad}/" in evidence["location"]
    (announced,) = deployed.events
    assert (announced["Source"], announced["DetailType"]) == ("training-cluster.repair", "Repair Action")
    assert json.loads(announced["Detail"])["instance_id"] == bad
    # the instance has left its group: a late copy of its report stops at the intake
    assert deployed.send(agent(bad, xid(79))) == [{"instance_id": bad, "result": "ignored"}]


def test_reboot_class_xid_then_recurrence(deployed: Deployed) -> None:
    bad = deployed.instances()[3]
    assert deployed.send(deployed.agent(bad, xid(64)))[0]["result"] == "rebooted"
    deployed.now[0] += 600
    assert deployed.send(deployed.agent(bad, state="healthy", boot="b2"))[0]["result"] == "closed"
    deployed.now[0] += 600
    assert deployed.send(deployed.agent(bad, xid(64), boot="b2"))[0]["result"] == "replaced"
    assert deployed.story(bad) == ["signal", "decision", "evidence", "action"]


def test_a_forged_report_touches_nothing_and_the_tag_change_event_repairs(deployed: Deployed) -> None:
    """A node names a healthy neighbour: nothing happens. AWS's event for a node's own tag acts."""
    victim, bad = deployed.instances()[1:3]
    deployed.tag(victim, "healthy boot=b1")
    assert [o["result"] for o in deployed.send(agent(victim, xid(79)))] == ["unconfirmed"]
    assert all(deployed.state(i) == "running" for i in deployed.instances()) and deployed.events == []
    deployed.tag(bad, health_tag(xid(79), boot="b1"))
    event = tag_event(bad, health_tag(xid(79), boot="b1"))
    event["detail"]["tags"]["training-cluster:cluster"] = "e2e"
    assert deployed.send(event)[0]["result"] == "replaced"
    assert deployed.state(bad) in ("shutting-down", "terminated") and deployed.state(victim) == "running"


def test_a_flood_of_forged_reports_never_reaches_the_repair_function(deployed: Deployed) -> None:
    """Issue 9: a node floods the bus with reports naming its neighbours. The intake records them
    and invokes nothing; AWS's event for a real fault goes to the repair function, which acts at once."""
    bad, *victims = deployed.instances()
    for victim in victims:
        deployed.tag(victim, "healthy boot=b1")
    results = [r["result"] for n in range(200) for r in deployed.send(agent(victims[n % len(victims)], xid(79)))]
    assert results == ["unconfirmed"] * 200 and deployed.invoked == []
    ledger = deployed.repairer().ledger
    counts = [ledger.table.get_item(Key={"pk": f"report#{v}", "sk": "state"})["Item"]["unconfirmed"] for v in victims]
    assert sum(counts) == 200
    deployed.tag(bad, health_tag(xid(79), boot="b1"))
    event = tag_event(bad, health_tag(xid(79), boot="b1"))
    event["detail"]["tags"]["training-cluster:cluster"] = "e2e"
    assert [o["result"] for o in deployed.send(event)] == ["replaced"]
    assert all(deployed.state(v) == "running" for v in victims) and deployed.state(bad) != "running"


def test_failed_status_check(deployed: Deployed) -> None:
    bad = deployed.instances()[5]
    deployed.answers["DescribeInstanceStatus"] = impaired([bad])
    outcomes = deployed.send(SWEEP)
    assert [(o["instance_id"], o["result"]) for o in outcomes] == [(bad, "replaced")]


def test_retirement_event(deployed: Deployed) -> None:
    bad = deployed.instances()[1]
    event = {
        "source": "aws.health",
        "detail-type": "AWS Health Event",
        "detail": {
            "service": "EC2",
            "eventTypeCategory": "scheduledChange",
            "eventTypeCode": "AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED",
            "affectedEntities": [{"entityValue": bad}],
        },
    }
    assert deployed.send(event)[0]["result"] == "replaced"
    assert deployed.state(bad) in ("shutting-down", "terminated")


def test_duplicate_event_acts_once(deployed: Deployed) -> None:
    """Repeats of the report stop at the intake; AWS's event for the same tag and a retried
    delivery of the forward reach the repair function, which acts once (a reboot: the node stays)."""
    bad = deployed.instances()[2]
    event = deployed.agent(bad, xid(64))
    results = [deployed.send(event)[0]["result"] for _ in range(3)]
    assert results == ["rebooted", "repeated", "repeated"]
    tag_change = tag_event(bad, health_tag(xid(64), boot="b1"))
    tag_change["detail"]["tags"]["training-cluster:cluster"] = "e2e"
    assert [o["result"] for o in deployed.send(tag_change)] == ["duplicate"]
    deployed.invoked.append(agent(bad, xid(64)))  # Lambda retries an asynchronous invoke
    assert [o["result"] for o in deployed.deliver()] == ["duplicate"]
    assert deployed.story(bad).count("action") == 1


@pytest.mark.parametrize("deployed", [{"unhealthy_threshold_percent": 50}], indirect=True)
def test_three_of_eight_with_a_limit_of_one(deployed: Deployed) -> None:
    bad = deployed.instances()[:3]
    results = [deployed.send(deployed.agent(i, xid(79)))[0]["result"] for i in bad]
    assert results == ["replaced", "deferred", "deferred"]
    # each sweep sees the replaced node gone, frees its slot, replaces the next; the last one waits
    for expected in (["closed", "deferred", "replaced"], ["closed", "replaced"]):
        deployed.now[0] += 60
        assert sorted(o["result"] for o in deployed.send(SWEEP)) == expected
    assert all(deployed.state(i) in ("shutting-down", "terminated") for i in bad)
    assert all(deployed.story(i)[-1] in ("action", "closed") for i in bad)


def test_half_the_group_unhealthy_opens_the_breaker(deployed: Deployed) -> None:
    bad = deployed.instances()[:4]
    deployed.answers["DescribeInstanceStatus"] = impaired(bad)
    outcomes = deployed.send(SWEEP)
    assert [o["result"] for o in outcomes] == ["suppressed"] * 4
    assert all(deployed.state(i) == "running" for i in deployed.instances()) and len(deployed.instances()) == 8
    assert all(deployed.story(i) == ["signal", "decision", "held"] for i in bad)
    assert deployed.events == []
    # a person resets the breaker: the held nodes still failing are replaced, one at a time
    deployed.answers["DescribeInstanceStatus"] = impaired(bad[1:])  # one recovered meanwhile
    results = [o["result"] for o in deployed.send({"reset_circuit_breaker": "gpu"})]
    assert results == ["closed", "replaced", "deferred", "deferred"]
    # each sweep: the replaced node gone (its slot freed), the others still failing (duplicates), the next one goes
    for expected in (["closed", "deferred", "duplicate", "duplicate", "replaced"], ["closed", "duplicate", "replaced"]):
        deployed.now[0] += 60
        assert sorted(o["result"] for o in deployed.send(SWEEP)) == expected
    assert deployed.state(bad[0]) == "running"
    assert all(deployed.story(i)[:5] == ["signal", "decision", "held", "released", "evidence"] for i in bad[1:2])


def test_throttling(deployed: Deployed) -> None:
    bad = deployed.instances()[6]
    clients = Clients(region=REGION, session=SESSION)
    autoscaling = SESSION.client("autoscaling", region_name=REGION)
    membership = autoscaling.describe_auto_scaling_instances(InstanceIds=[bad])
    group = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[deployed.asg])
    for response in (membership, group):
        response.pop("ResponseMetadata")
    stubber = Stubber(autoscaling)
    stubber.add_client_error("describe_auto_scaling_instances", service_error_code="Throttling", http_status_code=400)
    stubber.add_response("describe_auto_scaling_instances", membership)
    stubber.add_client_error("describe_auto_scaling_groups", service_error_code="Throttling", http_status_code=400)
    stubber.add_response("describe_auto_scaling_groups", group)
    stubber.add_response(
        "terminate_instance_in_auto_scaling_group",
        {
            "Activity": {
                "ActivityId": "a",
                "AutoScalingGroupName": deployed.asg,
                "Cause": "c",
                "StartTime": "2026-11-25T00:00:00Z",
                "StatusCode": "InProgress",
                "Progress": 0,
            }
        },
    )
    clients.set("autoscaling", autoscaling)
    with stubber:
        (outcome,) = deployed.send(deployed.agent(bad, xid(79)), clients)
    assert outcome["result"] == "replaced"
    stubber.assert_no_pending_responses()


def test_no_capacity(deployed: Deployed) -> None:
    bad = deployed.instances()[4]
    failure = {
        "source": "aws.autoscaling",
        "detail-type": "EC2 Instance Launch Unsuccessful",
        "detail": {
            "AutoScalingGroupName": deployed.asg,
            "StatusCode": "Failed",
            "StatusMessage": "We currently do not have sufficient p5.48xlarge capacity in the Availability Zone you requested (us-east-1a). InsufficientInstanceCapacity",
        },
    }
    assert deployed.send(failure)[0]["result"] == "backoff"
    assert deployed.send(deployed.agent(bad, xid(79)))[0]["result"] == "deferred"
    assert deployed.state(bad) == "running"
    deployed.now[0] += 601
    assert [o["result"] for o in deployed.send(SWEEP)] == ["replaced"]
    assert deployed.story(bad) == ["signal", "decision", "deferred", "evidence", "action"]


def _intercept(answers: dict[str, Callable[..., dict[str, Any]]]) -> Callable[..., Any]:
    """Answer some API operations by hand (moto reports every status check as ok); pass the rest to moto."""
    from botocore.client import BaseClient

    original = BaseClient._make_api_call

    def call(client: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        if operation in answers:
            return answers[operation](**params)
        return original(client, operation, params)

    return call


# AutoRepair composed by hand over two fleets, with no TrainingClusterStack (issue 10)


@pytest.fixture
def hand_made(tmp_path: Path) -> Iterator[Deployed]:
    app = App(context=CDK_CONTEXT, outdir=str(tmp_path / "out"))
    stack = Stack(app, "HandMade", env={"region": REGION})
    vpc = ec2.Vpc(stack, "Vpc", max_azs=1)

    def fleet(group: str, instance_type: str, count: int) -> Fleet:
        return Fleet(
            stack, group.capitalize(), cluster_name="e2e", group_name=group, vpc=vpc,
            subnet=vpc.private_subnets[0], instance_type=instance_type, count=count,
        )  # fmt: skip

    fleets = [fleet("gpu", "p5.48xlarge", 4), fleet("cpu", "m7i.4xlarge", 2)]
    events = ClusterEvents(stack, "Events", cluster_name="e2e")
    repair = AutoRepair(stack, "Repair", fleets=fleets, topic=events.topic)
    app.synth()
    template = json.loads((tmp_path / "out" / f"{stack.artifact_id}.template.json").read_text())
    role = repair.function.role
    assert role is not None
    asgs = [stack.resolve(f.auto_scaling_group.node.default_child.logical_id) for f in fleets]  # type: ignore[union-attr]
    # moto does not enforce IAM: the permissions' tag conditions are checked against the template.
    actions, problems = unmet_tag_conditions(template, stack.resolve(role.node.default_child.logical_id), asgs)  # type: ignore[union-attr]
    assert {"ec2:RebootInstances", "ssm:SendCommand"} <= actions and problems == []
    with deployed_world(stack, repair, template, tmp_path / "out") as world:
        yield world


def test_a_hand_made_auto_repair_reboots_and_replaces_in_each_group(hand_made: Deployed) -> None:
    gpu_asg, cpu_asg = hand_made.group("gpu"), hand_made.group("cpu")
    gpu, cpu = hand_made.instances(gpu_asg), hand_made.instances(cpu_asg)
    assert (len(gpu), len(cpu)) == (4, 2)
    # What the permissions' conditions need, as the deployed instances carry it.
    ec2_client = SESSION.client("ec2", region_name=REGION)
    for instance in gpu + cpu:
        (reservation,) = ec2_client.describe_instances(InstanceIds=[instance])["Reservations"]
        tags = {t["Key"]: t["Value"] for t in reservation["Instances"][0].get("Tags", [])}
        assert tags["training-cluster:cluster"] == "e2e"
        assert tags["training-cluster:instance-group"] == ("gpu" if instance in gpu else "cpu")
    assert hand_made.send(hand_made.agent(gpu[0], xid(64)))[0]["result"] == "rebooted"
    hand_made.now[0] += 600  # back after its reboot: one unhealthy node of four is under the breaker's limit
    assert hand_made.send(hand_made.agent(gpu[0], state="healthy", boot="b2"))[0]["result"] == "closed"
    (outcome,) = hand_made.send(
        hand_made.agent(cpu[1], {"check": "lustre", "message": "/fsx does not answer"}, group="cpu")
    )
    assert outcome["result"] == "rebooted"
    (outcome,) = hand_made.send(hand_made.agent(gpu[2], xid(79)))
    assert outcome["result"] == "replaced"
    assert hand_made.state(gpu[2]) in ("shutting-down", "terminated")
    assert all(hand_made.state(i) == "running" for i in (gpu[1], gpu[3], cpu[0]))
    assert len(hand_made.instances(gpu_asg)) == 4


# The EKS example deployed (issue 11): the repair function's EKS hooks in the deployed wiring

EKS_NOT_MODELED = {"AWS::EKS::Cluster", "AWS::EKS::Addon", "AWS::EKS::AccessEntry"}
"""moto's CloudFormation has no EKS: these are left out like the other types it does not model."""


def moto_eks_template(template: dict[str, Any]) -> dict[str, Any]:
    """The EKS example's template as moto can create it. The cluster's ``Ref`` becomes its name
    (what CloudFormation returns); its security group (which EKS creates) a stand-in group in the
    same VPC; the kubectl-ready barrier parameter gets a name (CloudFormation would generate one,
    moto needs one). Its endpoint and CA stay placeholders: the test points them at the stand-in."""
    template = json.loads(json.dumps(template))
    resources = template["Resources"]
    ((cluster_id, cluster),) = [(k, r) for k, r in resources.items() if r["Type"] == "AWS::EKS::Cluster"]
    control_plane = cluster["Properties"]["ResourcesVpcConfig"]["SecurityGroupIds"][0]["Fn::GetAtt"][0]
    resources["ClusterSecurityGroupStandIn"] = {
        "Type": "AWS::EC2::SecurityGroup",
        "Properties": {
            "GroupDescription": "stands in for the security group EKS creates for the cluster",
            "VpcId": resources[control_plane]["Properties"]["VpcId"],
        },
    }
    for logical_id, resource in resources.items():
        if resource["Type"] == "AWS::SSM::Parameter":
            resource["Properties"].setdefault("Name", logical_id)
    swaps = {
        json.dumps({"Ref": cluster_id}): cluster["Properties"]["Name"],
        json.dumps({"Fn::GetAtt": [cluster_id, "ClusterSecurityGroupId"]}): {
            "Fn::GetAtt": ["ClusterSecurityGroupStandIn", "GroupId"]
        },
    }

    def swap(value: Any) -> Any:
        if isinstance(value, dict):
            return swaps.get(json.dumps(value)) or {k: swap(v) for k, v in value.items()}
        if isinstance(value, list):
            return [swap(v) for v in value]
        return value

    swapped: dict[str, Any] = swap(template)
    return swapped


@pytest.fixture
def deployed_eks(synth: Callable[..., Synthesized]) -> Iterator[Deployed]:
    sy = synth(ROOT / "examples" / "eks.yaml")
    assert sy.stack.auto_repair is not None
    template = moto_eks_template(sy.template_json)
    with (
        mock.patch.object(offline_deploy, "NOT_MODELED", offline_deploy.NOT_MODELED | EKS_NOT_MODELED),
        deployed_world(sy.stack, sy.stack.auto_repair, template, sy.outdir) as world,
    ):
        yield world


@pytest.fixture
def kube_api(tmp_path: Path) -> Iterator[tuple[Running, Authority]]:
    authority = Authority.make("cluster-ca")
    served = Running(KubeStub(rbac=set()), *authority.issue(tmp_path / "pki"))
    yield served, authority
    served.stop()


def test_the_deployed_eks_repair_function_drains_through_the_kubernetes_api(
    deployed_eks: Deployed, kube_api: tuple[Running, Authority]
) -> None:
    """The deployed function's environment (EKS_* from the cluster's attributes; endpoint and CA
    pointed at the stand-in, which no offline deploy can give) builds the EKS hooks; the agent's
    report goes through the intake; the node is cordoned and drained before the terminate and its
    Node deleted after. The stand-in accepts only tokens signed for the deployed cluster's name."""
    served, authority = kube_api
    env = deployed_eks.environment
    assert env["EKS_CLUSTER_NAME"] == "demo-eks" and {"EKS_ENDPOINT", "EKS_CERTIFICATE_AUTHORITY"} <= set(env)
    gpu_asg = next(asg for asg, group in json.loads(env["AUTO_SCALING_GROUPS"]).items() if group == "gpu")
    bad, *others = deployed_eks.instances(gpu_asg)
    (reservation,) = SESSION.client("ec2", region_name=REGION).describe_instances(InstanceIds=[bad])["Reservations"]
    instance = reservation["Instances"][0]
    name, zone = instance["PrivateDnsName"], instance["Placement"]["AvailabilityZone"]
    served.stub.add(
        node(name, bad, zone=zone),
        pod("worker-0", name, ownerReferences=[{"kind": "PyTorchJob", "name": "job", "controller": True}]),
        pod("efa-plugin-x", name, namespace="kube-system", ownerReferences=[{"kind": "DaemonSet", "controller": True}]),
    )
    settings = Settings.from_env({**env, "EKS_ENDPOINT": served.url, "EKS_CERTIFICATE_AUTHORITY": authority.data})
    # the function's credentials: the stand-in checks each token's signature with this key
    clients = Clients(region=REGION, session=boto3.Session(ACCESS_KEY, SECRET_KEY, region_name=REGION))
    repairer = handler.make_repairer(settings, clients)
    assert isinstance(repairer.drain_hook, KubernetesDrain) and isinstance(repairer.node_hook, KubernetesNodes)
    repairer.clock, repairer.sleep = (lambda: deployed_eks.now[0]), deployed_eks._sleep
    repairer.drain_hook.clock, repairer.drain_hook.sleep = (lambda: deployed_eks.now[0]), deployed_eks._sleep
    event = deployed_eks.agent(bad, xid(79))
    event["detail"]["cluster"] = "demo-eks"
    deployed_cluster = functools.partial(kube_stub.signature_checks, cluster="demo-eks")
    try:
        with mock.patch.object(kube_stub, "signature_checks", deployed_cluster):
            assert [r["result"] for r in handler.intake(event, use=deployed_eks.intake())["received"]] == ["forwarded"]
            (forwarded,) = deployed_eks.invoked
            (outcome,) = handler.handler(forwarded, use=repairer)["outcomes"]
    finally:
        repairer.drain_hook.labeler.api.close()
    assert outcome["result"] == "replaced"
    assert deployed_eks.state(bad) in ("shutting-down", "terminated")
    assert all(deployed_eks.state(i) == "running" for i in others)
    path = f"/api/v1/nodes/{name}"
    sent = [(r.method, r.path) for r in served.stub.requests]
    assert sent == [
        ("GET", path),
        ("PATCH", path),
        ("GET", "/api/v1/pods"),
        ("POST", "/api/v1/namespaces/training/pods/worker-0/eviction"),
        ("GET", "/api/v1/pods"),
        ("GET", path),
        ("DELETE", path),
    ]
    (cordon,) = [r.body for r in served.stub.requests if r.method == "PATCH"]
    assert cordon["spec"]["unschedulable"] is True
    assert cordon["metadata"]["labels"] == {LABEL_HEALTH: "UnschedulablePendingReplacement"}
    assert name not in served.stub.nodes and [p["metadata"]["name"] for p in served.stub.pods] == ["efa-plugin-x"]
    assert deployed_eks.story(bad) == ["signal", "decision", "evidence", "drain", "action", "node"]
    ledger = deployed_eks.repairer().ledger
    results = {s["step"]: s.get("result") for s in ledger.story(ledger.instance(bad)["incident_id"])}
    assert (results["drain"], results["node"]) == (f"evicted 1 pod from {name}", "node deleted")


GROUP_ACCELERATORS = {"gpu": "nvidia", "trn": "neuron", "system": "none"}
"""What the EKS example's repair function must know of each group (p5, trn1, m7i): the catalog's
accelerator of its instance type."""


def test_the_deployed_eks_repair_function_knows_each_groups_accelerator(deployed_eks: Deployed) -> None:
    assert json.loads(deployed_eks.environment["GROUP_ACCELERATORS"]) == GROUP_ACCELERATORS
    assert sorted(json.loads(deployed_eks.environment["AUTO_SCALING_GROUPS"]).values()) == sorted(GROUP_ACCELERATORS)


def test_the_deployed_eks_sweep_gives_each_node_its_groups_protected_labels(
    deployed_eks: Deployed, kube_api: tuple[Running, Authority]
) -> None:
    """The deployed function's sweep (its settings, ``GROUP_ACCELERATORS`` as the construct must
    set it): every Node of the cluster's groups gets the protected group and accelerator labels,
    whatever it says of itself; so the Neuron plugin runs on the trn nodes only and the training
    operator on the system nodes only. A Node of no group of the cluster is left alone."""
    served, authority = kube_api
    env = {"GROUP_ACCELERATORS": json.dumps(GROUP_ACCELERATORS), **deployed_eks.environment}
    groups = json.loads(env["AUTO_SCALING_GROUPS"])  # Auto Scaling group -> instance group
    ec2_client = SESSION.client("ec2", region_name=REGION)
    members: dict[str, tuple[str, str]] = {}  # instance -> (Node name, group)
    for asg, group in groups.items():
        for instance_id in deployed_eks.instances(asg):
            (reservation,) = ec2_client.describe_instances(InstanceIds=[instance_id])["Reservations"]
            instance = reservation["Instances"][0]
            members[instance_id] = (instance["PrivateDnsName"], group)
            registered = node(instance["PrivateDnsName"], instance_id, zone=instance["Placement"]["AvailabilityZone"])
            # what kubelet registers (every node here claims to be a Neuron node of the system group)
            registered["metadata"]["labels"].update(
                {contract.LABEL_GROUP: "system", contract.LABEL_ACCELERATOR: "neuron", LABEL_HEALTH: "Schedulable"}
            )
            registered["metadata"]["labels"][contract.LABEL_CLUSTER] = env["EKS_CLUSTER_NAME"]  # its NodeConfig's
            served.stub.add(registered)
    stranger = node("ip-10-9-9-9.ec2.internal", "i-0ffffffffffffffff")
    served.stub.add(stranger)
    settings = Settings.from_env({**env, "EKS_ENDPOINT": served.url, "EKS_CERTIFICATE_AUTHORITY": authority.data})
    clients = Clients(region=REGION, session=boto3.Session(ACCESS_KEY, SECRET_KEY, region_name=REGION))
    repairer = handler.make_repairer(settings, clients)
    repairer.clock, repairer.sleep = (lambda: deployed_eks.now[0]), deployed_eks._sleep
    deployed_cluster = functools.partial(kube_stub.signature_checks, cluster="demo-eks")
    try:
        with mock.patch.object(kube_stub, "signature_checks", deployed_cluster):
            assert handler.handler(SWEEP, use=repairer)["outcomes"] == []
    finally:
        assert repairer.node_upkeep is not None
        repairer.node_upkeep.labeler.api.close()
    assert sorted(g for _, g in members.values()) == ["gpu", "gpu", "system", "system", "trn", "trn"]
    for name, group in members.values():
        labels = served.stub.nodes[name]["metadata"]["labels"]
        protected = (labels[contract.PROTECTED_LABEL_GROUP], labels[contract.PROTECTED_LABEL_ACCELERATOR])
        assert protected == (group, GROUP_ACCELERATORS[group]), name
    assert served.stub.nodes[stranger["metadata"]["name"]] == stranger
    by_group = {g: sorted(n for n, gg in members.values() if gg == g) for g in GROUP_ACCELERATORS}
    assert (
        runs_on(served.stub, next(o for o in kube_manifests.neuron_device_plugin() if o["kind"] == "DaemonSet"))
        == by_group["trn"]
    )
    assert (
        runs_on(served.stub, next(o for o in kube_operator.training_operator() if o["kind"] == "Deployment"))
        == by_group["system"]
    )
    writes = [(r.method, r.path) for r in served.stub.requests if r.method != "GET"]
    assert sorted(writes) == sorted(("PATCH", f"/api/v1/nodes/{n}") for n, _ in members.values())


def runs_on(stub: KubeStub, workload: dict[str, Any]) -> list[str]:
    """The Nodes a DaemonSet's or Deployment's node selector picks."""
    wanted = workload["spec"]["template"]["spec"]["nodeSelector"]
    selects = kube_stub.label_selector(",".join(f"{k}={v}" for k, v in wanted.items()))
    return sorted(name for name, n in stub.nodes.items() if selects(n["metadata"]["labels"]))
