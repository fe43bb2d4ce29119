"""What the scheduler says of each node, for the operator's ``training-cluster nodes``: asked by
the control plane, which can reach the scheduler (a private EKS endpoint, Slurm's controller)
when the operator's machine may not. Read only, and bounded in time.

- Slurm: ``sinfo`` on the controller through Run Command (nodes are named after their instance ids),
  and which nodes the controller holds as hot spares.
- EKS: each node's ``Ready`` condition, whether it is cordoned, and its health label, through the
  Kubernetes API (the same client, and the same ``get nodes`` permission, as the labeler's): the
  Node names from one ``DescribeInstances`` for all (1,000 ids a call), then one read per node
  until the time is up; the nodes not read by then are ``unknown (no time left)``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from training_cluster.contract import LABEL_HEALTH, SPARES_SHOW, printable

from .aws import Clients, with_retries
from .drain import DONE, RunCommandDrain
from .kubernetes import HealthLabeler

SINFO = "sinfo --noheader --Node --format='%N|%T|%E'"
SPARES = f"{SPARES_SHOW} 2>/dev/null || true"  # a cluster without spares prints nothing
INSTANCE_ID = re.compile(r"i-[0-9a-f]{8,17}")
WAIT_SECONDS = 20.0


REASON_LIMIT = 100
"""Characters of a Slurm reason kept (``slurm-drain.sh`` writes no longer ones)."""


def parse_sinfo(output: str) -> dict[str, str]:
    """``sinfo -N -o '%N|%T|%E'`` lines as node -> "state (reason)"; a node in several
    partitions is listed once per partition, with the same state."""
    states: dict[str, str] = {}
    for line in output.splitlines():
        name, _, rest = line.strip().partition("|")
        state, _, reason = rest.partition("|")
        if name and state:
            # root on any Slurm node sets its own reason: no control characters, a bounded length
            reason = printable(reason.strip())[:REASON_LIMIT]
            states[name] = printable(state.strip())[:40] + (f" ({reason})" if reason and reason != "none" else "")
    return states


def parse_spares(output: str) -> set[str]:
    """The nodes held as hot spares, from ``slurm_spares.py show``'s lines."""
    held: set[str] = set()
    for line in output.splitlines():
        words = line.split()
        if len(words) >= 3 and words[0] == "spares":
            held.update(w for w in words[3:] if INSTANCE_ID.fullmatch(w))
    return held


def slurm_states(output: str) -> dict[str, str]:
    """Each node's state from ``sinfo`` and, for a hot spare, that it is one."""
    states = parse_sinfo(output)
    for node in parse_spares(output) & states.keys():
        states[node] += ", hot spare"
    return states


class SlurmState:
    """The Slurm state of nodes, from ``sinfo`` on the controller's in-service instance."""

    def __init__(
        self,
        clients: Clients,
        *,
        controller_group: str,
        wait_seconds: float = WAIT_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._controller = RunCommandDrain(clients, controller_group=controller_group, command="true")
        self.clients = clients
        self.wait_seconds = wait_seconds
        self.sleep = sleep
        self.clock = clock

    def __call__(self, instance_ids: Sequence[str]) -> dict[str, str]:
        controller = self._controller.controller()
        if controller is None:
            return {i: "unknown (no Slurm controller in service)" for i in instance_ids}
        command_id = with_retries(
            self.clients.ssm.send_command,
            sleep=self.sleep,
            InstanceIds=[controller],
            DocumentName="AWS-RunShellScript",
            Comment="training-cluster nodes: sinfo",
            Parameters={"commands": [SINFO, SPARES]},
            TimeoutSeconds=30,
        )["Command"]["CommandId"]
        deadline = self.clock() + self.wait_seconds
        invocation: dict[str, Any] = {}
        while self.clock() < deadline:
            self.sleep(1)
            try:
                invocation = self.clients.ssm.get_command_invocation(CommandId=command_id, InstanceId=controller)
            except self.clients.ssm.exceptions.InvocationDoesNotExist:
                continue
            if invocation.get("Status") in DONE:
                break
        if invocation.get("Status") != "Success":
            status = invocation.get("Status", "no answer")
            return {i: f"unknown (sinfo on {controller}: {status})" for i in instance_ids}
        states = slurm_states(str(invocation.get("StandardOutputContent", "")))
        return {i: states.get(i, "not in Slurm") for i in instance_ids}


NO_TIME_LEFT = "unknown (no time left)"
READ_SECONDS = 5.0  # at most, each node's read


class KubernetesState:
    """The Kubernetes state of nodes: Ready or not, cordoned, and the health label, all within
    ``wait_seconds`` of the call."""

    def __init__(
        self, labeler: HealthLabeler, *, wait_seconds: float = WAIT_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.labeler = labeler
        self.wait_seconds = wait_seconds
        self.clock = clock

    def __call__(self, instance_ids: Sequence[str]) -> dict[str, str]:
        deadline = self.clock() + self.wait_seconds
        ids = list(dict.fromkeys(instance_ids))
        try:
            names = self.labeler.learn_names(ids)
        except Exception as error:  # EC2 did not answer: no node can be named
            return {i: f"unknown (no name from EC2: {str(error)[:100]})" for i in ids}
        states: dict[str, str] = {}
        for instance_id in ids:
            left = deadline - self.clock()
            if instance_id not in names:
                states[instance_id] = "unknown (EC2 names no such instance)"
            elif left <= 0:
                states[instance_id] = NO_TIME_LEFT
            else:
                states[instance_id] = self._one(instance_id, min(READ_SECONDS, max(1.0, left)))
        return states

    def _one(self, instance_id: str, timeout: float) -> str:
        try:
            node = self.labeler.node(instance_id, timeout=timeout)
        except Exception as error:  # one node's answer never spoils the others'
            return f"unknown ({str(error)[:120]})"
        if node is None:
            return "not in Kubernetes"
        conditions = {c.get("type"): c.get("status") for c in node.get("status", {}).get("conditions", [])}
        ready = {"True": "Ready", "False": "NotReady"}.get(str(conditions.get("Ready")), "Unknown")
        cordoned = ",SchedulingDisabled" if node.get("spec", {}).get("unschedulable") else ""
        health = node.get("metadata", {}).get("labels", {}).get(LABEL_HEALTH, "-")
        return f"{ready}{cordoned} {health}"
