"""Turn the events the control plane receives into health signals about instances."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

AGENT_SOURCE = "training-cluster.health"


@dataclass(frozen=True)
class Failure:
    check: str  # xid, gpu_count, status_check, ...
    code: str | None = None  # the XID, the status check, the AWS Health event type
    message: str = ""


@dataclass(frozen=True)
class Signal:
    """What one event says about one instance."""

    instance_id: str
    source: str  # agent | status-sweep | aws-health | ec2-state
    failures: tuple[Failure, ...] = ()
    healthy: bool = False
    terminated: bool = False
    boot_id: str = ""
    detail: Mapping[str, Any] = field(default_factory=dict)


def from_event(event: Mapping[str, Any]) -> list[Signal]:
    """Signals in an EventBridge event (empty when the event says nothing about health)."""
    source = event.get("source")
    detail: Mapping[str, Any] = event.get("detail") or {}
    kind = event.get("detail-type", "")
    if source == AGENT_SOURCE:
        failures = tuple(
            Failure(
                check=str(f["check"]),
                code=None if f.get("code") is None else str(f["code"]),
                message=str(f.get("message", "")),
            )
            for f in detail.get("failures", [])
        )
        return [
            Signal(
                instance_id=str(detail["instance_id"]),
                source="agent",
                failures=failures,
                healthy=detail.get("state") == "healthy",
                boot_id=str(detail.get("boot_id", "")),
                detail=detail,
            )
        ]
    if source == "aws.ec2" and kind == "EC2 Instance State-change Notification":
        state = detail.get("state")
        instance = str(detail["instance-id"])
        if state in ("terminated", "shutting-down"):
            return [Signal(instance_id=instance, source="ec2-state", terminated=True, detail=detail)]
        if state in ("stopping", "stopped"):
            failure = Failure(check="unexpected_stop", code=state, message=f"instance is {state}")
            return [Signal(instance_id=instance, source="ec2-state", failures=(failure,), detail=detail)]
        return []
    if source == "aws.health":
        code = str(detail.get("eventTypeCode", ""))
        failure = Failure(check="scheduled_event", code=code, message=f"AWS Health {code}")
        return [
            Signal(instance_id=str(entity["entityValue"]), source="aws-health", failures=(failure,), detail=detail)
            for entity in detail.get("affectedEntities", [])
            if str(entity.get("entityValue", "")).startswith("i-")
        ]
    return []
