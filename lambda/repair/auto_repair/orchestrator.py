"""The control plane's side of the orchestrator: the drain before a reboot or replacement, and
what the orchestrator hears of a node's health. Slurm drains through Run Command on its
controller (:mod:`.drain`); EKS drains through the Kubernetes API and also labels and taints
nodes (:mod:`.kubernetes`, :mod:`.node_hooks`). Without an orchestrator both are no-ops.

A hook that fails is recorded in the incident and the repair goes on: a broken scheduler must
not keep a failed node.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from training_cluster.repair_policy import Action

from .ledger import Ledger
from .node_hooks import NodeHook

log = logging.getLogger("training-cluster.repair")

DrainHook = Callable[[str, Action, str], Callable[[], str]]
"""Called with (instance id, action, reason) before a reboot or replacement: it starts the drain
and returns a function that waits for it (bounded) and says what happened, for the ledger."""


class Orchestrator:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.drain_hook: DrainHook | None = None
        self.node_hook: NodeHook | None = None

    def start_drain(self, instance_id: str, incident_id: str, action: Action, reasons: str) -> Callable[[], None]:
        """Take the node out of scheduling (its jobs back to the queue) before it goes. Returns
        the wait for it."""
        if self.drain_hook is None:
            return lambda: None
        if action == "reboot" and self.node_hook is not None:
            # the drain cordons the Node (EKS): the cordon is ours to lift when the node is healthy
            self.ledger.cordoned(instance_id, incident_id)

        def failed(error: Exception) -> None:
            log.warning("drain hook failed for %s: %s", instance_id, error)
            self.ledger.record(incident_id, "drain", result="failed", error=str(error)[:500])

        try:
            finish = self.drain_hook(instance_id, action, f"{action}: {reasons}")
        except Exception as error:  # any failure of the hook is recorded, never raised
            failed(error)
            return lambda: None

        def wait() -> None:
            try:
                result = finish()
            except Exception as error:  # as above
                failed(error)
                return
            self.ledger.record(incident_id, "drain", result=result)

        return wait

    def unschedulable(self, instance_id: str, incident_id: str, reasons: str | None) -> None:
        """A verified fault the control plane is not acting on yet (held, deferred, dry run), told
        once, by the invocation that saw the signal (``reasons``); a retry by the sweep, which
        does not know them, leaves the node as that invocation marked it."""
        if reasons is None:
            return
        check = reasons.split(":", 1)[0].split(";", 1)[0].split(" ", 1)[0]
        self.tell(incident_id, "node", lambda hook: hook.unschedulable(instance_id, reasons, check or None))

    def schedulable(self, instance_id: str, incident_id: str | None, *, uncordon: bool, group: str | None) -> None:
        """A verified healthy node (``uncordon`` when the control plane cordoned it for a reboot);
        ``group``: the instance group whose Auto Scaling group it is in now, for its protected
        labels (None: none written).
        Once the cordon is lifted the ledger forgets it; if the call failed, the sweep tries again
        (``node_upkeep``)."""
        told = self.tell(
            incident_id, "node", lambda hook: hook.schedulable(instance_id, uncordon=uncordon, group=group)
        )
        if told and uncordon:
            self.ledger.uncordoned(instance_id)

    def gone(self, instance_id: str, incident_id: str) -> None:
        """A replaced node: its Node object goes."""
        self.tell(incident_id, "node", lambda hook: hook.gone(instance_id))

    def tell(self, incident_id: str | None, step: str, call: Callable[[NodeHook], str]) -> bool:
        """Tell the orchestrator (``node_hook``) about a node; a failure is logged and recorded in
        the incident (if any), never raised. Whether it was told."""
        if self.node_hook is None:
            return False
        try:
            result = call(self.node_hook)
        except Exception as error:  # any failure of the hook is recorded, never raised
            log.warning("node hook failed: %s", error)
            if incident_id:
                self.ledger.record(incident_id, step, result="failed", error=str(error)[:500])
            return False
        if incident_id:
            self.ledger.record(incident_id, step, result=result)
        return True
