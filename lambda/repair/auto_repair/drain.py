"""The orchestrator hook through SSM Run Command: before a node is rebooted or replaced, a command
on the scheduler's controller takes the node out of scheduling (Slurm: ``slurm-drain.sh``)."""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable

from .aws import Clients, with_retries

DONE = {"Success", "Cancelled", "TimedOut", "Failed", "Cancelling"}
WAIT_SECONDS = 15.0  # bounded, like the evidence capture it runs alongside


class DrainError(RuntimeError):
    """The command could not run or failed; the repair records it and goes on."""


class RunCommandDrain:
    """``command NODE ACTION REASON`` on the in-service instance of the controller's Auto Scaling
    group, waiting at most ``wait_seconds`` for it to finish."""

    def __init__(
        self,
        clients: Clients,
        *,
        controller_group: str,
        command: str,
        wait_seconds: float = WAIT_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clients = clients
        self.controller_group = controller_group
        self.command = command
        self.wait_seconds = wait_seconds
        self.sleep = sleep
        self.clock = clock

    def controller(self) -> str | None:
        groups = with_retries(
            self.clients.autoscaling.describe_auto_scaling_groups,
            sleep=self.sleep,
            AutoScalingGroupNames=[self.controller_group],
        )["AutoScalingGroups"]
        in_service = [
            i["InstanceId"]
            for g in groups
            for i in g.get("Instances", [])
            if i.get("LifecycleState") == "InService" and i.get("HealthStatus", "Healthy") == "Healthy"
        ]
        return in_service[0] if in_service else None

    def __call__(self, instance_id: str, action: str, reason: str) -> Callable[[], str]:
        """Send the command; the returned function waits for it, at most ``wait_seconds`` after
        it was sent, so other work (evidence capture) can overlap the wait."""
        controller = self.controller()
        if controller is None:
            raise DrainError(f"no controller in service in Auto Scaling group {self.controller_group}")
        if controller == instance_id:
            return lambda: "skipped: the node is the controller"
        line = shlex.join([self.command, instance_id, action, reason[:200]])
        command_id = with_retries(
            self.clients.ssm.send_command,
            sleep=self.sleep,
            InstanceIds=[controller],
            DocumentName="AWS-RunShellScript",
            Comment=f"training-cluster drain {instance_id}"[:100],
            Parameters={"commands": [line]},
            TimeoutSeconds=60,
        )["Command"]["CommandId"]
        deadline = self.clock() + self.wait_seconds
        return lambda: self._wait(command_id, controller, deadline)

    def _wait(self, command_id: str, controller: str, deadline: float) -> str:
        status = "Pending"
        while True:  # at least one look, however long the caller took
            try:
                invocation = self.clients.ssm.get_command_invocation(CommandId=command_id, InstanceId=controller)
                status = invocation["Status"]
            except self.clients.ssm.exceptions.InvocationDoesNotExist:
                invocation = {}  # not registered yet
            if status in DONE:
                if status != "Success":
                    detail = invocation.get("StandardErrorContent") or invocation.get("StandardOutputContent") or ""
                    raise DrainError(f"drain command {status} on {controller}: {detail.strip()[:300]}")
                return f"drained on {controller}"
            if self.clock() >= deadline:
                return f"sent to {controller}; still {status} after {self.wait_seconds:g} s"
            self.sleep(1)
