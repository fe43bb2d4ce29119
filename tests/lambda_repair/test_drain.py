"""The orchestrator hook through SSM Run Command, against moto: the command runs on the
controller's in-service node, with the node, action and reason as arguments."""

from __future__ import annotations

import shlex
from unittest import mock

import pytest

import handler
from auto_repair.drain import DrainError, RunCommandDrain
from auto_repair.signals import from_event
from repair_world import World, aws, make_world, story, xid

__all__ = ["aws"]  # fixtures
COMMAND = "/opt/training-cluster/slurm/slurm-drain.sh"


@pytest.fixture
def slurm_world(aws: None) -> World:
    return make_world({"gpu": 4, "controller": 1})


def drain(world: World) -> RunCommandDrain:
    return RunCommandDrain(
        world.clients,
        controller_group="demo-controller-asg",
        command=COMMAND,
        sleep=world.clock.sleep,
        clock=world.clock,
    )


def test_the_command_runs_on_the_controller_with_the_node_action_and_reason(slurm_world: World) -> None:
    (controller,) = slurm_world.instances("controller")
    node = slurm_world.instances()[0]
    hook = drain(slurm_world)
    ssm = slurm_world.clients.ssm
    with mock.patch.object(ssm, "send_command", wraps=ssm.send_command) as send:
        wait = hook(node, "replace", "replace: xid 79: it's gone")
    send.assert_called_once()  # sent at once; the wait comes when the caller is ready
    assert wait() == f"drained on {controller}"
    kwargs = send.call_args.kwargs
    assert kwargs["InstanceIds"] == [controller] and kwargs["DocumentName"] == "AWS-RunShellScript"
    (line,) = kwargs["Parameters"]["commands"]
    assert shlex.split(line) == [COMMAND, node, "replace", "replace: xid 79: it's gone"]


def test_the_controller_itself_is_not_drained(slurm_world: World) -> None:
    (controller,) = slurm_world.instances("controller")
    with mock.patch.object(slurm_world.clients.ssm, "send_command") as send:
        assert drain(slurm_world)(controller, "reboot", "status check")() == "skipped: the node is the controller"
    send.assert_not_called()


def test_no_controller_in_service_is_an_error(slurm_world: World) -> None:
    hook = RunCommandDrain(slurm_world.clients, controller_group="nope", command=COMMAND)
    with pytest.raises(DrainError, match="no controller in service in Auto Scaling group nope"):
        hook("i-0123", "reboot", "x")


def test_a_failed_command_raises_with_its_output(slurm_world: World) -> None:
    failed = {"Status": "Failed", "StandardErrorContent": "scontrol: error: Invalid node name specified\n"}
    ssm = slurm_world.clients.ssm
    with (
        mock.patch.object(ssm, "get_command_invocation", return_value=failed),
        pytest.raises(DrainError, match=r"drain command Failed on i-\w+: scontrol: error: Invalid node name"),
    ):
        drain(slurm_world)(slurm_world.instances()[0], "reboot", "x")()


def test_the_wait_is_bounded_from_when_the_command_was_sent(slurm_world: World) -> None:
    pending = {"Status": "InProgress"}
    hook = drain(slurm_world)
    with mock.patch.object(slurm_world.clients.ssm, "get_command_invocation", return_value=pending) as look:
        wait = hook(slurm_world.instances()[0], "replace", "x")
        slurm_world.clock.now += 20  # the evidence capture took longer than the drain's bound
        assert wait() == f"sent to {slurm_world.instances('controller')[0]}; still InProgress after 15 s"
    assert look.call_count == 1  # one look, no more waiting


def test_the_function_drains_through_the_controller_when_configured(slurm_world: World) -> None:
    settings = slurm_world.settings(drain_group="demo-controller-asg", drain_command=COMMAND)
    repairer = handler.make_repairer(settings, slurm_world.clients)
    assert isinstance(repairer.drain_hook, RunCommandDrain)
    repairer.clock, repairer.sleep = slurm_world.clock, slurm_world.clock.sleep
    repairer.drain_hook.sleep = slurm_world.clock.sleep
    repairer.drain_hook.clock = slurm_world.clock
    bad = slurm_world.instances()[0]
    (outcome,) = repairer.handle(from_event(slurm_world.agent(bad, xid(79))))
    assert outcome.result == "replaced"
    assert story(slurm_world, outcome.incident_id) == ["signal", "decision", "evidence", "drain", "action"]
    assert handler.make_repairer(slurm_world.settings(), slurm_world.clients).drain_hook is None
