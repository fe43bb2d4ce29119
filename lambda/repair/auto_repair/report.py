"""Telling people what the control plane did: SNS notifications, EventBridge events, CloudWatch metrics."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import TextIO

from training_cluster.contract import (
    DIMENSION_CLUSTER,
    DIMENSION_GROUP,
    REPAIR_DETAIL_TYPE,
    REPAIR_NAMESPACE,
    REPAIR_SOURCE,
    RepairMetric,
)

from .aws import Clients, with_retries
from .ledger import Ledger
from .settings import Settings


class Reporter:
    def __init__(
        self,
        settings: Settings,
        clients: Clients,
        ledger: Ledger,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.clients = clients
        self.ledger = ledger
        self.clock = clock
        self.sleep = sleep

    def time_since_first_signal(self, incident_id: str, group: str, metric: RepairMetric = "SecondsToAction") -> None:
        """Seconds since the incident's first signal: to the action, or (SecondsToRepair) to its end."""
        story = self.ledger.story(incident_id)
        first = min(float(s["at"]) for s in story)
        self.metric(metric, group, self.clock() - first, unit="Seconds")

    def announce(self, instance_id: str, group: str, action: str, incident_id: str, dry_run: bool = False) -> None:
        detail = {
            "cluster": self.settings.cluster,
            "instance_group": group,
            "instance_id": instance_id,
            "action": action,
            "incident_id": incident_id,
            "dry_run": dry_run,
        }
        with_retries(
            self.clients.events.put_events,
            sleep=self.sleep,
            Entries=[
                {
                    "Source": REPAIR_SOURCE,
                    "DetailType": REPAIR_DETAIL_TYPE,
                    "Detail": json.dumps(detail),
                    "EventBusName": self.settings.event_bus,
                }
            ],
        )
        verb = {"reboot": "Rebooting", "replace": "Replacing"}[action]
        self.notify(
            f"{'[dry run] ' if dry_run else ''}{verb} {instance_id} in {group}",
            json.dumps(
                {
                    **detail,
                    "story": [
                        {k: v for k, v in s.items() if k not in ("pk", "sk")} for s in self.ledger.story(incident_id)
                    ],
                },
                indent=2,
                default=str,
            ),
        )

    def notify(self, subject: str, message: str) -> None:
        subject = f"[{self.settings.cluster}] {subject}"[:100]
        with_retries(
            self.clients.sns.publish,
            sleep=self.sleep,
            TopicArn=self.settings.topic_arn,
            Subject=subject,
            Message=message,
        )

    def metric(self, name: RepairMetric, group: str, value: float = 1.0, unit: str = "Count") -> None:
        dimensions = [
            {"Name": DIMENSION_CLUSTER, "Value": self.settings.cluster},
            {"Name": DIMENSION_GROUP, "Value": group},
        ]
        with_retries(
            self.clients.cloudwatch.put_metric_data,
            sleep=self.sleep,
            Namespace=REPAIR_NAMESPACE,
            MetricData=[{"MetricName": name, "Dimensions": dimensions, "Value": value, "Unit": unit}],
        )

    def metric_in_log(self, name: RepairMetric, group: str, stream: TextIO | None = None, **fields: str) -> None:
        metric_in_log(name, self.settings.cluster, group, self.clock(), stream, **fields)


def metric_in_log(
    name: RepairMetric, cluster: str, group: str, now: float, stream: TextIO | None = None, **fields: str
) -> None:
    """One log line that CloudWatch also reads as a metric (embedded metric format): no API call,
    so a flood of reports costs no more than its log lines."""
    line = {
        "_aws": {
            "Timestamp": int(now * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": REPAIR_NAMESPACE,
                    "Dimensions": [[DIMENSION_CLUSTER, DIMENSION_GROUP]],
                    "Metrics": [{"Name": name}],
                }
            ],
        },
        DIMENSION_CLUSTER: cluster,
        DIMENSION_GROUP: group,
        name: 1,
        **fields,
    }
    (stream or sys.stdout).write(json.dumps(line) + "\n")
