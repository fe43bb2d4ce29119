"""The report intake (issue 9, clarifications): the repair function runs one invocation at a time,
so waiting on unconfirmed or forged reports must never delay the repair of real faults. The
agent's events go to the intake, which checks each against the named instance's health tag,
records the unconfirmed ones and forwards a confirmed one to the repair function once per change
of the tag. moto would run an invoked function in Docker: the invokes are recorded
(``repair_world.Invokes``) and delivered to the repair handler in-process, as Lambda's
asynchronous queue would."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from typing import Any
from unittest import mock

import pytest
from botocore.exceptions import ClientError

import handler
from repair_world import World, agent_event, aws, calls, health_tag, impaired, tag_event, world, xid

__all__ = ["aws", "calls", "world"]  # fixtures


def untouched(world: World, instance_id: str) -> bool:
    return world.state(instance_id) == "running" and instance_id in world.instances()


def report_item(world: World, instance_id: str) -> dict[str, Any]:
    item: dict[str, Any] = (
        world.clients.table("ledger").get_item(Key={"pk": f"report#{instance_id}", "sk": "state"}).get("Item") or {}
    )
    return item


def deliver(world: World) -> list[dict[str, Any]]:
    """Lambda's asynchronous queue: each forwarded claim to the repair function, in order."""
    repairer, outcomes = world.repairer(), []
    while world.invokes.payloads:
        outcomes += handler.handler(world.invokes.payloads.pop(0), use=repairer)["outcomes"]
    return outcomes


FORGERIES: list[tuple[str, Callable[[World, str], None], str]] = [
    ("no tag", lambda w, i: None, "the instance has no health tag"),
    ("healthy", lambda w, i: w.tag(i, "healthy boot=boot-1"), "the health tag says healthy"),
    ("another boot", lambda w, i: w.tag(i, health_tag(xid(79), boot="boot-0")), "the health tag is from boot boot-0"),
    ("unreadable", lambda w, i: w.tag(i, "unhealthy  boot=boot-1 xid:79"), "health tag: no boot id"),
]


@pytest.mark.parametrize(("victim_tag", "reason"), [(f, r) for _, f, r in FORGERIES], ids=[n for n, _, _ in FORGERIES])
def test_a_forged_report_is_recorded_and_not_forwarded(
    world: World, victim_tag: Callable[[World, str], None], reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    victim = world.instances()[3]
    victim_tag(world, victim)
    intake = world.intake()
    for _ in range(3):
        assert handler.intake(agent_event(victim, xid(79)), use=intake)["received"] == [
            {"instance_id": victim, "result": "unconfirmed"}
        ]
    assert world.invokes.payloads == []
    item = report_item(world, victim)  # one ledger item however many arrive, as the repair function kept it
    assert item["unconfirmed"] == 3 and item["last_reason"].startswith(reason) and "forwarded" not in item
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if "UnconfirmedReports" in line]
    assert len(lines) == 3 and lines[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "TrainingCluster/Repair"
    assert (lines[0]["InstanceGroup"], lines[0]["instance_id"], lines[0]["UnconfirmedReports"]) == ("gpu", victim, 1)
    assert untouched(world, victim) and world.repairer().ledger.instance(victim) == {}


def test_a_confirmed_report_is_forwarded_once_per_change_of_the_tag(world: World) -> None:
    bad = world.instances()[0]
    intake = world.intake()
    event = world.agent(bad, xid(46), boot="boot-1")  # tags itself, then sends its event
    event["detail"]["failures"][0]["extra"] = "x" * 10_000  # the forward is rebuilt from the checked fields
    results = [r["result"] for _ in range(5) for r in handler.intake(event, use=intake)["received"]]
    assert results == ["forwarded", "repeated", "repeated", "repeated", "repeated"]
    (forwarded,) = world.invokes.payloads
    assert forwarded == {
        "source": "training-cluster.health",
        "detail-type": "Node Health Changed",
        "detail": {
            "cluster": "demo",
            "instance_id": bad,
            "boot_id": "boot-1",
            "state": "unhealthy",
            "failures": [{"check": "xid", "code": "46", "message": xid(46)["message"]}],
        },
    }
    assert [(o["instance_id"], o["result"]) for o in deliver(world)] == [(bad, "rebooted")]
    # back from the reboot: the tag changed, so its report goes through, once
    back = world.agent(bad, state="healthy", boot="boot-2")
    assert [r["result"] for _ in range(3) for r in handler.intake(back, use=intake)["received"]] == [
        "forwarded",
        "repeated",
        "repeated",
    ]
    assert [o["result"] for o in deliver(world)] == ["closed"]
    assert report_item(world, bad)["forwarded"] == "healthy boot=boot-2"


def test_the_repair_function_checks_a_forwarded_claim_again(world: World) -> None:
    """It takes nothing from the forward but the instance to look at: a tag that changed between
    the intake's read and the delivery wins."""
    bad = world.instances()[0]
    handler.intake(world.agent(bad, xid(79)), use=world.intake())
    world.tag(bad, "healthy boot=boot-2")  # recovered (a new boot) before the delivery
    assert [o["result"] for o in deliver(world)] == ["unconfirmed"]
    assert untouched(world, bad)


def test_reports_about_instances_outside_the_cluster_leave_no_trace(world: World, calls: Counter[str]) -> None:
    """Made-up ids and instances of other groups are dropped unrecorded: they must not grow the ledger."""
    stranger = world.clients.ec2.run_instances(ImageId="ami-0123456789abcdef0", MinCount=1, MaxCount=1)
    stranger_id = stranger["Instances"][0]["InstanceId"]
    world.tag(stranger_id, health_tag(xid(79)))
    intake = world.intake()
    calls.clear()
    for instance_id in (stranger_id, "i-0123456789abcdef0"):
        received = handler.intake(agent_event(instance_id, xid(79)), use=intake)["received"]
        assert received == [{"instance_id": instance_id, "result": "ignored"}]
    assert calls == Counter({"DescribeTags": 2}) and world.invokes.payloads == []
    assert report_item(world, stranger_id) == {} and world.state(stranger_id) == "running"


@pytest.mark.parametrize(
    "event",
    [
        None,
        [],
        "Node Health Changed",
        {"source": "training-cluster.health"},
        {"source": "training-cluster.health", "detail-type": "Node Health Changed", "detail": "x"},
        {"source": "training-cluster.health", "detail-type": "Node Health Changed Please", "detail": {}},
        {"source": "training-cluster.health", "detail-type": "Node Health Changed", "detail": {"instance_id": 7}},
        {"reset_circuit_breaker": "gpu"},
        {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}},
    ],
    ids=lambda e: json.dumps(e)[:40],
)
def test_the_intake_drops_what_is_not_an_agent_report(world: World, calls: Counter[str], event: Any) -> None:
    """Wrong shapes, other detail-types and other sources (the intake is never a way to reset a
    breaker or run a sweep): dropped, no AWS call, nothing forwarded."""
    calls.clear()
    assert handler.intake(event, use=world.intake()) == {"received": []}
    assert calls == Counter() and world.invokes.payloads == []


def test_a_failed_forward_is_forwarded_again_on_retry(world: World) -> None:
    bad = world.instances()[0]
    intake = world.intake()
    event = world.agent(bad, xid(79))
    world.invokes.fail = ClientError({"Error": {"Code": "ServiceException", "Message": "x"}}, "Invoke")
    with pytest.raises(ClientError):  # raised: EventBridge delivers the event to the intake again
        handler.intake(event, use=intake)
    assert "forwarded" not in report_item(world, bad)
    assert [r["result"] for r in handler.intake(event, use=intake)["received"]] == ["forwarded"]
    assert [o["result"] for o in deliver(world)] == ["replaced"]


FLOOD = 1000


def test_a_flood_of_forged_reports_never_reaches_the_repair_function(world: World, calls: Counter[str]) -> None:
    """One node puts 1,000 agent events: nine in ten name its neighbours or made-up instances,
    one in ten repeats its own honest report. Not one forged report reaches the repair function; the
    honest one goes through once. A real fault elsewhere (AWS's tag-change event, which goes to
    the repair function directly) is repaired at once, and so is the honest report's."""
    attacker, real, *victims = world.instances()
    world.tag(attacker, health_tag(xid(13)))  # an application XID: observed, never acted on
    made_up = [f"i-{n:017x}" for n in range(50)]
    targets = [*victims, *made_up]
    honest = agent_event(attacker, xid(13))
    flood = [honest if n % 10 == 0 else agent_event(targets[n % len(targets)], xid(79)) for n in range(FLOOD)]
    naming_victims = sum(1 for n in range(FLOOD) if n % 10 and n % len(targets) < len(victims))
    intake = world.intake()
    calls.clear()
    start = time.perf_counter()
    results: Counter[str] = Counter()
    for event in flood:
        for r in handler.intake(event, use=intake)["received"]:
            results[r["result"]] += 1
    seconds = time.perf_counter() - start
    assert results == Counter(
        {"unconfirmed": naming_victims, "ignored": 900 - naming_victims, "forwarded": 1, "repeated": 99}
    )
    assert [p["detail"]["instance_id"] for p in world.invokes.payloads] == [attacker]
    # each report: one tag read and at most one ledger write; nothing else, and no waiting
    assert calls["DescribeTags"] == FLOOD and sum(calls.values()) <= 2 * FLOOD
    assert set(calls) == {"DescribeTags", "UpdateItem"} and world.clock.slept == []
    # the repair function meanwhile: AWS's event for a real fault, then the one forwarded report
    world.tag(real, health_tag(xid(79)))
    (outcome,) = handler.handler(tag_event(real, health_tag(xid(79))), use=world.repairer())["outcomes"]
    assert outcome["result"] == "replaced" and world.state(real) in ("shutting-down", "terminated")
    assert [o["result"] for o in deliver(world)] == ["observed"]
    assert all(untouched(world, i) for i in [attacker, *victims])
    assert calls["RebootInstances"] == 0 and calls["TerminateInstanceInAutoScalingGroup"] == 1
    print(f"\n{FLOOD} reports through the intake: {seconds:.2f} s ({1000 * seconds / FLOOD:.1f} ms each under moto)")
    assert seconds < 120  # moto on 2 shared cores; the point is the zero above, not the time


def test_a_throttled_tag_read_costs_the_sweep_only_its_backstop(world: World) -> None:
    """A flood at the intake spends the account's DescribeTags budget, which the sweep's read of
    the health tags shares: throttled past its retries, that read is skipped for this sweep; the
    status checks and the replacements in flight go on."""
    bad = world.instances()[5]
    throttled = ClientError({"Error": {"Code": "RequestLimitExceeded", "Message": "x"}}, "DescribeTags")
    with (
        mock.patch.object(world.clients.ec2, "describe_tags", side_effect=throttled),
        mock.patch.object(world.clients.ec2, "describe_instance_status", impaired([bad])),
    ):
        outcomes = world.repairer().sweep()
    assert [(o.instance_id, o.result) for o in outcomes] == [(bad, "replaced")]
