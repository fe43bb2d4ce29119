"""What the orchestrator hears of a node's health besides the drain: on EKS, the central labeler.

Only the control plane writes a node's health label and taint, and only from signals it has
verified (the instance's own health tag, checked against the report): a node's credentials can
change nothing of another node. A node verified healthy also gets the protected labels of its
instance group (``node_upkeep``), so that a new node has them as soon as it is healthy, not at
the next sweep. Every call is recorded in the ledger when it fails, and never
holds up a repair.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol

from training_cluster.contract import NodeHealthStatus

from .kubernetes import HealthLabeler, protected_labels

log = logging.getLogger("training-cluster.repair")


class NodeHook(Protocol):
    def unschedulable(self, instance_id: str, reason: str, fault_type: str | None) -> str:
        """A verified fault the control plane is not acting on yet (held, deferred, dry run)."""
        ...

    def schedulable(self, instance_id: str, *, uncordon: bool, group: str | None = None) -> str:
        """A verified healthy node; ``uncordon`` when the control plane cordoned it (a reboot);
        ``group``: the instance group whose Auto Scaling group it is in now (None when it is in
        none: then no protected label is written)."""
        ...

    def gone(self, instance_id: str) -> str:
        """The instance was replaced or terminated: its Node object goes."""
        ...


class KubernetesNodes:
    """:class:`NodeHook` through the Kubernetes API (labels, taint, annotation; Node deletion)."""

    def __init__(self, labeler: HealthLabeler, accelerators: Mapping[str, str] | None = None) -> None:
        """``accelerators``: instance group -> accelerator (``Settings.group_accelerators``), for
        the protected labels."""
        self.labeler = labeler
        self.accelerators = dict(accelerators or {})

    def unschedulable(self, instance_id: str, reason: str, fault_type: str | None) -> str:
        return self._set(instance_id, "Unschedulable", reason=reason, fault_type=fault_type, cordon=None, labels=None)

    def schedulable(self, instance_id: str, *, uncordon: bool, group: str | None = None) -> str:
        labels = protected_labels(group, self.accelerators)
        cordon = False if uncordon else None
        return self._set(instance_id, "Schedulable", reason=None, fault_type=None, cordon=cordon, labels=labels)

    def gone(self, instance_id: str) -> str:
        return "node deleted" if self.labeler.delete_node(instance_id) else "no node to delete"

    def _set(
        self,
        instance_id: str,
        status: NodeHealthStatus,
        *,
        reason: str | None,
        fault_type: str | None,
        cordon: bool | None,
        labels: Mapping[str, str] | None,
    ) -> str:
        node = self.labeler.set_health(
            instance_id, status, fault_type=fault_type, reason=reason, cordon=cordon, labels=labels
        )
        return f"{node}: {status}" if node else f"no node for {instance_id}"
