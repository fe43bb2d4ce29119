"""What the repair control plane may do in the Kubernetes API (EKS), as data.

The repair function's role gets an EKS access entry that maps it to the Kubernetes group
:data:`REPAIR_GROUP`; a ClusterRole of exactly :data:`REPAIR_RULES` is bound to that group. The
control plane's client (``auto_repair.kubernetes``) refuses any request these rules do not grant,
and its tests check that it uses every rule, so the grant and the code cannot drift apart.

Standard library only, importing nothing of the package: synthesis reads it (the ClusterRole and
its binding) and the repair function's asset carries a copy (``training_cluster/kube_access.py``).
"""

from __future__ import annotations

from typing import Any

REPAIR_GROUP = "training-cluster:repair"
"""The Kubernetes group the repair role's EKS access entry maps to (not ``system:``: reserved)."""

Rule = tuple[str, str, tuple[str, ...]]
"""(API group, resource, verbs); ``""`` is the core group."""

REPAIR_RULES: tuple[Rule, ...] = (
    # get: the Node of an instance, by the name AWS gave it, to check its providerID; list (by
    # label selector): the sweep's Nodes without the protected labels, and those not Schedulable;
    # patch: cordon, health label, taint, fault annotation, protected labels; delete: after a
    # replacement
    ("", "nodes", ("get", "list", "patch", "delete")),
    # the pods on a node being drained (fieldSelector spec.nodeName), across namespaces
    ("", "pods", ("list",)),
    # evictions, which honour PodDisruptionBudgets (deleting pods would not)
    ("", "pods/eviction", ("create",)),
)
"""Everything the repair control plane does in the cluster, and nothing more."""

RBAC_API = "rbac.authorization.k8s.io"


def granted(rules: tuple[Rule, ...] = REPAIR_RULES) -> frozenset[tuple[str, str, str]]:
    """Every (API group, resource, verb) that ``rules`` grant."""
    return frozenset((group, resource, verb) for group, resource, verbs in rules for verb in verbs)


def cluster_role(name: str) -> dict[str, Any]:
    """The ClusterRole named ``name`` that grants :data:`REPAIR_RULES`, one rule each."""
    return {
        "apiVersion": f"{RBAC_API}/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": [
            {"apiGroups": [group], "resources": [resource], "verbs": list(verbs)}
            for group, resource, verbs in REPAIR_RULES
        ],
    }


def cluster_role_binding(name: str, role_name: str, group: str) -> dict[str, Any]:
    """The ClusterRoleBinding named ``name`` of the ClusterRole ``role_name`` to the Kubernetes
    group ``group`` (:data:`REPAIR_GROUP` for the repair role's access entry)."""
    return {
        "apiVersion": f"{RBAC_API}/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": RBAC_API, "kind": "ClusterRole", "name": role_name},
        "subjects": [{"apiGroup": RBAC_API, "kind": "Group", "name": group}],
    }
