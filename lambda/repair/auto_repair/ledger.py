"""The repair ledger in DynamoDB: incidents, their story, and per-group safety state.

One table, string keys ``pk`` and ``sk``:
- ``instance#<id>`` / ``state``: the instance's open or last incident, when it was last rebooted,
  and (``cordoned_by``) the incident whose drain cordoned its Node for a reboot, until the control
  plane lifts that cordon (EKS: nobody else's cordon is lifted);
- ``incident#<id>`` / ``<time>#<n>``: each step of an incident (signal, decision, action, outcome);
- ``group#<name>`` / ``state``: unhealthy instances, replacements in flight, circuit breaker, backoff,
  the instances held while the breaker was open and those released when it was reset;
- ``report#<id>`` / ``state``: the report intake's item for the instance: reports its health tag
  did not confirm (a count and the last reason: one item per instance however many arrive), and
  the tag value the last confirmed report was forwarded for (forwarded once per value). The
  intake may write these items and no others. The repair function counts there too the
  tag-change events the tag no longer confirmed (stale: late or out of order).

Conditional writes make each incident act once, however many copies of its events arrive.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

STATE = "state"
_sequence = itertools.count()


def _conditional_failed(error: ClientError) -> bool:
    return bool(error.response["Error"]["Code"] == "ConditionalCheckFailedException")


class Ledger:
    def __init__(self, table: Any, clock: Callable[[], float]) -> None:
        self.table = table
        self.clock = clock

    # the story of an incident
    def record(self, incident_id: str, step: str, **details: Any) -> None:
        now = self.clock()
        item = {
            "pk": f"incident#{incident_id}",
            "sk": f"{now:017.6f}#{next(_sequence):06d}",
            "step": step,
            "at": str(now),
        }
        item.update({k: v for k, v in details.items() if v is not None and v != ""})
        self.table.put_item(Item=item)

    def story(self, incident_id: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.table.query(
            KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": f"incident#{incident_id}"}
        )["Items"]
        return items

    # instances
    def instance(self, instance_id: str) -> dict[str, Any]:
        item: dict[str, Any] = self.table.get_item(Key={"pk": f"instance#{instance_id}", "sk": STATE}).get("Item") or {}
        return item

    def open_incident(
        self, instance_id: str, incident_id: str, group: str, action: str, boot_id: str = "", source: str = ""
    ) -> bool:
        """Open an incident unless one is open already; True when this call opened it."""
        return (
            self._conditional(
                Key={"pk": f"instance#{instance_id}", "sk": STATE},
                UpdateExpression="SET #s = :open, incident_id = :incident, instance_group = :group, "
                "#a = :action, opened_at = :now, boot_id = :boot, #src = :source",
                ConditionExpression="attribute_not_exists(#s) OR #s = :closed",
                ExpressionAttributeNames={"#s": "status", "#a": "action", "#src": "source"},
                ExpressionAttributeValues={
                    ":open": "open",
                    ":closed": "closed",
                    ":incident": incident_id,
                    ":group": group,
                    ":action": action,
                    ":now": str(self.clock()),
                    ":boot": boot_id,
                    ":source": source,
                },
            )
            is not None
        )

    def escalate(self, instance_id: str, incident_id: str, action: str) -> bool:
        """Raise an open incident's action (reboot -> replace); True when this call raised it."""
        return (
            self._conditional(
                Key={"pk": f"instance#{instance_id}", "sk": STATE},
                UpdateExpression="SET #a = :action",
                ConditionExpression="#s = :open AND incident_id = :incident AND #a <> :action",
                ExpressionAttributeNames={"#s": "status", "#a": "action"},
                ExpressionAttributeValues={":open": "open", ":incident": incident_id, ":action": action},
            )
            is not None
        )

    def rebooted(self, instance_id: str) -> None:
        """The instance was rebooted for its open incident: remember when, and from which boot
        (signals from that boot are the same incident, however late they arrive)."""
        self.table.update_item(
            Key={"pk": f"instance#{instance_id}", "sk": STATE},
            UpdateExpression="SET last_reboot_at = :now, rebooted_boot_id = boot_id",
            ExpressionAttributeValues={":now": str(self.clock())},
        )

    def rebooted_within(self, instance_id: str, seconds: float) -> bool:
        """Whether this control plane rebooted the instance less than ``seconds`` ago."""
        last = float(self.instance(instance_id).get("last_reboot_at", "0") or 0)
        return self.clock() - last < seconds

    def cordoned(self, instance_id: str, incident_id: str) -> None:
        """The incident's drain cordons the instance's Node for a reboot: the cordon is the control
        plane's to lift once the node is healthy again (recorded before the cordon is asked for)."""
        self.set_instance(instance_id, cordoned_by=incident_id)

    def uncordoned(self, instance_id: str) -> None:
        """The control plane's cordon of the instance's Node was lifted."""
        self._conditional(
            Key={"pk": f"instance#{instance_id}", "sk": STATE},
            UpdateExpression="REMOVE cordoned_by",
            ConditionExpression="attribute_exists(cordoned_by)",
        )

    def announce_once(self, instance_id: str, incident_id: str, action: str) -> bool:
        """Remember that a decision was announced (dry run); True only the first time."""
        key = f"{incident_id}#{action}"
        return (
            self._conditional(
                Key={"pk": f"instance#{instance_id}", "sk": STATE},
                UpdateExpression="SET announced = :key",
                ConditionExpression="attribute_not_exists(announced) OR announced <> :key",
                ExpressionAttributeValues={":key": key},
            )
            is not None
        )

    def unconfirmed(self, instance_id: str, reason: str) -> int:
        """Count a report about the instance that its health tag did not confirm; the new count."""
        response = self.table.update_item(
            Key={"pk": f"report#{instance_id}", "sk": STATE},
            UpdateExpression="ADD unconfirmed :one SET last_reason = :reason, last_at = :now",
            ExpressionAttributeValues={":one": 1, ":reason": reason[:300], ":now": str(self.clock())},
            ReturnValues="UPDATED_NEW",
        )
        return int(response["Attributes"]["unconfirmed"])

    def stale(self, instance_id: str, reason: str) -> int:
        """Count a tag-change event about the instance that its health tag no longer says; the new count."""
        response = self.table.update_item(
            Key={"pk": f"report#{instance_id}", "sk": STATE},
            UpdateExpression="ADD stale :one SET last_stale_reason = :reason, last_stale_at = :now",
            ExpressionAttributeValues={":one": 1, ":reason": reason[:300], ":now": str(self.clock())},
            ReturnValues="UPDATED_NEW",
        )
        return int(response["Attributes"]["stale"])

    def forward_once(self, instance_id: str, tag: str) -> bool:
        """Mark a confirmed report about the instance as forwarded for this health tag value; True
        only the first time (one forward per change of the tag, however many reports repeat it)."""
        return (
            self._conditional(
                Key={"pk": f"report#{instance_id}", "sk": STATE},
                UpdateExpression="SET forwarded = :tag, forwarded_at = :now",
                ConditionExpression="attribute_not_exists(forwarded) OR forwarded <> :tag",
                ExpressionAttributeValues={":tag": tag, ":now": str(self.clock())},
            )
            is not None
        )

    def unforward(self, instance_id: str, tag: str) -> None:
        """Undo ``forward_once`` when the forward itself failed, so a retry forwards again."""
        self._conditional(
            Key={"pk": f"report#{instance_id}", "sk": STATE},
            UpdateExpression="REMOVE forwarded, forwarded_at",
            ConditionExpression="forwarded = :tag",
            ExpressionAttributeValues={":tag": tag},
        )

    def set_instance(self, instance_id: str, **values: Any) -> None:
        self._set(f"instance#{instance_id}", values)

    def close_incident(self, instance_id: str, outcome: str) -> str | None:
        """Close the instance's open incident; returns its id, or None when none was open."""
        result = self._conditional(
            Key={"pk": f"instance#{instance_id}", "sk": STATE},
            UpdateExpression="SET #s = :closed, outcome = :outcome, closed_at = :now",
            ConditionExpression="#s = :open",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={
                ":open": "open",
                ":closed": "closed",
                ":outcome": outcome,
                ":now": str(self.clock()),
            },
            ReturnValues="ALL_NEW",
        )
        return None if result is None else str(result["Attributes"]["incident_id"])

    # groups
    def group(self, name: str) -> dict[str, Any]:
        item: dict[str, Any] = self.table.get_item(Key={"pk": f"group#{name}", "sk": STATE}).get("Item") or {}
        return item

    def mark_unhealthy(self, group: str, instance_id: str, unhealthy: bool) -> None:
        """Count the instance towards the breaker, or (no longer unhealthy) forget it everywhere."""
        self.table.update_item(
            Key={"pk": f"group#{group}", "sk": STATE},
            UpdateExpression="ADD unhealthy :ids" if unhealthy else "DELETE unhealthy :ids, held :ids, released :ids",
            ExpressionAttributeValues={":ids": {instance_id}},
        )

    def hold(self, group: str, instance_id: str) -> None:
        """The breaker is open: the instance waits for the reset."""
        self.table.update_item(
            Key={"pk": f"group#{group}", "sk": STATE},
            UpdateExpression="ADD held :ids",
            ExpressionAttributeValues={":ids": {instance_id}},
        )

    def start_replacement(self, group: str, instance_id: str, limit: int) -> bool:
        """Take one of the group's ``limit`` replacement slots; False when all are taken."""
        return (
            self._conditional(
                Key={"pk": f"group#{group}", "sk": STATE},
                UpdateExpression="ADD replacing_count :one, replacing :ids",
                ConditionExpression="(attribute_not_exists(replacing_count) OR replacing_count < :limit) "
                "AND NOT contains(replacing, :id)",
                ExpressionAttributeValues={":one": 1, ":ids": {instance_id}, ":limit": limit, ":id": instance_id},
            )
            is not None
        )

    def finish_replacement(self, group: str, instance_id: str) -> bool:
        """Free the slot an instance held; False when it held none."""
        return (
            self._conditional(
                Key={"pk": f"group#{group}", "sk": STATE},
                UpdateExpression="ADD replacing_count :minus DELETE replacing :ids",
                ConditionExpression="contains(replacing, :id)",
                ExpressionAttributeValues={":minus": -1, ":ids": {instance_id}, ":id": instance_id},
            )
            is not None
        )

    def open_breaker(self, group: str, reason: str) -> bool:
        """Open the group's circuit breaker; True when this call opened it."""
        return (
            self._conditional(
                Key={"pk": f"group#{group}", "sk": STATE},
                UpdateExpression="SET breaker = :open, breaker_reason = :reason, breaker_opened_at = :now",
                ConditionExpression="attribute_not_exists(breaker) OR breaker <> :open",
                ExpressionAttributeValues={":open": "open", ":reason": reason, ":now": str(self.clock())},
            )
            is not None
        )

    def reset_breaker(self, group: str) -> set[str]:
        """Close the breaker and forget who was unhealthy; the instances it held move to
        ``released`` (repaired, but not counted again towards the breaker). Returns them."""
        old = self.table.update_item(
            Key={"pk": f"group#{group}", "sk": STATE},
            UpdateExpression="SET breaker = :closed REMOVE unhealthy, held",
            ExpressionAttributeValues={":closed": "closed"},
            ReturnValues="ALL_OLD",
        ).get("Attributes", {})
        held = {str(i) for i in old.get("held", set())}
        if held:
            self.table.update_item(
                Key={"pk": f"group#{group}", "sk": STATE},
                UpdateExpression="ADD released :ids",
                ExpressionAttributeValues={":ids": held},
            )
        return held

    def set_group(self, group: str, **values: Any) -> None:
        self._set(f"group#{group}", values)

    def _conditional(self, **update: Any) -> dict[str, Any] | None:
        """An update_item whose condition may not hold: its response, or None when it did not."""
        try:
            response: dict[str, Any] = self.table.update_item(**update)
        except ClientError as error:
            if _conditional_failed(error):
                return None
            raise
        return response

    def _set(self, pk: str, values: dict[str, Any]) -> None:
        self.table.update_item(
            Key={"pk": pk, "sk": STATE},
            UpdateExpression="SET " + ", ".join(f"#k{i} = :v{i}" for i in range(len(values))),
            ExpressionAttributeNames={f"#k{i}": k for i, k in enumerate(values)},
            ExpressionAttributeValues={f":v{i}": v for i, v in enumerate(values.values())},
        )
