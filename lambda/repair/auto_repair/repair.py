"""Decide and act: from health signals to observe, reboot or replace, within the safety limits.

For each signal about a cluster instance (the agent's own reports only once the instance's
health tag confirms them, AWS's tag-change events only while the tag still says what they do,
see ``identity``): the policy decides; a reboot-class fault on a node that was rebooted for a
fault within the recurrence window, seen from a *new* boot, is replaced instead (signals from the
boot that was rebooted are the same incident). An incident opens with a conditional write
(duplicates and concurrent copies of an event act once). Before acting: the
group's circuit breaker (more than the threshold of the group unhealthy at once, and more than
one node; or, whatever the group's size, more than an absolute number of its nodes, or of the
whole cluster's: hold the nodes and notify until someone resets it; the reset repairs the held
nodes that still fail), the capacity backoff after an insufficient-capacity launch failure, and at
most N replacements in flight per group. A replacement drains the node (orchestrator hook),
captures evidence through SSM Run Command with a bounded wait, then terminates the instance
through its Auto Scaling group without lowering the desired capacity, so the new node comes up
with the same launch template, placement group and capacity. Every step is written to the
ledger; actions are announced on SNS and EventBridge and counted in CloudWatch. The sweep
(every minute) adds failed EC2 status checks (not of a node rebooted here within
``REBOOT_GRACE_SECONDS``: that is the reboot) and health tags that no incident has taken up;
on EKS it then keeps the Nodes in step, within a bound (``node_upkeep``): the protected labels
from AWS's word, and ``Schedulable`` for healthy nodes a failed request left tainted or cordoned.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from training_cluster.repair_policy import ACTIONS, Action, most_severe

from .aws import Clients, with_retries
from .evidence import capture_evidence
from .fleet import Fleet
from .identity import confirm, health_tags, still_says
from .ledger import Ledger
from .node_hooks import NodeHook
from .node_upkeep import NodeUpkeep, UpkeepReport
from .orchestrator import DrainHook, Orchestrator
from .report import Reporter
from .settings import Settings
from .signals import Malformed, Signal, parse_health_tag

log = logging.getLogger("training-cluster.repair")

# After a reboot this control plane started, the instance's EC2 status checks may read impaired
# while it shuts down (EC2 forces a hard reboot after a few minutes) and boots again: the sweep
# takes no failed status check of it for a fault until this much has passed. (ParallelCluster's
# clustermgtd replaces a node only once its status check has failed for 180 s.)
REBOOT_GRACE_SECONDS = 300


@dataclass
class Outcome:
    instance_id: str
    # observed | rebooted | replaced | duplicate | suppressed | deferred | dry-run | ignored | closed | unconfirmed
    # | stale
    result: str
    action: Action | None = None
    incident_id: str | None = None


class Repairer:
    def __init__(
        self,
        settings: Settings,
        clients: Clients,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.clients = clients
        self.clock = clock
        self.sleep = sleep
        self.ledger = Ledger(clients.table(settings.table_name), clock)
        self.report = Reporter(settings, clients, self.ledger, clock=clock, sleep=sleep)
        self.fleet = Fleet(settings, clients, self.ledger, sleep)
        self.orchestrator = Orchestrator(self.ledger)
        self.node_upkeep: NodeUpkeep | None = None
        """Set on EKS: the sweep's upkeep of the Nodes (:mod:`.node_upkeep`)."""
        self.upkept: UpkeepReport | None = None  # what the last sweep's upkeep did
        self._reasons: dict[str, str] = {}  # incident id -> the signal's reasons, this invocation

    @property
    def drain_hook(self) -> DrainHook | None:
        """Set by an orchestrator integration (Slurm's Run Command, EKS's evictions): see :class:`Orchestrator`."""
        return self.orchestrator.drain_hook

    @drain_hook.setter
    def drain_hook(self, hook: DrainHook | None) -> None:
        self.orchestrator.drain_hook = hook

    @property
    def node_hook(self) -> NodeHook | None:
        """Set on EKS: the node's health label and taint, from verified signals only (:mod:`.node_hooks`)."""
        return self.orchestrator.node_hook

    @node_hook.setter
    def node_hook(self, hook: NodeHook | None) -> None:
        self.orchestrator.node_hook = hook

    # entry points
    def new_invocation(self) -> None:
        """Forget what was read from AWS in an earlier invocation of a warm function."""
        self.fleet.sizes = {}
        self._reasons = {}

    def handle(self, signals: Iterable[Signal]) -> list[Outcome]:
        """Act on signals; all of them count towards the circuit breaker before any acts. The
        agent's claims, and AWS's tag-change events (which may come late or out of order), are
        checked against their instances' health tags as they are now (one read for all)."""
        signals = list(signals)
        memberships = self.fleet.memberships([s.instance_id for s in signals])
        tags = health_tags(
            self.clients,
            {s.instance_id for s in signals if (s.claim or s.recheck) and s.instance_id in memberships},
            self.sleep,
        )
        opened: list[tuple[str, str, Action, str]] = []
        outcomes: list[Outcome] = []
        for claimed in signals:
            group = memberships.get(claimed.instance_id)
            if group is None:
                outcomes.append(Outcome(claimed.instance_id, "ignored"))
                continue
            signal = confirm(claimed, tags.get(claimed.instance_id)) if claimed.claim else claimed
            if isinstance(signal, str):
                outcomes.append(self._unconfirmed(claimed, group, signal))
                continue
            signal = still_says(signal, tags.get(signal.instance_id)) if signal.recheck else signal
            if isinstance(signal, str):
                outcomes.append(self._stale(claimed, group, signal))
                continue
            if signal.terminated:
                outcomes.append(self._terminated(signal.instance_id, group))
            elif signal.healthy:
                outcomes.append(self._healthy(signal, group))
            else:
                result = self._open(signal, group)
                if isinstance(result, Outcome):
                    outcomes.append(result)
                else:
                    opened.append((signal.instance_id, group, *result))
        for instance_id, group, action, incident_id in opened:
            outcomes.append(self._act(instance_id, group, action, incident_id))
        return outcomes

    def sweep(self) -> list[Outcome]:
        """The scheduled pass: failed EC2 status checks, health tags that say unhealthy but were
        never acted on, finished and deferred replacements; then, on EKS, the Nodes' upkeep."""
        groups = self.fleet.groups()
        ids = [m["InstanceId"] for _, members in groups.values() for m in members]
        signals = [
            Signal(instance_id=i, source="status-sweep", failures=(failure,))
            for i, failure in self.fleet.impaired(ids).items()
            if not self._restarting(i)
        ]
        tags = self.fleet.health(ids)
        signals += [s for s in self.fleet.tagged_unhealthy(tags) if self._unseen(s)]
        outcomes = self.handle(signals)
        # Retry deferred replacements, but not those this pass has just acted on or deferred.
        outcomes += self._reconcile(groups, handled={o.instance_id for o in outcomes if o.result != "duplicate"})
        if self.node_upkeep is not None:
            members = {
                m["InstanceId"]: group
                for group, in_group in groups.values()
                for m in in_group
                if not m["LifecycleState"].startswith(("Terminat", "Detach"))  # leaving: not labelled
            }
            self.upkept = self.node_upkeep(members, {i for i, tag in tags.items() if tag.healthy})
        return outcomes

    def launch_failed(self, asg_name: str, message: str) -> Outcome | None:
        """An Auto Scaling launch failed: back off replacements on no capacity, and tell people."""
        group = self.settings.groups.get(asg_name)
        if group is None:
            return None
        no_capacity = "insufficient" in message.lower() and "capacity" in message.lower()
        if no_capacity:
            until = self.clock() + self.settings.capacity_backoff_seconds
            self.ledger.set_group(group, capacity_backoff_until=str(until))
        self.report.notify(
            f"{'No capacity' if no_capacity else 'Launch failed'} in instance group {group}",
            f"Auto Scaling group {asg_name} could not launch an instance: {message}\n"
            + (
                f"Replacements in this group wait {self.settings.capacity_backoff_seconds} s before trying again."
                if no_capacity
                else ""
            ),
        )
        return Outcome(asg_name, "backoff" if no_capacity else "notified")

    def reset_breaker(self, group: str) -> list[Outcome]:
        """A person resets the group's breaker: the nodes it held that still fail are repaired
        (replacements within ``max_parallel_replacements``, the rest retried by the sweep), and
        are not counted again towards the breaker; those that recovered are closed."""
        if group not in set(self.settings.groups.values()):
            log.warning("reset_circuit_breaker: %r is not an instance group of this cluster", group[:80])
            return []
        held = sorted(self.ledger.reset_breaker(group))
        self.report.notify(
            f"Auto-repair resumed for instance group {group}",
            "The circuit breaker was reset by hand."
            + (f" Held nodes, repaired now if they still fail: {', '.join(held)}." if held else ""),
        )
        states = {i: self.ledger.instance(i) for i in held}
        states = {i: s for i, s in states.items() if s.get("status") == "open" and s.get("action") in ACTIONS}
        failing = self.fleet.still_failing(states)
        outcomes = []
        for instance_id, state in states.items():
            incident_id, action = str(state["incident_id"]), state["action"]
            self.ledger.record(incident_id, "released", reason="breaker reset")
            if instance_id in failing:
                outcomes.append(self._act(instance_id, group, action, incident_id))
                continue
            if self.ledger.close_incident(instance_id, "recovered while held") is not None:
                self.ledger.mark_unhealthy(group, instance_id, False)
                self.ledger.record(incident_id, "closed", outcome="recovered while held")
                self.orchestrator.schedulable(instance_id, incident_id, uncordon=False, group=None)  # the sweep labels
                outcomes.append(Outcome(instance_id, "closed", None, incident_id))
        return outcomes

    def manual(self, instance_id: str, action: Action, requested_by: str) -> Outcome:
        """A person asks for a reboot or a replacement (``training-cluster repair``): an incident
        like any other, through the same breaker, limits, drain, evidence and ledger; it counts
        towards the breaker while it is open. Only an instance in one of the cluster's Auto Scaling
        groups now; an open incident is escalated to a replacement, or left as it is."""
        found = with_retries(
            self.clients.autoscaling.describe_auto_scaling_instances, sleep=self.sleep, InstanceIds=[instance_id]
        )["AutoScalingInstances"]
        group = next((self.settings.groups.get(i["AutoScalingGroupName"]) for i in found), None)
        if group is None:
            log.warning("repair request: %s is not in an instance group of this cluster", instance_id)
            return Outcome(instance_id, "ignored")
        boot_id = ""  # the boot being repaired, so a late report from it never closes the incident
        tag = health_tags(self.clients, [instance_id], self.sleep).get(instance_id)
        if tag is not None:
            with suppress(Malformed):
                boot_id = parse_health_tag(tag).boot_id
        reason = f"manual {action}: requested by {requested_by}"
        incident_id = uuid.uuid4().hex
        self._reasons[incident_id] = reason
        if self.ledger.open_incident(instance_id, incident_id, group, action, boot_id, "manual"):
            self.ledger.mark_unhealthy(group, instance_id, True)
            seen = {"instance_id": instance_id, "instance_group": group, "source": "manual", "signal": reason}
            self.ledger.record(incident_id, "signal", **seen)
            self.ledger.record(incident_id, "decision", action=action)
            self.report.metric("Incidents", group)
            return self._act(instance_id, group, action, incident_id)
        state = self.ledger.instance(instance_id)
        open_id = str(state.get("incident_id", ""))
        if action == "replace" and self.ledger.escalate(instance_id, open_id, "replace"):
            self.ledger.record(open_id, "decision", action="replace", signal=reason, note="escalated by hand")
            self._reasons[open_id] = reason
            return self._act(instance_id, group, "replace", open_id)
        self.ledger.record(open_id, "duplicate", source="manual", signal=reason)
        return Outcome(instance_id, "duplicate", state.get("action"), open_id)

    # steps
    def _restarting(self, instance_id: str) -> bool:
        """Rebooted by this control plane within ``REBOOT_GRACE_SECONDS``: a failed status check
        is the reboot itself, not a fault (nor a reason to escalate the reboot's incident)."""
        if not self.ledger.rebooted_within(instance_id, REBOOT_GRACE_SECONDS):
            return False
        log.info("sweep: %s is impaired within %d s of its reboot: not acted on yet", instance_id, REBOOT_GRACE_SECONDS)
        return True

    def _unseen(self, signal: Signal) -> bool:
        """A health tag's fault that no incident has taken up: not one the policy only observes,
        not on a node with an open incident, not from a boot an incident already covered."""
        action = most_severe([self.settings.policy.decide(f.check, f.code) for f in signal.failures])
        state = self.ledger.instance(signal.instance_id)
        covered = signal.boot_id in (state.get("boot_id"), state.get("rebooted_boot_id"))
        return action != "observe" and state.get("status") != "open" and not covered

    def _open(self, signal: Signal, group: str) -> Outcome | tuple[Action, str]:
        action = most_severe([self.settings.policy.decide(f.check, f.code) for f in signal.failures])
        state = self.ledger.instance(signal.instance_id)
        reasons = "; ".join(
            f"{f.check}{' ' + f.code if f.code else ''}{': ' + f.message if f.message else ''}" for f in signal.failures
        )
        if action != "observe" and signal.boot_id and signal.boot_id == state.get("rebooted_boot_id"):
            # From the boot that was rebooted (a late copy, a retry): the same incident, never a recurrence.
            incident = str(state.get("incident_id", ""))
            self.ledger.record(incident, "duplicate", source=signal.source, signal=reasons, note="the rebooted boot")
            return Outcome(signal.instance_id, "duplicate", action, incident)
        last_reboot = float(state.get("last_reboot_at", "0") or 0)
        recurred = self.clock() - last_reboot < self.settings.recurrence_window_seconds
        if action == "reboot" and (recurred or not self.settings.reboot_before_replace):
            action = "replace"
            reasons += "; rebooted for a fault within the window" if recurred else "; reboot_before_replace is off"
        incident_id = uuid.uuid4().hex
        seen = {"instance_id": signal.instance_id, "instance_group": group, "source": signal.source, "signal": reasons}
        if action == "observe":
            self.ledger.record(incident_id, "observed", **seen)
            self.report.metric("Observations", group)
            return Outcome(signal.instance_id, "observed", "observe", incident_id)
        self._reasons[incident_id] = reasons
        if self.ledger.open_incident(signal.instance_id, incident_id, group, action, signal.boot_id, signal.source):
            self.ledger.mark_unhealthy(group, signal.instance_id, True)
            self.ledger.record(incident_id, "signal", **seen)
            self.ledger.record(incident_id, "decision", action=action)
            self.report.metric("Incidents", group)
            return action, incident_id
        # An incident is open already: a copy of its event, or a worse fault on the same node.
        open_id = str(state.get("incident_id", "")) or str(self.ledger.instance(signal.instance_id).get("incident_id"))
        if action == "replace" and self.ledger.escalate(signal.instance_id, open_id, "replace"):
            self.ledger.record(open_id, "decision", action="replace", signal=reasons, note="escalated from reboot")
            self._reasons[open_id] = reasons
            return "replace", open_id
        self.ledger.record(open_id, "duplicate", source=signal.source, signal=reasons)
        return Outcome(signal.instance_id, "duplicate", action, open_id)

    def _act(self, instance_id: str, group: str, action: Action, incident_id: str) -> Outcome:
        state = self.ledger.group(group)
        if state.get("breaker") == "open":
            self.ledger.hold(group, instance_id)
            self.ledger.record(incident_id, "held", reason="breaker open")
            self.orchestrator.unschedulable(instance_id, incident_id, self._reason(incident_id))
            return Outcome(instance_id, "suppressed", action, incident_id)
        unhealthy = set(state.get("unhealthy", set()))
        reason = self._too_many(group, unhealthy)
        if reason is not None:
            if self.ledger.open_breaker(group, reason):
                self.report.notify(
                    f"Auto-repair stopped for instance group {group}",
                    f"{reason}. No node of the group is rebooted or replaced until the breaker is reset "
                    f'(invoke the repair function with {{"reset_circuit_breaker": "{group}"}}). '
                    f"Unhealthy: {', '.join(sorted(unhealthy))}.",
                )
                self.report.metric("CircuitBreakerOpened", group)
            self.ledger.hold(group, instance_id)
            self.ledger.record(incident_id, "held", reason=f"breaker open: {reason}")
            self.orchestrator.unschedulable(instance_id, incident_id, self._reason(incident_id))
            return Outcome(instance_id, "suppressed", action, incident_id)
        if self.settings.dry_run:
            if self.ledger.announce_once(instance_id, incident_id, action):  # once per decision, not per sweep
                self.ledger.record(incident_id, "dry-run", action=action)
                self.report.announce(instance_id, group, action, incident_id, dry_run=True)
                self.orchestrator.unschedulable(instance_id, incident_id, self._reason(incident_id))
            return Outcome(instance_id, "dry-run", action, incident_id)
        if action == "reboot":
            return self._reboot(instance_id, group, incident_id)
        return self._replace(instance_id, group, incident_id)

    def _too_many(self, group: str, unhealthy: set[str]) -> str | None:
        """Why the group's breaker opens, or None: more than the threshold of the group unhealthy at
        once (two nodes at least), more than ``max_unhealthy_per_group`` whatever its size, or more
        than ``max_unhealthy_in_cluster`` across every group of the cluster."""
        count, size = len(unhealthy), self.fleet.group_size(group)
        percent = self.settings.unhealthy_threshold_percent
        if count > 1 and count * 100 > percent * size:
            return f"{count} of {size} nodes unhealthy at once (limit {percent:g}%)"
        if count > self.settings.max_unhealthy_per_group:
            return f"{count} nodes unhealthy at once (limit {self.settings.max_unhealthy_per_group} a group)"
        others = sorted(set(self.settings.groups.values()) - {group})
        total = count + sum(len(self.ledger.group(other).get("unhealthy", set())) for other in others)
        if total > self.settings.max_unhealthy_in_cluster:
            return f"{total} nodes of the cluster unhealthy at once (limit {self.settings.max_unhealthy_in_cluster})"
        return None

    def _reboot(self, instance_id: str, group: str, incident_id: str) -> Outcome:
        self.orchestrator.start_drain(instance_id, incident_id, "reboot", self._reason(incident_id) or "auto-repair")()
        with_retries(self.clients.ec2.reboot_instances, sleep=self.sleep, InstanceIds=[instance_id])
        self.ledger.rebooted(instance_id)
        self.ledger.record(incident_id, "action", action="reboot")
        self.report.metric("Reboots", group)
        self.report.time_since_first_signal(incident_id, group)
        self.report.announce(instance_id, group, "reboot", incident_id)
        return Outcome(instance_id, "rebooted", "reboot", incident_id)

    def _replace(self, instance_id: str, group: str, incident_id: str) -> Outcome:
        backoff = float(self.ledger.group(group).get("capacity_backoff_until", "0") or 0)
        if self.clock() < backoff:
            self.ledger.record(incident_id, "deferred", reason="no capacity: backing off")
            self.orchestrator.unschedulable(instance_id, incident_id, self._reason(incident_id))
            return Outcome(instance_id, "deferred", "replace", incident_id)
        if not self.ledger.start_replacement(group, instance_id, self.settings.max_parallel_replacements):
            self.ledger.record(
                incident_id, "deferred", reason=f"{self.settings.max_parallel_replacements} replacement(s) in flight"
            )
            self.orchestrator.unschedulable(instance_id, incident_id, self._reason(incident_id))
            return Outcome(instance_id, "deferred", "replace", incident_id)
        drained = self.orchestrator.start_drain(
            instance_id, incident_id, "replace", self._reason(incident_id) or "auto-repair"
        )
        # while the drain runs: the waits overlap
        capture_evidence(
            self.clients, self.settings, self.ledger, instance_id, incident_id, clock=self.clock, sleep=self.sleep
        )
        drained()
        try:
            with_retries(
                self.clients.autoscaling.terminate_instance_in_auto_scaling_group,
                sleep=self.sleep,
                InstanceId=instance_id,
                ShouldDecrementDesiredCapacity=False,
            )
        except ClientError as error:
            self.ledger.finish_replacement(group, instance_id)
            self.ledger.record(incident_id, "failed", action="replace", error=str(error))
            raise
        self.ledger.set_instance(instance_id, replace_started_at=str(self.clock()))
        self.ledger.record(incident_id, "action", action="replace")
        self.orchestrator.gone(instance_id, incident_id)
        self.report.metric("Replacements", group)
        self.report.time_since_first_signal(incident_id, group)
        self.report.announce(instance_id, group, "replace", incident_id)
        return Outcome(instance_id, "replaced", "replace", incident_id)

    def _reason(self, incident_id: str) -> str | None:
        """The signal's reasons, when this invocation saw the signal (not a retry by the sweep)."""
        return self._reasons.get(incident_id)

    def _unconfirmed(self, claim: Signal, group: str, reason: str) -> Outcome:
        """A report its instance's health tag does not confirm: no action; counted (one ledger
        item per instance), a metric and a log line. Nothing waits on it."""
        count = self.ledger.unconfirmed(claim.instance_id, reason)
        self.report.metric_in_log("UnconfirmedReports", group, instance_id=claim.instance_id, reason=reason)
        log.warning("unconfirmed report about %s (%d so far): %s", claim.instance_id, count, reason)
        return Outcome(claim.instance_id, "unconfirmed")

    def _stale(self, event: Signal, group: str, reason: str) -> Outcome:
        """A tag-change event the instance's health tag no longer says (late, repeated after the
        tag moved on, or out of order): no action; counted like an unconfirmed report (one
        ledger item per instance, a metric and a log line). The event for the tag's current
        value, or the sweep, acts on what the tag says now."""
        count = self.ledger.stale(event.instance_id, reason)
        self.report.metric_in_log("StaleTagEvents", group, instance_id=event.instance_id, reason=reason)
        log.info("stale tag-change event about %s (%d so far): %s", event.instance_id, count, reason)
        return Outcome(event.instance_id, "stale")

    def _healthy(self, signal: Signal, group: str) -> Outcome:
        """A node reports healthy again: close a reboot incident once the node has rebooted (a new
        boot id). A replacement goes on regardless: only the old instance's termination ends it."""
        instance_id = signal.instance_id
        state = self.ledger.instance(instance_id)
        # the protected labels only for an instance in the group's Auto Scaling group now
        label_group = group if instance_id in self.fleet.in_groups else None
        if state.get("status") != "open":
            self.orchestrator.schedulable(instance_id, None, uncordon=False, group=label_group)
            return Outcome(instance_id, "ignored")
        if state.get("action") != "reboot":
            return Outcome(instance_id, "ignored")  # a replacement goes on: the node stays unschedulable
        if signal.boot_id and signal.boot_id == state.get("boot_id"):
            return Outcome(instance_id, "ignored")  # the same boot: the reboot has not happened yet
        incident_id = self.ledger.close_incident(instance_id, "recovered")
        if incident_id is None:
            return Outcome(instance_id, "ignored")
        self.orchestrator.schedulable(instance_id, incident_id, uncordon=True, group=label_group)
        self.ledger.mark_unhealthy(group, instance_id, False)
        self.ledger.record(incident_id, "closed", outcome="recovered")
        self.report.time_since_first_signal(incident_id, group, "SecondsToRepair")
        return Outcome(instance_id, "closed", None, incident_id)

    def _terminated(self, instance_id: str, group: str) -> Outcome:
        replaced = self.ledger.finish_replacement(group, instance_id)
        incident_id = self.ledger.close_incident(instance_id, "replaced" if replaced else "terminated")
        self.ledger.mark_unhealthy(group, instance_id, False)
        if incident_id is None:
            return Outcome(instance_id, "ignored")
        self.ledger.record(incident_id, "closed", outcome="replaced" if replaced else "terminated")
        self.report.time_since_first_signal(incident_id, group, "SecondsToRepair")
        if replaced:
            self._repeated_replacements(group)
            return Outcome(instance_id, "closed", "replace", incident_id)
        return Outcome(instance_id, "closed", None, incident_id)

    def _reconcile(self, groups: dict[str, tuple[str, list[dict[str, Any]]]], handled: set[str]) -> list[Outcome]:
        """Close replacements whose instance has left its group; retry deferred ones (not while
        the group's circuit breaker is open, and not those this sweep has just handled)."""
        outcomes: list[Outcome] = []
        for group, members in groups.values():
            present = {m["InstanceId"] for m in members if not m["LifecycleState"].startswith("Terminat")}
            state = self.ledger.group(group)
            for instance_id in set(state.get("replacing", set())) - present:
                outcomes.append(self._terminated(instance_id, group))
            if self.ledger.group(group).get("breaker") == "open":
                continue
            wanted = set(state.get("unhealthy", set())) | set(state.get("released", set()))
            waiting = wanted & present - set(state.get("replacing", set())) - handled
            for instance_id in sorted(waiting):
                instance = self.ledger.instance(instance_id)
                if instance.get("status") == "open" and instance.get("action") == "replace":
                    outcomes.append(self._act(instance_id, group, "replace", str(instance["incident_id"])))
        return outcomes

    def _repeated_replacements(self, group: str) -> None:
        now = self.clock()
        recent = [
            float(t)
            for t in self.ledger.group(group).get("recent_replacements", [])
            if now - float(t) < self.settings.recurrence_window_seconds
        ]
        recent.append(now)
        self.ledger.set_group(group, recent_replacements=[str(t) for t in recent])
        if len(recent) == self.settings.repeated_replacements:
            self.report.notify(
                f"Instance group {group} keeps losing nodes",
                f"{len(recent)} nodes of {group} were replaced within {self.settings.recurrence_window_seconds} s. "
                "The fault may sit in the capacity the replacements come from (the same slot or host); "
                "look before more jobs fail.",
            )
