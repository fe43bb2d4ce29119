"""Auto-repair end to end, offline: the synthesized stack created in moto's CloudFormation, the
repair handler run in-process with the deployed function's environment, fed real event shapes."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from unittest import mock

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

import handler
from auto_repair.aws import Clients
from auto_repair.repair import Repairer
from auto_repair.settings import Settings
from conftest import Synthesized, minimal_config
from offline_deploy import deploy
from repair_world import impaired
from training_cluster import ClusterConfig

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
    sy: Synthesized
    environment: dict[str, str]
    now: list[float]
    answers: dict[str, Callable[..., dict[str, Any]]]  # API operations answered by hand
    events: list[dict[str, Any]]  # what the handler put on EventBridge

    def repairer(self, clients: Clients | None = None) -> Repairer:
        settings = Settings.from_env(self.environment)
        return Repairer(
            settings, clients or Clients(region=REGION, session=SESSION), clock=lambda: self.now[0], sleep=self._sleep
        )

    def _sleep(self, seconds: float) -> None:
        self.now[0] += seconds

    def send(self, event: dict[str, Any], clients: Clients | None = None) -> list[dict[str, Any]]:
        outcomes: list[dict[str, Any]] = handler.handler(event, use=self.repairer(clients))["outcomes"]
        return outcomes

    @property
    def asg(self) -> str:
        return next(iter(json.loads(self.environment["AUTO_SCALING_GROUPS"])))

    def instances(self) -> list[str]:
        groups = SESSION.client("autoscaling", region_name=REGION).describe_auto_scaling_groups(
            AutoScalingGroupNames=[self.asg]
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
    with mock_aws():
        deploy(sy.template_json, sy.outdir, sy.stack.artifact_id, REGION, "ami-0123456789abcdef0")
        function = sy.stack.resolve(sy.stack.auto_repair.function.function_name)["Ref"]  # type: ignore[union-attr]
        resources = SESSION.client("cloudformation", region_name=REGION).list_stack_resources(
            StackName=sy.stack.artifact_id
        )
        name = next(
            r["PhysicalResourceId"] for r in resources["StackResourceSummaries"] if r["LogicalResourceId"] == function
        )
        environment = SESSION.client("lambda", region_name=REGION).get_function_configuration(FunctionName=name)[
            "Environment"
        ]["Variables"]
        world = Deployed(sy=sy, environment=environment, now=[1_800_000_000.0], answers={}, events=[])

        def put_events(**params: Any) -> dict[str, Any]:
            world.events.extend(params["Entries"])
            return {"FailedEntryCount": 0, "Entries": [{"EventId": str(len(world.events))}]}

        # moto's EventBridge cannot match rules that CloudFormation created: the events are kept here.
        world.answers["PutEvents"] = put_events
        intercept = _intercept(world.answers)
        with mock.patch("botocore.client.BaseClient._make_api_call", autospec=True, side_effect=intercept):
            yield world


def agent(instance_id: str, *failures: dict[str, Any], state: str = "unhealthy", boot: str = "b1") -> dict[str, Any]:
    detail = {"cluster": "e2e", "instance_group": "gpu", "instance_id": instance_id, "boot_id": boot, "state": state}
    return {
        "source": "training-cluster.health",
        "detail-type": "Node Health Changed",
        "detail": {**detail, "failures": list(failures)},
    }


def xid(code: int) -> dict[str, Any]:
    return {"check": "xid", "code": str(code), "message": f"NVRM: Xid (PCI:0000:53:00): {code}, pid=1"}


SWEEP = {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}


def test_the_deployed_function_is_configured_for_this_cluster(deployed: Deployed) -> None:
    env = deployed.environment
    assert env["CLUSTER_NAME"] == "e2e" and env["DRY_RUN"] == "false" and env["MAX_PARALLEL_REPLACEMENTS"] == "1"
    assert list(json.loads(env["AUTO_SCALING_GROUPS"]).values()) == ["gpu"]
    assert len(deployed.instances()) == 8


def test_replace_class_xid(deployed: Deployed) -> None:
    bad, *healthy = deployed.instances()
    (outcome,) = deployed.send(agent(bad, xid(79)))
    assert outcome["result"] == "replaced"
    assert deployed.state(bad) in ("shutting-down", "terminated") and all(
        deployed.state(i) == "running" for i in healthy
    )
    assert len(deployed.instances()) == 8
    assert deployed.story(bad) == ["signal", "decision", "evidence", "action"]
    (announced,) = deployed.events
    assert (announced["Source"], announced["DetailType"]) == ("training-cluster.repair", "Repair Action")
    assert json.loads(announced["Detail"])["instance_id"] == bad


def test_reboot_class_xid_then_recurrence(deployed: Deployed) -> None:
    bad = deployed.instances()[3]
    assert deployed.send(agent(bad, xid(64)))[0]["result"] == "rebooted"
    deployed.now[0] += 600
    assert deployed.send(agent(bad, state="healthy", boot="b2"))[0]["result"] == "closed"
    deployed.now[0] += 600
    assert deployed.send(agent(bad, xid(64), boot="b2"))[0]["result"] == "replaced"
    assert deployed.story(bad) == ["signal", "decision", "evidence", "action"]


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
    bad = deployed.instances()[2]
    results = [deployed.send(agent(bad, xid(79)))[0]["result"] for _ in range(3)]
    assert results == ["replaced", "duplicate", "duplicate"]
    assert deployed.story(bad).count("action") == 1


@pytest.mark.parametrize("deployed", [{"unhealthy_threshold_percent": 50}], indirect=True)
def test_three_of_eight_with_a_limit_of_one(deployed: Deployed) -> None:
    bad = deployed.instances()[:3]
    results = [deployed.send(agent(i, xid(79)))[0]["result"] for i in bad]
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
    assert all(deployed.story(i) == ["signal", "decision", "suppressed"] for i in bad)
    assert deployed.events == []


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
        (outcome,) = deployed.send(agent(bad, xid(79)), clients)
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
    assert deployed.send(agent(bad, xid(79)))[0]["result"] == "deferred"
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
