"""What people see of auto-repair: its CloudWatch dashboard and the circuit breaker's alarms, built
from :class:`AutoRepair`'s and :class:`Fleet`'s metric methods."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_sns as sns

from ._ids import pascal

if TYPE_CHECKING:
    from .auto_repair import AutoRepair


def breaker_alarms(repair: AutoRepair, topic: sns.ITopic) -> list[cloudwatch.Alarm]:
    """An alarm per group while its circuit breaker has opened (the metric lives in CloudWatch,
    so the alert does too), notifying ``topic``. A group of one node cannot trip the breaker (it
    needs more than one unhealthy node): it has none."""
    alarms = []
    for fleet in repair.fleets:
        if fleet.count < 2:
            continue
        group = fleet.group_name
        alarm = cloudwatch.Alarm(
            repair,
            f"BreakerOpen{pascal(group)}",
            alarm_description=f"Auto-repair stopped for instance group {group}: reset the breaker when safe",
            metric=repair.metric_circuit_breaker_opened(group, period=Duration.minutes(1)),
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(cloudwatch_actions.SnsAction(topic))
        alarms.append(alarm)
    return alarms


def repair_dashboard(repair: AutoRepair) -> cloudwatch.Dashboard:
    """``<cluster>-auto-repair``: healthy nodes, incidents, actions and their times, the breaker,
    the reports their nodes' health tags did not confirm and the tag-change events that came too
    late, one line per group."""
    groups = [fleet.group_name for fleet in repair.fleets]
    dashboard = cloudwatch.Dashboard(repair, "Dashboard", dashboard_name=f"{repair.cluster_name}-auto-repair")
    dashboard.add_widgets(
        cloudwatch.GraphWidget(
            title="Nodes reporting healthy at every check",
            left=[fleet.metric_healthy_nodes() for fleet in repair.fleets],
            width=24,
        ),
        cloudwatch.GraphWidget(title="Incidents", left=[repair.metric_incidents(g) for g in groups], width=8),
        cloudwatch.GraphWidget(title="Reboots", left=[repair.metric_reboots(g) for g in groups], width=8),
        cloudwatch.GraphWidget(title="Replacements", left=[repair.metric_replacements(g) for g in groups], width=8),
        cloudwatch.GraphWidget(
            title="Seconds from signal to action",
            left=[repair.metric("SecondsToAction", g, statistic="Maximum") for g in groups],
            width=12,
        ),
        cloudwatch.GraphWidget(
            title="Seconds from signal to repaired",
            left=[repair.metric_seconds_to_repair(g) for g in groups],
            width=12,
        ),
        cloudwatch.GraphWidget(
            title="Circuit breaker opened", left=[repair.metric_circuit_breaker_opened(g) for g in groups], width=12
        ),
        cloudwatch.GraphWidget(
            title="Reports their node's health tag did not confirm",
            left=[repair.metric("UnconfirmedReports", g) for g in groups],
            width=12,
        ),
        cloudwatch.GraphWidget(
            title="Tag-change events the node's tag had moved past (late or out of order)",
            left=[repair.metric("StaleTagEvents", g) for g in groups],
            width=12,
        ),
    )
    return dashboard
