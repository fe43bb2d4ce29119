"""The Kubeflow training operator the cluster installs into EKS, generated here (none copied from
another project): the PyTorchJob custom resource definition, the operator's account, exactly the
access its PyTorchJob controller uses, and its Deployment (see :func:`training_operator`).

The PyTorchJob definition takes its schema from a file the package ships
(``data/pytorchjob-crd-schema.json``, written by scripts/generate_pytorchjob_crd.py from the
Kubeflow training SDK, which is a dev dependency only). Standard library and the package only: no
aws-cdk-lib here.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from typing import Any, Final

from . import contract
from .kube_manifests import _DNS_LABEL, _DNS_LABEL_LIMIT, IMAGES, Manifest, _labels, _unprivileged
from .rules.eks import SYSTEM_GROUP

PYTORCHJOB_CRD_SCHEMA: Final = "data/pytorchjob-crd-schema.json"
"""The PyTorchJob schema inside the package, written by scripts/generate_pytorchjob_crd.py."""
TRAINING_OPERATOR_NAMESPACE: Final = "kubeflow"
"""Where the training operator runs (the namespace of the upstream standalone install)."""


def training_operator(*, gang_scheduler_name: str | None = None) -> list[Manifest]:
    """The Kubeflow training operator v1.8.1 (``IMAGES["training-operator"]``) reconciling
    ``kubeflow.org/v1`` PyTorchJobs, and no other kind, in every namespace: the PyTorchJob custom
    resource definition, namespace ``kubeflow``, the operator's account and exactly the access its
    PyTorchJob controller and certificate rotator use, and one replica (leader election on, so two
    never reconcile at once during a rolling update) on the EKS system group's nodes.

    The operator may create pods in every namespace, so its token must not reach a node that only
    says it is a system node: it selects ``PROTECTED_LABEL_GROUP=system``
    (:data:`~training_cluster.rules.eks.SYSTEM_GROUP`), which no kubelet may set; the repair
    control plane sets it on the instances of the system group's Auto Scaling group. It tolerates
    ``CriticalAddonsOnly`` (any value and effect), the taint that keeps other pods off nodes for
    add-ons, which EKS's own CoreDNS add-on tolerates too.

    ``gang_scheduler_name``: ``volcano``, or the name of a running scheduler-plugins scheduler (the
    operator treats any name but volcano as one), to have the operator create a PodGroup per job;
    writing that group's PodGroups is then granted too. Default: no gang scheduling.

    No admission webhook is registered. v1.8 serves validating webhooks with a self-signed
    certificate that its cert-controller rotator keeps in a Secret and injects into a
    ValidatingWebhookConfiguration it looks up by name, and that name is in doubt for v1.8.1: a
    v1.8-era pkg/cert/cert.go looks up ``training-operator-validating-webhook-configuration``, the
    v1.8 manifests create ``validator.training-operator.kubeflow.org``, and kubeflow/trainer#2289
    (after v1.8.1) "fixed the invalid validating webhook configuration name in our cert
    generator". A configuration left without the CA refuses every PyTorchJob (``failurePolicy:
    Fail``). The rotator skips a configuration that does not exist and still reports ready
    (open-policy-agent/cert-controller pkg/rotator/rotator.go, ``ensureCerts`` and ``Reconcile``),
    so with none the operator runs and the API server never calls it: jobs are checked against the
    definition's schema, and what only the webhook checked surfaces as the controller's events
    instead of a refused apply.

    Raises ``ValueError`` when ``gang_scheduler_name`` is not a scheduler name."""
    if gang_scheduler_name is not None and not (
        _DNS_LABEL.fullmatch(gang_scheduler_name) and len(gang_scheduler_name) <= _DNS_LABEL_LIMIT
    ):
        raise ValueError(
            "training_operator: gang_scheduler_name must be volcano or a scheduler's name (a DNS label), "
            f"got {gang_scheduler_name!r}"
        )
    name = "training-operator"
    namespace = TRAINING_OPERATOR_NAMESPACE
    # The certificate the rotator writes and the webhook server reads from the mounted Secret
    # (pkg/cert/cert.go: certDir, flag --webhook-secret-name default in cmd/training-operator.v1/main.go).
    cert_secret, cert_dir = "training-operator-webhook-cert", "/tmp/k8s-webhook-server/serving-certs"
    args = [
        # Flags of cmd/training-operator.v1/main.go (kubeflow/training-operator, v1.8 era).
        "--enable-scheme=pytorchjob",
        "--leader-elect",
        *([f"--gang-scheduler-name={gang_scheduler_name}"] if gang_scheduler_name else []),
    ]
    container = {
        "name": name,
        "image": IMAGES["training-operator"].reference(),
        "command": ["/manager"],  # the image's entrypoint (build/images/training-operator/Dockerfile)
        "args": args,
        "env": [  # as the upstream Deployment sets them
            {"name": "MY_POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "MY_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ],
        # Metrics on :8080, health on :8081 (main.go defaults); probes as in the HyperPod chart
        # (aws/sagemaker-hyperpod-cli helm_chart/.../training-operators Deployment).
        "ports": [{"name": "metrics", "containerPort": 8080, "protocol": "TCP"}],
        "livenessProbe": _http_probe("/healthz", initial_delay_sec=15, period_sec=20),
        "readinessProbe": _http_probe("/readyz", initial_delay_sec=10, period_sec=15),
        # distroless/static runs as root unless told otherwise: 65532 is its "nonroot" user.
        "securityContext": {
            **_unprivileged(),
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "runAsGroup": 65532,
        },
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        "volumeMounts": [{"name": "webhook-cert", "mountPath": cert_dir, "readOnly": True}],
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": _labels(name)},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
            "template": {
                "metadata": {"labels": _labels(name)},
                "spec": {
                    "serviceAccountName": name,
                    "nodeSelector": {contract.PROTECTED_LABEL_GROUP: SYSTEM_GROUP},
                    "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}],
                    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                    "terminationGracePeriodSeconds": 10,
                    "containers": [container],
                    "volumes": [{"name": "webhook-cert", "secret": {"secretName": cert_secret}}],
                },
            },
        },
    }
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": name, "namespace": namespace, "labels": _labels(name)},
    }
    # The cert-controller rotator reads and updates its Secret through a cache of the operator's
    # own namespace (open-policy-agent/cert-controller pkg/rotator/rotator.go, addNamespacedCache);
    # leader election takes a Lease there (client-go LeaseLock: get, create, update).
    namespaced = [
        _rule("", ["secrets"], ["get", "list", "watch", "update"]),
        _rule("coordination.k8s.io", ["leases"], ["get", "create", "update"]),
    ]
    # The rotator only updates this Secret and fails without it (kubeflow/trainer#2069); it
    # generates the CA and serving certificate on first start.
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": cert_secret, "namespace": namespace, "labels": _labels(name)},
    }
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": _labels(name)}},
        _pytorchjob_crd(),
        account,
        *_role_and_binding("ClusterRole", name, _operator_cluster_rules(gang_scheduler_name), namespace),
        *_role_and_binding("Role", name, namespaced, namespace),
        secret,
        deployment,
    ]


def _operator_cluster_rules(gang_scheduler_name: str | None) -> list[dict[str, Any]]:
    """What the v1.8 PyTorchJob controller and the rotator use cluster-wide. Verbs are those of the
    v1.8 ClusterRole (controller-gen from the controllers' kubebuilder markers, as mirrored in
    canonical/training-operator src/templates/rbac_manifests.yaml.j2) for the resources the
    PyTorchJob controller touches; events only as client-go's recorder writes them."""
    read, write = ["get", "list", "watch"], ["create", "update", "patch", "delete"]
    rules = [
        _rule("kubeflow.org", ["pytorchjobs"], [*read, *write]),
        _rule("kubeflow.org", ["pytorchjobs/status"], ["get", "update", "patch"]),
        # Owner references that block deletion (pods, services, HPAs) need update on finalizers.
        _rule("kubeflow.org", ["pytorchjobs/finalizers"], ["update"]),
        _rule("", ["pods"], [*read, *write]),
        _rule("", ["services"], [*read, "create", "delete"]),
        _rule("", ["events"], ["create", "patch"]),
        # Elastic PyTorchJobs get a HorizontalPodAutoscaler (pkg/controller.v1/pytorch/hpa.go).
        _rule("autoscaling", ["horizontalpodautoscalers"], [*read, *write]),
        # The rotator watches the webhook configuration it would inject the CA into; none exists,
        # so it never updates one (see training_operator).
        _rule("admissionregistration.k8s.io", ["validatingwebhookconfigurations"], read),
    ]
    # The controller watches PodGroups whenever their definition is installed, gang scheduling or
    # not ("skip watching podgroup if podgroup is not installed", pytorchjob_controller.go), so
    # reading them is always granted and writing only for the scheduler the operator uses.
    volcano, plugins = "scheduling.volcano.sh", "scheduling.x-k8s.io"
    for group in (volcano, plugins):
        gang = gang_scheduler_name is not None and (group == volcano) == (gang_scheduler_name == "volcano")
        rules.append(_rule(group, ["podgroups"], [*read, *write] if gang else read))
    return rules


@cache
def _pytorchjob_schema_text() -> str:
    return files("training_cluster").joinpath(PYTORCHJOB_CRD_SCHEMA).read_text(encoding="utf-8")


def _pytorchjob_crd() -> Manifest:
    """pytorchjobs.kubeflow.org: names, scope, printer columns and subresources as the operator's
    own definition has them (kubeflow/trainer manifests/base/crds/kubeflow.org_pytorchjobs.yaml;
    the scale paths since kubeflow/trainer#1701); the schema from the Kubeflow training SDK."""
    schema = json.loads(_pytorchjob_schema_text())["openAPIV3Schema"]  # a new copy every call
    crd_names = {"kind": "PyTorchJob", "listKind": "PyTorchJobList", "plural": "pytorchjobs", "singular": "pytorchjob"}
    version = {
        "name": "v1",
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": schema},
        "subresources": {
            "status": {},
            # The HorizontalPodAutoscaler of an elastic job scales the workers through this.
            "scale": {
                "specReplicasPath": ".spec.pytorchReplicaSpecs.Worker.replicas",
                "statusReplicasPath": ".status.replicaStatuses.Worker.active",
                "labelSelectorPath": ".status.replicaStatuses.Worker.selector",
            },
        },
        "additionalPrinterColumns": [
            {"name": "State", "type": "string", "jsonPath": ".status.conditions[-1:].type"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "pytorchjobs.kubeflow.org", "labels": _labels("training-operator")},
        "spec": {
            "group": "kubeflow.org",
            "names": crd_names,
            "scope": "Namespaced",
            "versions": [version],
        },
    }


def _rule(group: str, resources: list[str], verbs: list[str]) -> dict[str, Any]:
    return {"apiGroups": [group], "resources": list(resources), "verbs": list(verbs)}


def _role_and_binding(kind: str, name: str, rules: list[dict[str, Any]], namespace: str) -> list[Manifest]:
    """A ``ClusterRole`` or ``Role`` (then in ``namespace``) and its binding to the ServiceAccount
    ``name`` of ``namespace``."""
    where = {"namespace": namespace} if kind == "Role" else {}
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": name, **where, "labels": _labels(name)},
        "rules": rules,
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": f"{kind}Binding",
        "metadata": {"name": name, **where, "labels": _labels(name)},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
    }
    return [role, binding]


def _http_probe(path: str, *, initial_delay_sec: int, period_sec: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": 8081},
        "initialDelaySeconds": initial_delay_sec,
        "periodSeconds": period_sec,
        "timeoutSeconds": 3,
    }
