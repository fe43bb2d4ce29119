"""What ``src/``, ``lambda/`` and ``node/`` must agree on, written once.

Standard library only, importing nothing of the package: synthesis puts a copy of this file
into the repair function's asset and the health agent's (as ``training_cluster/contract.py``
beside the code that imports it), and writes its names for the shell into every node's
``/opt/training-cluster/contract.sh`` (:func:`shell`), which ``node/lib.sh`` sources. So
synthesis, the control plane, the agent and the node scripts read the same names.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from typing import Literal, NamedTuple, get_args

# Tags ------------------------------------------------------------------------------------------

TAG_CLUSTER = "training-cluster:cluster"
"""On every instance (and the fleet's other resources) a :class:`Fleet` launches: the cluster's name."""
TAG_GROUP = "training-cluster:instance-group"
"""On every instance a :class:`Fleet` launches: the instance group's name."""
HEALTH_TAG = "training-cluster:health"
"""The health agent's verdict on its own instance, which only that instance may write: see
:func:`format_health_tag`. AWS's event for a change of it tells the control plane who spoke."""
HEALTH_TAG_LIMIT = 256
"""EC2's limit on a tag value, in characters."""
TOKEN_LIMIT = 64
"""Characters of a boot id, check or code in the health tag (and in the agent's event)."""
_BOOT_CHARACTERS, _CHECK_CHARACTERS, _CODE_CHARACTERS = "A-Za-z0-9-", "a-z0-9_", "A-Za-z0-9._-"
BOOT_ID_TOKEN = re.compile(f"[{_BOOT_CHARACTERS}]{{1,{TOKEN_LIMIT}}}", re.ASCII)
CHECK_TOKEN = re.compile(f"[{_CHECK_CHARACTERS}]{{1,{TOKEN_LIMIT}}}", re.ASCII)
CODE_TOKEN = re.compile(f"[{_CODE_CHARACTERS}]{{1,{TOKEN_LIMIT}}}", re.ASCII)
_NOT_IN_BOOT = re.compile(f"[^{_BOOT_CHARACTERS}]")
_NOT_IN_CHECK = re.compile(f"[^{_CHECK_CHARACTERS}]")
_NOT_IN_CODE = re.compile(f"[^{_CODE_CHARACTERS}]")

INSTANCE_ID = re.compile(r"i-[0-9a-f]{8}([0-9a-f]{9})?", re.ASCII)
"""An EC2 instance id (8 or 17 hexadecimal digits), as the control plane and the CLI accept one."""

# Events ----------------------------------------------------------------------------------------

AGENT_SOURCE = "training-cluster.health"
"""The health agent's EventBridge source: its report of a change, a claim the intake checks."""
AGENT_DETAIL_TYPE = "Node Health Changed"
REPAIR_SOURCE = "training-cluster.repair"


class HyperPodEvents(NamedTuple):
    """SageMaker HyperPod's EventBridge events (``backend: hyperpod``) that the ledger records
    (a tuple, not strings: nodes' ``contract.sh`` has no use for them)."""

    source: str = "aws.sagemaker"
    node_health: str = "SageMaker HyperPod Cluster Node Health Event"
    state_change: str = "SageMaker HyperPod Cluster State Change"
    cluster_event: str = "SageMaker HyperPod Cluster Event"

    @property
    def detail_types(self) -> tuple[str, str, str]:
        return (self.node_health, self.state_change, self.cluster_event)


HYPERPOD_EVENTS = HyperPodEvents()

"""The control plane's EventBridge source: what it did."""
REPAIR_DETAIL_TYPE = "Repair Action"

# Metrics ---------------------------------------------------------------------------------------

HEALTH_NAMESPACE = "TrainingCluster/Health"
"""The agent's CloudWatch namespace: ``Healthy`` (1 or 0) per instance, every check interval."""
REPAIR_NAMESPACE = "TrainingCluster/Repair"
"""The control plane's CloudWatch namespace: :data:`RepairMetric` per cluster and instance group."""
DIMENSION_CLUSTER = "Cluster"
DIMENSION_GROUP = "InstanceGroup"
DIMENSION_INSTANCE = "InstanceId"
METRIC_HEALTHY = "Healthy"
"""The agent's metric (:data:`HEALTH_NAMESPACE`, per cluster, instance group and instance)."""
RepairMetric = Literal[
    "Observations",  # a signal the policy only records
    "Incidents",  # a signal that opened an incident
    "Reboots",
    "Replacements",
    "SecondsToAction",  # from an incident's first signal to its reboot or replacement
    "SecondsToRepair",  # from an incident's first signal to its end
    "CircuitBreakerOpened",
    "UnconfirmedReports",  # agent reports the named instance's health tag did not confirm
    "StaleTagEvents",  # tag-change events the instance's health tag no longer says (late, out of order)
]
"""The control plane's metrics (:data:`REPAIR_NAMESPACE`, per cluster and instance group)."""

# Health checks ---------------------------------------------------------------------------------

HealthCheck = Literal[
    "gpu_count", "efa_count", "neuron_count", "row_remap_pending", "row_remap_failure", "lustre", "dcgm_health",
    "status_check", "scheduled_event", "unexpected_stop", "disk",
]  # fmt: skip
"""The checks (the agent's) and signals (AWS's) whose repair action the policy sets by name."""
HEALTH_CHECKS: tuple[HealthCheck, ...] = get_args(HealthCheck)
CheckName = Literal[HealthCheck, "xid", "agent"]
"""What a failure is of: a :data:`HealthCheck`; ``xid``, an NVIDIA XID error (its action by its
code); ``agent``, a check that could not run (observed)."""

# Slurm: where a node's Slurm files are (the bootstrap stage's folder); the control plane runs the
# controller's scripts from there.
SLURM_NODE_DIR = "/opt/training-cluster/slurm"  # (not SLURM_DIR: the node scripts' own setting)
SPARES_SHOW = f"python3 {SLURM_NODE_DIR}/slurm_spares.py show --layout {SLURM_NODE_DIR}/layout.json"
"""Prints one line per group with hot spares: ``spares <group> <held>/<wanted> <node> ...``."""

# Drain reasons: how the scheduler says who took a node out of work, and so who may put it back.

DRAIN_REASON_AGENT = "agent: "
"""The health agent found a fault (its drain hook); the agent resumes the node once healthy."""
DRAIN_REASON_HEALTH = "health: "
"""The scheduler's own health check failed; that check resumes the node when it passes."""
DRAIN_REASON_REBOOT = "repair (reboot): "
"""Auto-repair reboots the node; the agent resumes it once it is back and healthy."""
DRAIN_REASON_REPLACE = "repair (replace): "
"""Auto-repair replaces the node: nobody resumes it."""

# Kubernetes (EKS): node labels and the health taint, under the project's own prefix ----------

KUBE_PREFIX = "training-cluster/"
"""The prefix of every label, taint and annotation the cluster sets on a Node (a DNS label, so a
valid key prefix; kubelet may set it on its own Node at registration, unlike ``kubernetes.io/``)."""
LABEL_CLUSTER = KUBE_PREFIX + "cluster"
LABEL_GROUP = KUBE_PREFIX + "instance-group"
LABEL_INSTANCE_TYPE = KUBE_PREFIX + "instance-type"
LABEL_ACCELERATOR = KUBE_PREFIX + "accelerator"
"""``nvidia``, ``neuron`` or ``none``: which device plugin the node needs."""
LABEL_EFA = KUBE_PREFIX + "efa"
"""``true`` on nodes with EFA interfaces (the EFA device plugin runs there), else ``false``."""
LABEL_HEALTH = KUBE_PREFIX + "node-health-status"
"""The node's health as the control plane verified it (HyperPod's schema, under our prefix): one
of :data:`NODE_HEALTH_STATUSES`. The health taint has the same key."""
LABEL_FAULT_TYPE = KUBE_PREFIX + "fault-type"
"""The failed check (a health check name) while the node is not ``Schedulable``."""
ANNOTATION_FAULT_REASON = KUBE_PREFIX + "fault-reason"
"""The fault in words (free text, so an annotation, not a label)."""
NodeHealthStatus = Literal[
    "Schedulable", "Unschedulable", "UnschedulablePendingReboot", "UnschedulablePendingReplacement"
]
NODE_HEALTH_STATUSES: tuple[NodeHealthStatus, ...] = get_args(NodeHealthStatus)
HEALTH_TAINT_EFFECT = "NoSchedule"
"""Every status but ``Schedulable`` carries the taint ``LABEL_HEALTH=<status>:NoSchedule``."""

# Kubernetes (EKS): labels only the control plane sets, from what AWS says ---------------------
#
# The labels above are what a node says of itself: kubelet sets them at registration, and may
# change them later, so root on any node can give its Node any of them. NodeRestriction refuses a
# kubelet every label under ``node-restriction.kubernetes.io/``, at registration and after: only
# the repair control plane sets these, on the Node whose name EC2 gives the instance, with the
# group the instance's Auto Scaling group is (see ``auto_repair.node_upkeep``). A pod that holds
# a service account token with power over other nodes' pods selects nodes by these only.

PROTECTED_PREFIX = "node-restriction.kubernetes.io/"
PROTECTED_LABEL_GROUP = PROTECTED_PREFIX + "training-cluster-instance-group"
"""The instance group of the instance's Auto Scaling group (the EKS system group is ``system``)."""
PROTECTED_LABEL_ACCELERATOR = PROTECTED_PREFIX + "training-cluster-accelerator"
"""Its group's accelerator (:data:`KubeAccelerator`): which device plugin the node needs."""
KubeAccelerator = Literal["nvidia", "neuron", "none"]
"""The values of :data:`LABEL_ACCELERATOR` and :data:`PROTECTED_LABEL_ACCELERATOR`."""
KUBE_ACCELERATORS: tuple[KubeAccelerator, ...] = get_args(KubeAccelerator)

# Paths on a node -------------------------------------------------------------------------------

HEALTH_AGENT_PATH = "/opt/training-cluster/health/health_agent.py"
"""The health agent, also run with ``--once`` as the scheduler's health check."""
HEALTH_AGENT_CONFIG = "/etc/training-cluster/health-agent.json"


def format_health_tag(healthy: bool, boot_id: str, failures: Iterable[tuple[str, str | None]] = ()) -> str:
    """The health tag's value: ``<healthy|unhealthy> boot=<boot id>[ <check>[:<code>]]...``.

    Characters outside each token's set are dropped, a token at most :data:`TOKEN_LIMIT`
    characters, a repeated token kept once, and the value cut at whole tokens to
    :data:`HEALTH_TAG_LIMIT` characters."""
    tokens = ["healthy" if healthy else "unhealthy", "boot=" + _NOT_IN_BOOT.sub("", boot_id)[:TOKEN_LIMIT]]
    for check, code in failures:
        name = _NOT_IN_CHECK.sub("", check.lower())[:TOKEN_LIMIT]
        detail = _NOT_IN_CODE.sub("", code or "")[:TOKEN_LIMIT]
        token = f"{name}:{detail}" if detail else name
        if name and token not in tokens:
            tokens.append(token)
    value = tokens[0]
    for token in tokens[1:]:
        if len(value) + 1 + len(token) > HEALTH_TAG_LIMIT:
            break
        value += " " + token
    return value


def parse_health_tag(value: object) -> tuple[bool, str, list[tuple[str, str | None]]]:
    """``(healthy, boot id, [(check, code or None), ...])`` from a health tag's value; a
    ``ValueError`` saying what is wrong when the value is not in :func:`format_health_tag`'s grammar.
    A healthy tag has no failures."""
    if not isinstance(value, str) or len(value) > HEALTH_TAG_LIMIT:
        raise ValueError(f"health tag: not a string of at most {HEALTH_TAG_LIMIT} characters")
    state, boot, *tokens = value.split(" ") if " " in value else (value, "")
    if state not in ("healthy", "unhealthy"):
        raise ValueError(f"health tag: unknown state {state[:20]!r}")
    boot_id = boot.removeprefix("boot=")
    if boot == boot_id or not BOOT_ID_TOKEN.fullmatch(boot_id):
        raise ValueError("health tag: no boot id")
    failures: list[tuple[str, str | None]] = []
    for token in tokens:
        check, colon, code = token.partition(":")
        if not CHECK_TOKEN.fullmatch(check) or (colon and not CODE_TOKEN.fullmatch(code)):
            raise ValueError(f"health tag: bad token {token[:40]!r}")
        failures.append((check, code or None))
    if state == "unhealthy" and not failures:
        raise ValueError("health tag: unhealthy without a failure")
    return state == "healthy", boot_id, [] if state == "healthy" else failures


def printable(value: object, limit: int | None = None, replacement: str = "?") -> str:
    """``value`` as text a terminal or a log shows as it is: the first ``limit`` characters, each
    that is not printable (control and format characters: escapes, bidirectional overrides,
    zero-width ones) as ``replacement``."""
    text = str(value)[:limit] if limit is not None else str(value)
    return "".join(c if c.isprintable() else replacement for c in text)


def shell() -> str:
    """``contract.sh``: this module's string and number constants as shell assignments."""
    lines = [
        "# The cluster's contract (training_cluster/contract.py), written at synthesis. Sourced by lib.sh.",
        "# shellcheck disable=SC2034",
    ]
    for name, value in sorted(globals().items()):
        constant = name.isupper() and not name.startswith("_")
        if constant and isinstance(value, (str, int)) and not isinstance(value, bool):
            lines.append(f"{name}={shlex.quote(str(value))}")
    return "\n".join(lines) + "\n"
