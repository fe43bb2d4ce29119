"""Repair policy as data: what each health signal leads to.

Actions: ``observe`` (record and notify only), ``reboot``, ``replace``. NVIDIA XID classes follow
NVIDIA's NVSentinel mapping and EKS node auto repair (see the project's REFERENCE notes):
application-level and ignorable XIDs are observed, GPU-reset XIDs reboot the host, XIDs that
mean broken hardware (double-bit ECC, NVLink, fallen off the bus, GSP errors) replace it.

Standard library only: synthesis reads it (``AutoRepair`` checks a policy's overrides and tells
the agent which XIDs are transient), and the repair function's asset carries a copy
(``training_cluster/repair_policy.py``), which decides at run time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, get_args

from .contract import HEALTH_CHECKS, HealthCheck
from .patterns import PATTERN_HINTS, XID_PATTERN

Action = Literal["observe", "reboot", "replace"]
ACTIONS: tuple[Action, ...] = get_args(Action)  # in order of severity
SECTIONS = ("xid", "checks")

XID: dict[str, Action] = {
    **dict.fromkeys(("13", "31", "94"), "observe"),  # application-level: the job, not the node
    **dict.fromkeys(("43", "63", "92"), "observe"),  # informational
    **dict.fromkeys(("46", "62", "64", "95", "109", "110", "136", "143"), "reboot"),  # GPU needs a reset
    **dict.fromkeys(("48", "74", "79", "119", "120", "121", "140", "160"), "replace"),  # hardware
}
UNKNOWN_XID: Action = "observe"

CHECKS: dict[HealthCheck, Action] = {
    "gpu_count": "reboot",  # a GPU that fell off often comes back after a reboot
    "efa_count": "reboot",
    "neuron_count": "reboot",
    "row_remap_pending": "reboot",  # a pending row remap is applied at the next GPU reset
    "lustre": "reboot",
    "dcgm_health": "replace",
    "row_remap_failure": "replace",
    "status_check": "replace",  # EC2 instance or system status check failed
    "scheduled_event": "replace",  # retirement or maintenance: move the work before AWS does
    "unexpected_stop": "replace",
    "disk": "observe",  # a full disk is the job's to clean
}


def policy_problems(overrides: Mapping[str, Mapping[str, str]]) -> list[tuple[str, str]]:
    """What is wrong with overrides of the default policy (``{"xid": {"79": "observe"},
    "checks": {"lustre": "observe"}}``): ``(where, problem)`` pairs, ``where`` a section or
    ``<section>.<key>``; empty when nothing is. ``AutoRepair`` refuses overrides with problems."""
    problems = []
    for section, table in overrides.items():
        if section not in SECTIONS:
            problems.append((section, f"unknown policy section; allowed: {', '.join(SECTIONS)} (got {section!r})"))
            continue
        for key, action in table.items():
            if section == "xid" and not re.match(XID_PATTERN, str(key)):
                problems.append((f"xid.{key}", f"{PATTERN_HINTS[XID_PATTERN]} (got {key!r})"))
            if section == "checks" and key not in HEALTH_CHECKS:
                problems.append((f"checks.{key}", f"unknown check; allowed: {', '.join(HEALTH_CHECKS)} (got {key!r})"))
            if action not in ACTIONS:
                problems.append((f"{section}.{key}", f"must be one of {', '.join(ACTIONS)} (got {action!r})"))
    return problems


@dataclass(frozen=True)
class Policy:
    xid: Mapping[str, Action]
    checks: Mapping[str, Action]

    @classmethod
    def with_overrides(cls, overrides: Mapping[str, Mapping[str, str]] | None = None) -> Policy:
        """The default policy with the config's ``auto_repair.policy`` overrides on top; a
        ``ValueError`` listing every problem (see :func:`policy_problems`)."""
        overrides = overrides or {}
        problems = policy_problems(overrides)
        if problems:
            raise ValueError("; ".join(f"policy.{where}: {problem}" for where, problem in problems))
        return cls(
            xid={**XID, **overrides.get("xid", {})},  # type: ignore[dict-item]
            checks={**CHECKS, **overrides.get("checks", {})},  # type: ignore[dict-item]
        )

    def decide(self, check: str, code: str | None = None) -> Action:
        if check == "xid":
            return self.xid.get(str(code), UNKNOWN_XID)
        return self.checks.get(check, "observe")

    def transient_xids(self) -> list[str]:
        """The XIDs this policy only observes (application errors): the agent reports them in the
        interval they appear and does not hold them as the node's fault."""
        return sorted(code for code, action in self.xid.items() if action == "observe")


def most_severe(actions: list[Action]) -> Action:
    return max(actions, key=ACTIONS.index, default="observe")
