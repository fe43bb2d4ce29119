"""The four repair-control-plane defects of issue 9 §3, each with the case that failed before."""

from __future__ import annotations

from typing import Any
from unittest import mock

import pytest

import handler
from auto_repair.signals import from_event
from repair_world import World, agent_event, aws, health_tag, impaired, story, tag_event, world, xid
from training_cluster.contract import AGENT_SOURCE, HEALTH_TAG

__all__ = ["aws", "world"]  # fixtures


# 1. Recurrence is judged by the node's boot.


def test_a_duplicate_or_retried_reboot_class_fault_reboots_once_and_never_replaces(world: World) -> None:
    bad = world.instances()[0]
    repairer = world.repairer()
    ec2, autoscaling = world.clients.ec2, world.clients.autoscaling
    with (
        mock.patch.object(ec2, "reboot_instances", wraps=ec2.reboot_instances) as reboot,
        mock.patch.object(autoscaling, "terminate_instance_in_auto_scaling_group") as terminate,
    ):
        event = world.agent(bad, xid(46))
        (first,) = handler.handler(event, use=repairer)["outcomes"]
        assert first["result"] == "rebooted"
        world.clock.now += 5
        # the same event delivered twice, and AWS's tag-change event for the same write
        for copy in (event, tag_event(bad, health_tag(xid(46)))):
            (again,) = handler.handler(copy, use=repairer)["outcomes"]
            assert (again["result"], again["incident_id"]) == ("duplicate", first["incident_id"])
        # the node comes back from the reboot: a new boot, healthy
        world.clock.now += 300
        (back,) = handler.handler(world.agent(bad, state="healthy", boot="boot-2"), use=repairer)["outcomes"]
        assert back["result"] == "closed"
        # a Lambda retry of the first tag-change event, after the reboot: the tag has moved on (healthy,
        # boot-2), so the event is stale: recorded, and nothing acts on it
        (retry,) = handler.handler(tag_event(bad, health_tag(xid(46))), use=repairer)["outcomes"]
        assert (retry["result"], retry["incident_id"]) == ("stale", None)
        reboot.assert_called_once_with(InstanceIds=[bad])
        terminate.assert_not_called()
        # the same fault from the new boot, within the window: the reboot did not help, replace
        world.clock.now += 600
        (recurred,) = handler.handler(world.agent(bad, xid(46), boot="boot-2"), use=repairer)["outcomes"]
    assert (recurred["result"], recurred["action"]) == ("replaced", "replace")
    assert recurred["incident_id"] != first["incident_id"]
    terminate.assert_called_once()
    steps = story(world, first["incident_id"])
    assert steps == ["signal", "decision", "action", "duplicate", "duplicate", "closed"]


# 2. After a circuit-breaker reset, held nodes still failing are repaired.


def test_after_a_reset_held_nodes_still_failing_are_repaired_and_the_ledger_tells_it(world: World) -> None:
    a, b, c = world.instances()[:3]
    repairer = world.repairer(max_parallel_replacements=1)  # 20% of 8: two unhealthy open the breaker
    held = repairer.handle([s for i in (a, b, c) for s in from_event(world.agent(i, xid(79)))])
    assert [o.result for o in held] == ["suppressed"] * 3
    assert repairer.ledger.group("gpu")["breaker"] == "open"
    world.clock.now += 60
    assert {o.result for o in repairer.sweep()} <= {"duplicate"}  # nothing acts while it is open
    world.tag(b, "healthy boot=boot-2")  # b recovered while held (a person rebooted it)
    outcomes = handler.handler({"reset_circuit_breaker": "gpu"}, use=repairer)["outcomes"]
    assert [(o["instance_id"], o["result"]) for o in outcomes] == [(a, "replaced"), (b, "closed"), (c, "deferred")]
    assert repairer.ledger.group("gpu")["breaker"] == "closed"  # the released nodes did not count again
    assert world.state(b) == "running" and world.state(c) == "running"
    world.clock.now += 60
    sweep = {o.instance_id: o.result for o in repairer.sweep()}  # a is gone: its slot frees, c goes
    assert (sweep[a], sweep[c]) == ("closed", "replaced")
    assert world.state(c) in ("shutting-down", "terminated") and repairer.ledger.group("gpu")["breaker"] == "closed"
    assert sum("Auto-repair stopped" in s for s in world.notifications()) == 1
    assert story(world, held[0].incident_id) == [
        "signal",
        "decision",
        "held",
        "released",
        "evidence",
        "action",
        "closed",
    ]
    assert story(world, held[1].incident_id) == ["signal", "decision", "held", "released", "closed"]
    assert story(world, held[2].incident_id) == [
        "signal",
        "decision",
        "held",
        "released",
        "deferred",
        "evidence",
        "action",
    ]
    steps = repairer.ledger.story(held[0].incident_id)
    assert [(s["step"], s.get("reason")) for s in steps[2:4]] == [
        ("held", "breaker open: 3 of 8 nodes unhealthy at once (limit 20%)"),
        ("released", "breaker reset"),
    ]


def test_after_a_reset_nodes_held_for_failed_status_checks_are_repaired_when_still_impaired(world: World) -> None:
    bad = world.instances()[:4]
    repairer = world.repairer(max_parallel_replacements=2)
    with mock.patch.object(world.clients.ec2, "describe_instance_status", side_effect=impaired(bad)):
        assert {o.result for o in repairer.sweep()} == {"suppressed"}
    with mock.patch.object(world.clients.ec2, "describe_instance_status", side_effect=impaired(bad[1:])):
        outcomes = repairer.reset_breaker("gpu")
        assert [o.result for o in outcomes] == ["closed", "replaced", "replaced", "deferred"]
        world.clock.now += 60
        assert sorted(o.result for o in repairer.sweep()) == ["closed", "closed", "duplicate", "replaced"]
    assert all(world.state(i) in ("shutting-down", "terminated") for i in bad[1:])
    assert world.state(bad[0]) == "running" and repairer.ledger.group("gpu")["breaker"] == "closed"


def test_reset_of_a_group_that_is_not_the_clusters_does_nothing(world: World) -> None:
    assert handler.handler({"reset_circuit_breaker": "nope"}, use=world.repairer())["outcomes"] == []


# 3. Dry run notifies once per decision.


def test_dry_run_notifies_once_per_decision_not_every_sweep(world: World) -> None:
    bad = world.instances()[0]
    repairer = world.repairer(dry_run=True)
    (outcome,) = repairer.handle(from_event(world.agent(bad, xid(46))))
    assert outcome.result == "dry-run"
    repairer.handle(from_event(world.agent(bad, xid(46))))  # the same decision, seen again
    assert world.notifications() == [f"[demo] [dry run] Rebooting {bad} in gpu"]
    # a worse fault is a new decision, announced once; the sweeps that retry it announce nothing
    (worse,) = repairer.handle(from_event(world.agent(bad, xid(46), xid(79))))
    assert (worse.result, worse.action) == ("dry-run", "replace")
    for _ in range(3):
        world.clock.now += 60
        assert [o.result for o in repairer.sweep()] == ["dry-run"]
    assert world.notifications() == [f"[demo] [dry run] Replacing {bad} in gpu"]
    assert story(world, outcome.incident_id).count("dry-run") == 2 and world.state(bad) == "running"


# 4. Malformed events are logged and dropped, never raised.

VALID_ID = "i-0123456789abcdef0"


def agent(**detail: Any) -> dict[str, Any]:
    base = agent_event(VALID_ID, xid(79))
    return {**base, "detail": {**base["detail"], **detail}}


def aws_tag(**change: Any) -> dict[str, Any]:
    event = tag_event(VALID_ID, "unhealthy boot=b xid:79")
    return {**event, **change}


HUGE = "x" * 1_000_000
MALFORMED: list[tuple[str, Any]] = [
    ("not an object: null", None),
    ("not an object: a list", [agent()]),
    ("not an object: a string", "Node Health Changed"),
    ("empty", {}),
    ("agent, no detail", {"source": AGENT_SOURCE, "detail-type": "Node Health Changed"}),
    ("agent, detail null", {**agent(), "detail": None}),
    ("agent, detail a list", {**agent(), "detail": [agent()["detail"]]}),
    ("agent, detail a string", {**agent(), "detail": "{}"}),
    ("agent, detail-type a list", {**agent(), "detail-type": ["Node Health Changed"]}),
    ("agent, no instance_id", {**agent(), "detail": {"state": "unhealthy", "boot_id": "b"}}),
    ("agent, instance_id a number", agent(instance_id=1234)),
    ("agent, instance_id a list", agent(instance_id=[VALID_ID])),
    ("agent, instance_id an object", agent(instance_id={"id": VALID_ID})),
    ("agent, instance_id not hex", agent(instance_id="i-XYZXYZXYZ")),
    ("agent, instance_id huge", agent(instance_id="i-" + "a" * 100_000)),
    ("agent, instance_id an ARN", agent(instance_id=f"arn:aws:ec2:us-east-1:123456789012:instance/{VALID_ID}")),
    ("agent, instance_id with a newline", agent(instance_id=VALID_ID + "\n")),
    ("agent, no boot_id", {**agent(), "detail": {k: v for k, v in agent()["detail"].items() if k != "boot_id"}}),
    ("agent, boot_id a number", agent(boot_id=5)),
    ("agent, boot_id with a space", agent(boot_id="b xid:79")),
    ("agent, boot_id huge", agent(boot_id=HUGE)),
    ("agent, state null", agent(state=None)),
    ("agent, state unknown", agent(state="on fire")),
    ("agent, failures a string", agent(failures="xid")),
    ("agent, failures an object", agent(failures={"check": "xid", "code": "79"})),
    ("agent, failures [null]", agent(failures=[None])),
    ("agent, failure without check", agent(failures=[{"code": "79"}])),
    ("agent, check a number", agent(failures=[{"check": 79}])),
    ("agent, code a list", agent(failures=[{"check": "xid", "code": ["79"]}])),
    ("agent, message an object", agent(failures=[{"check": "xid", "code": "79", "message": {"a": 1}}])),
    ("agent, 100k failures", agent(failures=[xid(79)] * 100_000)),
    ("agent, huge message", agent(failures=[{**xid(79), "message": HUGE}])),
    ("ec2 state, no detail", {"source": "aws.ec2", "detail-type": "EC2 Instance State-change Notification"}),
    (
        "ec2 state, instance-id null",
        {
            "source": "aws.ec2",
            "detail-type": "EC2 Instance State-change Notification",
            "detail": {"instance-id": None, "state": "stopped"},
        },
    ),
    (
        "health, entities a string",
        {"source": "aws.health", "detail": {"eventTypeCode": "X", "affectedEntities": VALID_ID}},
    ),
    (
        "health, entities strings",
        {"source": "aws.health", "detail": {"eventTypeCode": "X", "affectedEntities": [VALID_ID]}},
    ),
    ("health, detail a list", {"source": "aws.health", "detail": []}),
    ("health, code an object", {"source": "aws.health", "detail": {"eventTypeCode": {"x": 1}, "affectedEntities": []}}),
    (
        "autoscaling, detail null",
        {"source": "aws.autoscaling", "detail-type": "EC2 Instance Launch Unsuccessful", "detail": None},
    ),
    ("autoscaling, group a list", {"source": "aws.autoscaling", "detail": {"AutoScalingGroupName": ["demo-gpu-asg"]}}),
    ("reset, a list", {"reset_circuit_breaker": ["gpu"]}),
    ("reset, an object", {"reset_circuit_breaker": {"group": "gpu"}}),
    ("tag change, no resources", {k: v for k, v in aws_tag().items() if k != "resources"}),
    ("tag change, resources a string", aws_tag(resources=f"arn:aws:ec2:us-east-1:123456789012:instance/{VALID_ID}")),
    ("tag change, tags a list", aws_tag(detail={**aws_tag()["detail"], "tags": [HEALTH_TAG]})),
    ("tag change, changed keys a string", aws_tag(detail={**aws_tag()["detail"], "changed-tag-keys": HEALTH_TAG})),
    ("tag change, tag value a number", aws_tag(detail={**aws_tag()["detail"], "tags": {HEALTH_TAG: 7}})),
    (
        "tag change, tag value huge",
        aws_tag(detail={**aws_tag()["detail"], "tags": {HEALTH_TAG: "unhealthy boot=b " + "xid:79 " * 9000}}),
    ),
    ("tag change, no boot", aws_tag(detail={**aws_tag()["detail"], "tags": {HEALTH_TAG: "unhealthy xid:79"}})),
    ("source an object", {**agent(), "source": {"name": AGENT_SOURCE}}),
]


def test_malformed_events_are_dropped_and_a_real_fault_after_them_is_repaired(world: World) -> None:
    assert len(MALFORMED) >= 27
    repairer = world.repairer()
    for name, event in MALFORMED:
        result = handler.handler(event, use=repairer)  # raises nothing
        assert result["outcomes"] == [] or {o["result"] for o in result["outcomes"]} <= {"ignored"}, name
    bad = world.instances()[0]
    (outcome,) = handler.handler(world.agent(bad, xid(79)), use=repairer)["outcomes"]
    assert outcome["result"] == "replaced"


@pytest.mark.parametrize(("name", "event"), MALFORMED, ids=[n for n, _ in MALFORMED])
def test_each_malformed_shape_gives_no_signal(name: str, event: Any) -> None:
    signals = from_event(event)
    if name == "agent, huge message":  # well formed: the message is human text, cut short
        assert [len(f.message) for s in signals for f in s.failures] == [500]
    else:
        assert signals == []
