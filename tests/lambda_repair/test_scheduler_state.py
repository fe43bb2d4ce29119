"""What the scheduler says of each node, as the control plane reads it for ``training-cluster nodes``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from unittest import mock

import boto3
import pytest
from kube_stub import ACCESS_KEY, CLUSTER, REGION, SECRET_KEY, KubeStub, Pki, Running, Seen, node

import handler
from auto_repair.aws import Clients
from auto_repair.scheduler_state import (
    NO_TIME_LEFT,
    SINFO,
    SPARES,
    KubernetesState,
    SlurmState,
    parse_sinfo,
    parse_spares,
)
from repair_world import Clock, World, aws, calls, make_world
from training_cluster.contract import LABEL_HEALTH

__all__ = ["aws", "calls"]  # fixtures


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
    output = f"{gpu[0]}|idle|none\n{gpu[1]}|down|repair (replace): x\nspares gpu 1/1 {gpu[0]}\n"
    done = {"Status": "Success", "StandardOutputContent": output}
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
    assert states == {gpu[0]: "idle, hot spare", gpu[1]: "down (repair (replace): x)", gpu[2]: "not in Slurm"}
    kwargs = send.call_args.kwargs
    assert kwargs["InstanceIds"] == [controller] and kwargs["Parameters"] == {"commands": [SINFO, SPARES]}


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
    """Stands in for the labeler's ``learn_names`` and ``node`` (its requests are tested in test_kubernetes)."""

    def __init__(self, nodes: dict[str, Any]) -> None:
        self.nodes = nodes

    def learn_names(self, instance_ids: list[str]) -> dict[str, str]:
        return {i: f"node-{i}" for i in instance_ids if i in self.nodes}

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
    assert KubernetesState(labeler)(["i-1", "i-2", "i-3", "i-4", "i-5", "i-6"]) == {  # type: ignore[arg-type]
        "i-1": "Ready Schedulable",
        "i-2": "NotReady,SchedulingDisabled UnschedulablePendingReplacement",
        "i-3": "not in Kubernetes",
        "i-4": "unknown (node ip-10-0-0-4 has providerID 'aws:///x/i-9', not i-4's: left alone)",
        "i-5": "Unknown -",
        "i-6": "unknown (EC2 names no such instance)",
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


# EKS through the handler: the world's instances in moto, their Nodes in a loopback API server ------


@dataclass
class Eks:
    world: World
    served: Running
    ca: str  # the stand-in's CA, as CloudFormation gives a cluster's

    def states(self, ids: Any, clock: Clock) -> dict[str, str]:
        """``scheduler_states`` as the handler calls it on an EKS cluster (the function's settings)."""
        settings = self.world.settings(
            eks_cluster=CLUSTER, eks_endpoint=self.served.url, eks_certificate_authority=self.ca
        )
        # the function's credentials: the stand-in checks the EKS token's signature with this key
        clients = Clients(region=REGION, session=boto3.Session(ACCESS_KEY, SECRET_KEY, region_name=REGION))
        return handler.scheduler_states(ids, settings=settings, clients=clients, clock=clock)


@pytest.fixture
def eks(aws: None, pki: Pki) -> Iterator[Eks]:
    world = make_world({"gpu": 8})
    served = Running(KubeStub(rbac=set()), pki.chain, pki.key)
    found = world.clients.ec2.describe_instances(InstanceIds=world.instances())["Reservations"]
    for instance in (i for r in found for i in r["Instances"]):
        registered = node(instance["PrivateDnsName"], instance["InstanceId"])
        registered["status"] = {"conditions": [{"type": "Ready", "status": "True"}]}
        registered["metadata"]["labels"][LABEL_HEALTH] = "Schedulable"
        served.stub.add(registered)
    yield Eks(world, served, pki.ca.data)
    served.stop()


def test_each_node_is_asked_once_its_name_from_one_describe_instances(eks: Eks, calls: Counter[str]) -> None:
    world, served = eks.world, eks.served
    ids = world.instances()
    states = eks.states([*ids, *reversed(ids), ids[0]], Clock())
    assert list(states) == ids and set(states.values()) == {"Ready Schedulable"}
    assert calls["DescribeInstances"] == 1  # every name in one call
    gets = [r.path for r in served.stub.requests]
    assert len(gets) == len(set(gets)) == 8 and {r.method for r in served.stub.requests} == {"GET"}  # read only


def test_an_id_ec2_does_not_know_is_unknown_and_the_rest_answered(eks: Eks, calls: Counter[str]) -> None:
    world, served = eks.world, eks.served
    ids = world.instances()[:2]
    unknown = "i-00000000000000001"
    states = eks.states([ids[0], unknown, ids[1]], Clock())
    assert states == {
        ids[0]: "Ready Schedulable",
        unknown: "unknown (EC2 names no such instance)",
        ids[1]: "Ready Schedulable",
    }
    assert calls["DescribeInstances"] == 2  # refused for the unknown id, asked again without it
    assert len(served.stub.requests) == 2


def test_the_nodes_not_read_when_time_is_up_are_unknown(eks: Eks) -> None:
    """Each read takes 7 s here: within the 20 s, three are read; the function is free again."""
    world, served = eks.world, eks.served
    clock = Clock(now=0.0)

    def slow(seen: Seen) -> None:
        clock.now += 7

    served.stub.each_request = slow
    ids = world.instances()
    states = eks.states(ids, clock)
    assert list(states.values()) == ["Ready Schedulable"] * 3 + [NO_TIME_LEFT] * 5
    assert len(served.stub.requests) == 3 and clock.now == 21


def test_the_slurm_state_waits_no_longer_than_the_bound(slurm_world: World) -> None:
    settings = slurm_world.settings(drain_group="demo-controller-asg", drain_command="x")
    gpu = slurm_world.instances("gpu")
    clock = slurm_world.clock
    with mock.patch.object(slurm_world.clients.ssm, "get_command_invocation", return_value={"Status": "InProgress"}):
        states = handler.scheduler_states(
            gpu * 2, settings=settings, clients=slurm_world.clients, clock=clock, sleep=clock.sleep
        )
    assert list(states) == gpu and all(s.endswith(": InProgress)") for s in states.values())
    assert sum(slurm_world.clock.slept) <= handler.STATE_SECONDS + 1


def test_a_reason_root_on_a_node_set_reaches_nobody_as_control_sequences() -> None:
    """Root on any Slurm node may set its own drain reason: escapes and length are cut here."""
    hostile = "i-0123456789abcdef0|drained|agent: xid 79\x1b]0;owned\x07\x1b[2J\x1b[32mALL GOOD\x1b[0m" + "x" * 5000
    (state,) = parse_sinfo(hostile).values()
    assert "\x1b" not in state and "\x07" not in state and len(state) <= len("drained ()") + 100


def test_hot_spares_are_read_from_the_keepers_lines_only() -> None:
    output = "spares gpu 2/2 i-0aaaaaaaaaaaaaaa1 i-0bbbbbbbbbbbbbbb2\nspares trn 0/1\nspares x 1/1 $(reboot) i-zz\n"
    assert parse_spares(output) == {"i-0aaaaaaaaaaaaaaa1", "i-0bbbbbbbbbbbbbbb2"}
    assert "slurm_spares.py show" in SPARES and SPARES.endswith("|| true")
