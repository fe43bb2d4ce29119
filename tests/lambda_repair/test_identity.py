"""A node can only report about itself (issue 9 §2): the agent's event is a claim, acted on only
when the health tag of the instance it names (which only that instance may write) confirms it;
AWS's own tag-change event for that tag is trusted. moto evaluates no IAM and emits no ``aws.tag``
events: these tests feed the handler AWS-shaped events (the Tagging docs' example) and write the
tags as the instance would; what IAM lets a node do is asserted on the policies (tests/constructs)."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable

import pytest

import handler
from auto_repair.signals import from_event
from repair_world import (
    INSTANCE_ARN_PREFIX,
    World,
    agent_event,
    aws,
    calls,
    health_tag,
    story,
    tag_event,
    world,
    xid,
)

__all__ = ["aws", "calls", "world"]  # fixtures


def untouched(world: World, instance_id: str) -> bool:
    return world.state(instance_id) == "running" and instance_id in world.instances()


# What the victim's own tag says when someone else reports it.
FORGERIES: list[tuple[str, Callable[[World, str], None], str]] = [
    ("no tag", lambda w, i: None, "the instance has no health tag"),
    ("healthy", lambda w, i: w.tag(i, "healthy boot=boot-1"), "the health tag says healthy"),
    ("another boot", lambda w, i: w.tag(i, health_tag(xid(79), boot="boot-0")), "the health tag is from boot boot-0"),
    ("unreadable", lambda w, i: w.tag(i, "unhealthy  boot=boot-1 xid:79"), "health tag: no boot id"),
]


@pytest.mark.parametrize(("victim_tag", "reason"), [(f, r) for _, f, r in FORGERIES], ids=[n for n, _, _ in FORGERIES])
def test_a_report_its_instance_does_not_confirm_touches_nothing_and_is_recorded(
    world: World, victim_tag: Callable[[World, str], None], reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    victim = world.instances()[3]
    victim_tag(world, victim)
    repairer = world.repairer()
    for _ in range(3):
        (outcome,) = handler.handler(agent_event(victim, xid(79)), use=repairer)["outcomes"]
        assert outcome["result"] == "unconfirmed"
    assert untouched(world, victim) and repairer.ledger.instance(victim) == {}  # no incident
    # Recorded as suspicious, one ledger item however many arrive; a metric and a log line each.
    items = world.clients.table("ledger").query(
        KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": f"report#{victim}"}
    )["Items"]
    assert len(items) == 1 and items[0]["unconfirmed"] == 3 and items[0]["last_reason"].startswith(reason)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if "UnconfirmedReports" in line]
    assert len(lines) == 3 and lines[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "TrainingCluster/Repair"
    assert (lines[0]["InstanceGroup"], lines[0]["instance_id"], lines[0]["UnconfirmedReports"]) == ("gpu", victim, 1)
    assert world.notifications() == []


def test_the_failures_acted_on_are_the_tags_not_the_reports(world: World) -> None:
    """The tag says a GPU-reset XID; the event claims a fallen-off-the-bus XID as well: a reboot."""
    bad = world.instances()[0]
    world.tag(bad, health_tag(xid(46)))
    (outcome,) = world.repairer().handle(from_event(agent_event(bad, xid(46), xid(79))))
    assert (outcome.result, outcome.action) == ("rebooted", "reboot")
    signal = next(s for s in world.repairer().ledger.story(outcome.incident_id) if s["step"] == "signal")
    assert signal["signal"] == "xid 46: NVRM: Xid (PCI:0000:53:00): 46, pid=1234"  # the event's text, the tag's list


def test_a_forged_healthy_report_does_not_close_an_incident(world: World) -> None:
    bad = world.instances()[0]
    repairer = world.repairer()
    (rebooted,) = repairer.handle(from_event(world.agent(bad, xid(46))))
    assert rebooted.result == "rebooted"
    (forged,) = repairer.handle(from_event(agent_event(bad, state="healthy", boot="boot-2")))
    assert forged.result == "unconfirmed" and repairer.ledger.instance(bad)["status"] == "open"
    (back,) = repairer.handle(from_event(world.agent(bad, state="healthy", boot="boot-2")))
    assert back.result == "closed"


def test_an_honest_report_that_races_its_tag_is_confirmed_by_the_tag_change_event(world: World) -> None:
    bad = world.instances()[0]
    repairer = world.repairer()
    (early,) = handler.handler(agent_event(bad, xid(79)), use=repairer)["outcomes"]  # the tag is not visible yet
    assert early["result"] == "unconfirmed" and untouched(world, bad)
    world.tag(bad, health_tag(xid(79)))
    (outcome,) = handler.handler(tag_event(bad, health_tag(xid(79))), use=repairer)["outcomes"]
    assert (outcome["result"], outcome["action"]) == ("replaced", "replace")
    assert story(world, outcome["incident_id"]) == ["signal", "decision", "evidence", "action"]
    step = next(s for s in repairer.ledger.story(outcome["incident_id"]) if s["step"] == "signal")
    assert (step["source"], step["signal"]) == ("health-tag", "xid 79")
    # the agent's event, retried after the tag is visible, is the same incident
    (again,) = handler.handler(agent_event(bad, xid(79)), use=repairer)["outcomes"]
    assert again["result"] == "duplicate"


def test_a_lost_tag_change_event_is_caught_by_the_next_sweep(world: World) -> None:
    """AWS delivers tag-change events on a best-effort basis: when the report raced its tag and
    that event never comes, the sweep reads the tags and acts, once."""
    bad, app, held = world.instances()[:3]
    repairer = world.repairer(unhealthy_threshold_percent=50)
    (early,) = handler.handler(agent_event(bad, xid(79)), use=repairer)["outcomes"]
    assert early["result"] == "unconfirmed"
    world.tag(bad, health_tag(xid(79)))  # visible now; its tag-change event is lost
    world.tag(app, health_tag(xid(13)))  # an application XID: its own report was enough
    (rebooted,) = repairer.handle(from_event(world.agent(held, xid(46))))  # acted on: its tag still says so
    world.clock.now += 60
    assert [(o.instance_id, o.result) for o in repairer.sweep()] == [(bad, "replaced")]
    world.clock.now += 60
    assert [(o.instance_id, o.result) for o in repairer.sweep()] == [(bad, "closed")]
    assert untouched(world, app) and rebooted.result == "rebooted" and world.state(held) == "running"


def test_tag_change_events_that_are_not_a_health_report_are_ignored(world: World) -> None:
    node = world.instances()[0]
    stranger = world.clients.ec2.run_instances(ImageId="ami-0123456789abcdef0", MinCount=1, MaxCount=1)
    stranger_id = stranger["Instances"][0]["InstanceId"]
    volume = {**tag_event(node, health_tag(xid(79))), "resources": ["arn:aws:ec2:us-east-1:123456789012:volume/vol-1"]}
    cases = {
        "another tag changed": tag_event(node, health_tag(xid(79)), changed=("Name",)),
        "the health tag removed": tag_event(node, None),
        "a volume": volume,
        "not an ARN": {**volume, "resources": [node]},
    }
    repairer = world.repairer()
    for name, event in cases.items():
        assert handler.handler(event, use=repairer)["outcomes"] == [], name
    (outside,) = handler.handler(tag_event(stranger_id, health_tag(xid(79))), use=repairer)["outcomes"]
    assert outside["result"] == "ignored"  # not an instance of this cluster's groups
    assert untouched(world, node) and world.state(stranger_id) == "running"
    assert tag_event(node, "x")["resources"] == [f"{INSTANCE_ARN_PREFIX}{node}"]


def test_agent_events_of_an_unknown_detail_type_are_ignored(world: World) -> None:
    bad = world.instances()[0]
    event = {**world.agent(bad, xid(79)), "detail-type": "Node Health Changed Please"}
    assert handler.handler(event, use=world.repairer())["outcomes"] == []
    assert untouched(world, bad)


FLOOD = 500


def test_a_flood_of_forged_reports_does_not_delay_a_real_repair(world: World, calls: Counter[str]) -> None:
    """Deployed, forged reports stop at the report intake (test_intake.py). Should they reach the
    repair function anyway (invoked directly): 500 reports naming its neighbours (and made-up
    instances), in one batch and then one invocation each, as reserved concurrency 1 would deliver
    them; a real fault arrives behind them. Each costs a bounded number of calls and waits on nothing."""
    attacker, real, *victims = world.instances()
    made_up = [f"i-{n:017x}" for n in range(50)]
    forged = [agent_event(([*victims, attacker, *made_up])[n % 57], xid(79)) for n in range(FLOOD)]
    repairer = world.repairer()
    start, before = time.perf_counter(), sum(calls.values())
    batch = repairer.handle([s for e in forged for s in from_event(e)])
    batched_seconds, batched_calls = time.perf_counter() - start, sum(calls.values()) - before
    assert {o.result for o in batch} == {"unconfirmed", "ignored"}
    start, before = time.perf_counter(), sum(calls.values())
    for event in forged:
        assert {o["result"] for o in handler.handler(event, use=repairer)["outcomes"]} <= {"unconfirmed", "ignored"}
    one_by_one_seconds, one_by_one_calls = time.perf_counter() - start, sum(calls.values()) - before
    (outcome,) = handler.handler(world.agent(real, xid(79)), use=repairer)["outcomes"]
    assert outcome["result"] == "replaced" and world.state(real) in ("shutting-down", "terminated")
    assert all(untouched(world, i) for i in [attacker, *victims])
    assert world.clock.slept == []  # nothing waited: not on forged reports, not on the real one
    # A forged report: the group lookup, the tag read, one ledger write (and, for a made-up id,
    # one ledger read); in a batch the reads are shared.
    assert one_by_one_calls <= 3 * FLOOD and batched_calls < FLOOD // 2
    assert calls["TerminateInstanceInAutoScalingGroup"] == 1 and calls["RebootInstances"] == 0
    assert calls["PutMetricData"] == 3  # the real repair's; forged reports are counted in the log
    print(
        f"\n{FLOOD} forged reports: one batch {batched_seconds:.2f} s, {batched_calls} calls; "
        f"one invocation each {one_by_one_seconds:.2f} s, {one_by_one_calls} calls "
        f"({1000 * one_by_one_seconds / FLOOD:.1f} ms each under moto)"
    )
    assert one_by_one_seconds < 60 and batched_seconds < 20  # moto on 2 shared cores; AWS is faster
