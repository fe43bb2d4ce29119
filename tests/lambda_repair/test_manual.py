"""A person's repair request (``training-cluster repair NODE --reboot | --replace``): the repair
function's ``{"repair": {...}}`` payload goes through the same incident, breaker, limits, drain,
evidence and ledger as an automatic repair, and only for the cluster's own instances."""

from __future__ import annotations

from typing import Any
from unittest import mock

import pytest

import handler
from repair_world import SESSION, World, aws, story, world, xid
from training_cluster.contract import HEALTH_TAG

__all__ = ["aws", "world"]  # fixtures


def request(instance_id: str, action: str, who: str = "arn:aws:iam::123456789012:user/alice") -> dict[str, Any]:
    return {"repair": {"instance_id": instance_id, "action": action, "requested_by": who}}


def test_a_manual_replace_is_an_incident_with_evidence_through_the_auto_scaling_group(world: World) -> None:
    bad, *others = world.instances()
    world.tag(bad, "healthy boot=boot-1")
    repairer = world.repairer()
    (outcome,) = handler.handler(request(bad, "replace"), use=repairer)["outcomes"]
    assert (outcome["result"], outcome["action"]) == ("replaced", "replace")
    assert world.state(bad) in ("shutting-down", "terminated") and all(world.state(i) == "running" for i in others)
    assert len(world.instances()) == 8  # desired capacity kept: a new node comes
    steps = repairer.ledger.story(outcome["incident_id"])
    assert [s["step"] for s in steps] == ["signal", "decision", "evidence", "action"]
    assert steps[0]["source"] == "manual"
    assert steps[0]["signal"] == "manual replace: requested by arn:aws:iam::123456789012:user/alice"
    assert steps[2]["location"].startswith(
        f"s3://evidence/evidence/demo/arn:aws:ec2:us-east-1:123456789012:instance/{bad}/"
    )
    state = repairer.ledger.instance(bad)
    assert (state["status"], state["action"], state["source"], state["boot_id"]) == (
        "open",
        "replace",
        "manual",
        "boot-1",
    )
    assert bad in repairer.ledger.group("gpu")["replacing"]


def test_a_manual_reboot_is_closed_by_the_nodes_report_from_its_next_boot(world: World) -> None:
    node = world.instances()[2]
    world.tag(node, "healthy boot=boot-1")
    repairer = world.repairer()
    ec2 = world.clients.ec2
    with mock.patch.object(ec2, "reboot_instances", wraps=ec2.reboot_instances) as reboot:
        (outcome,) = handler.handler(request(node, "reboot"), use=repairer)["outcomes"]
    assert outcome["result"] == "rebooted"
    reboot.assert_called_once_with(InstanceIds=[node])
    # a late healthy report from the boot that was rebooted does not close it; the next boot's does
    (same,) = handler.handler(world.agent(node, state="healthy", boot="boot-1"), use=repairer)["outcomes"]
    assert same["result"] == "ignored"
    world.clock.now += 300
    (back,) = handler.handler(world.agent(node, state="healthy", boot="boot-2"), use=repairer)["outcomes"]
    assert back["result"] == "closed"
    assert story(world, outcome["incident_id"]) == ["signal", "decision", "action", "closed"]


def test_a_manual_request_for_an_instance_outside_the_clusters_groups_touches_nothing(world: World) -> None:
    ec2 = SESSION.client("ec2", region_name="us-east-1")
    stranger = ec2.run_instances(ImageId="ami-0123456789abcdef0", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    repairer = world.repairer()
    for action in ("reboot", "replace"):
        assert handler.handler(request(stranger, action), use=repairer)["outcomes"] == [
            {"instance_id": stranger, "result": "ignored", "action": None, "incident_id": None}
        ]
    assert world.state(stranger) == "running" and repairer.ledger.instance(stranger) == {}
    items = repairer.ledger.table.scan()["Items"]
    assert items == []


def test_a_manual_request_waits_for_the_breaker_and_the_replacement_limit(world: World) -> None:
    a, b, c = world.instances()[:3]
    repairer = world.repairer(max_parallel_replacements=1, unhealthy_threshold_percent=50)
    results = [handler.handler(request(i, "replace"), use=repairer)["outcomes"][0]["result"] for i in (a, b)]
    assert results == ["replaced", "deferred"]  # one replacement in flight per group
    assert world.state(b) == "running"
    held = world.repairer(max_parallel_replacements=1, unhealthy_threshold_percent=20)
    (outcome,) = handler.handler(request(c, "reboot"), use=held)["outcomes"]
    assert outcome["result"] == "suppressed"  # 3 of 8 unhealthy > 20%: the breaker opens and holds it
    assert held.ledger.group("gpu")["breaker"] == "open" and world.state(c) == "running"
    assert story(world, outcome["incident_id"])[-1] == "held"


def test_a_manual_replace_escalates_an_open_reboot_and_a_repeat_is_a_duplicate(world: World) -> None:
    node = world.instances()[4]
    repairer = world.repairer()
    (rebooted,) = handler.handler(world.agent(node, xid(64)), use=repairer)["outcomes"]
    assert rebooted["result"] == "rebooted"
    (again,) = handler.handler(request(node, "reboot"), use=repairer)["outcomes"]
    assert (again["result"], again["incident_id"]) == ("duplicate", rebooted["incident_id"])
    (replaced,) = handler.handler(request(node, "replace"), use=repairer)["outcomes"]
    assert (replaced["result"], replaced["incident_id"]) == ("replaced", rebooted["incident_id"])
    assert story(world, rebooted["incident_id"]) == [
        "signal",
        "decision",
        "action",
        "duplicate",
        "decision",
        "evidence",
        "action",
    ]


@pytest.mark.parametrize(
    "payload",
    [
        {"repair": "i-0123456789abcdef0"},
        {"repair": {"instance_id": "i-0123456789abcdef0", "action": "terminate"}},
        {"repair": {"instance_id": "i-0123456789abcdef0"}},
        {"repair": {"instance_id": "web-1", "action": "replace"}},
        {"repair": {"instance_id": ["i-0123456789abcdef0"], "action": "replace"}},
        {"repair": {"instance_id": "i-0123456789abcdef0", "action": "replace", "requested_by": 7}},
    ],
)
def test_a_malformed_repair_request_is_dropped(world: World, payload: dict[str, Any]) -> None:
    node = world.instances()[0]
    if isinstance(payload["repair"], dict) and payload["repair"].get("instance_id") == "i-0123456789abcdef0":
        payload["repair"]["instance_id"] = node
    assert handler.handler(payload, use=world.repairer())["outcomes"] == []
    assert world.state(node) == "running"
    tags = world.clients.ec2.describe_tags(Filters=[{"Name": "key", "Values": [HEALTH_TAG]}])["Tags"]
    assert tags == []


def test_who_asked_is_kept_as_the_characters_of_a_name(world: World) -> None:
    """Anyone who may invoke the function can send their own payload: what the ledger keeps (and
    the command line shows) of ``requested_by`` has no control sequence in it."""
    bad = world.instances()[1]
    hostile = "arn:aws:iam::123456789012:user/ops\x1b[2J\x1b[H\x1b[32mall nodes healthy\x1b[0m\x1b[8m"
    (outcome,) = handler.handler(request(bad, "reboot", who=hostile), use=world.repairer())["outcomes"]
    (signal,) = [s for s in world.repairer().ledger.story(outcome["incident_id"]) if s["step"] == "signal"]
    assert "\x1b" not in signal["signal"]
    assert signal["signal"].startswith("manual reboot: requested by arn:aws:iam::123456789012:user/ops??2J??H")
