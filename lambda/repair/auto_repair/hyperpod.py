"""What SageMaker HyperPod does to its nodes, recorded in the repair ledger (``backend: hyperpod``).

HyperPod repairs its own nodes (its health agent, automatic node recovery); nothing here acts
on a node. Its EventBridge events are written into the same ledger as this library's own
repairs, so that the command line, the metrics and the notifications tell both the same way:

- ``SageMaker HyperPod Cluster Node Health Event``: an unhealthy node opens an incident (source
  ``hyperpod``; its action is HyperPod's ``RepairAction`` where it says reboot or replace, else
  ``hyperpod``: HyperPod decides), with the reason and recommendation as its first steps; a node
  healthy again closes it. The event names no instance group: it is read from HyperPod
  (``DescribeClusterNode``), or ``unknown``.
- ``SageMaker HyperPod Cluster State Change``: each instance group's status and counts, in its
  ``group#<name>`` item (what ``training-cluster status`` shows).
- ``SageMaker HyperPod Cluster Event`` (clusters with continuous provisioning): a step of the
  instance's open incident, if it has one.
- The sweep (every five minutes): HyperPod's list of nodes; an open HyperPod incident whose
  instance HyperPod no longer lists is closed (``replaced by HyperPod``).

**Who can put these events on the bus.** Only AWS: EventBridge refuses ``PutEvents`` entries
whose source starts with ``aws.``, and the rule matches ``aws.sagemaker`` events of this
cluster's ARN only. Each event is still checked (source, type, cluster name, instance id: the
fields it is used by), its free text cut to a bounded, printable length; a node health event no
later than one already applied to that node (a copy, a late delivery) changes nothing, and an
incident opens once (conditionally).
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from training_cluster.contract import HYPERPOD_EVENTS, printable
from training_cluster.patterns import HYPERPOD_NAME_PATTERN

from .aws import Clients, with_retries
from .ledger import Ledger
from .report import metric_in_log

log = logging.getLogger("training-cluster.repair")

SOURCE, NODE_HEALTH, STATE_CHANGE, CLUSTER_EVENT = HYPERPOD_EVENTS
INCIDENT_SOURCE = "hyperpod"
UNHEALTHY = frozenset({"unhealthy", "unschedulable", "unschedulablependingreboot", "unschedulablependingreplacement"})
HEALTHY = frozenset({"healthy", "schedulable"})
TEXT_LIMIT = 500
SUPERSEDE_SECONDS = 6 * 3600
"""An incident open this long (no healthy event came) is closed by the node's next fault, which
opens a new one: a week-old fault must not hide today's."""
UNKNOWN_GROUP = "unknown"
# AWS's own example ids are not all hex (i-12345678abcdefghi): lower-case letters and digits
_INSTANCE_ID = re.compile(r"i-[0-9a-z]{8,17}", re.ASCII)
_GROUP_NAME = re.compile(HYPERPOD_NAME_PATTERN, re.ASCII)


@dataclass(frozen=True)
class HyperPodSettings:
    cluster: str
    """The HyperPod cluster's name (and this library's cluster's)."""
    table_name: str
    topic_arn: str

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> HyperPodSettings:
        return cls(cluster=env["CLUSTER_NAME"], table_name=env["LEDGER_TABLE"], topic_arn=env["TOPIC_ARN"])


def _fields(event: dict[str, Any]) -> Any:
    """Where an event's fields are: a Cluster Event nests them one level down (``EventDetails``)."""
    detail = event["detail"]
    return detail.get("EventDetails") if event["detail-type"] == CLUSTER_EVENT else detail


def _when(value: Any) -> float | None:
    """An event's ``time`` (ISO 8601) as seconds since the epoch; None when it has none."""
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def text(value: Any, limit: int = TEXT_LIMIT) -> str:
    """Free text from an event, as the ledger keeps it: one line of printable characters, bounded."""
    return printable(value or "", limit, " ")


class HyperPodRecorder:
    """Records one HyperPod event in the ledger (see the module); ``sweep(nodes)`` closes the
    incidents of instances HyperPod no longer lists."""

    def __init__(
        self,
        settings: HyperPodSettings,
        ledger: Ledger,
        clients: Clients,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings, self.ledger, self.clients, self.clock, self.sleep = settings, ledger, clients, clock, sleep

    def __call__(self, event: Any) -> dict[str, str]:
        problem = self._problem(event)
        if problem is not None:
            log.warning("not a HyperPod event of cluster %s: %s", self.settings.cluster, problem)
            return {"result": "refused", "reason": problem}
        detail, kind = _fields(event), event["detail-type"]
        if kind == NODE_HEALTH:
            return self._health(detail, str(event.get("id", "")), _when(event.get("time")))
        if kind == STATE_CHANGE:
            return self._state(detail)
        return self._cluster_event(detail)

    def _problem(self, event: Any) -> str | None:
        if not isinstance(event, dict) or event.get("source") != SOURCE:
            return f"source is not {SOURCE}"
        if event.get("detail-type") not in HYPERPOD_EVENTS.detail_types:
            return f"detail-type {text(event.get('detail-type'), 80)!r} is not one of HyperPod's"
        if not isinstance(event.get("detail"), dict):
            return "no detail"
        detail = _fields(event)  # what is checked is what is used
        if not isinstance(detail, dict):
            return "no event details"
        if detail.get("ClusterName") != self.settings.cluster:
            return f"cluster {text(detail.get('ClusterName'), 80)!r} is not {self.settings.cluster!r}"
        instance_id = detail.get("InstanceId")
        if instance_id is not None and not (isinstance(instance_id, str) and _INSTANCE_ID.fullmatch(instance_id)):
            return f"instance id {text(instance_id, 40)!r} is not one"
        if event["detail-type"] == NODE_HEALTH and (
            instance_id is None or not isinstance(detail.get("HealthSummary"), dict)
        ):
            return "a node health event without an instance or a health summary"
        return None

    # node health ---------------------------------------------------------------------------------

    def _health(self, detail: dict[str, Any], event_id: str, at: float | None) -> dict[str, str]:
        instance_id, summary = str(detail["InstanceId"]), detail["HealthSummary"]
        status = text(summary.get("HealthStatus"), 60)
        state = self.ledger.instance(instance_id)
        last = float(state.get("hyperpod_event_at", "0") or 0)
        if at is not None and at <= last:
            # a copy, or an event older than one already applied (EventBridge delivers at least
            # once, in no set order): what the node is now is what the later event said
            return {"result": "late", "instance_id": instance_id}
        if status.lower() not in HEALTHY | UNHEALTHY:
            log.warning(
                "HyperPod health status %r of %s is not one this release knows: not recorded", status, instance_id
            )
            return {"result": "unknown-status", "instance_id": instance_id}
        if at is not None:
            self.ledger.set_instance(instance_id, hyperpod_event_at=str(at))
        if status.lower() in HEALTHY:
            incident_id = self.ledger.close_incident(instance_id, "recovered (HyperPod)")
            if incident_id is None:
                return {"result": "ignored", "instance_id": instance_id}
            self.ledger.record(incident_id, "closed", outcome="recovered (HyperPod)", health=status)
            return {"result": "closed", "instance_id": instance_id, "incident_id": incident_id}
        repair = text(summary.get("RepairAction"), 60)
        reason = text(summary.get("HealthStatusReason"))
        recommendation = text(summary.get("Recommendation"), 300)
        if state.get("status") == "open":
            incident_id = str(state.get("incident_id", ""))
            if self.clock() - float(state.get("opened_at", "0") or 0) < SUPERSEDE_SECONDS:
                self.ledger.record(incident_id, "hyperpod", health=status, reason=reason, repair_action=repair)
                return {"result": "recorded", "instance_id": instance_id, "incident_id": incident_id}
            # open for long with no word of recovery: this fault is a new incident, told anew
            if self.ledger.close_incident(instance_id, "superseded by a later fault") is not None:
                self.ledger.record(incident_id, "closed", outcome="superseded by a later fault")
        group = self._group(instance_id, state)
        action = repair.lower() if repair.lower() in ("reboot", "replace") else INCIDENT_SOURCE
        incident_id = uuid.uuid4().hex
        if not self.ledger.open_incident(instance_id, incident_id, group, action, source=INCIDENT_SOURCE):
            return {"result": "duplicate", "instance_id": instance_id}  # a copy, recorded by another invocation
        self.ledger.record(
            incident_id,
            "signal",
            instance_id=instance_id,
            instance_group=group,
            source=INCIDENT_SOURCE,
            signal=reason or status,
            health=status,
            event_id=text(event_id, 80),
        )
        self.ledger.record(incident_id, "decision", by="HyperPod", repair_action=repair, recommendation=recommendation)
        metric_in_log(
            "Incidents", self.settings.cluster, group, self.clock(), instance_id=instance_id, source="hyperpod"
        )
        self._notify(
            f"HyperPod finds {instance_id} unhealthy in {group}",
            {
                "cluster": self.settings.cluster,
                "instance_group": group,
                "instance_id": instance_id,
                "health": status,
                "reason": reason,
                "repair_action": repair,
                "recommendation": recommendation,
                "incident_id": incident_id,
            },
        )
        return {"result": "opened", "instance_id": instance_id, "incident_id": incident_id}

    def _group(self, instance_id: str, state: Mapping[str, Any]) -> str:
        """The node's instance group: from HyperPod, or as the ledger last knew it, or ``unknown``."""
        try:
            node = with_retries(
                self.clients.sagemaker.describe_cluster_node,
                sleep=self.sleep,
                ClusterName=self.settings.cluster,
                NodeId=instance_id,
            )
            group = str(node["NodeDetails"]["InstanceGroupName"])
        except (ClientError, BotoCoreError, KeyError, TypeError) as error:
            log.warning("DescribeClusterNode %s failed: %s", instance_id, error)
            group = str(state.get("instance_group") or "")
        return group if _GROUP_NAME.fullmatch(group) else UNKNOWN_GROUP

    # the cluster and its events ------------------------------------------------------------------

    def _state(self, detail: dict[str, Any]) -> dict[str, str]:
        groups = detail.get("InstanceGroups")
        written = []
        for group in groups if isinstance(groups, list) else []:
            name = group.get("InstanceGroupName") if isinstance(group, dict) else None
            if not isinstance(name, str) or not _GROUP_NAME.fullmatch(name):
                continue
            counts = {k: group.get(k) for k in ("CurrentCount", "TargetCount")}
            self.ledger.set_group(
                name,
                hyperpod_status=text(group.get("Status"), 40),
                current_count=counts["CurrentCount"] if isinstance(counts["CurrentCount"], int) else -1,
                target_count=counts["TargetCount"] if isinstance(counts["TargetCount"], int) else -1,
                cluster_status=text(detail.get("ClusterStatus"), 40),
                updated_at=str(self.clock()),
            )
            written.append(name)
        return {"result": "state", "groups": ",".join(written)}

    def _cluster_event(self, details: dict[str, Any]) -> dict[str, str]:
        instance_id = details.get("InstanceId")
        if not isinstance(instance_id, str):
            return {"result": "ignored"}
        state = self.ledger.instance(instance_id)
        if state.get("status") != "open" or state.get("source") != INCIDENT_SOURCE:
            return {"result": "ignored", "instance_id": instance_id}
        incident_id = str(state.get("incident_id", ""))
        self.ledger.record(
            incident_id,
            "hyperpod-event",
            description=text(details.get("Description")),
            level=text(details.get("EventLevel"), 20),
            event_id=text(details.get("EventId"), 80),
        )
        return {"result": "recorded", "instance_id": instance_id, "incident_id": incident_id}

    # the sweep -----------------------------------------------------------------------------------

    def nodes(self) -> dict[str, str]:
        """{instance id: instance group} of every node HyperPod lists for the cluster."""
        found: dict[str, str] = {}
        params: dict[str, Any] = {"ClusterName": self.settings.cluster, "MaxResults": 100}
        while True:
            page = with_retries(self.clients.sagemaker.list_cluster_nodes, sleep=self.sleep, **params)
            for node in page.get("ClusterNodeSummaries", []):
                found[str(node["InstanceId"])] = str(node.get("InstanceGroupName", ""))
            if not page.get("NextToken"):
                return found
            params["NextToken"] = page["NextToken"]

    def sweep(self, listed: Mapping[str, str] | None = None) -> list[str]:
        """Close the open HyperPod incidents of instances HyperPod no longer lists (replaced);
        the ids closed. ``listed``: :meth:`nodes`, read now when not given."""
        listed = self.nodes() if listed is None else listed
        closed = []
        for instance_id in self._open_incidents():
            if instance_id in listed:
                continue
            incident_id = self.ledger.close_incident(instance_id, "replaced by HyperPod")
            if incident_id is not None:
                self.ledger.record(incident_id, "closed", outcome="replaced by HyperPod")
                closed.append(instance_id)
        return closed

    def _open_incidents(self) -> Iterable[str]:
        table = self.ledger.table
        params: dict[str, Any] = {
            "FilterExpression": "begins_with(pk, :instance) AND sk = :state AND #s = :open AND #src = :hyperpod",
            "ExpressionAttributeNames": {"#s": "status", "#src": "source"},
            "ExpressionAttributeValues": {
                ":instance": "instance#",
                ":state": "state",
                ":open": "open",
                ":hyperpod": INCIDENT_SOURCE,
            },
        }
        while True:
            page = table.scan(**params)
            for item in page["Items"]:
                yield str(item["pk"]).removeprefix("instance#")
            if "LastEvaluatedKey" not in page:
                return
            params["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _notify(self, subject: str, detail: dict[str, Any]) -> None:
        try:
            with_retries(
                self.clients.sns.publish,
                sleep=self.sleep,
                TopicArn=self.settings.topic_arn,
                Subject=f"[{self.settings.cluster}] {subject}"[:100],
                Message=json.dumps(detail, indent=2),
            )
        except (ClientError, BotoCoreError) as error:  # the record stands; a lost notice is logged
            log.warning("notification failed: %s", error)
