"""A node the control plane has just rebooted (review item M3). While it restarts its EC2 status
checks may read impaired for a while: the sweep does not take that for a failure until the grace
after the reboot has passed, and then handles a still-impaired node as before. A reboot is no
change of the EC2 instance state (the instance stays ``running``), so nothing of it reads as an
unexpected stop; a real stop during the grace is still one."""

from __future__ import annotations

from unittest import mock

import pytest

import handler
from auto_repair.repair import REBOOT_GRACE_SECONDS
from auto_repair.signals import from_event
from repair_world import World, actions, aws, health_tag, impaired, story, tag_event, world, xid

__all__ = ["actions", "aws", "world"]  # fixtures

SWEEP = {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}


def rebooted_for_xid_46(world: World, instance_id: str) -> str:
    """The control plane reboots the node for a GPU-reset XID; the reboot's incident id."""
    world.tag(instance_id, health_tag(xid(46)))
    (outcome,) = handler.handler(tag_event(instance_id, health_tag(xid(46))), use=world.repairer())["outcomes"]
    assert (outcome["result"], outcome["action"]) == ("rebooted", "reboot")
    return str(outcome["incident_id"])


def sweep(world: World, bad: list[str], **settings: object) -> list[dict[str, object]]:
    with mock.patch.object(world.clients.ec2, "describe_instance_status", side_effect=impaired(bad)):
        outcomes: list[dict[str, object]] = handler.handler(SWEEP, use=world.repairer(**settings))["outcomes"]
    return outcomes


def test_the_grace_is_a_few_minutes() -> None:
    assert 180 <= REBOOT_GRACE_SECONDS <= 600


def test_an_impaired_status_read_while_the_node_reboots_is_not_acted_on(
    world: World, actions: dict[str, mock.MagicMock]
) -> None:
    """The review's repro: one sweep reads the rebooting node as impaired; before the fix it
    escalated the reboot to a replacement at once."""
    bad = world.instances()[2]
    incident = rebooted_for_xid_46(world, bad)
    for _ in range(4):  # every sweep within the grace
        world.clock.now += 60
        outcomes = sweep(world, [bad])
        assert [o for o in outcomes if o["instance_id"] == bad] == []
    assert actions["terminate"].call_count == 0
    assert actions["reboot"].call_count == 1
    assert world.state(bad) == "running"
    state = world.repairer().ledger.instance(bad)
    assert (state["status"], state["action"], state["incident_id"]) == ("open", "reboot", incident)
    assert story(world, incident) == ["signal", "decision", "action"]


def test_the_grace_is_for_the_rebooted_node_only(world: World, actions: dict[str, mock.MagicMock]) -> None:
    bad, other = world.instances()[2], world.instances()[3]
    rebooted_for_xid_46(world, bad)
    world.clock.now += 60
    outcomes = sweep(world, [bad, other], unhealthy_threshold_percent=50)
    assert [(o["instance_id"], o["result"]) for o in outcomes] == [(other, "replaced")]
    actions["terminate"].assert_called_once_with(InstanceId=other, ShouldDecrementDesiredCapacity=False)


def test_still_impaired_after_the_grace_is_replaced_as_before(world: World, actions: dict[str, mock.MagicMock]) -> None:
    bad = world.instances()[2]
    incident = rebooted_for_xid_46(world, bad)
    world.clock.now += REBOOT_GRACE_SECONDS - 1
    assert sweep(world, [bad]) == []
    world.clock.now += 1
    (outcome,) = sweep(world, [bad])
    assert (outcome["instance_id"], outcome["result"], outcome["incident_id"]) == (bad, "replaced", incident)
    actions["terminate"].assert_called_once_with(InstanceId=bad, ShouldDecrementDesiredCapacity=False)
    decisions = [s for s in world.repairer().ledger.story(incident) if s["step"] == "decision"]
    assert [d["action"] for d in decisions] == ["reboot", "replace"]
    assert "status check failed" in decisions[-1]["signal"]


def test_an_impaired_read_after_the_node_came_back_within_the_grace_is_not_a_new_incident(
    world: World, actions: dict[str, mock.MagicMock]
) -> None:
    """The node reports healthy from its new boot (the incident closes), but the status checks
    still lag behind: within the grace that is no fault, after it one is."""
    bad = world.instances()[2]
    rebooted_for_xid_46(world, bad)
    world.clock.now += 90
    world.tag(bad, health_tag(state="healthy", boot="boot-2"))
    (closed,) = handler.handler(tag_event(bad, health_tag(state="healthy", boot="boot-2")), use=world.repairer())[
        "outcomes"
    ]
    assert closed["result"] == "closed"
    world.clock.now += 60
    assert sweep(world, [bad]) == []
    assert world.repairer().ledger.instance(bad)["status"] == "closed"
    world.clock.now += REBOOT_GRACE_SECONDS
    (outcome,) = sweep(world, [bad])
    assert outcome["result"] == "replaced"
    assert actions["reboot"].call_count == 1


def test_a_manual_reboot_has_the_same_grace(world: World, actions: dict[str, mock.MagicMock]) -> None:
    bad = world.instances()[4]
    outcome = world.repairer().manual(bad, "reboot", "alice")
    assert outcome.result == "rebooted"
    world.clock.now += 120
    assert sweep(world, [bad]) == []
    assert actions["terminate"].call_count == 0


def test_status_checks_that_are_not_impaired_are_no_fault_even_after_the_grace(
    world: World, actions: dict[str, mock.MagicMock]
) -> None:
    """A restarting instance's checks may read ``initializing`` or ``insufficient-data``: neither is a failure."""
    bad = world.instances()[2]
    rebooted_for_xid_46(world, bad)
    world.clock.now += REBOOT_GRACE_SECONDS + 60

    def restarting(**kwargs: object) -> dict[str, object]:
        ids = kwargs["InstanceIds"]
        assert isinstance(ids, list)
        return {
            "InstanceStatuses": [
                {
                    "InstanceId": i,
                    "InstanceState": {"Code": 16, "Name": "running"},
                    "InstanceStatus": {"Status": "initializing" if i == bad else "ok"},
                    "SystemStatus": {"Status": "insufficient-data" if i == bad else "ok"},
                }
                for i in ids
            ]
        }

    with mock.patch.object(world.clients.ec2, "describe_instance_status", side_effect=restarting):
        assert handler.handler(SWEEP, use=world.repairer())["outcomes"] == []
    assert actions["terminate"].call_count == 0


@pytest.mark.parametrize("state", ["pending", "running"])
def test_no_state_change_a_reboot_could_bring_is_a_stop(state: str) -> None:
    """EC2 reboots an instance in place: it stays ``running`` (no state-change event at all); even
    a ``pending`` or ``running`` notification says nothing about health."""
    event = {
        "source": "aws.ec2",
        "detail-type": "EC2 Instance State-change Notification",
        "detail": {"instance-id": "i-0123456789abcdef0", "state": state},
    }
    assert from_event(event) == []


def test_a_reboot_leaves_the_instance_running(world: World) -> None:
    bad = world.instances()[2]
    rebooted_for_xid_46(world, bad)
    assert world.state(bad) == "running"


@pytest.mark.parametrize("state", ["stopping", "stopped"])
def test_a_real_stop_during_the_grace_is_still_an_unexpected_stop(
    world: World, actions: dict[str, mock.MagicMock], state: str
) -> None:
    """A reboot never stops an instance: a stop within the grace is not the reboot, and escalates."""
    bad = world.instances()[2]
    incident = rebooted_for_xid_46(world, bad)
    world.clock.now += 60
    stop = {
        "source": "aws.ec2",
        "detail-type": "EC2 Instance State-change Notification",
        "detail": {"instance-id": bad, "state": state},
    }
    (outcome,) = handler.handler(stop, use=world.repairer())["outcomes"]
    assert (outcome["result"], outcome["incident_id"]) == ("replaced", incident)
    actions["terminate"].assert_called_once_with(InstanceId=bad, ShouldDecrementDesiredCapacity=False)
