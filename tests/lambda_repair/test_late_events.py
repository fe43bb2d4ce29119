"""Late, repeated and out-of-order tag-change events (issue 9 review). EventBridge delivers at least
once and in no particular order, and Lambda retries an asynchronous invocation for up to its
maximum event age: an event is the health tag's value when it changed, and the tag may have moved
on since. The repair function reads the tag again and acts only on what it still says."""

from __future__ import annotations

import json
from unittest import mock

import pytest

import handler
from auto_repair.signals import from_event
from repair_world import World, actions, aws, health_tag, story, tag_event, world, xid

__all__ = ["actions", "aws", "world"]  # fixtures


def stale_lines(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines() if '"StaleTagEvents"' in line]


@pytest.mark.parametrize(
    ("now", "late", "reason"),
    [
        # A: the node recovered in the same boot; the event for its fault comes after.
        ("healthy boot=b1", "unhealthy boot=b1 gpu_count", "the health tag now says healthy"),
        # B: the node has rebooted since; an event from the boot before arrives.
        ("healthy boot=b2", "unhealthy boot=b1 xid:79", "the health tag is now from boot b2, the event from boot b1"),
        # The same boot, still unhealthy, but no longer for what the event says.
        ("unhealthy boot=b1 disk", "unhealthy boot=b1 xid:79", "the health tag no longer lists xid 79"),
    ],
    ids=["recovered", "rebooted since", "another fault now"],
)
def test_a_late_tag_change_event_the_tag_no_longer_says_touches_nothing_and_is_recorded(
    world: World,
    actions: dict[str, mock.MagicMock],
    capsys: pytest.CaptureFixture[str],
    now: str,
    late: str,
    reason: str,
) -> None:
    bad = world.instances()[0]
    world.tag(bad, now)
    repairer = world.repairer()
    capsys.readouterr()
    (outcome,) = handler.handler(tag_event(bad, late), use=repairer)["outcomes"]
    assert (outcome["result"], outcome["action"], outcome["incident_id"]) == ("stale", None, None)
    actions["reboot"].assert_not_called()
    actions["terminate"].assert_not_called()
    assert world.state(bad) == "running" and bad in world.instances()
    assert "status" not in repairer.ledger.instance(bad)  # no incident opened
    # Recorded: one ledger item per instance (a count and the last reason), a metric in the log.
    item = world.clients.table("ledger").get_item(Key={"pk": f"report#{bad}", "sk": "state"})["Item"]
    assert item["stale"] == 1 and item["last_stale_reason"].startswith(reason), item
    (line,) = stale_lines(capsys.readouterr().out)
    assert (line["InstanceGroup"], line["instance_id"], line["StaleTagEvents"]) == ("gpu", bad, 1)
    assert line["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "TrainingCluster/Repair"  # type: ignore[index]
    assert world.notifications() == []


@pytest.mark.parametrize(
    ("value", "result", "action"),
    [("unhealthy boot=b1 xid:79", "replaced", "replace"), ("unhealthy boot=b1 gpu_count", "rebooted", "reboot")],
)
def test_a_tag_change_event_the_tag_still_says_acts(
    world: World, actions: dict[str, mock.MagicMock], value: str, result: str, action: str
) -> None:
    """C, the control: the tag still says what the event says, however late it comes."""
    bad = world.instances()[0]
    world.tag(bad, value)
    world.clock.now += 3600  # late, but the tag has not moved
    (outcome,) = handler.handler(tag_event(bad, value), use=world.repairer())["outcomes"]
    assert (outcome["result"], outcome["action"]) == (result, action)
    assert actions["terminate" if action == "replace" else "reboot"].call_count == 1


def test_only_the_failures_the_tag_still_lists_are_acted_on(world: World, actions: dict[str, mock.MagicMock]) -> None:
    """The event says a GPU fell off the bus and a GPU is missing; the tag now lists only the
    missing GPU: a reboot (the missing GPU's action), not the replacement the XID would take."""
    bad = world.instances()[0]
    world.tag(bad, "unhealthy boot=b1 gpu_count")
    (outcome,) = handler.handler(tag_event(bad, "unhealthy boot=b1 xid:79 gpu_count"), use=world.repairer())["outcomes"]
    assert (outcome["result"], outcome["action"]) == ("rebooted", "reboot")
    actions["terminate"].assert_not_called()
    step = next(s for s in world.repairer().ledger.story(outcome["incident_id"]) if s["step"] == "signal")
    assert step["signal"] == "gpu_count"


def test_a_late_healthy_event_does_not_close_an_incident_the_tag_still_reports(
    world: World, actions: dict[str, mock.MagicMock]
) -> None:
    """Out of order the other way: "healthy" from the new boot arrives after the tag says the
    new boot has failed too. The reboot's incident is not closed by the old news."""
    bad = world.instances()[0]
    repairer = world.repairer()
    world.tag(bad, health_tag(xid(46), boot="b1"))
    (rebooted,) = handler.handler(tag_event(bad, health_tag(xid(46), boot="b1")), use=repairer)["outcomes"]
    assert rebooted["result"] == "rebooted"
    world.tag(bad, health_tag(xid(46), boot="b2"))  # back from the reboot, healthy a moment, failed again
    (late,) = handler.handler(tag_event(bad, "healthy boot=b2"), use=repairer)["outcomes"]
    assert late["result"] == "stale" and repairer.ledger.instance(bad)["status"] == "open"


def test_a_repeated_tag_change_event_acts_once(world: World, actions: dict[str, mock.MagicMock]) -> None:
    """EventBridge delivers at least once: copies of one event, one after another and in one batch."""
    bad = world.instances()[0]
    value = health_tag(xid(79), boot="b1")
    world.tag(bad, value)
    repairer = world.repairer()
    event = tag_event(bad, value)
    results = [o["result"] for _ in range(3) for o in handler.handler(event, use=repairer)["outcomes"]]
    results += [o.result for o in repairer.handle(from_event(event) * 2)]
    assert results == ["replaced", "duplicate", "duplicate", "duplicate", "duplicate"]
    assert actions["terminate"].call_count == 1
    first = repairer.ledger.instance(bad)["incident_id"]
    assert story(world, first).count("action") == 1
