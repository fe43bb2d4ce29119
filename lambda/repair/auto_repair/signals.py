"""Turn the events the control plane receives into health signals about instances.

Every field is checked before it is used: an event of the wrong shape (missing or mistyped
fields, ids that are not instance ids, oversized values) is logged and dropped, never raised, so
the dead-letter queue holds only real failures.

The health agent's own event is a *claim* (``Signal.claim``): anyone with a node's credentials
can put it, naming any instance. The repair acts on it only once the instance's health tag
(``HEALTH_TAG``, which only the instance itself may write) confirms it. AWS's ``Tag Change on
Resource`` event for that tag is trusted as to who spoke: only AWS puts ``aws.*`` sources on a
bus. But it says what the tag was when it changed, and it may come late, twice or out of order
(``Signal.recheck``): the repair acts on it only while the tag still says so.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from training_cluster import contract
from training_cluster.contract import (
    AGENT_DETAIL_TYPE,
    AGENT_SOURCE,
    BOOT_ID_TOKEN,
    CHECK_TOKEN,
    CODE_TOKEN,
    HEALTH_TAG,
    INSTANCE_ID,
)

log = logging.getLogger("training-cluster.repair")

TAG_SOURCE = "aws.tag"
TAG_DETAIL_TYPE = "Tag Change on Resource"

INSTANCE_ARN = re.compile(r"arn:aws[a-z-]*:ec2:[a-z0-9-]+:[0-9]{12}:instance/(i-[0-9a-f]{8,17})", re.ASCII)
MAX_FAILURES = 64  # per event; the agent has about a dozen checks
MAX_MESSAGE = 500  # characters of a failure's message kept (human text only)


class Malformed(ValueError):
    """An event whose shape is not what its source sends; it is logged and dropped."""


@dataclass(frozen=True)
class Failure:
    check: str  # xid, gpu_count, status_check, ...
    code: str | None = None  # the XID, the status check, the AWS Health event type
    message: str = ""


@dataclass(frozen=True)
class Signal:
    """What one event says about one instance."""

    instance_id: str
    source: str  # agent | health-tag | status-sweep | aws-health | ec2-state
    failures: tuple[Failure, ...] = ()
    healthy: bool = False
    terminated: bool = False
    boot_id: str = ""
    detail: Mapping[str, Any] = field(default_factory=dict)
    claim: bool = False  # the agent's own word: acted on only when the instance's health tag confirms it
    recheck: bool = False  # the tag's value when it changed (AWS's event): acted on only if the tag still says so


@dataclass(frozen=True)
class HealthTag:
    """The parsed value of an instance's health tag."""

    healthy: bool
    boot_id: str
    failures: tuple[Failure, ...] = ()


def parse_health_tag(value: object) -> HealthTag:
    """The health tag's value, or ``Malformed`` when it is not in the contract's grammar."""
    try:
        healthy, boot_id, failures = contract.parse_health_tag(value)
    except ValueError as error:
        raise Malformed(str(error)) from None
    return HealthTag(healthy=healthy, boot_id=boot_id, failures=tuple(Failure(c, code) for c, code in failures))


def format_health_tag(healthy: bool, boot_id: str, failures: Sequence[Failure] = ()) -> str:
    """The tag value for a state, as the agent writes it."""
    return contract.format_health_tag(healthy, boot_id, [(f.check, f.code) for f in failures])


def from_event(event: object) -> list[Signal]:
    """Signals in an EventBridge event (empty when it says nothing about health, or is malformed)."""
    try:
        return _signals(event)
    except Malformed as error:
        kind = event.get("detail-type") if isinstance(event, Mapping) else None
        log.warning("dropped a malformed event (%s): %s", str(kind)[:80], error)
        return []


def _signals(event: object) -> list[Signal]:
    if not isinstance(event, Mapping):
        raise Malformed("the event is not an object")
    source, kind = event.get("source"), event.get("detail-type", "")
    if source == AGENT_SOURCE:
        if kind != AGENT_DETAIL_TYPE:
            log.info("ignored an agent event of unknown detail-type %r", str(kind)[:80])
            return []
        return [_agent(_detail(event))]
    if source == TAG_SOURCE and kind == TAG_DETAIL_TYPE:
        return _tag_change(event)
    if source == "aws.ec2" and kind == "EC2 Instance State-change Notification":
        detail = _detail(event)
        instance, state = instance_id(detail.get("instance-id")), detail.get("state")
        if state in ("terminated", "shutting-down"):
            return [Signal(instance_id=instance, source="ec2-state", terminated=True, detail=detail)]
        if state in ("stopping", "stopped"):
            failure = Failure(check="unexpected_stop", code=state, message=f"instance is {state}")
            return [Signal(instance_id=instance, source="ec2-state", failures=(failure,), detail=detail)]
        return []
    if source == "aws.health":
        detail = _detail(event)
        code = _text(detail.get("eventTypeCode", ""), "eventTypeCode")
        entities = detail.get("affectedEntities", [])
        if not isinstance(entities, list) or not all(isinstance(e, Mapping) for e in entities):
            raise Malformed("affectedEntities: not a list of objects")
        failure = Failure(check="scheduled_event", code=code, message=f"AWS Health {code}")
        values = [e.get("entityValue") for e in entities]
        return [
            Signal(instance_id=v, source="aws-health", failures=(failure,), detail=detail)
            for v in values
            if isinstance(v, str) and INSTANCE_ID.fullmatch(v)
        ]
    return []


def instance_id(value: object) -> str:
    if not isinstance(value, str) or not INSTANCE_ID.fullmatch(value):
        raise Malformed(f"not an instance id: {str(value)[:40]!r}")
    return value


def _detail(event: Mapping[str, Any]) -> Mapping[str, Any]:
    detail = event.get("detail")
    if not isinstance(detail, Mapping):
        raise Malformed("detail: not an object")
    return detail


def _text(value: object, name: str, limit: int = 128) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise Malformed(f"{name}: not a string of at most {limit} characters")
    return value


def _agent(detail: Mapping[str, Any]) -> Signal:
    """The agent's report: a claim, checked against the instance's health tag before any action."""
    instance = instance_id(detail.get("instance_id"))
    boot = detail.get("boot_id")
    if not isinstance(boot, str) or not BOOT_ID_TOKEN.fullmatch(boot):
        raise Malformed("boot_id: missing or not a boot id")
    state = detail.get("state")
    if state not in ("healthy", "unhealthy"):
        raise Malformed(f"state: {str(state)[:20]!r} is neither healthy nor unhealthy")
    raw = detail.get("failures", [])
    if not isinstance(raw, list) or len(raw) > MAX_FAILURES:
        raise Malformed(f"failures: not a list of at most {MAX_FAILURES}")
    failures = []
    for f in raw:
        if not isinstance(f, Mapping) or not isinstance(f.get("check"), str) or not CHECK_TOKEN.fullmatch(f["check"]):
            raise Malformed("failures: an entry without a valid check")
        code, message = f.get("code"), f.get("message", "")
        if code is not None and (not isinstance(code, str) or not CODE_TOKEN.fullmatch(code)):
            raise Malformed("failures: an invalid code")
        if not isinstance(message, str):
            raise Malformed("failures: a message that is not a string")
        failures.append(Failure(check=f["check"], code=code, message=message[:MAX_MESSAGE]))
    return Signal(
        instance_id=instance,
        source="agent",
        failures=tuple(failures),
        healthy=state == "healthy",
        boot_id=boot,
        detail=detail,
        claim=True,
    )


def _tag_change(event: Mapping[str, Any]) -> list[Signal]:
    """AWS's own event for a change of the health tag: the instance from the resource ARN."""
    detail = _detail(event)
    resources = event.get("resources")
    if not isinstance(resources, list) or len(resources) != 1 or not isinstance(resources[0], str):
        raise Malformed("resources: not one ARN")
    arn = INSTANCE_ARN.fullmatch(resources[0])
    if arn is None:
        return []  # another resource type: not ours
    changed, tags = detail.get("changed-tag-keys", []), detail.get("tags", {})
    if not isinstance(changed, list) or not isinstance(tags, Mapping):
        raise Malformed("changed-tag-keys or tags: wrong type")
    if HEALTH_TAG not in changed or HEALTH_TAG not in tags:
        return []  # another tag changed, or the health tag was removed
    tag = parse_health_tag(tags[HEALTH_TAG])
    return [
        Signal(
            instance_id=arn.group(1),
            source="health-tag",
            failures=tag.failures,
            healthy=tag.healthy,
            boot_id=tag.boot_id,
            detail=detail,
            recheck=True,
        )
    ]
