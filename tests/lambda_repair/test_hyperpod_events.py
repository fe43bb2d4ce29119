"""HyperPod's events in the repair ledger (``backend: hyperpod``): against moto (the ledger, the
topic), with SageMaker's node calls stubbed (moto does not model HyperPod's nodes), and the event
shapes AWS documents (``Events that Amazon SageMaker AI sends to Amazon EventBridge``)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from botocore.stub import Stubber

import handler
from auto_repair.hyperpod import CLUSTER_EVENT, NODE_HEALTH, STATE_CHANGE, HyperPodRecorder, HyperPodSettings
from auto_repair.ledger import Ledger
from repair_world import REGION, SESSION, World, aws, make_world
from training_cluster.ledger_view import LedgerView

__all__ = ["aws"]  # fixtures

CLUSTER = "sample-cluster"
CLUSTER_ARN = f"arn:aws:sagemaker:{REGION}:111122223333:cluster/abcdef012345"
INSTANCE = "i-12345678abcdefghi"  # as AWS's example writes it

NODE_UNHEALTHY: dict[str, Any] = {
    "version": "0",
    "id": "0bd4a141-0a02-9d8a-f977-3924c3fb259c",
    "detail-type": NODE_HEALTH,
    "source": "aws.sagemaker",
    "account": "111122223333",
    "time": "2021-10-25T01:52:12Z",
    "region": REGION,
    "resources": [CLUSTER_ARN],
    "detail": {
        "ClusterName": CLUSTER,
        "ClusterArn": CLUSTER_ARN,
        "InstanceId": INSTANCE,
        "Tags": {},
        "HealthSummary": {
            "HealthStatus": "Unhealthy",
            "HealthStatusReason": "HyperPod Health Monitoring Agent (HMA) has detected fault type "
            "NvidiaErrorTerminate on this node and is unhealthy.",
            "RepairAction": "None",
            "Recommendation": "Please Replace the Faulty Node.",
        },
    },
}
STATE: dict[str, Any] = {
    "version": "0",
    "id": "1bd4a141-0a02-9d8a-f977-3924c3fb259c",
    "detail-type": STATE_CHANGE,
    "source": "aws.sagemaker",
    "account": "111122223333",
    "time": "2025-04-28T16:59:01Z",
    "region": REGION,
    "resources": [CLUSTER_ARN],
    "detail": {
        "ClusterArn": CLUSTER_ARN,
        "ClusterName": CLUSTER,
        "ClusterStatus": "InService",
        "CreationTime": 1745858447412,
        "FailureMessage": "",
        "InstanceGroups": [
            {
                "CurrentCount": 1,
                "InstanceGroupName": "gpu",
                "InstanceType": "ml.p5.48xlarge",
                "Status": "Degraded",
                "TargetCount": 2,
                "ThreadsPerCore": 2,
            }
        ],
        "NodeRecovery": "Automatic",
    },
}
CLUSTER_EVENT_EXAMPLE: dict[str, Any] = {
    "version": "0",
    "id": "2bd4a141-0a02-9d8a-f977-3924c3fb259c",
    "detail-type": CLUSTER_EVENT,
    "source": "aws.sagemaker",
    "account": "111122223333",
    "time": "2025-04-28T16:59:01Z",
    "region": REGION,
    "resources": [CLUSTER_ARN],
    "detail": {
        "EventDetails": {
            "EventId": "a307fae0-6937-40f9-af2f-16eb873d340a",
            "ClusterArn": CLUSTER_ARN,
            "ClusterName": CLUSTER,
            "InstanceGroupName": "gpu",
            "InstanceId": INSTANCE,
            "ResourceType": "Instance",
            "EventTime": 1745858447412,
            "EventDetails": {"EventMetadata": {"Instance": {"LcsExecutionState": "Started"}}},
            "Description": f"Instance lifecycle script execution for EC2InstanceId {INSTANCE} has Started",
        }
    },
}


def healthy(event: dict[str, Any] = NODE_UNHEALTHY) -> dict[str, Any]:
    out = copy.deepcopy(event)
    out["detail"]["HealthSummary"] = {"HealthStatus": "Healthy", "RepairAction": "None"}
    return out


class Recorded:
    def __init__(self, world: World) -> None:
        self.world = world
        self.sagemaker = SESSION.client("sagemaker", region_name=REGION)
        self.stub = Stubber(self.sagemaker)
        world.clients.set("sagemaker", self.sagemaker)
        settings = HyperPodSettings(cluster=CLUSTER, table_name="ledger", topic_arn=world.topic_arn)
        self.ledger = Ledger(world.clients.table("ledger"), world.clock)
        self.recorder = HyperPodRecorder(
            settings, self.ledger, world.clients, clock=world.clock, sleep=world.clock.sleep
        )
        self.view = LedgerView(SESSION.resource("dynamodb", region_name=REGION), "ledger", None)

    def node_group(self, instance_id: str, group: str = "gpu") -> None:
        self.stub.add_response(
            "describe_cluster_node",
            {
                "NodeDetails": {
                    "InstanceGroupName": group,
                    "InstanceId": instance_id,
                    "InstanceStatus": {"Status": "Running"},
                }
            },
            {"ClusterName": CLUSTER, "NodeId": instance_id},
        )

    def notices(self) -> list[dict[str, Any]]:
        sqs = self.world.clients.sqs
        found = sqs.receive_message(QueueUrl=self.world.queue_url, MaxNumberOfMessages=10).get("Messages", [])
        return [json.loads(m["Body"]) for m in found]


@pytest.fixture
def recorded(aws: None) -> Iterator[Recorded]:
    made = Recorded(make_world({"gpu": 1}))
    with made.stub:
        yield made


def test_an_unhealthy_node_opens_a_hyperpod_incident_the_cli_lists(recorded: Recorded) -> None:
    recorded.node_group(INSTANCE)
    result = recorded.recorder(NODE_UNHEALTHY)
    assert result["result"] == "opened"
    state = recorded.ledger.instance(INSTANCE)
    assert (state["status"], state["source"], state["action"], state["instance_group"]) == (
        "open",
        "hyperpod",
        "hyperpod",  # RepairAction None: HyperPod decides
        "gpu",
    )
    steps = recorded.ledger.story(result["incident_id"])
    assert [s["step"] for s in steps] == ["signal", "decision"]
    assert (
        "NvidiaErrorTerminate" in steps[0]["signal"] and steps[1]["recommendation"] == "Please Replace the Faulty Node."
    )
    (incident,) = recorded.view.incidents()
    assert (incident.instance_id, incident.group, incident.source, incident.status) == (
        INSTANCE,
        "gpu",
        "hyperpod",
        "open",
    )
    (notice,) = recorded.notices()
    assert notice["Subject"] == f"[{CLUSTER}] HyperPod finds {INSTANCE} unhealthy in gpu"
    recorded.stub.assert_no_pending_responses()


def later(event: dict[str, Any], seconds: int) -> dict[str, Any]:
    """``event`` as sent ``seconds`` after it (another event id, a later time)."""
    out = copy.deepcopy(event)
    sent = datetime.fromisoformat(event["time"].replace("Z", "+00:00")) + timedelta(seconds=seconds)
    out["time"], out["id"] = sent.strftime("%Y-%m-%dT%H:%M:%SZ"), f"{event['id']}-{seconds}"
    return out


def test_copies_and_late_events_change_nothing_and_a_healthy_event_closes_the_incident(recorded: Recorded) -> None:
    recorded.node_group(INSTANCE)
    opened = recorded.recorder(NODE_UNHEALTHY)
    assert recorded.recorder(NODE_UNHEALTHY) == {"result": "late", "instance_id": INSTANCE}  # a copy
    again = recorded.recorder(later(NODE_UNHEALTHY, 30))  # SageMaker may send several events per change
    assert again == {"result": "recorded", "instance_id": INSTANCE, "incident_id": opened["incident_id"]}
    closed = recorded.recorder(healthy(later(NODE_UNHEALTHY, 60)))
    assert closed["result"] == "closed" and recorded.ledger.instance(INSTANCE)["outcome"] == "recovered (HyperPod)"
    steps = [s["step"] for s in recorded.ledger.story(opened["incident_id"])]
    assert steps == ["signal", "decision", "hyperpod", "closed"]
    # the first copy of the fault, delivered after the node was healthy again: no new incident, no notice
    assert recorded.recorder(later(NODE_UNHEALTHY, 45))["result"] == "late"
    assert recorded.ledger.instance(INSTANCE)["status"] == "closed"
    assert recorded.recorder(healthy(later(NODE_UNHEALTHY, 90)))["result"] == "ignored"  # nothing open
    assert len(recorded.notices()) == 1


def test_a_healthy_event_before_an_older_fault_leaves_no_incident_open(recorded: Recorded) -> None:
    assert recorded.recorder(healthy(later(NODE_UNHEALTHY, 60)))["result"] == "ignored"
    assert recorded.recorder(NODE_UNHEALTHY)["result"] == "late"
    assert recorded.ledger.instance(INSTANCE).get("status") is None and recorded.notices() == []


def test_a_fault_long_after_an_incident_that_never_closed_is_a_new_incident(recorded: Recorded) -> None:
    recorded.node_group(INSTANCE)
    first = recorded.recorder(NODE_UNHEALTHY)
    recorded.world.clock.now += 7 * 86400  # a week, no healthy event (a reboot HyperPod did not tell of)
    recorded.node_group(INSTANCE)
    second = recorded.recorder(later(NODE_UNHEALTHY, 7 * 86400))
    assert second["result"] == "opened" and second["incident_id"] != first["incident_id"]
    assert recorded.ledger.story(first["incident_id"])[-1]["outcome"] == "superseded by a later fault"
    assert len(recorded.notices()) == 2


def test_a_repair_action_hyperpod_names_is_the_incidents_action(recorded: Recorded) -> None:
    event = copy.deepcopy(NODE_UNHEALTHY)
    event["detail"]["HealthSummary"]["RepairAction"] = "Reboot"
    recorded.node_group(INSTANCE)
    recorded.recorder(event)
    assert recorded.ledger.instance(INSTANCE)["action"] == "reboot"


def test_without_hyperpods_answer_the_group_is_the_ledgers_or_unknown(recorded: Recorded) -> None:
    recorded.stub.add_client_error("describe_cluster_node", "ResourceNotFound", http_status_code=404)
    recorded.recorder(NODE_UNHEALTHY)
    assert recorded.ledger.instance(INSTANCE)["instance_group"] == "unknown"


def test_the_state_change_gives_each_group_its_status_and_counts(recorded: Recorded) -> None:
    assert recorded.recorder(STATE) == {"result": "state", "groups": "gpu"}
    group = recorded.ledger.group("gpu")
    assert (group["hyperpod_status"], group["current_count"], group["target_count"], group["cluster_status"]) == (
        "Degraded",
        1,
        2,
        "InService",
    )


def test_a_cluster_event_is_a_step_of_the_nodes_open_incident(recorded: Recorded) -> None:
    assert recorded.recorder(CLUSTER_EVENT_EXAMPLE)["result"] == "ignored"  # no incident yet
    recorded.node_group(INSTANCE)
    opened = recorded.recorder(NODE_UNHEALTHY)
    assert recorded.recorder(CLUSTER_EVENT_EXAMPLE)["result"] == "recorded"
    last = recorded.ledger.story(opened["incident_id"])[-1]
    assert last["step"] == "hyperpod-event" and "has Started" in last["description"]


def test_the_sweep_closes_incidents_of_nodes_hyperpod_replaced(recorded: Recorded) -> None:
    recorded.node_group(INSTANCE)
    opened = recorded.recorder(NODE_UNHEALTHY)
    page = {"ClusterName": CLUSTER, "MaxResults": 100}
    summary = {
        "InstanceGroupName": "gpu",
        "InstanceId": "i-0aaaaaaaaaaaaaaa1",
        "InstanceType": "ml.p5.48xlarge",
        "LaunchTime": "2026-12-01T00:00:00Z",
        "InstanceStatus": {"Status": "Running"},
    }
    recorded.stub.add_response("list_cluster_nodes", {"NextToken": "t", "ClusterNodeSummaries": [summary]}, page)
    recorded.stub.add_response("list_cluster_nodes", {"ClusterNodeSummaries": []}, {**page, "NextToken": "t"})
    assert handler.hyperpod({"source": "aws.events", "detail-type": "Scheduled Event"}, use=recorded.recorder) == {
        "closed": [INSTANCE]
    }
    assert recorded.ledger.instance(INSTANCE)["outcome"] == "replaced by HyperPod"
    assert recorded.ledger.story(opened["incident_id"])[-1]["outcome"] == "replaced by HyperPod"
    # a node HyperPod still lists keeps its incident open
    recorded.node_group("i-0bbbbbbbbbbbbbbb2")
    other = copy.deepcopy(NODE_UNHEALTHY)
    other["detail"]["InstanceId"] = "i-0bbbbbbbbbbbbbbb2"
    recorded.recorder(other)
    assert recorded.recorder.sweep({"i-0bbbbbbbbbbbbbbb2": "gpu"}) == []


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda e: e.update(source="training-cluster.agent"), "source is not aws.sagemaker"),
        (lambda e: e.update({"detail-type": "EC2 Instance State-change Notification"}), "is not one of HyperPod's"),
        (lambda e: e["detail"].update(ClusterName="another-cluster"), "'another-cluster' is not 'sample-cluster'"),
        (lambda e: e["detail"].update(InstanceId="i-1; rm -rf /"), "is not one"),
        (lambda e: e["detail"].update(InstanceId=["i-0aaaaaaaaaaaaaaa1"]), "is not one"),
        (lambda e: e["detail"].pop("HealthSummary"), "without an instance or a health summary"),
        (lambda e: e.update(detail="x"), "no detail"),
        (  # review 13, L2: our cluster's name nested where a node health event has no fields
            lambda e: e["detail"].update(ClusterName="another-cluster", EventDetails={"ClusterName": CLUSTER}),
            "'another-cluster' is not 'sample-cluster'",
        ),
    ],
)
def test_events_of_another_kind_or_cluster_are_refused_and_write_nothing(
    recorded: Recorded, change: Any, reason: str
) -> None:
    event = copy.deepcopy(NODE_UNHEALTHY)
    change(event)
    result = recorded.recorder(event)
    assert result["result"] == "refused" and reason in result["reason"]
    assert recorded.world.clients.table("ledger").scan()["Items"] == []


def test_hostile_text_is_bounded_and_printable_and_an_unknown_status_records_nothing(recorded: Recorded) -> None:
    event = copy.deepcopy(NODE_UNHEALTHY)
    event["detail"]["HealthSummary"]["HealthStatusReason"] = "\x1b[31mred\x1b[0m" + "x" * 10_000
    recorded.node_group(INSTANCE)
    opened = recorded.recorder(event)
    (signal, _) = recorded.ledger.story(opened["incident_id"])
    assert len(signal["signal"]) == 500 and "\x1b" not in signal["signal"]
    odd = later(NODE_UNHEALTHY, 5)
    odd["detail"]["InstanceId"] = "i-0ccccccccccccccc3"
    odd["detail"]["HealthSummary"]["HealthStatus"] = "Sideways"
    assert recorded.recorder(odd)["result"] == "unknown-status"
    assert recorded.ledger.instance("i-0ccccccccccccccc3") == {}


def test_an_incident_whose_time_is_not_a_number_does_not_hide_the_others(recorded: Recorded) -> None:
    recorded.node_group(INSTANCE)
    recorded.recorder(NODE_UNHEALTHY)
    recorded.world.clients.table("ledger").put_item(
        Item={"pk": "incident#bad", "sk": "x", "step": "signal", "at": "soon", "instance_id": "i-0bad"}
    )
    incidents = recorded.view.incidents()
    assert {i.instance_id for i in incidents} == {INSTANCE, "i-0bad"}
