"""How an EKS node joins: nodeadm's ``NodeConfig`` and the labels and taints kubelet registers with.

Standard library only (no aws-cdk-lib): values may be CDK token strings, which CloudFormation
fills in at deploy time (the API endpoint and the CA are the cluster's attributes).

``NodeConfig`` (``node.eks.aws/v1alpha1``) is what AL2023 EKS images read from user data, as a
MIME part of type ``application/node.eks.aws``: the cluster's name, API endpoint, CA and service
CIDR (``spec.cluster``), and kubelet flags (``spec.kubelet.flags``). The service CIDR cannot be
read from the cluster in CloudFormation, so the same literal is set on the cluster and here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from . import contract

CONTENT_TYPE = "application/node.eks.aws"
API_VERSION = "node.eks.aws/v1alpha1"


def node_labels(
    *, cluster_name: str, group_name: str, instance_type: str, accelerator: str, efa: bool, schedulable: bool
) -> dict[str, str]:
    """The labels a node registers with: where it belongs, what it has, and its health. A node
    with first-boot deep checks starts ``Unschedulable`` until the control plane sees them pass."""
    return {
        contract.LABEL_CLUSTER: cluster_name,
        contract.LABEL_GROUP: group_name,
        contract.LABEL_INSTANCE_TYPE: instance_type,
        contract.LABEL_ACCELERATOR: accelerator if accelerator in ("nvidia", "neuron") else "none",
        contract.LABEL_EFA: "true" if efa else "false",
        contract.LABEL_HEALTH: "Schedulable" if schedulable else "Unschedulable",
    }


def node_taints(taints: Sequence[str], *, schedulable: bool) -> list[str]:
    """The taints a node registers with: the group's own, and the health taint while deep checks run."""
    health = [] if schedulable else [f"{contract.LABEL_HEALTH}=Unschedulable:{contract.HEALTH_TAINT_EFFECT}"]
    return [*taints, *health]


def node_config(
    *,
    cluster_name: str,
    api_server_endpoint: str,
    certificate_authority: str,
    service_cidr: str,
    labels: Mapping[str, str],
    taints: Sequence[str] = (),
) -> dict[str, object]:
    """nodeadm's ``NodeConfig`` as an object."""
    flags = [f"--node-labels={','.join(f'{k}={v}' for k, v in sorted(labels.items()))}"]
    if taints:
        flags.append(f"--register-with-taints={','.join(taints)}")
    return {
        "apiVersion": API_VERSION,
        "kind": "NodeConfig",
        "spec": {
            "cluster": {
                "name": cluster_name,
                "apiServerEndpoint": api_server_endpoint,
                "certificateAuthority": certificate_authority,
                "cidr": service_cidr,
            },
            "kubelet": {"flags": flags},
        },
    }


def render(config: Mapping[str, object]) -> str:
    """The part's text: JSON, which is YAML, so nodeadm reads it; quoting is exact whatever the values."""
    return "---\n" + json.dumps(config, indent=2, sort_keys=False) + "\n"
