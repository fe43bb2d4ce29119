"""A ``backend: hyperpod`` cluster as the command line reads it: its nodes from SageMaker
(``ListClusterNodes``), its groups' counts from that list and from the ledger's record of
HyperPod's cluster state events, and HyperPod's repairs from the same ledger as ours.

HyperPod repairs its own nodes, so nothing here acts: ``repair`` and ``reset-breaker`` say which
HyperPod command does the job instead (:func:`repair_instead`)."""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .rules.hyperpod import ML_PREFIX

if TYPE_CHECKING:  # operate imports this module
    from .operate import Cluster, GroupStatus, Node

_FAULT_TYPE = re.compile(r"fault type (\w+)")
RUNNING = "Running"
FAILED = ("Failure", "NotFound")
"""HyperPod's node states counted unhealthy."""
BECOMING = ("Pending", "DeepHealthCheckInProgress", "SystemUpdating", "AttachInProgress")
"""HyperPod's node states counted unknown: not yet, or not now, a node that takes work."""
NO_BREAKER = "n/a"
"""HyperPod has no circuit breaker of ours: what ``status`` shows in its place."""


def nodes(cluster: Cluster) -> list[Node]:
    """One :class:`Node` per node HyperPod lists, with the ledger's record of its last incident."""
    from .operate import Node

    listed = _list(cluster)
    ids = [str(n["InstanceId"]) for n in listed]
    ledger = cluster.ledger.instance_states(ids) if "RepairLedgerTableName" in cluster.outputs else {}
    now = time.time()
    found = []
    for summary in sorted(listed, key=lambda n: (str(n.get("InstanceGroupName", "")), str(n["InstanceId"]))):
        instance_id = str(summary["InstanceId"])
        status = str((summary.get("InstanceStatus") or {}).get("Status", "unknown"))
        launched = summary.get("LaunchTime")
        launched_at = launched.timestamp() if isinstance(launched, datetime) else None
        incident = ledger.get(instance_id)
        open_incident = bool(incident and incident.get("status") == "open")
        found.append(
            Node(
                instance_id=instance_id,
                group=str(summary.get("InstanceGroupName", "?")),
                instance_type=str(summary.get("InstanceType", "")).removeprefix(ML_PREFIX),
                zone="-",  # ListClusterNodes does not say; every node is in the cluster's compute subnet
                state=status,
                launched_at=launched_at,
                uptime_seconds=int(now - launched_at) if launched_at is not None and status == RUNNING else None,
                health="unhealthy" if open_incident else ("healthy" if status == RUNNING else "no report"),
                failures=[_fault_type(str(incident.get("fault", "")))] if open_incident and incident else [],
                boot_id="",
                status_checks="-",
                incident=incident,
            )
        )
    return found


def status(cluster: Cluster, listed: list[Node]) -> list[GroupStatus]:
    """Per instance group: HyperPod's target count (from its last state event in the ledger,
    else the nodes listed), nodes running, those with an open incident."""
    from .operate import GroupStatus

    groups = sorted({n.group for n in listed})
    ledger = cluster.ledger.states([f"group#{g}" for g in groups]) if "RepairLedgerTableName" in cluster.outputs else {}
    result = []
    for group in groups:
        members = [n for n in listed if n.group == group]
        running = [n for n in members if n.state == RUNNING]
        unhealthy = [n for n in members if n.health == "unhealthy" or n.state in FAILED]
        unknown = [n for n in members if n not in unhealthy and n.state in BECOMING]
        state = ledger.get(f"group#{group}", {})
        target = state.get("target_count")
        result.append(
            GroupStatus(
                group=group,
                auto_scaling_group=f"HyperPod {cluster.hyperpod}",
                desired=int(target) if isinstance(target, int) and target >= 0 else len(members),
                in_service=len(running),
                healthy=len([n for n in running if n.health != "unhealthy"]),
                unhealthy=len(unhealthy),
                unknown=len(unknown),
                being_repaired=len(unhealthy),
                breaker=NO_BREAKER,
                breaker_reason="",
                held=[],
                capacity_backoff_until=None,
            )
        )
    return result


def repair_instead(cluster: Cluster, action: str | None, node: str | None) -> str:
    """What an operator runs instead of ``repair`` / ``reset-breaker`` on a HyperPod cluster."""
    if action is None:
        return (
            f"{cluster.stack} runs on SageMaker HyperPod, which repairs its own nodes: there is no circuit "
            "breaker of ours to reset"
        )
    verb = {"reboot": "batch-reboot-cluster-nodes", "replace": "batch-replace-cluster-nodes"}[action]
    return (
        f"{cluster.stack} runs on SageMaker HyperPod, which repairs its own nodes: ask it with "
        f"`aws sagemaker {verb} --cluster-name {cluster.hyperpod} --node-ids {node} --region {cluster.region}`; "
        "its events reach the ledger (`training-cluster incidents`)"
    )


def session_target(cluster: Cluster, node: Node) -> str:
    """Session Manager's target for a HyperPod node: ``sagemaker-cluster:<cluster id>_<group>-<instance id>``."""
    cluster_id = cluster.outputs.get("HyperPodClusterArn", "").rsplit("/", 1)[-1]
    return f"sagemaker-cluster:{cluster_id}_{node.group}-{node.instance_id}"


def _fault_type(reason: str) -> str:
    """HyperPod's fault type (``... detected fault type NvidiaErrorTerminate ...``), or the reason's start."""
    found = _FAULT_TYPE.search(reason)
    return found.group(1) if found else reason[:60]


def _list(cluster: Cluster) -> list[dict[str, Any]]:
    sagemaker = cluster.client("sagemaker")
    params: dict[str, Any] = {"ClusterName": cluster.hyperpod, "MaxResults": 100}
    found: list[dict[str, Any]] = []
    while True:
        page = sagemaker.list_cluster_nodes(**params)
        found += page.get("ClusterNodeSummaries", [])
        if not page.get("NextToken"):
            return found
        params["NextToken"] = page["NextToken"]
