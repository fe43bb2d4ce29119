"""A node can only report about itself: the agent's claims are checked against the health tag of
the instance they name, which IAM lets only that instance write (``aws:ARN`` equal to
``${ec2:SourceInstanceARN}``, ``aws:TagKeys`` limited to the health tag).

A claim is confirmed when the tag says the same state from the same boot; the failures acted on
are the tag's (the claim's messages are kept as text for the failures the tag also lists). A claim
the tag does not confirm leads to no action: a forged report, or an honest one that raced its
own tag write, which AWS's tag-change event for that write then confirms.

AWS's tag-change event names the instance itself, but its value is the tag's when it changed:
delivered late, twice or out of order, it may be overtaken. It is acted on only as far as the tag
still says it (:func:`still_says`): the same state, from the same boot, with its failures.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any

from training_cluster.contract import HEALTH_TAG

from .aws import Clients, with_retries
from .signals import HealthTag, Malformed, Signal, parse_health_tag

CHUNK = 100  # instance ids per DescribeTags filter


def health_tags(clients: Clients, instance_ids: Iterable[str], sleep: Callable[[float], None]) -> dict[str, str]:
    """instance id -> the value of its health tag, for those that have one."""
    found = instance_tags(clients, instance_ids, (HEALTH_TAG,), sleep)
    return {i: tags[HEALTH_TAG] for i, tags in found.items() if HEALTH_TAG in tags}


def instance_tags(
    clients: Clients, instance_ids: Iterable[str], keys: Sequence[str], sleep: Callable[[float], None]
) -> dict[str, dict[str, str]]:
    """instance id -> {key: value} of those of ``keys`` it has (one DescribeTags call per 100 ids)."""
    ids = sorted(set(instance_ids))
    found: dict[str, dict[str, str]] = {}
    for start in range(0, len(ids), CHUNK):
        params: dict[str, Any] = {
            "Filters": [
                {"Name": "resource-id", "Values": ids[start : start + CHUNK]},
                {"Name": "key", "Values": list(keys)},
            ]
        }
        while True:
            page = with_retries(clients.ec2.describe_tags, sleep=sleep, **params)
            for tag in page.get("Tags", []):
                if tag.get("ResourceType") == "instance" and tag.get("Key") in keys:
                    found.setdefault(str(tag["ResourceId"]), {})[str(tag["Key"])] = str(tag.get("Value", ""))
            if not page.get("NextToken"):
                break
            params["NextToken"] = page["NextToken"]
    return found


def _agrees(signal: Signal, tag: str | None, said: str, now: str) -> HealthTag | str:
    """The tag parsed, when it is of the signal's boot and state; otherwise why not, in words
    naming ``said`` (what the signal is: the report, the event), ``now`` before the tag's verb."""
    if tag is None:
        return f"the instance has no health tag{' now' if now else ''}"
    try:
        seen = parse_health_tag(tag)
    except Malformed as error:
        return str(error)
    if seen.boot_id != signal.boot_id:
        return f"the health tag is {now}from boot {seen.boot_id}, {said} from boot {signal.boot_id}"
    if seen.healthy != signal.healthy:
        return f"the health tag {now}says {'healthy' if seen.healthy else 'unhealthy'}"
    return seen


def confirm(claim: Signal, tag: str | None) -> Signal | str:
    """The claim as the tag confirms it, or why the tag does not."""
    seen = _agrees(claim, tag, "the report", "")
    if isinstance(seen, str):
        return seen
    messages = {(f.check, f.code): f.message for f in claim.failures}
    failures = tuple(replace(f, message=messages.get((f.check, f.code), "")) for f in seen.failures)
    return replace(claim, failures=failures, claim=False)


def still_says(event: Signal, tag: str | None) -> Signal | str:
    """The tag-change event's signal with the failures the instance's tag still lists, or why the
    tag no longer says what the event does (it has moved on: the event is stale)."""
    now = _agrees(event, tag, "the event", "now ")
    if isinstance(now, str):
        return now
    listed = {(f.check, f.code) for f in now.failures}
    failures = tuple(f for f in event.failures if (f.check, f.code) in listed)
    if event.failures and not failures:
        gone = ", ".join(f"{f.check}{' ' + f.code if f.code else ''}" for f in event.failures)
        return f"the health tag no longer lists {gone}"
    return replace(event, failures=failures, recheck=False)
