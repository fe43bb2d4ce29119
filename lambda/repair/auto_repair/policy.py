"""Repair policy as data: what each health signal leads to.

Actions: ``observe`` (record and notify only), ``reboot``, ``replace``. NVIDIA XID classes follow
NVIDIA's NVSentinel mapping and EKS node auto repair (see the project's REFERENCE notes):
application-level and ignorable XIDs are observed, GPU-reset XIDs reboot the host, XIDs that
mean broken hardware (double-bit ECC, NVLink, fallen off the bus, GSP errors) replace it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Action = Literal["observe", "reboot", "replace"]
ACTIONS: tuple[Action, ...] = ("observe", "reboot", "replace")  # in order of severity

XID: dict[str, Action] = {
    **dict.fromkeys(("13", "31", "94"), "observe"),  # application-level: the job, not the node
    **dict.fromkeys(("43", "63", "92"), "observe"),  # informational
    **dict.fromkeys(("46", "62", "64", "95", "109", "110", "136", "143"), "reboot"),  # GPU needs a reset
    **dict.fromkeys(("48", "74", "79", "119", "120", "121", "140", "160"), "replace"),  # hardware
}
UNKNOWN_XID: Action = "observe"

CHECKS: dict[str, Action] = {
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


@dataclass(frozen=True)
class Policy:
    xid: Mapping[str, Action]
    checks: Mapping[str, Action]

    @classmethod
    def with_overrides(cls, overrides: Mapping[str, Mapping[str, str]] | None = None) -> Policy:
        """The default policy with the config's ``auto_repair.policy`` overrides on top."""
        overrides = overrides or {}
        for section, table in overrides.items():
            if section not in ("xid", "checks"):
                raise ValueError(f"unknown policy section {section!r}; allowed: xid, checks")
            for key, action in table.items():
                if action not in ACTIONS:
                    raise ValueError(f"policy.{section}.{key}: {action!r} is not one of {', '.join(ACTIONS)}")
        return cls(
            xid={**XID, **overrides.get("xid", {})},  # type: ignore[dict-item]
            checks={**CHECKS, **overrides.get("checks", {})},  # type: ignore[dict-item]
        )

    def decide(self, check: str, code: str | None = None) -> Action:
        if check == "xid":
            return self.xid.get(str(code), UNKNOWN_XID)
        return self.checks.get(check, "observe")


def most_severe(actions: list[Action]) -> Action:
    return max(actions, key=ACTIONS.index, default="observe")
