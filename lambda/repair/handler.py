"""Entry point of the auto-repair control plane (AWS Lambda, Python standard library and boto3).

Events: the health agent's state changes, EC2 state changes, AWS Health scheduled events, Auto
Scaling launch failures, the one-minute sweep schedule, and ``{"reset_circuit_breaker": GROUP}``.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from auto_repair.aws import Clients
from auto_repair.drain import RunCommandDrain
from auto_repair.repair import Outcome, Repairer
from auto_repair.settings import Settings
from auto_repair.signals import from_event

logging.getLogger().setLevel(logging.INFO)
log = logging.getLogger("training-cluster.repair")
_repairer: Repairer | None = None


def repairer() -> Repairer:
    global _repairer
    if _repairer is None:
        _repairer = make_repairer(Settings.from_env(os.environ), Clients())
    return _repairer


def make_repairer(settings: Settings, clients: Clients) -> Repairer:
    """The control plane, with the orchestrator's drain hook when the cluster has one."""
    r = Repairer(settings, clients)
    if settings.drain_group and settings.drain_command:
        r.drain_hook = RunCommandDrain(clients, controller_group=settings.drain_group, command=settings.drain_command)
    return r


def handler(event: dict[str, Any], context: Any = None, *, use: Repairer | None = None) -> dict[str, Any]:
    r = use or repairer()
    r.new_invocation()
    outcomes: list[Outcome] = []
    if "reset_circuit_breaker" in event:
        r.reset_breaker(str(event["reset_circuit_breaker"]))
    elif event.get("source") == "aws.events" and event.get("detail-type") == "Scheduled Event":
        outcomes = r.sweep()
    elif event.get("source") == "aws.autoscaling":
        detail = event.get("detail", {})
        outcome = r.launch_failed(str(detail.get("AutoScalingGroupName", "")), str(detail.get("StatusMessage", "")))
        outcomes = [outcome] if outcome else []
    else:
        outcomes = r.handle(from_event(event))
    summary = [o.__dict__ for o in outcomes]
    log.info(json.dumps({"event": event.get("detail-type", "direct"), "outcomes": summary}))
    return {"outcomes": summary}
