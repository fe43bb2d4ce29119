"""What the scheduler says of each node, as the control plane reads it for ``training-cluster nodes``."""

from __future__ import annotations

from typing import Any
from unittest import mock

import pytest

import handler
from auto_repair.scheduler_state import SINFO, KubernetesState, SlurmState, parse_sinfo
from repair_world import World, aws, make_world
from training_cluster.contract import LABEL_HEALTH

__all__ = ["aws"]  # fixtures


@pytest.fixture
def slurm_world(aws: None) -> World:
    return make_world({"gpu": 3, "controller": 1})


def test_sinfo_lines_become_states_with_reasons() -> None:
    output = (
        "i-0aaaaaaaaaaaaaaa1|idle|none\n"
        "i-0aaaaaaaaaaaaaaa1|idle|none\n"  # the same node in a second partition
        "i-0bbbbbbbbbbbbbbb2|drained|agent: xid 79\n"
        "i-0ccccccccccccccc3|allocated|\n"
        "garbage\n"
    )
    assert parse_sinfo(output) == {
        "i-0aaaaaaaaaaaaaaa1": "idle",
        "i-0bbbbbbbbbbbbbbb2": "drained (agent: xid 79)",
        "i-0ccccccccccccccc3": "allocated",
    }


def test_slurm_states_come_from_sinfo_on_the_controller(slurm_world: World) -> None:
    (controller,) = slurm_world.instances("controller")
    gpu = slurm_world.instances("gpu")
    done = {"Status": "Success", "StandardOutputContent": f"{gpu[0]}|idle|none\n{gpu[1]}|down|repair (replace): x\n"}
    ssm = slurm_world.clients.ssm
    state = SlurmState(
        slurm_world.clients,
        controller_group="demo-controller-asg",
        sleep=slurm_world.clock.sleep,
        clock=slurm_world.clock,
    )
    with (
        mock.patch.object(ssm, "send_command", wraps=ssm.send_command) as send,
        mock.patch.object(ssm, "get_command_invocation", return_value=done),
    ):
        states = state(gpu)
    assert states == {gpu[0]: "idle", gpu[1]: "down (repair (replace): x)", gpu[2]: "not in Slurm"}
    kwargs = send.call_args.kwargs
    assert kwargs["InstanceIds"] == [controller] and kwargs["Parameters"] == {"commands": [SINFO]}


def test_a_slow_or_failed_sinfo_says_unknown_within_the_bound(slurm_world: World) -> None:
    gpu = slurm_world.instances("gpu")[:1]
    state = SlurmState(
        slurm_world.clients,
        controller_group="demo-controller-asg",
        sleep=slurm_world.clock.sleep,
        clock=slurm_world.clock,
    )
    start = slurm_world.clock.now
    with mock.patch.object(slurm_world.clients.ssm, "get_command_invocation", return_value={"Status": "InProgress"}):
        (text,) = state(gpu).values()
    assert text.startswith("unknown (sinfo on i-") and text.endswith(": InProgress)")
    assert slurm_world.clock.now - start <= 21
    with mock.patch.object(slurm_world.clients.ssm, "get_command_invocation", return_value={"Status": "Failed"}):
        assert next(iter(state(gpu).values())).endswith(": Failed)")
    assert SlurmState(slurm_world.clients, controller_group="nope")(gpu) == {
        gpu[0]: "unknown (no Slurm controller in service)"
    }


class FakeLabeler:
    """Stands in for the labeler's ``node`` (its requests are tested in test_kubernetes)."""

    def __init__(self, nodes: dict[str, Any]) -> None:
        self.nodes = nodes

    def node(self, instance_id: str, *, timeout: float | None = None) -> dict[str, Any] | None:
        found = self.nodes.get(instance_id)
        if isinstance(found, Exception):
            raise found
        return found


def _node(ready: str, *, cordoned: bool = False, health: str | None = "Schedulable") -> dict[str, Any]:
    labels = {LABEL_HEALTH: health} if health else {}
    return {
        "metadata": {"labels": labels},
        "spec": {"unschedulable": True} if cordoned else {},
        "status": {"conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": ready}]},
    }


def test_kubernetes_states_read_ready_cordon_and_health() -> None:
    labeler = FakeLabeler(
        {
            "i-1": _node("True"),
            "i-2": _node("False", cordoned=True, health="UnschedulablePendingReplacement"),
            "i-3": None,
            "i-4": RuntimeError("node ip-10-0-0-4 has providerID 'aws:///x/i-9', not i-4's: left alone"),
            "i-5": _node("Unknown", health=None),
        }
    )
    assert KubernetesState(labeler)(["i-1", "i-2", "i-3", "i-4", "i-5"]) == {  # type: ignore[arg-type]
        "i-1": "Ready Schedulable",
        "i-2": "NotReady,SchedulingDisabled UnschedulablePendingReplacement",
        "i-3": "not in Kubernetes",
        "i-4": "unknown (node ip-10-0-0-4 has providerID 'aws:///x/i-9', not i-4's: left alone)",
        "i-5": "Unknown -",
    }


@pytest.mark.parametrize("request_", [None, "i-0aaaaaaaaaaaaaaa1", {"ids": []}, ["i-1"] * 2001])
def test_malformed_requests_get_nothing(slurm_world: World, request_: Any) -> None:
    settings = slurm_world.settings(drain_group="demo-controller-asg", drain_command="x")
    assert handler.scheduler_states(request_, settings=settings, clients=slurm_world.clients) == {}


def test_without_a_scheduler_there_is_nothing_to_say(slurm_world: World) -> None:
    ids = slurm_world.instances("gpu")
    assert handler.scheduler_states(ids, settings=slurm_world.settings(), clients=slurm_world.clients) == {}


def test_ids_that_are_not_instance_ids_are_left_out(slurm_world: World) -> None:
    settings = slurm_world.settings(drain_group="demo-controller-asg", drain_command="x")
    good = slurm_world.instances("gpu")[0]
    with mock.patch.object(slurm_world.clients.ssm, "get_command_invocation", return_value={"Status": "Success"}):
        states = handler.scheduler_states([good, "; rm -rf /", 7], settings=settings, clients=slurm_world.clients)
    assert states == {good: "not in Slurm"}
