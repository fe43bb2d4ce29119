"""A cluster in moto for the auto-repair tests: Auto Scaling groups of mock instances, ledger, topic."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import boto3
import pytest
from botocore.client import BaseClient
from moto import mock_aws

from auto_repair.aws import Clients
from auto_repair.intake import Intake, IntakeSettings
from auto_repair.repair import Repairer
from auto_repair.settings import Settings
from auto_repair.signals import Failure, format_health_tag
from training_cluster.contract import AGENT_DETAIL_TYPE, AGENT_SOURCE, HEALTH_TAG
from training_cluster.repair_policy import Policy

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's
INSTANCE_ARN_PREFIX = f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/"
# One session for every test: botocore then reads each service model once, not once per mock.
SESSION = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)


@dataclass
class Clock:
    now: float = 1_800_000_000.0
    slept: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@dataclass
class Invokes:
    """A stand-in for the Lambda client: the intake's asynchronous invokes of the repair function,
    kept in order (moto would run the invoked code in Docker). ``fail`` makes the next one raise."""

    payloads: list[dict[str, Any]] = field(default_factory=list)
    fail: Exception | None = None

    def invoke(self, **params: Any) -> dict[str, Any]:
        assert (params["FunctionName"], params["InvocationType"]) == ("repair", "Event"), params
        if self.fail is not None:
            error, self.fail = self.fail, None
            raise error
        self.payloads.append(json.loads(params["Payload"]))
        return {"StatusCode": 202}


@dataclass
class World:
    """A cluster in moto: Auto Scaling groups of real mock instances, the ledger table, topic, bucket."""

    clock: Clock
    clients: Clients
    groups: dict[str, str]  # ASG name -> instance group
    topic_arn: str
    queue_url: str  # subscribed to the topic, to read notifications
    invokes: Invokes = field(default_factory=Invokes)

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "cluster": "demo",
            "table_name": "ledger",
            "topic_arn": self.topic_arn,
            "event_bus": "default",
            "evidence_bucket": "evidence",
            "instance_arn_prefix": INSTANCE_ARN_PREFIX,
            "groups": self.groups,
            "policy": Policy.with_overrides(),
            "evidence_wait_seconds": 10,
        }
        values.update(overrides)
        return Settings(**values)

    def repairer(self, **overrides: Any) -> Repairer:
        return Repairer(self.settings(**overrides), self.clients, clock=self.clock, sleep=self.clock.sleep)

    def intake(self) -> Intake:
        """The report intake, its invokes of the repair function (named ``repair``) kept in ``invokes``."""
        self.clients.set("lambda", self.invokes)
        settings = IntakeSettings(cluster="demo", table_name="ledger", repair_function="repair", groups=self.groups)
        return Intake(settings, self.clients, clock=self.clock, sleep=self.clock.sleep)

    def agent(
        self, instance_id: str, *failures: dict[str, Any], state: str = "unhealthy", boot: str = "boot-1"
    ) -> dict[str, Any]:
        """What an honest agent does on a change: tag its own instance, then send its event."""
        self.tag(instance_id, health_tag(*failures, state=state, boot=boot))
        return agent_event(instance_id, *failures, state=state, boot=boot)

    def tag(self, instance_id: str, value: str) -> None:
        self.clients.ec2.create_tags(Resources=[instance_id], Tags=[{"Key": HEALTH_TAG, "Value": value}])

    def instances(self, group: str = "gpu") -> list[str]:
        asg = next(a for a, g in self.groups.items() if g == group)
        response = self.clients.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[asg])
        return sorted(i["InstanceId"] for i in response["AutoScalingGroups"][0]["Instances"])

    def state(self, instance_id: str) -> str:
        reservations = self.clients.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        return str(reservations[0]["Instances"][0]["State"]["Name"])

    def notifications(self) -> list[str]:
        sqs = SESSION.client("sqs", region_name=REGION)
        messages = sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get("Messages", [])
        out = []
        while messages:
            out += [json.loads(m["Body"])["Subject"] for m in messages]
            for m in messages:
                sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=m["ReceiptHandle"])
            messages = sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get("Messages", [])
        return out


def make_world(sizes: dict[str, int]) -> World:
    ec2 = SESSION.client("ec2", region_name=REGION)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.128.0/17", AvailabilityZone=f"{REGION}a")["Subnet"][
        "SubnetId"
    ]
    image = "ami-0123456789abcdef0"  # moto launches any image id; listing its AMIs is slow
    autoscaling = SESSION.client("autoscaling", region_name=REGION)
    groups = {}
    for name, size in sizes.items():
        template = ec2.create_launch_template(
            LaunchTemplateName=f"lt-{name}", LaunchTemplateData={"ImageId": image, "InstanceType": "p5.48xlarge"}
        )["LaunchTemplate"]["LaunchTemplateId"]
        asg = f"demo-{name}-asg"
        autoscaling.create_auto_scaling_group(
            AutoScalingGroupName=asg,
            LaunchTemplate={"LaunchTemplateId": template, "Version": "$Latest"},
            MinSize=size,
            MaxSize=size,
            DesiredCapacity=size,
            VPCZoneIdentifier=subnet,
        )
        groups[asg] = name
    SESSION.client("dynamodb", region_name=REGION).create_table(
        TableName="ledger",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    SESSION.client("s3", region_name=REGION).create_bucket(Bucket="evidence")
    sns = SESSION.client("sns", region_name=REGION)
    topic = sns.create_topic(Name="events")["TopicArn"]
    sqs = SESSION.client("sqs", region_name=REGION)
    queue = sqs.create_queue(QueueName="notifications")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    clients = Clients(region=REGION, session=SESSION)
    return World(clock=Clock(), clients=clients, groups=groups, topic_arn=topic, queue_url=queue)


def impaired(bad: list[str]) -> Callable[..., dict[str, Any]]:
    """A stand-in for EC2 DescribeInstanceStatus (moto reports every check as ok): ``bad`` fail."""

    def describe_instance_status(**kwargs: Any) -> dict[str, Any]:
        return {
            "InstanceStatuses": [
                {
                    "InstanceId": i,
                    "InstanceStatus": {"Status": "impaired" if i in bad else "ok"},
                    "SystemStatus": {"Status": "ok"},
                }
                for i in kwargs["InstanceIds"]
            ]
        }

    return describe_instance_status


def agent_event(
    instance_id: str, *failures: dict[str, Any], state: str = "unhealthy", boot: str = "boot-1"
) -> dict[str, Any]:
    """An event as node/health_agent.py sends it (on its own, a claim: see ``World.agent``)."""
    return {
        "source": AGENT_SOURCE,
        "detail-type": AGENT_DETAIL_TYPE,
        "detail": {
            "cluster": "demo",
            "instance_id": instance_id,
            "instance_group": "gpu",
            "boot_id": boot,
            "state": state,
            "failures": list(failures),
        },
    }


def health_tag(*failures: dict[str, Any], state: str = "unhealthy", boot: str = "boot-1") -> str:
    """The health tag's value for what ``agent_event`` reports."""
    return format_health_tag(state == "healthy", boot, [Failure(f["check"], f.get("code")) for f in failures])


def tag_event(instance_id: str, value: str | None, *, changed: tuple[str, ...] = (HEALTH_TAG,)) -> dict[str, Any]:
    """AWS's ``Tag Change on Resource`` event for an instance (the shape of the Tagging docs' example)."""
    tags = {"aws:autoscaling:groupName": "demo-gpu-asg", "training-cluster:cluster": "demo"}
    if value is not None:
        tags[HEALTH_TAG] = value
    return {
        "version": "0",
        "id": "bddcf1d6-0251-35a1-aab0-adc1fb47c11c",
        "detail-type": "Tag Change on Resource",
        "source": "aws.tag",
        "account": ACCOUNT,
        "time": "2026-12-01T12:00:00Z",
        "region": REGION,
        "resources": [f"{INSTANCE_ARN_PREFIX}{instance_id}"],
        "detail": {
            "changed-tag-keys": list(changed),
            "service": "ec2",
            "resource-type": "instance",
            "version": 7,
            "tags": tags,
        },
    }


def xid(code: int) -> dict[str, Any]:
    return {"check": "xid", "code": str(code), "message": f"NVRM: Xid (PCI:0000:53:00): {code}, pid=1234"}


def story(world: World, incident_id: str | None) -> list[str]:
    assert incident_id is not None
    return [s["step"] for s in world.repairer().ledger.story(incident_id)]


@pytest.fixture
def calls() -> Iterator[Counter[str]]:
    """Every AWS API operation the code under test makes, counted (moto still answers them)."""
    counted: Counter[str] = Counter()
    original = BaseClient._make_api_call

    def call(client: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        counted[operation] += 1
        return original(client, operation, params)

    with mock.patch("botocore.client.BaseClient._make_api_call", autospec=True, side_effect=call):
        yield counted


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        yield


@pytest.fixture
def world(aws: None) -> World:
    return make_world({"gpu": 8, "login": 1})


@pytest.fixture
def actions(world: World) -> Iterator[dict[str, mock.MagicMock]]:
    """Reboots and replacements, counted (and still made in moto)."""
    ec2, autoscaling = world.clients.ec2, world.clients.autoscaling
    with (
        mock.patch.object(ec2, "reboot_instances", wraps=ec2.reboot_instances) as reboot,
        mock.patch.object(
            autoscaling,
            "terminate_instance_in_auto_scaling_group",
            wraps=autoscaling.terminate_instance_in_auto_scaling_group,
        ) as terminate,
    ):
        yield {"reboot": reboot, "terminate": terminate}
