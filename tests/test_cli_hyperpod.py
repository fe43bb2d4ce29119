"""The command line on a ``backend: hyperpod`` cluster: the installed ``training-cluster`` script in
a subprocess, against moto's server on loopback (the stack's outputs and the ledger) and a
loopback stand-in for SageMaker's node API (moto's HyperPod nodes have no EC2 instance ids).

What is simulated: the stack is a CloudFormation stack holding the ledger table, with the
outputs a HyperPod cluster's stack has; HyperPod's events reach the ledger through the real
recorder (``handler.hyperpod``), its clients on the same server."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

import handler
from auto_repair.aws import Clients
from auto_repair.hyperpod import HyperPodRecorder, HyperPodSettings
from auto_repair.ledger import Ledger
from conftest import cli_against
from training_cluster.contract import HYPERPOD_EVENTS

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::UserWarning")]
SCRIPT = Path(sys.executable).parent / "training-cluster"
REGION = "us-east-1"
STACK = "hp-training-cluster"
CLUSTER = "hp"
CLUSTER_ARN = f"arn:aws:sagemaker:{REGION}:123456789012:cluster/abcdef012345"
NODES = {
    "i-0aaaaaaaaaaaaaaa1": ("gpu", "Running"),
    "i-0aaaaaaaaaaaaaaa2": ("gpu", "Running"),
    "i-0bbbbbbbbbbbbbbb1": ("controller", "Running"),
    "i-0ccccccccccccccc1": ("login", "Pending"),
}
SICK = "i-0aaaaaaaaaaaaaaa2"
TEMPLATE = {
    "Resources": {
        "Ledger": {
            "Type": "AWS::DynamoDB::Table",
            "Properties": {
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
                "AttributeDefinitions": [
                    {"AttributeName": "pk", "AttributeType": "S"},
                    {"AttributeName": "sk", "AttributeType": "S"},
                ],
                "BillingMode": "PAY_PER_REQUEST",
            },
        },
        "Events": {"Type": "AWS::SNS::Topic"},
    },
    "Outputs": {
        "RepairLedgerTableName": {"Value": {"Ref": "Ledger"}},
        "EventsTopicArn": {"Value": {"Ref": "Events"}},
        "HyperPodClusterName": {"Value": CLUSTER},
        "HyperPodClusterArn": {"Value": CLUSTER_ARN},
    },
}


class SageMakerStandIn(BaseHTTPRequestHandler):
    """SageMaker's JSON protocol for ListClusterNodes and DescribeClusterNode, from ``NODES``."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
        operation = self.headers["X-Amz-Target"].removeprefix("SageMaker.")
        assert body["ClusterName"] == CLUSTER, body

        def summary(instance_id: str) -> dict[str, Any]:
            group, status = NODES[instance_id]
            return {
                "InstanceGroupName": group,
                "InstanceId": instance_id,
                "InstanceType": "ml.p5.48xlarge" if group == "gpu" else "ml.m7i.4xlarge",
                "LaunchTime": datetime(2026, 12, 1, tzinfo=UTC).timestamp(),
                "InstanceStatus": {"Status": status},
            }

        if operation == "ListClusterNodes":
            answer: dict[str, Any] = {"ClusterNodeSummaries": [summary(i) for i in NODES]}
        else:
            answer = {"NodeDetails": summary(body["NodeId"])}
        payload = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@dataclass
class World:
    moto: str
    sagemaker: str
    table: str
    topic: str

    def cli(self, *argv: str) -> tuple[int, str, str]:
        return cli_against(self.moto, *argv, env={"AWS_ENDPOINT_URL_SAGEMAKER": self.sagemaker})

    def json(self, *argv: str) -> Any:
        code, out, err = self.cli(*argv, "--stack", STACK, "--json")
        assert code == 0, err
        return json.loads(out)

    def recorder(self) -> HyperPodRecorder:
        session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)
        clients = Clients(region=REGION, session=session)
        for service, endpoint in (("dynamodb", self.moto), ("sns", self.moto), ("sagemaker", self.sagemaker)):
            clients.set(service, session.client(service, region_name=REGION, endpoint_url=endpoint))
        table = session.resource("dynamodb", region_name=REGION, endpoint_url=self.moto).Table(self.table)
        settings = HyperPodSettings(cluster=CLUSTER, table_name=self.table, topic_arn=self.topic)
        return HyperPodRecorder(settings, Ledger(table, lambda: 1_800_000_000.0), clients)


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    moto = f"http://{host}:{port}"
    stand_in = ThreadingHTTPServer(("127.0.0.1", 0), SageMakerStandIn)
    threading.Thread(target=stand_in.serve_forever, daemon=True).start()
    try:
        session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)
        cloudformation = session.client("cloudformation", region_name=REGION, endpoint_url=moto)
        cloudformation.create_stack(StackName=STACK, TemplateBody=json.dumps(TEMPLATE))
        outputs = {
            o["OutputKey"]: o["OutputValue"]
            for o in cloudformation.describe_stacks(StackName=STACK)["Stacks"][0]["Outputs"]
        }
        yield World(
            moto,
            f"http://127.0.0.1:{stand_in.server_address[1]}",
            outputs["RepairLedgerTableName"],
            outputs["EventsTopicArn"],
        )
    finally:
        stand_in.shutdown()
        server.stop()


def unhealthy(instance_id: str) -> dict[str, Any]:
    return {
        "version": "0",
        "id": "0bd4a141-0a02-9d8a-f977-3924c3fb259c",
        "detail-type": HYPERPOD_EVENTS.node_health,
        "source": HYPERPOD_EVENTS.source,
        "time": "2026-12-02T10:00:00Z",
        "region": REGION,
        "resources": [CLUSTER_ARN],
        "detail": {
            "ClusterName": CLUSTER,
            "ClusterArn": CLUSTER_ARN,
            "InstanceId": instance_id,
            "Tags": {},
            "HealthSummary": {
                "HealthStatus": "Unhealthy",
                "HealthStatusReason": "HyperPod Health Monitoring Agent (HMA) has detected fault type "
                "NvidiaErrorTerminate on this node and is unhealthy.",
                "RepairAction": "Replace",
                "Recommendation": "Please Replace the Faulty Node.",
            },
        },
    }


def test_nodes_and_status_before_any_fault(world: World) -> None:
    nodes = world.json("nodes")["nodes"]
    assert [(n["instance_id"], n["group"], n["instance_type"], n["state"], n["health"]) for n in nodes] == [
        ("i-0bbbbbbbbbbbbbbb1", "controller", "m7i.4xlarge", "Running", "healthy"),
        ("i-0aaaaaaaaaaaaaaa1", "gpu", "p5.48xlarge", "Running", "healthy"),
        ("i-0aaaaaaaaaaaaaaa2", "gpu", "p5.48xlarge", "Running", "healthy"),
        ("i-0ccccccccccccccc1", "login", "m7i.4xlarge", "Pending", "no report"),
    ]
    status = world.json("status")
    assert [(g["group"], g["desired"], g["in_service"], g["healthy"], g["breaker"]) for g in status["groups"]] == [
        ("controller", 1, 1, 1, "n/a"),
        ("gpu", 2, 2, 2, "n/a"),
        ("login", 1, 0, 0, "n/a"),
    ]
    code, out, _ = world.cli("status", "--stack", STACK)
    assert code == 0 and "gpu" in out and "n/a" in out


def test_hyperpods_repair_shows_as_ours_do(world: World) -> None:
    recorder = world.recorder()
    opened = handler.hyperpod(unhealthy(SICK), use=recorder)
    assert opened["result"] == "opened"
    state = {
        "version": "0",
        "id": "1bd4a141-0a02-9d8a-f977-3924c3fb259c",
        "detail-type": HYPERPOD_EVENTS.state_change,
        "source": HYPERPOD_EVENTS.source,
        "resources": [CLUSTER_ARN],
        "detail": {
            "ClusterName": CLUSTER,
            "ClusterArn": CLUSTER_ARN,
            "ClusterStatus": "InService",
            "InstanceGroups": [{"InstanceGroupName": "gpu", "Status": "Degraded", "CurrentCount": 2, "TargetCount": 2}],
        },
    }
    assert handler.hyperpod(state, use=recorder)["result"] == "state"
    nodes = {n["instance_id"]: n for n in world.json("nodes")["nodes"]}
    assert nodes[SICK]["health"] == "unhealthy" and nodes[SICK]["failures"] == ["NvidiaErrorTerminate"]
    assert nodes[SICK]["incident"]["source"] == "hyperpod" and nodes[SICK]["incident"]["action"] == "replace"
    (gpu,) = [g for g in world.json("status")["groups"] if g["group"] == "gpu"]
    assert (gpu["desired"], gpu["healthy"], gpu["unhealthy"], gpu["being_repaired"]) == (2, 1, 1, 1)
    (incident,) = world.json("incidents")["incidents"]
    assert (incident["instance_id"], incident["source"], incident["action"], incident["status"]) == (
        SICK,
        "hyperpod",
        "replace",
        "open",
    )
    steps = world.json("incident", incident["incident_id"])["steps"]
    assert [s["step"] for s in steps] == ["signal", "decision"] and steps[1]["by"] == "HyperPod"
    code, out, _ = world.cli("incidents", "--stack", STACK)
    assert code == 0 and SICK in out and "hyperpod" in out


def test_repair_and_reset_name_hyperpods_commands_and_act_on_nothing(world: World) -> None:
    code, out, err = world.cli("repair", SICK, "--replace", "--yes", "--stack", STACK)
    assert code != 0 and out == ""
    assert f"aws sagemaker batch-replace-cluster-nodes --cluster-name {CLUSTER} --node-ids {SICK}" in err
    code, _, err = world.cli("reset-breaker", "gpu", "--yes", "--stack", STACK)
    assert code != 0 and "no circuit breaker of ours" in err and "Traceback" not in err


def test_connect_goes_to_the_hyperpod_nodes_session_target(world: World) -> None:
    code, out, err = world.cli("connect", "i-0aaaaaaaaaaaaaaa1", "--stack", STACK, "--print")
    assert code == 0, err
    assert out.split() == [
        "aws", "ssm", "start-session", "--target", "sagemaker-cluster:abcdef012345_gpu-i-0aaaaaaaaaaaaaaa1",
        "--region", REGION,
    ]  # fmt: skip
    code, _, err = world.cli("connect", "i-0fffffffffffffff1", "--stack", STACK, "--print")
    assert code != 0 and "is not a running node of" in err
