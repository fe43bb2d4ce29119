"""The report intake: the agent's events stop here, in front of the repair function.

Anyone who can put an event on the bus can put the agent's (any node's credentials may), naming
any instance, as often as they like. The repair function runs one invocation at a time, so those
events never reach it directly: this function (a separate Lambda with its own small reserved
concurrency and its own queue) checks each claim against the named instance's health tag, which
only that instance may write (see ``identity``). A claim the tag does not confirm is recorded
(the ``report#<instance>`` ledger item, the ``UnconfirmedReports`` metric in the log line) and
goes no further. A confirmed claim is forwarded to the repair function (an asynchronous invoke)
once per value of the tag: a node repeating an honest report forwards it once per change. The
repair function checks the forwarded claim against the tag again; it takes nothing from it but
the instance to look at.

Instances outside the cluster's Auto Scaling groups (by the ``aws:autoscaling:groupName`` tag,
which AWS writes) are dropped without a record: made-up instance ids must not grow the ledger.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from training_cluster.contract import AGENT_DETAIL_TYPE, AGENT_SOURCE, HEALTH_TAG

from .aws import Clients, with_retries
from .identity import confirm, instance_tags
from .ledger import Ledger
from .report import metric_in_log
from .signals import Signal, from_event

log = logging.getLogger("training-cluster.repair")
GROUP_TAG = "aws:autoscaling:groupName"  # written by Auto Scaling; no node may write ``aws:`` keys


@dataclass(frozen=True)
class IntakeSettings:
    cluster: str
    table_name: str
    repair_function: str  # the name or ARN of the repair function
    groups: Mapping[str, str]  # Auto Scaling group name -> instance group name

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> IntakeSettings:
        return cls(
            cluster=env["CLUSTER_NAME"],
            table_name=env["LEDGER_TABLE"],
            repair_function=env["REPAIR_FUNCTION"],
            groups=json.loads(env["AUTO_SCALING_GROUPS"]),
        )


@dataclass(frozen=True)
class Received:
    instance_id: str
    result: str  # forwarded | repeated | unconfirmed | ignored


class Intake:
    def __init__(
        self,
        settings: IntakeSettings,
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

    def receive(self, event: object) -> list[Received]:
        """Check the claims in an agent event; forward the confirmed ones, once per tag value."""
        claims = [s for s in from_event(event) if s.claim]
        if not claims:
            return []  # malformed (logged by from_event), another detail-type, or not an agent event
        tags = instance_tags(self.clients, [c.instance_id for c in claims], (HEALTH_TAG, GROUP_TAG), self.sleep)
        return [self._receive(claim, tags.get(claim.instance_id, {})) for claim in claims]

    def _receive(self, claim: Signal, tags: Mapping[str, str]) -> Received:
        instance_id = claim.instance_id
        group = self.settings.groups.get(tags.get(GROUP_TAG, ""))
        if group is None:
            return Received(instance_id, "ignored")  # not an instance of this cluster's groups
        confirmed = confirm(claim, tags.get(HEALTH_TAG))
        if isinstance(confirmed, str):
            count = self.ledger.unconfirmed(instance_id, confirmed)
            metric_in_log(
                "UnconfirmedReports", self.settings.cluster, group, self.clock(), instance_id=instance_id,
                reason=confirmed,
            )  # fmt: skip
            log.warning("unconfirmed report about %s (%d so far): %s", instance_id, count, confirmed)
            return Received(instance_id, "unconfirmed")
        tag = tags[HEALTH_TAG]
        if not self.ledger.forward_once(instance_id, tag):
            return Received(instance_id, "repeated")  # forwarded for this tag value already
        try:
            with_retries(
                self.clients.lambda_.invoke,
                sleep=self.sleep,
                FunctionName=self.settings.repair_function,
                InvocationType="Event",
                Payload=json.dumps(self._claim_event(claim)).encode(),
            )
        except Exception:
            self.ledger.unforward(instance_id, tag)  # the event's retry forwards it again
            raise
        return Received(instance_id, "forwarded")

    def _claim_event(self, claim: Signal) -> dict[str, Any]:
        """The claim as the repair function reads it: rebuilt from the checked fields (bounded in
        size), still the agent's word, which the repair function checks against the tag again."""
        return {
            "source": AGENT_SOURCE,
            "detail-type": AGENT_DETAIL_TYPE,
            "detail": {
                "cluster": self.settings.cluster,
                "instance_id": claim.instance_id,
                "boot_id": claim.boot_id,
                "state": "healthy" if claim.healthy else "unhealthy",
                "failures": [
                    {"check": f.check, "message": f.message} | ({"code": f.code} if f.code else {})
                    for f in claim.failures
                ],
            },
        }
