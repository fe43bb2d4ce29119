"""The sweep's upkeep of the cluster's Nodes (EKS), bounded in writes and in time each sweep.

**Protected labels.** A kubelet sets its own Node's labels, so root on a node can claim any of
``training-cluster/*``. NodeRestriction refuses a kubelet every label under
``node-restriction.kubernetes.io/``, so those are set here, from what AWS says:
:data:`~training_cluster.contract.PROTECTED_LABEL_GROUP` (the instance group of the instance's
Auto Scaling group, as the sweep reads it) and
:data:`~training_cluster.contract.PROTECTED_LABEL_ACCELERATOR` (that group's accelerator,
``Settings.group_accelerators``). A node in its group's Auto Scaling group is labelled as soon
as the control plane verifies it healthy (``node_hooks``); the sweep catches the rest. The Nodes
of this cluster (its cluster label: a node group of the user's in the same EKS cluster is not
looked at here) without the protected labels are listed by label selector, a page at a time, and
EC2 asked the names of their instances once a page; one is labelled only when

- its providerID names an instance of one of this cluster's Auto Scaling groups (a Node of an
  instance of another cluster, or of none, is left alone and counted), and
- its name is the private DNS name EC2 gives that instance (what binds a Node to an instance: a
  kubelet may register only the Node of its own name, but may claim any providerID),

with a merge patch on condition of the ``resourceVersion`` it was listed at (a Node changed or
made anew since is left for the next sweep).

**Labels that went stale.** Labels once written are checked again each sweep, as they would be
given now: every Node that has them is listed, and they are removed (the same conditional merge
patch) from a Node whose providerID names no member instance any more (an instance terminated
outside the repair path, detached from its group, a Node object kept when a newer instance
reuses the name), whose instance is of another group, or whose name is not EC2's name of that
instance (a name EC2 gives no answer for this time is asked again next sweep: only another name
condemns the labels). This list is not narrowed by the cluster label, which a kubelet sets
itself: the protected labels are the control plane's alone, wherever they are. A Node is never
deleted here: it may be a live kubelet's (EKS's cloud controller removes Nodes of terminated
instances).

**Stuck nodes.** The control plane tells Kubernetes a node is ``Schedulable`` once, when its health
tag says healthy (a first boot's deep checks passed, a reboot healed it); one failed request (the
Node not registered yet, a 500) would leave it tainted for good. Each sweep lists the Nodes whose
health label is not ``Schedulable``; those whose instance is a member, with a healthy tag and no
open incident, are made ``Schedulable`` (through the labeler, which finds the Node by EC2's name
and checks its providerID). A cordon is lifted only when the ledger says the control plane's
drain set it (a reboot's); anybody else's cordon stays.

Each sweep removes stale labels from at most ``max_writes`` Nodes, labels at most ``max_writes``
and makes at most ``max_writes`` Schedulable, all within ``budget_seconds``; the rest wait for
the next sweep (they are still selected). A failure is logged and never raised: the sweep's
repairs come first.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from training_cluster.contract import (
    LABEL_CLUSTER,
    LABEL_HEALTH,
    PROTECTED_LABEL_ACCELERATOR,
    PROTECTED_LABEL_GROUP,
)

from .kubernetes import PAGE_LIMIT, HealthLabeler, protected_labels, provider_instance
from .ledger import Ledger

log = logging.getLogger("training-cluster.repair")

MAX_WRITES = 100
"""Per sweep: Nodes whose stale labels are removed, Nodes labelled, and Nodes made Schedulable,
each its own count (each write a merge patch on condition of the version listed or read)."""
BUDGET_SECONDS = 20.0
"""The upkeep's share of a sweep, from its first request; no request (to the Kubernetes API or
to EC2) starts after it."""
UNLABELLED = f"!{PROTECTED_LABEL_GROUP}"
"""The label selector of Nodes without the protected labels (and, in ``NodeUpkeep``, of this cluster)."""
LABELLED = PROTECTED_LABEL_GROUP
"""The label selector of Nodes with them."""
NOT_SCHEDULABLE = f"{LABEL_HEALTH}!=Schedulable"
"""The label selector of Nodes whose health label is not ``Schedulable`` (or is missing)."""
SHOWN = 10  # names per list in the log line


@dataclass
class UpkeepReport:
    """What one sweep's upkeep did and left."""

    unprotected: list[str] = field(default_factory=list)
    """Nodes whose protected labels were stale, and were removed."""
    labelled: list[str] = field(default_factory=list)
    """Instances whose Node got the protected labels."""
    schedulable: list[str] = field(default_factory=list)
    """Instances whose Node was made ``Schedulable`` (or found so)."""
    uncordoned: list[str] = field(default_factory=list)
    """Of those, the ones whose cordon (the control plane's) was lifted."""
    foreign: list[str] = field(default_factory=list)
    """Nodes without the protected labels whose providerID names no instance of this cluster."""
    mismatched: list[str] = field(default_factory=list)
    """Nodes whose providerID names an instance of this cluster whose EC2 name is another."""
    unnamed: list[str] = field(default_factory=list)
    """Nodes of member instances EC2 gave no name for this time: left as they are."""
    unlisted_group: list[str] = field(default_factory=list)
    """Instances of groups ``group_accelerators`` does not list: not labelled."""
    retry: list[str] = field(default_factory=list)
    """Nodes changed or gone between the list and the write: the next sweep looks again."""
    left: int = 0
    """Nodes left for the next sweep by the bound (writes or time)."""
    more: bool = False
    """A list of Nodes was not read to its end, or its Nodes not all written: the writes or the
    time ran out (the next sweep lists them again)."""
    errors: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in self.__dict__.items():
            if isinstance(value, list) and value:
                out[name] = {"count": len(value), "first": value[:SHOWN]}
            elif value and not isinstance(value, list):
                out[name] = value
        return out


class _Budget:
    def __init__(self, writes: int, deadline: float, clock: Callable[[], float], request_seconds: float) -> None:
        self.writes, self.deadline, self.clock, self.request_seconds = writes, deadline, clock, request_seconds

    @property
    def open(self) -> bool:
        return self.writes > 0 and not self.expired

    @property
    def expired(self) -> bool:
        return self.clock() >= self.deadline

    def spend(self) -> bool:
        """One write, if the bound allows it."""
        if not self.open:
            return False
        self.writes -= 1
        return True

    def timeout(self) -> float:
        """A request's timeout: the client's, ending near the deadline (a second after it at most)."""
        return min(self.request_seconds, max(1.0, self.deadline - self.clock()))


class NodeUpkeep:
    """The sweep's Node upkeep (see the module): ``upkeep(members, healthy)``, where ``members``
    maps each instance of the cluster's Auto Scaling groups (as AWS lists them now) to its
    instance group, and ``healthy`` holds those whose health tag says healthy. ``cluster``: the
    value of the Nodes' cluster label (the EKS cluster's name); None selects every Node."""

    def __init__(
        self,
        labeler: HealthLabeler,
        ledger: Ledger,
        accelerators: Mapping[str, str],
        *,
        cluster: str | None = None,
        max_writes: int = MAX_WRITES,
        budget_seconds: float = BUDGET_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.labeler = labeler
        self.ledger = ledger
        self.accelerators = dict(accelerators)
        ours = f"{LABEL_CLUSTER}={cluster}," if cluster else ""
        self.unlabelled, self.not_schedulable = ours + UNLABELLED, ours + NOT_SCHEDULABLE
        self.max_writes = max_writes
        self.budget_seconds = budget_seconds
        self.clock = clock

    def __call__(self, members: Mapping[str, str], healthy: Collection[str]) -> UpkeepReport:
        report = UpkeepReport()
        deadline = self.clock() + self.budget_seconds
        for step in (self._revalidate, self._protect, self._unstick):  # each its own writes, all within the time
            budget = _Budget(self.max_writes, deadline, self.clock, self.labeler.api.timeout_seconds)
            try:
                step(members, healthy, budget, report)
            except Exception as error:  # the sweep's repairs are done; a broken API must not fail the sweep
                report.errors.append(f"{step.__name__.strip('_')}: {str(error)[:300]}")
                log.warning("node upkeep (%s) failed: %s", step.__name__.strip("_"), error)
        log.info(json.dumps({"node_upkeep": report.summary()}))
        return report

    def _revalidate(
        self, members: Mapping[str, str], healthy: Collection[str], budget: _Budget, report: UpkeepReport
    ) -> None:
        """The protected labels removed from the Nodes they no longer describe (see the module):
        every Node that has them, whatever its cluster label says (a kubelet sets that label
        itself). A member instance EC2 gives no name for is left as it is (asked again next
        sweep): only a name that is another's condemns the labels. Without the groups'
        accelerators nothing is judged (``_protect`` reports it)."""
        if not self.accelerators or not budget.open:
            return
        for page in self._pages(LABELLED, budget, report):
            names = self._names(page, members, budget)
            if names is None:
                report.more = True
                return
            for instance_id, node in page:
                metadata = node.get("metadata") or {}
                labels, name = metadata.get("labels") or {}, str(metadata.get("name", ""))
                group = members.get(instance_id or "")
                if group is not None and instance_id not in names:
                    report.unnamed.append(name)
                    continue
                wanted = protected_labels(group, self.accelerators) if names.get(instance_id or "") == name else None
                had = {key: labels.get(key) for key in (PROTECTED_LABEL_GROUP, PROTECTED_LABEL_ACCELERATOR)}
                if wanted is not None and had == wanted:
                    continue
                if not budget.spend():
                    report.left += 1
                    continue
                log.warning("node %s (providerID %s): protected labels %s are stale: removed", name, instance_id, had)
                if self._write(node, dict.fromkeys(had), "revalidate", budget, report):
                    report.unprotected.append(name)
            if not budget.open:  # no next page is asked for once the writes or the time are spent
                report.more = True
                return

    def _protect(
        self, members: Mapping[str, str], healthy: Collection[str], budget: _Budget, report: UpkeepReport
    ) -> None:
        """The protected labels, on the Nodes of member instances that lack them. Names are asked
        of EC2 a page at a time; only a Node whose name is its instance's takes one of the
        sweep's writes (an impostor costs a list entry, not a write)."""
        if not self.accelerators:
            report.errors.append("protect: no group accelerators (GROUP_ACCELERATORS): no Node labelled")
            return
        if not budget.open:
            return
        for page in self._pages(self.unlabelled, budget, report):
            candidates = []
            for instance_id, node in page:
                name = str((node.get("metadata") or {}).get("name", ""))
                if instance_id is None or instance_id not in members:
                    report.foreign.append(name)
                elif members[instance_id] not in self.accelerators:
                    report.unlisted_group.append(instance_id)
                else:
                    candidates.append((instance_id, node))
            names = self._names(candidates, members, budget)
            if names is None:
                report.more = True
                break
            for instance_id, node in candidates:
                assert instance_id is not None  # candidates are members
                name = node["metadata"]["name"]
                if names.get(instance_id) != name:
                    if instance_id in names:
                        report.mismatched.append(name)
                        why = f"whose node is {names[instance_id]}"
                    else:
                        report.unnamed.append(name)
                        why = "which EC2 gave no name for this time"
                    log.warning("node %s claims %s, %s: left unlabelled", name, instance_id, why)
                    continue
                if not budget.spend():
                    report.left += 1
                    report.more = True
                    continue
                labels = protected_labels(members[instance_id], self.accelerators)
                assert labels is not None  # the group is listed
                if self._write(node, labels, "protect", budget, report):
                    report.labelled.append(instance_id)
            if not budget.open:
                break
        if report.foreign:
            log.warning("nodes that name no instance of this cluster, left unlabelled: %s", report.foreign[:SHOWN])

    def _write(
        self, node: dict[str, Any], labels: Mapping[str, str | None], step: str, budget: _Budget, report: UpkeepReport
    ) -> bool:
        """One conditional label write; a Node changed since it was listed goes to ``retry``, a
        failure to ``errors`` (one node's failure never stops the others'). Whether it was written."""
        name = str((node.get("metadata") or {}).get("name", ""))
        try:
            written = self.labeler.write_labels(node, labels, timeout=budget.timeout())
        except Exception as error:
            report.errors.append(f"{step} {name}: {str(error)[:200]}")
            return False
        if not written:
            report.retry.append(name)
        return written

    def _pages(
        self, selector: str, budget: _Budget, report: UpkeepReport
    ) -> Iterator[list[tuple[str | None, dict[str, Any]]]]:
        """The Nodes ``selector`` selects, a page (``PAGE_LIMIT``) at a time, each with the
        instance its providerID names; no page is asked for once the time is up."""
        page: list[tuple[str | None, dict[str, Any]]] = []
        for node in self.labeler.list_nodes(selector, timeout=budget.timeout()):
            if budget.expired:
                report.more = True
                break
            page.append((provider_instance(node), node))
            if len(page) == PAGE_LIMIT:
                yield page
                page = []
        if page:
            yield page

    def _names(
        self, nodes: Sequence[tuple[str | None, dict[str, Any]]], members: Mapping[str, str], budget: _Budget
    ) -> dict[str, str] | None:
        """EC2's names of the member instances of ``nodes`` (one call); None once the time is up."""
        if budget.expired:
            return None
        return self.labeler.learn_names(sorted({i for i, _ in nodes if i is not None and i in members}))

    def _unstick(
        self, members: Mapping[str, str], healthy: Collection[str], budget: _Budget, report: UpkeepReport
    ) -> None:
        """``Schedulable`` for healthy member instances with no open incident whose Node is not."""
        if not budget.open:
            return
        stuck: dict[str, None] = {}
        for node in self.labeler.list_nodes(self.not_schedulable, timeout=budget.timeout()):
            if budget.expired:  # as above
                report.more = True
                break
            instance_id = provider_instance(node)  # a hint: the labeler finds the Node by EC2's name
            if instance_id is not None and instance_id in members and instance_id in healthy:
                stuck[instance_id] = None
        for instance_id in stuck:
            if not budget.open:
                report.left += 1
                continue
            state = self.ledger.instance(instance_id)
            if state.get("status") == "open":
                continue  # the incident's own steps say what the node is
            if not budget.spend():
                report.left += 1
                continue
            uncordon = bool(state.get("cordoned_by"))
            try:
                named = self.labeler.set_health(
                    instance_id, "Schedulable", cordon=False if uncordon else None, timeout=budget.timeout()
                )
            except Exception as error:  # as above
                report.errors.append(f"schedulable {instance_id}: {str(error)[:200]}")
                continue
            if named is not None:
                report.schedulable.append(instance_id)
                if uncordon:
                    self.ledger.uncordoned(instance_id)
                    report.uncordoned.append(instance_id)
