"""Entry points of the auto-repair control plane (AWS Lambda, Python standard library and boto3).

``handler``, the repair function: AWS's tag-change events for the health tag, EC2 state changes,
AWS Health scheduled events, Auto Scaling launch failures, the one-minute sweep schedule,
``{"reset_circuit_breaker": GROUP}``, a person's request ``{"repair": {"instance_id": ID, "action":
"reboot" | "replace", "requested_by": WHO}}`` (the command line's ``repair``), the agent's
claims the intake forwards (checked against the instance's health tag again), and
``{"scheduler_state": [ID, ...]}`` (the command line's ``nodes``: read only, within
``STATE_SECONDS``).

``hyperpod``, the HyperPod recorder (``backend: hyperpod``, a function of its own): HyperPod's
events into the ledger, and a five-minute sweep of its nodes (see ``auto_repair.hyperpod``).

``intake``, the report intake (a function of its own): the agent's events, which anyone who may
put events on the bus can forge, checked against the named instance's health tag; only the
confirmed ones reach the repair function, once per change of the tag (see ``auto_repair.intake``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable
from typing import Any

from auto_repair.aws import Clients
from auto_repair.drain import RunCommandDrain
from auto_repair.hyperpod import HyperPodRecorder, HyperPodSettings
from auto_repair.intake import Intake, IntakeSettings
from auto_repair.kubernetes import HealthLabeler, KubernetesDrain, connect
from auto_repair.ledger import Ledger
from auto_repair.node_hooks import KubernetesNodes
from auto_repair.node_upkeep import NodeUpkeep
from auto_repair.repair import Outcome, Repairer
from auto_repair.scheduler_state import KubernetesState, SlurmState
from auto_repair.settings import Settings
from auto_repair.signals import from_event
from training_cluster.contract import INSTANCE_ID

logging.getLogger().setLevel(logging.INFO)
log = logging.getLogger("training-cluster.repair")
_repairer: Repairer | None = None
_intake: Intake | None = None
_recorder: HyperPodRecorder | None = None


def repairer() -> Repairer:
    global _repairer
    if _repairer is None:
        _repairer = make_repairer(Settings.from_env(os.environ), Clients())
    return _repairer


def make_repairer(settings: Settings, clients: Clients) -> Repairer:
    """The control plane, with the orchestrator's hooks when the cluster has one: Slurm's drain
    through Run Command; EKS's drain, health labels and taints through the Kubernetes API, and
    the sweep's upkeep of the Nodes (protected labels, stuck nodes)."""
    r = Repairer(settings, clients)
    if settings.drain_group and settings.drain_command:
        r.drain_hook = RunCommandDrain(clients, controller_group=settings.drain_group, command=settings.drain_command)
    labeler = kubernetes_labeler(settings, clients)
    if labeler is not None:
        r.drain_hook = KubernetesDrain(labeler)
        r.node_hook = KubernetesNodes(labeler, settings.group_accelerators)
        r.node_upkeep = NodeUpkeep(labeler, r.ledger, settings.group_accelerators, cluster=settings.eks_cluster)
    return r


def kubernetes_labeler(settings: Settings, clients: Clients) -> HealthLabeler | None:
    """The client of the cluster's Kubernetes API, when the cluster runs EKS."""
    if not (settings.eks_cluster and settings.eks_endpoint and settings.eks_certificate_authority):
        return None
    return connect(
        clients,
        cluster_name=settings.eks_cluster,
        endpoint=settings.eks_endpoint,
        certificate_authority=settings.eks_certificate_authority,
    )


def handler(event: Any, context: Any = None, *, use: Repairer | None = None) -> dict[str, Any]:
    """Events of the wrong shape are logged and dropped, never raised: the dead-letter queue
    keeps only events that failed for a real reason."""
    if not isinstance(event, dict):
        log.warning("dropped an event that is not an object: %s", type(event).__name__)
        return {"outcomes": []}
    r = use or repairer()
    r.new_invocation()
    outcomes: list[Outcome] = []
    if "reset_circuit_breaker" in event:
        group = event["reset_circuit_breaker"]
        if isinstance(group, str):
            outcomes = r.reset_breaker(group)
        else:
            log.warning("dropped a reset_circuit_breaker that is not a group name")
    elif "repair" in event:
        outcomes = _manual(r, event["repair"])
    elif "scheduler_state" in event:
        return {
            "outcomes": [],
            "scheduler": scheduler_states(event["scheduler_state"], settings=r.settings, clients=r.clients),
        }
    elif event.get("source") == "aws.events" and event.get("detail-type") == "Scheduled Event":
        outcomes = r.sweep()
    elif event.get("source") == "aws.autoscaling":
        detail = event.get("detail")
        name = detail.get("AutoScalingGroupName") if isinstance(detail, dict) else None
        message = detail.get("StatusMessage", "") if isinstance(detail, dict) else None
        if isinstance(name, str) and isinstance(message, str):
            outcome = r.launch_failed(name[:255], message[:2000])
            outcomes = [outcome] if outcome else []
        else:
            log.warning("dropped a malformed Auto Scaling event")
    else:
        outcomes = r.handle(from_event(event))
    summary = [o.__dict__ for o in outcomes]
    log.info(json.dumps({"event": str(event.get("detail-type", "direct"))[:80], "outcomes": summary}))
    return {"outcomes": summary}


def _manual(r: Repairer, request: Any) -> list[Outcome]:
    """A person's repair request, checked field by field (dropped when malformed, like any event)."""
    if not isinstance(request, dict):
        log.warning("dropped a repair request that is not an object")
        return []
    instance_id, action, who = request.get("instance_id"), request.get("action"), request.get("requested_by", "")
    if not isinstance(instance_id, str) or not INSTANCE_ID.fullmatch(instance_id):
        log.warning("dropped a repair request without an instance id")
        return []
    if action not in ("reboot", "replace") or not isinstance(who, str):
        log.warning("dropped a repair request whose action is not reboot or replace")
        return []
    # who asked, as the ledger keeps it: the characters of an ARN, a person's name or an e-mail address
    return [r.manual(instance_id, action, _NOT_IN_WHO.sub("?", who[:200]) or "unknown")]


_NOT_IN_WHO = re.compile(r"[^A-Za-z0-9+=,.@_/: -]")
MAX_STATE_NODES = 2000
STATE_SECONDS = 20.0
"""How long ``scheduler_state`` may take: the repair function runs one invocation at a time."""


def scheduler_states(
    instance_ids: Any,
    *,
    settings: Settings,
    clients: Clients,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, str]:
    """What the scheduler says of each node (``{"scheduler_state": [ID, ...]}``, the command
    line's ``nodes``): read only, each id once, within :data:`STATE_SECONDS` (the nodes not
    reached by then are ``unknown (no time left)``); empty without a scheduler or for a
    malformed request."""
    if not isinstance(instance_ids, list) or len(instance_ids) > MAX_STATE_NODES:
        log.warning("dropped a scheduler_state request that is not a list of at most %d ids", MAX_STATE_NODES)
        return {}
    ids = list(dict.fromkeys(i for i in instance_ids if isinstance(i, str) and INSTANCE_ID.fullmatch(i)))
    labeler = kubernetes_labeler(settings, clients)
    if labeler is not None:
        try:
            return KubernetesState(labeler, wait_seconds=STATE_SECONDS, clock=clock)(ids)
        finally:
            labeler.api.close()
    if settings.drain_group:
        slurm = SlurmState(
            clients, controller_group=settings.drain_group, wait_seconds=STATE_SECONDS, sleep=sleep, clock=clock
        )
        return slurm(ids)
    return {}


def intake(event: Any, context: Any = None, *, use: Intake | None = None) -> dict[str, Any]:
    """The report intake's entry point; events of the wrong shape are logged and dropped."""
    global _intake
    if use is None:
        _intake = _intake or Intake(IntakeSettings.from_env(os.environ), Clients())
        use = _intake
    received = [r.__dict__ for r in use.receive(event)]
    kind = event.get("detail-type", "direct") if isinstance(event, dict) else type(event).__name__
    log.info(json.dumps({"event": str(kind)[:80], "received": received}))
    return {"received": received}


def hyperpod(event: Any, context: Any = None, *, use: HyperPodRecorder | None = None) -> dict[str, Any]:
    """The HyperPod recorder's entry point: its schedule sweeps HyperPod's nodes; anything else
    is an event to record (checked: see ``auto_repair.hyperpod``)."""
    global _recorder
    if use is None:
        if _recorder is None:
            settings = HyperPodSettings.from_env(os.environ)
            clients = Clients()
            _recorder = HyperPodRecorder(settings, Ledger(clients.table(settings.table_name), time.time), clients)
        use = _recorder
    if (
        isinstance(event, dict)
        and event.get("source") == "aws.events"
        and event.get("detail-type") == "Scheduled Event"
    ):
        result: dict[str, Any] = {"closed": use.sweep()}
    else:
        result = use(event)
    log.info(json.dumps({"hyperpod": result}))
    return result
