"""The Kubernetes objects the cluster installs into EKS, generated here (none copied from another project).

Each function returns plain dicts, the objects in the order to apply them (a ServiceAccount before
what runs as it), ready for ``Cluster.add_manifest`` or for writing out as YAML. The same arguments
give equal objects, and every call builds new ones, so a caller may change what it gets.

Arguments may be CDK token strings (``${Token[...]}``): they are formatted in as they are, and the
checks on literal values skip them. Every node label a selector reads is the contract's.
Standard library and the contract only: no aws-cdk-lib here.

**Which labels a selector may trust.** Root on a node can give its own Node any label kubelet may
set (:data:`contract.LABEL_ACCELERATOR`, :data:`contract.LABEL_EFA`, everything under
``training-cluster/``): a selector on those says only what the node claims. So:

- a pod that runs with a service account token (the Neuron device plugin) selects nodes by the
  protected labels only (:data:`contract.PROTECTED_LABEL_ACCELERATOR`), which no kubelet may set:
  the repair control plane sets them from the instance's Auto Scaling group. A node that lies
  about itself does not get the token;
- a pod without a token (``automountServiceAccountToken: false``: the NVIDIA and EFA device
  plugins, the DCGM exporter) may select by the node's own labels. A node that claims to be a GPU
  or EFA node gets a pod with no access to the API server, running with what that node already
  has (its own devices, its own kubelet's sockets); what the pod then reports (devices, metrics)
  is about that node only, which root there could fake anyway. A lie misleads about the liar.

The training operator's PyTorchJob definition takes its schema from a file the package ships
(``data/pytorchjob-crd-schema.json``, written by scripts/generate_pytorchjob_crd.py from the
Kubeflow training SDK, which is a dev dependency only).

The node agents (device plugins, DCGM exporter) tolerate every taint. A device plugin must run on
a node the control plane has tainted, or the node's GPUs, Neuron devices and EFA interfaces would
not be advertised while it is checked. The exporter must run there too, or a faulty node's metrics
would stop when they matter most.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from . import contract

Manifest = dict[str, Any]
"""One Kubernetes object, as its JSON."""


@dataclass(frozen=True)
class PinnedImage:
    """A container image pinned by tag (digests could not be read offline, so no digest pins)."""

    repository: str
    """The repository, with its registry unless the registry depends on the region."""
    tag: str

    def reference(self, registry: str | None = None) -> str:
        """``[registry/]repository:tag``."""
        repository = f"{registry}/{self.repository}" if registry else self.repository
        return f"{repository}:{self.tag}"


IMAGES: Final[Mapping[str, PinnedImage]] = MappingProxyType(
    {
        # v0.17.4: the release the EKS user guide installs ("Install Kubernetes device plugin for
        # GPUs": helm chart nvidia-device-plugin 0.17.4, app version 0.17.4). HyperPod pins the
        # older chart 0.16.1 (REFERENCE §9).
        "nvidia-device-plugin": PinnedImage("nvcr.io/nvidia/k8s-device-plugin", "v0.17.4"),
        # v0.5.20: the version HyperPod pins (REFERENCE §9); the tag is among the images listed
        # from the eks-charts aws-efa-k8s-device-plugin chart. The repository is replicated into
        # the EKS registry of every region: see eks_registry().
        "efa-device-plugin": PinnedImage("eks/aws-efa-k8s-device-plugin", "v0.5.20"),
        # 2.28.27.0: devicePlugin.image.tag in aws-neuron/neuron-helm-charts' values.yaml, the
        # chart the Neuron documentation installs the device plugin with.
        "neuron-device-plugin": PinnedImage("public.ecr.aws/neuron/neuron-device-plugin", "2.28.27.0"),
        # The image node/observability/collectors.sh runs on Slurm nodes, so both orchestrators
        # export the same series from the same counters file.
        "dcgm-exporter": PinnedImage("nvcr.io/nvidia/k8s/dcgm-exporter", "3.3.9-3.6.1-ubuntu22.04"),
        # v1-04f9f13: the Kubeflow training operator v1.8.1 (HyperPod's job auto-resume needs
        # 1.7.0-1.8.1, REFERENCE §9). The v1.8.1 standalone overlay sets the image
        # kubeflow/training-operator by tag; a public install script applies that overlay and then
        # sets docker.io/kubeflow/training-operator:v1-04f9f13 on it (the only source found for the
        # tag; HyperPod's own chart pins v1.7.0's v1-855e096).
        "training-operator": PinnedImage("docker.io/kubeflow/training-operator", "v1-04f9f13"),
    }
)
"""Every image the manifests here run, by component name."""

EKS_REGISTRY_ACCOUNT: Final = "602401143452"
"""The account of the EKS image registry in every region not in :data:`EKS_REGISTRY_ACCOUNTS`."""
EKS_REGISTRY_ACCOUNTS: Final[Mapping[str, str]] = MappingProxyType(
    {
        # The EKS user guide, "View Amazon container image registries for Amazon EKS add-ons"
        # (ap-southeast-5 from its Chinese edition, which lists one region more). The guide writes
        # ap-east-2's registry host with ap-east-1; eks_registry() builds it like every other.
        "af-south-1": "877085696533",
        "ap-east-1": "800184023465",
        "ap-east-2": "533267051163",
        "ap-south-2": "900889452093",
        "ap-southeast-3": "296578399912",
        "ap-southeast-4": "491585149902",
        "ap-southeast-5": "151610086707",
        "ap-southeast-6": "333609536671",
        "ap-southeast-7": "121268973566",
        "ca-west-1": "761377655185",
        "cn-north-1": "918309763551",
        "cn-northwest-1": "961992271922",
        "eu-central-2": "900612956339",
        "eu-south-1": "590381155156",
        "eu-south-2": "455263428931",
        "eusc-de-east-1": "877088126301",
        "il-central-1": "066635153087",
        "me-central-1": "759879836304",
        "me-south-1": "558608220178",
        "mx-central-1": "730335286997",
        "us-gov-east-1": "151742754352",
        "us-gov-west-1": "013241004608",
    }
)
"""Regions whose EKS image registry is in an account of its own."""

DCGM_EXPORTER_PORT: Final = 9400
"""Where the exporter listens on each node: the node's Prometheus agent scrapes ``localhost:9400``
as job ``dcgm`` (node/observability/collector_config.py)."""
DCGM_COUNTERS_ON_NODE: Final = "/opt/training-cluster/observability/dcgm-counters.csv"
"""The counters file the collectors asset puts on every node (node/observability/dcgm-counters.csv)."""

SYSTEM_NAMESPACE: Final = "kube-system"
TRAINING_NAMESPACE: Final = "training"
"""Where training jobs and the file system's claim live (:func:`training_namespace`)."""
PART_OF: Final = "cdk-training-cluster"
"""``app.kubernetes.io/part-of`` on every object here."""
FSX_CSI_DRIVER: Final = "fsx.csi.aws.com"

_DEVICE_PLUGIN_DIR = "/var/lib/kubelet/device-plugins"
"""Where kubelet's device plugin socket lives: every device plugin registers there."""
_POD_RESOURCES_DIR = "/var/lib/kubelet/pod-resources"
"""kubelet's pod-resources socket: which pod and container holds which device."""
_TOKEN_MARK = "${Token["
_PLACEHOLDER = re.compile(r"\$\{[A-Z][A-Z0-9_]*\}", re.ASCII)
_FILE_SYSTEM_ID = re.compile(r"fs-[0-9a-f]{8,17}", re.ASCII)
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", re.ASCII)
_DNS_LABEL_LIMIT = 63
_CLAIM_SUFFIX = "-claim"


def eks_registry(region: str) -> str:
    """The EKS image registry of ``region`` (``<account>.dkr.ecr.<region>.<suffix>``).

    A region given as a token cannot be looked up: it gets :data:`EKS_REGISTRY_ACCOUNT` and
    ``amazonaws.com``, right for every region outside :data:`EKS_REGISTRY_ACCOUNTS` and the China
    and European Sovereign Cloud partitions. Elsewhere pass the registry yourself (for example from
    a ``CfnMapping`` built from :data:`EKS_REGISTRY_ACCOUNTS`)."""
    account = EKS_REGISTRY_ACCOUNTS.get(region, EKS_REGISTRY_ACCOUNT)
    if region.startswith("cn-"):
        suffix = "amazonaws.com.cn"
    elif region.startswith("eusc-"):
        suffix = "amazonaws.eu"
    else:
        suffix = "amazonaws.com"
    return f"{account}.dkr.ecr.{region}.{suffix}"


def nvidia_device_plugin() -> list[Manifest]:
    """The NVIDIA device plugin: advertises ``nvidia.com/gpu`` on every node labelled
    ``LABEL_ACCELERATOR=nvidia``, tainted or not. A label the node sets itself: the plugin runs
    without a service account token, so a node that claims GPUs gains nothing (see the module)."""
    container = {
        "name": "nvidia-device-plugin",
        "image": IMAGES["nvidia-device-plugin"].reference(),
        # The plugin runs only on GPU nodes, where failing to find the GPUs is a fault to show
        # (a crash loop), not a node to skip quietly.
        "env": [{"name": "FAIL_ON_INIT_ERROR", "value": "true"}],
        "securityContext": _unprivileged(),
        "resources": {"requests": {"cpu": "10m", "memory": "50Mi"}},
        "volumeMounts": [{"name": "device-plugins", "mountPath": _DEVICE_PLUGIN_DIR}],
    }
    spec = {
        "automountServiceAccountToken": False,
        "containers": [container],
        "volumes": [_host_path("device-plugins", _DEVICE_PLUGIN_DIR, "Directory")],
    }
    return [_daemonset("nvidia-device-plugin", {contract.LABEL_ACCELERATOR: "nvidia"}, spec)]


def efa_device_plugin(region: str, *, registry: str | None = None) -> list[Manifest]:
    """The AWS EFA device plugin: advertises ``vpc.amazonaws.com/efa`` on every node labelled
    ``LABEL_EFA=true``, tainted or not. A label the node sets itself: the plugin is privileged on
    the node it runs on, which a node claiming EFA gives to itself only, and it runs without a
    service account token, so nothing of it reaches another node (see the module).

    ``region`` (a name or a token) picks the EKS image registry the image is pulled from;
    ``registry`` overrides it. Default: :func:`eks_registry` of ``region``."""
    image = IMAGES["efa-device-plugin"].reference(registry or eks_registry(region))
    container = {
        "name": "aws-efa-k8s-device-plugin",
        "image": image,
        # Privileged, as the eks-charts chart runs it: it manages the EFA devices under
        # /dev/infiniband, and on Trainium reads the Neuron tools.
        "securityContext": {"privileged": True, "runAsUser": 0},
        "resources": {"requests": {"cpu": "10m", "memory": "20Mi"}},
        "volumeMounts": [
            {"name": "device-plugins", "mountPath": _DEVICE_PLUGIN_DIR},
            {"name": "infiniband", "mountPath": "/dev/infiniband"},
            {"name": "neuron-tools", "mountPath": "/opt/aws/neuron"},
        ],
    }
    spec = {
        "automountServiceAccountToken": False,
        "hostNetwork": True,
        "dnsPolicy": "ClusterFirstWithHostNet",
        "containers": [container],
        "volumes": [
            _host_path("device-plugins", _DEVICE_PLUGIN_DIR, "Directory"),
            # Present once the EFA driver is loaded: a node without it fails here, visibly.
            _host_path("infiniband", "/dev/infiniband", "Directory"),
            _host_path("neuron-tools", "/opt/aws/neuron", "DirectoryOrCreate"),
        ],
    }
    return [_daemonset("aws-efa-k8s-device-plugin", {contract.LABEL_EFA: "true"}, spec)]


def neuron_device_plugin() -> list[Manifest]:
    """The AWS Neuron device plugin: advertises ``aws.amazon.com/neuron`` and
    ``aws.amazon.com/neuroncore`` on every node the control plane labelled
    ``PROTECTED_LABEL_ACCELERATOR=neuron`` (its Auto Scaling group is a Neuron group, as AWS says;
    no kubelet may set that label), tainted or not, with the ServiceAccount, ClusterRole and
    ClusterRoleBinding it runs as.

    **Blast radius.** The ClusterRole is the Neuron chart's, kept as the vendor wrote it: a smaller
    one could not be checked against what the plugin calls without running it. Its token is
    mounted in the plugin's pod on every Neuron node, so root on one Neuron node holds, in every
    namespace and on every node:

    - ``pods`` get, list, watch: every pod's spec (environment values included), cluster-wide;
    - ``pods`` update, patch: any pod's labels, annotations, tolerations and container images. A
      new image in a running pod (a privileged DaemonSet's: the VPC CNI's, kube-proxy's, the EFA
      plugin's) runs that image as root on that pod's node: root on every node, so the cluster;
    - ``nodes/proxy`` get, list: the kubelet API of every node through the API server, which
      Kubernetes' RBAC good practices say allows command execution in every pod on those nodes;
    - ``nodes/status`` patch, update: any node's reported capacity, conditions and addresses;
    - ``nodes`` get, list, watch, and ``events`` create, patch.

    So root on a Neuron node is cluster admin. What the protected label removes is the step before
    it: a node of any other group can no longer make itself a Neuron node to get the token."""
    name = "neuron-device-plugin"
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": name, "namespace": SYSTEM_NAMESPACE, "labels": _labels(name)},
    }
    # The verbs are those of the ClusterRole in aws-neuron/neuron-helm-charts
    # (templates/device-plugin/device-plugin-rbac.yaml), the chart the Neuron documentation
    # ("Kubernetes environment setup for Neuron") installs the plugin with; the SDK's older
    # src/k8/k8s-neuron-device-plugin-rbac.yml has the same rules less nodes/proxy.
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": _labels(name)},
        "rules": [
            {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["update", "patch", "get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["patch", "update"]},
            {"apiGroups": [""], "resources": ["nodes/proxy"], "verbs": ["get", "list"]},
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name, "labels": _labels(name)},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": SYSTEM_NAMESPACE}],
    }
    container = {
        "name": name,
        "image": IMAGES["neuron-device-plugin"].reference(),
        "env": [
            # Both as the Neuron chart sets them (it mounts no kubeconfig file either).
            {"name": "KUBECONFIG", "value": "/etc/kubernetes/kubelet.conf"},
            {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        ],
        "securityContext": _unprivileged(),
        "resources": {"requests": {"cpu": "10m", "memory": "50Mi"}},
        "volumeMounts": [
            {"name": "device-plugins", "mountPath": _DEVICE_PLUGIN_DIR},
            {"name": "run", "mountPath": "/run"},
            {"name": "aws-config", "mountPath": "/opt/aws", "readOnly": True},
        ],
    }
    spec = {
        "serviceAccountName": name,
        "containers": [container],
        "volumes": [
            _host_path("device-plugins", _DEVICE_PLUGIN_DIR, "Directory"),
            _host_path("run", "/run", "Directory"),
            _host_path("aws-config", "/opt/aws", "Directory"),
        ],
    }
    selector = {contract.PROTECTED_LABEL_ACCELERATOR: "neuron"}
    return [account, role, binding, _daemonset(name, selector, spec)]


def dcgm_exporter(*, counters_file: str | None = DCGM_COUNTERS_ON_NODE) -> list[Manifest]:
    """The NVIDIA DCGM exporter on every node labelled ``LABEL_ACCELERATOR=nvidia``, tainted or not
    (a label the node sets itself: no token, and a node's metrics are about itself; see the module).

    It listens on the node's own port :data:`DCGM_EXPORTER_PORT` (host network), where the node's
    Prometheus agent already scrapes it, and labels each GPU's series with the ``pod``,
    ``namespace`` and ``container`` that hold the GPU, read from kubelet's pod-resources socket
    (no Kubernetes API access, so no service account token).

    ``counters_file``: the node's file of DCGM fields to export. Default: the one the collectors
    asset installs (:data:`DCGM_COUNTERS_ON_NODE`), so the series match the Slurm nodes'. ``None``
    exports the image's default counters."""
    name = "dcgm-exporter"
    mounts: list[dict[str, Any]] = [{"name": "pod-resources", "mountPath": _POD_RESOURCES_DIR, "readOnly": True}]
    volumes = [_host_path("pod-resources", _POD_RESOURCES_DIR, "Directory")]
    args: list[str] = []
    if counters_file is not None:
        in_container = "/etc/dcgm-exporter/counters.csv"
        mounts.append({"name": "counters", "mountPath": in_container, "readOnly": True})
        volumes.append(_host_path("counters", counters_file, "File"))
        args = ["-f", in_container]
    container: dict[str, Any] = {
        "name": name,
        "image": IMAGES["dcgm-exporter"].reference(),
        **({"args": args} if args else {}),
        "env": [
            {"name": "DCGM_EXPORTER_LISTEN", "value": f":{DCGM_EXPORTER_PORT}"},
            {"name": "DCGM_EXPORTER_KUBERNETES", "value": "true"},
            # Every GPU of the node, through the NVIDIA runtime (containerd's default on the
            # EKS-optimized NVIDIA AMIs), without taking any from the scheduler.
            {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"},
        ],
        "ports": [
            {"name": "metrics", "containerPort": DCGM_EXPORTER_PORT, "hostPort": DCGM_EXPORTER_PORT, "protocol": "TCP"}
        ],
        # Root with SYS_ADMIN only: DCGM's profiling fields (DCGM_FI_PROF_*) need it.
        "securityContext": {
            "runAsUser": 0,
            "runAsNonRoot": False,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]},
        },
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
        "volumeMounts": mounts,
    }
    spec = {
        "automountServiceAccountToken": False,
        "hostNetwork": True,
        "dnsPolicy": "ClusterFirstWithHostNet",
        "containers": [container],
        "volumes": volumes,
    }
    return [_daemonset(name, {contract.LABEL_ACCELERATOR: "nvidia"}, spec)]


def training_namespace(name: str = "training") -> list[Manifest]:
    """The namespace for training jobs, with Pod Security Admission enforcing the ``baseline``
    profile (and warning at ``restricted``): no privileged pods, host paths, host network or added
    capabilities, so whoever may run jobs there cannot take over the node a job lands on, or the
    tokens of what runs there (the training operator's, the Neuron plugin's). GPUs, EFA interfaces
    and the file system's claim are all within ``baseline``. Grant cluster users access here only;
    ``default`` is left as Kubernetes makes it (a namespace that may not be deleted, so not one to
    manage here)."""
    labels = {
        **_labels("training-namespace"),
        "pod-security.kubernetes.io/enforce": "baseline",
        "pod-security.kubernetes.io/enforce-version": "latest",
        "pod-security.kubernetes.io/warn": "restricted",
    }
    return [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}]


def fsx_volume(
    *,
    file_system_id: str,
    dns_name: str,
    mount_name: str,
    capacity_gib: int | str,
    name: str = "fsx",
    namespace: str = TRAINING_NAMESPACE,
) -> list[Manifest]:
    """A static PersistentVolume for an FSx for Lustre file system and the claim bound to it, so
    pods mount the file system by claim name (``<name>-claim`` in ``namespace``; by default
    ``fsx-claim`` in ``training``).

    The volume is reserved for that claim (its ``claimRef``) and the claim names the volume
    (``volumeName``), so neither binds to anything else; ``storageClassName`` is empty on both, so
    no dynamic provisioning steps in. Deleting the claim keeps the file system (``Retain``). The
    mount options are the nodes' own (``relatime,flock``).

    ``file_system_id``, ``dns_name``, ``mount_name``: the file system's (tokens, or placeholders
    such as ``${FILE_SYSTEM_ID}`` for manifests applied by other tools, welcome).
    ``capacity_gib``: its storage capacity in GiB, a number or a token string.
    ``name``, ``namespace``: where the claim lives; the volume is ``<namespace>.<name>``.

    Raises ``ValueError`` naming every literal value that cannot work."""
    _check_fsx(file_system_id, capacity_gib, name, namespace)
    claim_name = f"{name}{_CLAIM_SUFFIX}"
    volume_name = f"{namespace}.{name}"
    storage = f"{capacity_gib}Gi"
    volume = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": volume_name, "labels": _labels("fsx-volume")},
        "spec": {
            "capacity": {"storage": storage},
            "volumeMode": "Filesystem",
            "accessModes": ["ReadWriteMany"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "mountOptions": ["relatime", "flock"],
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": namespace,
                "name": claim_name,
            },
            "csi": {
                "driver": FSX_CSI_DRIVER,
                "volumeHandle": file_system_id,
                "volumeAttributes": {"dnsname": dns_name, "mountname": mount_name},
            },
        },
    }
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": claim_name, "namespace": namespace, "labels": _labels("fsx-volume")},
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "volumeMode": "Filesystem",
            "storageClassName": "",
            "volumeName": volume_name,
            "resources": {"requests": {"storage": storage}},
        },
    }
    return [volume, claim]


# Pieces ------------------------------------------------------------------------------------------


def _unprivileged() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def _labels(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": PART_OF}


def _host_path(name: str, path: str, kind: str) -> dict[str, Any]:
    return {"name": name, "hostPath": {"path": path, "type": kind}}


def _daemonset(name: str, node_selector: dict[str, str], pod_spec: Mapping[str, Any]) -> Manifest:
    """A DaemonSet in kube-system on the nodes ``node_selector`` picks, tolerating every taint
    (an empty key with ``Exists`` matches all), as critical as a node's own components."""
    spec = _copy(dict(pod_spec))
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": SYSTEM_NAMESPACE, "labels": _labels(name)},
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
            "updateStrategy": {"type": "RollingUpdate"},
            "template": {
                "metadata": {"labels": _labels(name)},
                "spec": {
                    "nodeSelector": dict(node_selector),
                    "tolerations": [{"operator": "Exists"}],
                    "priorityClassName": "system-node-critical",
                    **spec,
                },
            },
        },
    }


def _copy(value: Any) -> Any:
    """A deep copy of JSON-like data (mappings become dicts), so no two objects share a part."""
    if isinstance(value, Mapping):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return value


def _is_token(value: object) -> bool:
    """A value known only at deploy time: a CDK token, or an envsubst placeholder such as
    ``${FILE_SYSTEM_ID}`` in manifests handed over to be applied by other tools."""
    return isinstance(value, str) and (_TOKEN_MARK in value or _PLACEHOLDER.fullmatch(value) is not None)


def _check_fsx(file_system_id: str, capacity_gib: int | str, name: str, namespace: str) -> None:
    problems: list[str] = []
    if not _is_token(file_system_id) and not _FILE_SYSTEM_ID.fullmatch(file_system_id):
        problems.append(
            f"file_system_id must be an FSx file system id such as fs-0123456789abcdef0, got {file_system_id!r}"
        )
    if not _is_capacity(capacity_gib):
        problems.append(f"capacity_gib must be a positive whole number of GiB or a token string, got {capacity_gib!r}")
    claim_limit = _DNS_LABEL_LIMIT - len(_CLAIM_SUFFIX)
    if not _is_token(name) and not (_DNS_LABEL.fullmatch(name) and len(name) <= claim_limit):
        problems.append(
            f"name must be at most {claim_limit} lower case letters, digits and hyphens, starting and ending with a "
            f"letter or digit, got {name!r}"
        )
    if not _is_token(namespace) and not (_DNS_LABEL.fullmatch(namespace) and len(namespace) <= _DNS_LABEL_LIMIT):
        problems.append(f"namespace must be a Kubernetes namespace name (a DNS label), got {namespace!r}")
    if problems:
        raise ValueError("fsx_volume: " + "; ".join(problems))


def _is_capacity(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value > 0
    return isinstance(value, str) and (_is_token(value) or re.fullmatch(r"[1-9][0-9]*", value) is not None)
