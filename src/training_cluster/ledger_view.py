"""The repair ledger (DynamoDB), read for the command line: incidents, their story and evidence,
each node's last incident, each group's safety state. The layout is the control plane's
(``lambda/repair/auto_repair/ledger.py``): ``instance#<id>``, ``incident#<id>``, ``group#<name>``
items. Listing incidents scans the table once (there is no index by time)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any


@dataclass(frozen=True)
class Incident:
    incident_id: str
    instance_id: str
    group: str
    opened_at: float
    source: str
    signal: str
    action: str  # observe | reboot | replace
    status: str  # open | closed | observed
    outcome: str


class LedgerView:
    def __init__(self, dynamodb: Any, table_name: str, s3: Any) -> None:
        self.dynamodb, self.table_name, self.s3 = dynamodb, table_name, s3

    def states(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        """The ``state`` items of these keys (``instance#<id>``, ``group#<name>``) that exist, by key."""
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(keys), 100):
            batch = [{"pk": k, "sk": "state"} for k in keys[start : start + 100]]
            request: dict[str, Any] = {self.table_name: {"Keys": batch}}
            while request:
                response = self.dynamodb.batch_get_item(RequestItems=request)
                for item in response["Responses"].get(self.table_name, []):
                    found[str(item["pk"])] = _plain(item)
                request = response.get("UnprocessedKeys") or {}
        return found

    def instance_states(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        """instance id -> the ledger's record of its open or last incident, with the fault that opened it."""
        found = {k.removeprefix("instance#"): v for k, v in self.states([f"instance#{i}" for i in ids]).items()}
        for state in found.values():
            steps = self.story(str(state.get("incident_id", ""))) if state.get("incident_id") else []
            state["fault"] = next((str(s.get("signal", "")) for s in steps if s["step"] == "signal"), "")
        return found

    def items(self, prefixes: Iterable[str], *, heads: bool = False) -> dict[str, dict[str, Any]]:
        """The ledger's ``state`` items whose key starts with one of ``prefixes`` (and, with
        ``heads``, the first step of every incident), by key: one scan of the table."""
        names, values, clauses = {}, {":state": "state"}, []
        for n, prefix in enumerate(prefixes):
            values[f":p{n}"] = prefix
            clauses.append(f"(begins_with(pk, :p{n}) AND sk = :state)")
        if heads:
            names["#step"] = "step"
            values.update({":incident": "incident#", ":signal": "signal", ":observed": "observed"})
            clauses.append("(begins_with(pk, :incident) AND (#step = :signal OR #step = :observed))")
        params: dict[str, Any] = {"FilterExpression": " OR ".join(clauses), "ExpressionAttributeValues": values}
        if names:
            params["ExpressionAttributeNames"] = names
        table = self.dynamodb.Table(self.table_name)
        items: dict[str, dict[str, Any]] = {}
        while True:
            page = table.scan(**params)
            for item in page["Items"]:
                items[str(item["pk"])] = _plain(item)
            if "LastEvaluatedKey" not in page:
                return items
            params["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def incidents(self, limit: int = 20) -> list[Incident]:
        """The latest incidents, newest first (the ledger scanned once)."""
        items = self.items(("instance#",), heads=True)
        states = {str(v.get("incident_id")): v for k, v in items.items() if k.startswith("instance#")}
        found = []
        for key, head in items.items():
            if not key.startswith("incident#"):
                continue
            incident_id = key.removeprefix("incident#")
            state = states.get(incident_id, {})
            observed = head["step"] == "observed"
            found.append(
                Incident(
                    incident_id=incident_id,
                    instance_id=str(head.get("instance_id", "")),
                    group=str(head.get("instance_group", "")),
                    opened_at=ledger_seconds(head.get("at")),
                    source=str(head.get("source", "")),
                    signal=str(head.get("signal", "")),
                    action="observe" if observed else str(state.get("action", "")),
                    status="observed" if observed else str(state.get("status", "closed")),
                    outcome=str(state.get("outcome", "")),
                )
            )
        found.sort(key=lambda i: i.opened_at, reverse=True)
        return found[:limit]

    def story(self, incident_id: str) -> list[dict[str, Any]]:
        table = self.dynamodb.Table(self.table_name)
        params: dict[str, Any] = {
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": f"incident#{incident_id}"},
        }
        steps: list[dict[str, Any]] = []
        while True:
            page = table.query(**params)
            steps += [_plain(i) for i in page["Items"]]
            if "LastEvaluatedKey" not in page:
                return steps
            params["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def evidence(self, location: str, limit: int | None = None) -> list[str]:
        """The objects under an evidence location (``s3://bucket/prefix``), as S3 URIs, in key
        order; at most ``limit`` (a node may write any number under its own prefix)."""
        bucket, _, prefix = location.removeprefix("s3://").partition("/")
        found: list[str] = []
        params = {"Bucket": bucket, "Prefix": prefix, "PaginationConfig": {"MaxItems": limit} if limit else {}}
        for page in self.s3.get_paginator("list_objects_v2").paginate(**params):
            found += [f"s3://{bucket}/{o['Key']}" for o in page.get("Contents", [])]
        return found[:limit] if limit else found


def ledger_seconds(value: Any) -> float:
    """A ledger time (seconds, as text); 0 for one that is not a number (one bad item must not
    hide the others)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _plain(value: Any) -> Any:
    """DynamoDB's values as JSON's: numbers as int or float, sets as sorted lists."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (set, frozenset)):
        return sorted(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
