"""The control plane's settings, read once from the function's environment."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from training_cluster.contract import KUBE_ACCELERATORS
from training_cluster.repair_policy import Policy

INSTANCE_ARN_PREFIX = re.compile(r"arn:aws[a-z-]*:ec2:[a-z0-9-]+:[0-9]{12}:instance/", re.ASCII)


@dataclass(frozen=True)
class Settings:
    cluster: str
    table_name: str
    topic_arn: str
    event_bus: str
    evidence_bucket: str
    groups: Mapping[str, str]  # Auto Scaling group name -> instance group name
    policy: Policy
    # ``arn:<partition>:ec2:<region>:<account>:instance/``: evidence of an instance goes under its ARN,
    # the prefix its own Run Command output may write to (no default: the deployment knows it)
    instance_arn_prefix: str
    dry_run: bool = False
    max_parallel_replacements: int = 1
    unhealthy_threshold_percent: float = 20.0
    # absolute caps on nodes unhealthy at once (being rebooted, replaced, or held): beyond them the
    # breaker opens, however large the group (20% of 1,024 nodes is 204)
    max_unhealthy_per_group: int = 16
    max_unhealthy_in_cluster: int = 32
    reboot_before_replace: bool = True
    recurrence_window_seconds: int = 3600
    capacity_backoff_seconds: int = 600
    evidence_wait_seconds: int = 20  # bounded: evidence never holds up a repair for long
    repeated_replacements: int = 3
    drain_group: str | None = None  # the orchestrator controller's Auto Scaling group
    drain_command: str | None = None  # run there before a reboot or replacement: COMMAND NODE ACTION REASON
    eks_cluster: str | None = None  # EKS: the cluster the nodes join; drains and labels through its API
    eks_endpoint: str | None = None  # its API server (https://...)
    eks_certificate_authority: str | None = None  # its CA, base64 PEM (CertificateAuthorityData)
    # EKS: instance group name -> its accelerator (nvidia, neuron or none), the value of the protected
    # accelerator label the sweep gives its Nodes; a group not listed gets no protected labels
    group_accelerators: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not INSTANCE_ARN_PREFIX.fullmatch(self.instance_arn_prefix):
            expected = "arn:<partition>:ec2:<region>:<account>:instance/"
            raise ValueError(f"instance_arn_prefix {self.instance_arn_prefix!r} is not {expected}")
        accelerators = self.group_accelerators
        if not isinstance(accelerators, Mapping) or any(a not in KUBE_ACCELERATORS for a in accelerators.values()):
            allowed = ", ".join(KUBE_ACCELERATORS)
            raise ValueError(f"group_accelerators must map instance groups to {allowed}, got {accelerators!r}")

    def instance_arn(self, instance_id: str) -> str:
        return f"{self.instance_arn_prefix}{instance_id}"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        return cls(
            cluster=env["CLUSTER_NAME"],
            table_name=env["LEDGER_TABLE"],
            topic_arn=env["TOPIC_ARN"],
            event_bus=env.get("EVENT_BUS", "default"),
            evidence_bucket=env["EVIDENCE_BUCKET"],
            groups=json.loads(env["AUTO_SCALING_GROUPS"]),
            policy=Policy.with_overrides(json.loads(env.get("POLICY", "{}"))),
            instance_arn_prefix=env["INSTANCE_ARN_PREFIX"],
            dry_run=env.get("DRY_RUN", "false") == "true",
            max_parallel_replacements=int(env.get("MAX_PARALLEL_REPLACEMENTS", "1")),
            unhealthy_threshold_percent=float(env.get("UNHEALTHY_THRESHOLD_PERCENT", "20")),
            max_unhealthy_per_group=int(env.get("MAX_UNHEALTHY_PER_GROUP", "16")),
            max_unhealthy_in_cluster=int(env.get("MAX_UNHEALTHY_IN_CLUSTER", "32")),
            reboot_before_replace=env.get("REBOOT_BEFORE_REPLACE", "true") == "true",
            recurrence_window_seconds=int(env.get("RECURRENCE_WINDOW_SECONDS", "3600")),
            capacity_backoff_seconds=int(env.get("CAPACITY_BACKOFF_SECONDS", "600")),
            evidence_wait_seconds=int(env.get("EVIDENCE_WAIT_SECONDS", "20")),
            drain_group=env.get("DRAIN_GROUP") or None,
            drain_command=env.get("DRAIN_COMMAND") or None,
            eks_cluster=env.get("EKS_CLUSTER_NAME") or None,
            eks_endpoint=env.get("EKS_ENDPOINT") or None,
            eks_certificate_authority=env.get("EKS_CERTIFICATE_AUTHORITY") or None,
            group_accelerators=json.loads(env.get("GROUP_ACCELERATORS") or "{}"),
        )
