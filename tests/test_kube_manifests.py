"""The Kubernetes objects the cluster installs (kube_manifests) and the PyTorchJob example.

No API server exists offline (REFERENCE §9). What is checked:
- every object against the Kubernetes 1.35 OpenAPI schemas, strictly (an unknown field fails),
  with kubernetes-validate; a broken object is refused by the same call;
- what the schemas cannot see: that selectors select the pods and the contract's node labels,
  which taints are tolerated, the volume-claim binding, label and name syntax;
- the PyTorchJob: its pod template as above, and the custom resource's own fields against the
  typed models of the Kubeflow training SDK (1.9.4) and against the definition the cluster
  installs (its schema generated from those models), with kubectl's strict field validation
  emulated by jsonschema. No API server runs the definition, and nothing checks what the
  operator itself would refuse beyond those types (its webhook is off);
- the training operator: its access (no wildcard, only the PyTorchJob controller's resources),
  its Deployment (non-root, pinned image), and that the shipped schema is the generator's.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import json
import re
import subprocess
import sys
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from conftest import ROOT
from training_cluster import catalog, contract
from training_cluster import kube_manifests as km
from training_cluster import kube_operator as ko
from training_cluster.rules.eks import SYSTEM_GROUP

KUBERNETES_VERSION = "1.35"
"""The Kubernetes minor the cluster pins."""
EXAMPLE = ROOT / "examples" / "eks" / "pytorchjob.yaml"
GENERATOR = ROOT / "scripts" / "generate_pytorchjob_crd.py"
TOKEN = "${Token[TOKEN.%d]}"

SETS: dict[str, Callable[[], list[km.Manifest]]] = {
    "nvidia": km.nvidia_device_plugin,
    "efa": lambda: km.efa_device_plugin("us-west-2"),
    "efa-token-region": lambda: km.efa_device_plugin(TOKEN % 1),
    "neuron": km.neuron_device_plugin,
    "dcgm": km.dcgm_exporter,
    "dcgm-default-counters": lambda: km.dcgm_exporter(counters_file=None),
    "fsx": lambda: km.fsx_volume(
        file_system_id="fs-0123456789abcdef0", dns_name="fs-0123456789abcdef0.fsx.us-west-2.amazonaws.com",
        mount_name="abcdefgh", capacity_gib=1200,
    ),
    "fsx-tokens": lambda: km.fsx_volume(
        file_system_id=TOKEN % 1, dns_name=TOKEN % 2, mount_name=TOKEN % 3, capacity_gib=TOKEN % 4,
        name="scratch", namespace="team-a",
    ),
    "training-namespace": km.training_namespace,
    "operator": ko.training_operator,
    "operator-volcano": lambda: ko.training_operator(gang_scheduler_name="volcano"),
    "operator-scheduler-plugins": lambda: ko.training_operator(gang_scheduler_name="scheduler-plugins-scheduler"),
}  # fmt: skip
OBJECTS = [(f"{key}:{obj['kind']}/{obj['metadata']['name']}", obj) for key, make in SETS.items() for obj in make()]
DAEMONSETS = {  # with the default arguments
    obj["metadata"]["name"]: obj
    for key in ("nvidia", "efa", "neuron", "dcgm")
    for obj in SETS[key]()
    if obj["kind"] == "DaemonSet"
}

# Kubernetes' own syntax rules (k8s.io/apimachinery validation), which the schemas do not carry.
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")


def validate(obj: dict[str, Any]) -> str:
    """kubernetes-validate, strict, for the pinned minor: the schema version it used."""
    return str(kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True))


def as_pod_template(template: dict[str, Any]) -> dict[str, Any]:
    """A PodTemplateSpec as a PodTemplate object, the kind whose schema holds exactly one."""
    return {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "check"}, "template": template}


def tolerates(tolerations: list[dict[str, Any]], key: str, value: str, effect: str) -> bool:
    """Whether a pod with ``tolerations`` tolerates the taint ``key=value:effect`` (Kubernetes'
    rule: an empty key with Exists matches every key; an empty effect matches every effect)."""
    for t in tolerations:
        operator = t.get("operator", "Equal")
        key_matches = t.get("key", "") == key or (not t.get("key") and operator == "Exists")
        value_matches = operator == "Exists" or t.get("value", "") == value
        if key_matches and value_matches and t.get("effect", "") in ("", effect):
            return True
    return False


def labels_in(obj: Any) -> Iterator[tuple[str, str]]:
    """Every (key, value) of every labels, matchLabels and nodeSelector map in ``obj`` (a
    definition's schema names such fields: it holds none)."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key == "openAPIV3Schema":
                continue
            if key in ("labels", "matchLabels", "nodeSelector") and isinstance(value, dict):
                yield from value.items()
            else:
                yield from labels_in(value)
    elif isinstance(obj, list):
        for item in obj:
            yield from labels_in(item)


def label_problems(obj: Any) -> list[str]:
    problems = []
    for key, value in labels_in(obj):
        prefix, _, name = key.rpartition("/")
        if prefix and not (len(prefix) <= 253 and _DNS_SUBDOMAIN.fullmatch(prefix)):
            problems.append(f"label key prefix {key!r}")
        if not (len(name) <= 63 and _LABEL_NAME.fullmatch(name)):
            problems.append(f"label key name {key!r}")
        if not isinstance(value, str) or (value and not (len(value) <= 63 and _LABEL_NAME.fullmatch(value))):
            problems.append(f"label value {value!r} of {key!r}")
    return problems


# The schema --------------------------------------------------------------------------------------


@pytest.mark.parametrize("obj", [o for _, o in OBJECTS], ids=[i for i, _ in OBJECTS])
def test_every_object_passes_the_strict_schema_of_the_pinned_kubernetes(obj: dict[str, Any]) -> None:
    assert validate(obj) == KUBERNETES_VERSION  # that version's own schema, not a fallback


@pytest.mark.parametrize(
    "break_it",
    [
        lambda o: o["spec"]["template"]["spec"]["containers"][0].update(imagePullPolicy2="Always"),  # unknown field
        lambda o: o["spec"]["template"]["spec"]["containers"][0].update(ports=[{"containerPort": "9400"}]),  # type
        lambda o: o["spec"]["template"]["spec"]["containers"][0].pop("name"),  # required field
        lambda o: o["spec"]["template"]["spec"].update(tolerations={"operator": "Exists"}),  # a map for a list
    ],
    ids=["unknown-field", "wrong-type", "missing-required", "wrong-shape"],
)
def test_the_same_validation_refuses_a_broken_object(break_it: Callable[[dict[str, Any]], Any]) -> None:
    broken = copy.deepcopy(DAEMONSETS["dcgm-exporter"])
    break_it(broken)
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken)


@pytest.mark.parametrize("obj", [o for _, o in OBJECTS], ids=[i for i, _ in OBJECTS])
def test_names_and_labels_have_kubernetes_syntax(obj: dict[str, Any]) -> None:
    name = obj["metadata"]["name"]
    assert len(name) <= 253 and _DNS_SUBDOMAIN.fullmatch(name), name
    assert label_problems(obj) == []


def test_label_syntax_check_is_not_vacuous() -> None:
    assert label_problems({"nodeSelector": {"training-cluster/efa": True, "-bad": "x", "a/b": "y" * 64}}) == [
        "label value True of 'training-cluster/efa'",
        "label key name '-bad'",
        f"label value {'y' * 64!r} of 'a/b'",
    ]


# The node agents ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "selector"),
    [
        ("nvidia-device-plugin", {contract.LABEL_ACCELERATOR: "nvidia"}),
        ("aws-efa-k8s-device-plugin", {contract.LABEL_EFA: "true"}),
        ("neuron-device-plugin", {contract.PROTECTED_LABEL_ACCELERATOR: "neuron"}),  # set by the control plane
        ("dcgm-exporter", {contract.LABEL_ACCELERATOR: "nvidia"}),
    ],
)
def test_each_agent_runs_on_the_nodes_the_contract_labels_for_it(name: str, selector: dict[str, str]) -> None:
    spec = DAEMONSETS[name]["spec"]
    assert spec["template"]["spec"]["nodeSelector"] == selector
    # The API server refuses a DaemonSet whose selector does not select its own pods: the schema cannot.
    match = spec["selector"]["matchLabels"]
    assert match and match.items() <= spec["template"]["metadata"]["labels"].items()
    assert DAEMONSETS[name]["metadata"]["namespace"] == "kube-system"
    assert spec["template"]["spec"]["priorityClassName"] == "system-node-critical"


def pod_specs(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod spec of a DaemonSet's or Deployment's template."""
    return [obj["spec"]["template"]["spec"]] if obj["kind"] in ("DaemonSet", "Deployment") else []


PODS = [(i, spec) for i, obj in OBJECTS for spec in pod_specs(obj)]


@pytest.mark.parametrize("pod", [p for _, p in PODS], ids=[i for i, _ in PODS])
def test_a_pod_with_a_token_runs_only_where_the_control_plane_says_and_one_without_may_trust_the_node(
    pod: dict[str, Any],
) -> None:
    """Root on a node sets any label kubelet may (``training-cluster/*``): a pod holding a service
    account token selects nodes by the protected labels only, which no kubelet may set
    (NodeRestriction), so no node draws the token by lying. A pod without a token may select by
    the node's own word: a liar gets a pod with no more than the node already has."""
    selector = pod.get("nodeSelector") or {}
    assert selector and "affinity" not in pod  # one place says where it runs
    if pod.get("automountServiceAccountToken") is False:
        assert all(key.startswith(contract.KUBE_PREFIX) for key in selector)
    else:
        assert all(key.startswith(contract.PROTECTED_PREFIX) for key in selector), selector


def test_the_token_check_sees_both_kinds() -> None:
    tokens = {i.split(":")[0] for i, p in PODS if p.get("automountServiceAccountToken") is not False}
    assert tokens == {"neuron", "operator", "operator-volcano", "operator-scheduler-plugins"}


def test_the_protected_labels_are_valid_keys_no_kubelet_may_set() -> None:
    for key in (contract.PROTECTED_LABEL_GROUP, contract.PROTECTED_LABEL_ACCELERATOR):
        prefix, _, name = key.partition("/")
        # NodeRestriction refuses kubelets this prefix and its subdomains (kubernetes/kubernetes
        # plugin/pkg/admission/noderestriction; the kubelet's --node-labels check refuses it too)
        assert prefix == "node-restriction.kubernetes.io" and _DNS_SUBDOMAIN.fullmatch(prefix)
        assert len(name) <= 63 and _LABEL_NAME.fullmatch(name), key
        assert label_problems({"nodeSelector": {key: "x"}}) == []
    # every accelerator a group may have is a value the accelerator labels take (GROUP_ACCELERATORS)
    hints = typing.get_type_hints(catalog.InstanceTypeInfo.accelerator.fget)  # type: ignore[attr-defined]
    assert set(typing.get_args(hints["return"])) == set(contract.KUBE_ACCELERATORS)
    found = {info.accelerator for t in catalog.instance_types() if (info := catalog.get(t)) is not None}
    assert found == set(contract.KUBE_ACCELERATORS)


@pytest.mark.parametrize("name", sorted(DAEMONSETS))
def test_each_agent_tolerates_every_taint_so_tainted_nodes_keep_their_devices(name: str) -> None:
    tolerations = DAEMONSETS[name]["spec"]["template"]["spec"]["tolerations"]
    for status in contract.NODE_HEALTH_STATUSES:
        assert tolerates(tolerations, contract.LABEL_HEALTH, status, contract.HEALTH_TAINT_EFFECT)
    for key, effect in [("nvidia.com/gpu", "NoSchedule"), ("node.kubernetes.io/unreachable", "NoExecute")]:
        assert tolerates(tolerations, key, "", effect)


def test_device_plugins_reach_kubelets_socket_directory() -> None:
    for name in ("nvidia-device-plugin", "aws-efa-k8s-device-plugin", "neuron-device-plugin"):
        pod = DAEMONSETS[name]["spec"]["template"]["spec"]
        host = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
        assert host[mounts["/var/lib/kubelet/device-plugins"]] == "/var/lib/kubelet/device-plugins", name


def test_the_neuron_plugin_runs_as_the_account_its_role_is_bound_to() -> None:
    account, role, binding, daemonset = km.neuron_device_plugin()
    assert [o["kind"] for o in (account, role, binding)] == ["ServiceAccount", "ClusterRole", "ClusterRoleBinding"]
    assert daemonset["spec"]["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role["metadata"]["name"],
    }  # fmt: skip
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": account["metadata"]["namespace"]}
    ]
    # Only the Neuron plugin talks to the API server: the others run without a token.
    for name in ("nvidia-device-plugin", "aws-efa-k8s-device-plugin", "dcgm-exporter"):
        assert DAEMONSETS[name]["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_dcgm_exporter_serves_the_port_the_node_collector_scrapes_with_pod_labels() -> None:
    pod = DAEMONSETS["dcgm-exporter"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert pod["hostNetwork"] is True
    assert env["DCGM_EXPORTER_LISTEN"] == ":9400"
    assert container["ports"] == [{"name": "metrics", "containerPort": 9400, "hostPort": 9400, "protocol": "TCP"}]
    # Pod, namespace and container labels come from kubelet's pod-resources socket.
    assert env["DCGM_EXPORTER_KUBERNETES"] == "true"
    host = {v["name"]: v["hostPath"] for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    resources = mounts["/var/lib/kubelet/pod-resources"]
    assert resources["readOnly"] is True
    assert host[resources["name"]]["path"] == "/var/lib/kubelet/pod-resources"
    # The Slurm nodes' counters file, from the node.
    assert container["args"] == ["-f", "/etc/dcgm-exporter/counters.csv"]
    counters = mounts["/etc/dcgm-exporter/counters.csv"]
    assert host[counters["name"]] == {"path": km.DCGM_COUNTERS_ON_NODE, "type": "File"}


def test_dcgm_exporter_without_a_counters_file_exports_the_images_defaults() -> None:
    (daemonset,) = km.dcgm_exporter(counters_file=None)
    (container,) = daemonset["spec"]["template"]["spec"]["containers"]
    assert "args" not in container
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/var/lib/kubelet/pod-resources"]


@pytest.mark.parametrize(
    ("region", "registry"),
    [
        ("us-west-2", "602401143452.dkr.ecr.us-west-2.amazonaws.com"),
        ("af-south-1", "877085696533.dkr.ecr.af-south-1.amazonaws.com"),
        ("cn-north-1", "918309763551.dkr.ecr.cn-north-1.amazonaws.com.cn"),
        ("us-gov-west-1", "013241004608.dkr.ecr.us-gov-west-1.amazonaws.com"),
        (TOKEN % 7, f"602401143452.dkr.ecr.{TOKEN % 7}.amazonaws.com"),  # formatted in as it is
    ],
)
def test_the_efa_plugin_image_comes_from_the_regions_eks_registry(region: str, registry: str) -> None:
    (daemonset,) = km.efa_device_plugin(region)
    image = daemonset["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"{registry}/eks/aws-efa-k8s-device-plugin:{km.IMAGES['efa-device-plugin'].tag}"


def test_the_efa_registry_can_be_given() -> None:
    (daemonset,) = km.efa_device_plugin(TOKEN % 1, registry=TOKEN % 2)
    image = daemonset["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"{TOKEN % 2}/eks/aws-efa-k8s-device-plugin:v0.5.20"


def test_every_image_is_pinned_in_the_table() -> None:
    pinned = {image.reference() for image in km.IMAGES.values()} | {
        km.IMAGES["efa-device-plugin"].reference(km.eks_registry("us-west-2")),
        km.IMAGES["efa-device-plugin"].reference(km.eks_registry(TOKEN % 1)),
    }
    used = {c["image"] for d in DAEMONSETS.values() for c in d["spec"]["template"]["spec"]["containers"]}
    assert used <= pinned
    for image in km.IMAGES.values():
        assert image.tag and image.tag != "latest" and ":" not in image.repository.rpartition("/")[2]


# The file system ---------------------------------------------------------------------------------


def test_the_claim_and_the_volume_bind_only_to_each_other() -> None:
    volume, claim = SETS["fsx"]()
    assert (volume["kind"], claim["kind"]) == ("PersistentVolume", "PersistentVolumeClaim")
    assert (claim["metadata"]["namespace"], claim["metadata"]["name"]) == ("training", "fsx-claim")
    assert claim["spec"]["volumeName"] == volume["metadata"]["name"]
    ref = volume["spec"]["claimRef"]
    assert (ref["namespace"], ref["name"]) == (claim["metadata"]["namespace"], claim["metadata"]["name"])
    assert volume["spec"]["storageClassName"] == claim["spec"]["storageClassName"] == ""  # no dynamic provisioning
    assert volume["spec"]["accessModes"] == claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert volume["spec"]["volumeMode"] == claim["spec"]["volumeMode"] == "Filesystem"
    assert volume["spec"]["capacity"]["storage"] == claim["spec"]["resources"]["requests"]["storage"] == "1200Gi"
    assert volume["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    assert volume["spec"]["csi"] == {
        "driver": "fsx.csi.aws.com",
        "volumeHandle": "fs-0123456789abcdef0",
        "volumeAttributes": {"dnsname": "fs-0123456789abcdef0.fsx.us-west-2.amazonaws.com", "mountname": "abcdefgh"},
    }


def test_token_strings_pass_through_unchanged() -> None:
    volume, claim = SETS["fsx-tokens"]()
    assert volume["spec"]["csi"]["volumeHandle"] == TOKEN % 1
    assert volume["spec"]["csi"]["volumeAttributes"] == {"dnsname": TOKEN % 2, "mountname": TOKEN % 3}
    assert (
        volume["spec"]["capacity"]["storage"]
        == claim["spec"]["resources"]["requests"]["storage"]
        == "${Token[TOKEN.4]}Gi"
    )
    assert (claim["metadata"]["namespace"], claim["metadata"]["name"]) == ("team-a", "scratch-claim")


def test_fsx_volume_names_every_literal_that_cannot_work() -> None:
    with pytest.raises(ValueError) as caught:
        km.fsx_volume(file_system_id="fsx-1", dns_name="d", mount_name="m", capacity_gib=0, name="Fsx", namespace="a_b")
    message = str(caught.value)
    for part in ("file_system_id", "'fsx-1'", "capacity_gib", "got 0", "name", "'Fsx'", "namespace", "'a_b'"):
        assert part in message
    for capacity in (True, -5, "12.5", "", 1.5):
        with pytest.raises(ValueError, match="capacity_gib"):
            km.fsx_volume(file_system_id="fs-0123456789abcdef0", dns_name="d", mount_name="m", capacity_gib=capacity)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name must be at most 57"):
        km.fsx_volume(file_system_id="fs-01234567", dns_name="d", mount_name="m", capacity_gib=1200, name="a" * 58)


# Determinism -------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(SETS))
def test_same_arguments_give_equal_objects_and_no_shared_parts(key: str) -> None:
    first, second = SETS[key](), SETS[key]()
    assert json.dumps(first) == json.dumps(second)  # same content, same key order
    for obj in first:
        obj["metadata"]["labels"]["changed"] = "yes"
    first[-1].get("spec", first[-1]["metadata"]["labels"]).clear()
    assert json.dumps(SETS[key]()) == json.dumps(second)


# The PyTorchJob example --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def job() -> dict[str, Any]:
    (document,) = list(yaml.safe_load_all(EXAMPLE.read_text()))
    assert isinstance(document, dict)
    return document


def test_the_example_pod_template_passes_the_strict_schema(job: dict[str, Any]) -> None:
    for replica in job["spec"]["pytorchReplicaSpecs"].values():
        assert validate(as_pod_template(replica["template"])) == KUBERNETES_VERSION


def test_the_example_runs_only_on_healthy_gpu_nodes_with_efa(job: dict[str, Any]) -> None:
    pod = job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]
    assert pod["nodeSelector"] == {
        contract.LABEL_ACCELERATOR: "nvidia", contract.LABEL_EFA: "true", contract.LABEL_HEALTH: "Schedulable",
    }  # fmt: skip
    for status in contract.NODE_HEALTH_STATUSES:
        if status != "Schedulable":
            assert not tolerates(pod["tolerations"], contract.LABEL_HEALTH, status, contract.HEALTH_TAINT_EFFECT)
    assert label_problems(job) == []


def test_the_example_resumes_elastically_from_the_file_system_claim(job: dict[str, Any]) -> None:
    spec = job["spec"]
    (worker_type,) = spec["pytorchReplicaSpecs"]
    worker = spec["pytorchReplicaSpecs"][worker_type]
    assert (job["apiVersion"], job["kind"], worker_type) == ("kubeflow.org/v1", "PyTorchJob", "Worker")
    assert worker["restartPolicy"] == "OnFailure"
    elastic = spec["elasticPolicy"]
    assert elastic["rdzvBackend"] == "c10d"
    assert 1 <= elastic["minReplicas"] <= worker["replicas"] <= elastic["maxReplicas"]
    assert elastic["maxRestarts"] > 0
    pod = worker["template"]["spec"]
    (container,) = pod["containers"]
    assert container["name"] == "pytorch"
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v
    }
    _, default_claim = km.fsx_volume(file_system_id="fs-01234567", dns_name="d", mount_name="m", capacity_gib=1200)
    assert job["metadata"]["namespace"] == default_claim["metadata"]["namespace"]
    assert list(claims.values()) == [default_claim["metadata"]["name"]]
    (checkpoints,) = [m["mountPath"] for m in container["volumeMounts"] if m["name"] in claims]
    assert any(arg.startswith(f"--checkpoint-dir={checkpoints}/") for arg in container["command"])


def test_the_example_asks_for_gpus_and_efa_as_kubernetes_allows_extended_resources(job: dict[str, Any]) -> None:
    (container,) = job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"]
    requests, limits = container["resources"]["requests"], container["resources"]["limits"]
    for resource in ("nvidia.com/gpu", "vpc.amazonaws.com/efa"):
        # An extended resource cannot be overcommitted: a request must equal its limit.
        assert isinstance(limits[resource], int) and limits[resource] > 0
        assert requests[resource] == limits[resource]
    assert str(limits["nvidia.com/gpu"]) == job["spec"]["nprocPerNode"]  # one process per GPU


# The custom resource against the Kubeflow training SDK's typed models (no CRD can be had offline).


def model_problems(value: Any, type_name: str, path: str = "") -> list[str]:
    """Where ``value`` does not fit the SDK's OpenAPI type ``type_name``: unknown fields, wrong
    primitive types, missing required fields (the models' own setters), and, for a pod template,
    the strict Kubernetes schema."""
    models = importlib.import_module("kubeflow.training.models")  # a dev dependency: never skipped
    kube_models = importlib.import_module("kubernetes.client.models")
    if type_name.startswith("list["):
        if not isinstance(value, list):
            return [f"{path}: not a list"]
        return [p for i, item in enumerate(value) for p in model_problems(item, type_name[5:-1], f"{path}[{i}]")]
    if type_name.startswith("dict("):
        if not isinstance(value, dict):
            return [f"{path}: not a map"]
        inner = type_name[5:-1].split(", ", 1)[1]
        return [p for key, item in value.items() for p in model_problems(item, inner, f"{path}.{key}")]
    primitives: dict[str, type | tuple[type, ...]] = {"str": str, "int": int, "bool": bool, "float": (int, float)}
    primitive = primitives.get(type_name)
    if primitive is not None:
        wrong = isinstance(value, bool) and type_name != "bool"
        return [] if isinstance(value, primitive) and not wrong else [f"{path}: {value!r} is not {type_name}"]
    if type_name == "V1PodTemplateSpec":
        try:
            validate(as_pod_template(value))
        except kubernetes_validate.ValidationError as error:
            within = ".".join(map(str, list(error.path)[1:]))  # past the PodTemplate's "template"
            return [f"{path}.{within}: {error.message}"]
        return []
    model = getattr(models, type_name, None) or getattr(kube_models, type_name)
    if not isinstance(value, dict):
        return [f"{path}: not an object ({type_name})"]
    attribute = {json_key: name for name, json_key in model.attribute_map.items()}
    problems = [f"{path}.{key}: no such field in {type_name}" for key in value if key not in attribute]
    known = {attribute[key]: item for key, item in value.items() if key in attribute}
    try:
        model(**known)  # the generated setters refuse a missing required field
    except ValueError as error:
        problems.append(f"{path}: {error}")
    for name, item in known.items():
        problems += model_problems(item, model.openapi_types[name], f"{path}.{model.attribute_map[name]}")
    return problems


def test_the_example_custom_resource_fits_the_training_sdks_pytorchjob_model(job: dict[str, Any]) -> None:
    assert model_problems(job, "KubeflowOrgV1PyTorchJob") == []


def test_the_model_check_refuses_a_broken_job(job: dict[str, Any]) -> None:
    broken = copy.deepcopy(job)
    broken["spec"]["elasticPolicy"]["minReplica"] = 1  # a misspelt field
    broken["spec"]["elasticPolicy"]["maxRestarts"] = "100"  # a string for an int
    del broken["spec"]["runPolicy"]  # required in the model
    worker = broken["spec"]["pytorchReplicaSpecs"]["Worker"]
    worker["template"]["spec"]["containers"][0]["resource"] = {}  # caught by the pod schema
    assert sorted(model_problems(broken, "KubeflowOrgV1PyTorchJob")) == [
        ".spec.elasticPolicy.maxRestarts: '100' is not int",
        ".spec.elasticPolicy.minReplica: no such field in KubeflowOrgV1ElasticPolicy",
        ".spec.pytorchReplicaSpecs.Worker.template.spec.containers.0: Additional properties are not allowed "
        "('resource' was unexpected)",
        ".spec: Invalid value for `run_policy`, must not be `None`",
    ]


# The training operator ---------------------------------------------------------------------------


def operator_objects(**kwargs: Any) -> dict[str, dict[str, Any]]:
    """The operator's objects by kind (one of each)."""
    objects = ko.training_operator(**kwargs)
    by_kind = {obj["kind"]: obj for obj in objects}
    assert len(by_kind) == len(objects)
    return by_kind


def grants(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    """Every (API group, resource, verb) a role grants."""
    return {
        (g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]
    }


READ = {"get", "list", "watch"}
ALL = READ | {"create", "update", "patch", "delete"}


def test_the_operator_role_grants_no_wildcard() -> None:
    for key in ("operator", "operator-volcano", "operator-scheduler-plugins"):
        for obj in SETS[key]():
            for rule in obj.get("rules", []):
                for field in ("apiGroups", "resources", "verbs"):
                    assert "*" not in rule[field], (key, obj["kind"], rule)
                    assert not any("*" in item for item in rule[field]), (key, obj["kind"], rule)


def test_the_cluster_role_is_what_the_pytorchjob_controller_and_the_rotator_use() -> None:
    role = operator_objects()["ClusterRole"]
    expected = (
        {("kubeflow.org", "pytorchjobs", v) for v in ALL}
        | {("kubeflow.org", "pytorchjobs/status", v) for v in ("get", "update", "patch")}
        | {("kubeflow.org", "pytorchjobs/finalizers", "update")}
        | {("", "pods", v) for v in ALL}
        | {("", "services", v) for v in READ | {"create", "delete"}}
        | {("", "events", v) for v in ("create", "patch")}
        | {("autoscaling", "horizontalpodautoscalers", v) for v in ALL}
        # Read only: the rotator watches webhook configurations, but none is registered.
        | {("admissionregistration.k8s.io", "validatingwebhookconfigurations", v) for v in READ}
        # Read only without gang scheduling: watched whenever their definitions exist.
        | {(g, "podgroups", v) for g in ("scheduling.volcano.sh", "scheduling.x-k8s.io") for v in READ}
    )
    assert grants(role) == expected
    # Nothing of the other job kinds' controllers (MPI's configmaps, roles, exec; the other CRDs),
    # and no Secret anywhere but the operator's own namespace.
    assert not {r for _, r, _ in grants(role)} & {
        "secrets",
        "configmaps",
        "roles",
        "rolebindings",
        "pods/exec",
        "tfjobs",
    }


@pytest.mark.parametrize(
    ("scheduler", "written"),
    [("volcano", "scheduling.volcano.sh"), ("scheduler-plugins-scheduler", "scheduling.x-k8s.io")],
)
def test_gang_scheduling_adds_writing_that_schedulers_podgroups_only(scheduler: str, written: str) -> None:
    objects = operator_objects(gang_scheduler_name=scheduler)
    podgroups = {(g, v) for g, r, v in grants(objects["ClusterRole"]) if r == "podgroups"}
    other = ({"scheduling.volcano.sh", "scheduling.x-k8s.io"} - {written}).pop()
    assert podgroups == {(written, v) for v in ALL} | {(other, v) for v in READ}
    (container,) = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert f"--gang-scheduler-name={scheduler}" in container["args"]


@pytest.mark.parametrize("bad", ["Volcano", "", "a_b", "x" * 64])
def test_a_gang_scheduler_name_that_cannot_be_one_is_refused(bad: str) -> None:
    with pytest.raises(
        ValueError,
        match=re.escape(f"gang_scheduler_name must be volcano or a scheduler's name (a DNS label), got {bad!r}"),
    ):
        ko.training_operator(gang_scheduler_name=bad)


def test_the_operator_runs_as_the_account_its_roles_are_bound_to() -> None:
    objects = operator_objects()
    account = objects["ServiceAccount"]["metadata"]
    assert account == {"name": "training-operator", "namespace": "kubeflow", "labels": account["labels"]}
    assert objects["Deployment"]["spec"]["template"]["spec"]["serviceAccountName"] == account["name"]
    for kind in ("ClusterRole", "Role"):
        binding = objects[f"{kind}Binding"]
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": kind,
            "name": objects[kind]["metadata"]["name"],
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account["name"], "namespace": account["namespace"]}
        ]
    # Its Secret and its leader-election Lease, in its own namespace only.
    role = objects["Role"]
    assert role["metadata"]["namespace"] == objects["RoleBinding"]["metadata"]["namespace"] == "kubeflow"
    assert grants(role) == {("", "secrets", v) for v in READ | {"update"}} | {
        ("coordination.k8s.io", "leases", v) for v in ("get", "create", "update")
    }


def test_the_operator_runs_non_root_from_the_pinned_image_and_only_the_pytorchjob_controller() -> None:
    objects = operator_objects()
    deployment = objects["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    image = km.IMAGES["training-operator"]
    assert container["image"] == image.reference() == "docker.io/kubeflow/training-operator:v1-04f9f13"
    assert pod["securityContext"]["runAsNonRoot"] is True
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] != 0 and security["runAsGroup"] != 0
    assert security["allowPrivilegeEscalation"] is False and security["capabilities"] == {"drop": ["ALL"]}
    assert security["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    # One scheme (PyTorchJob), one active replica.
    assert container["args"] == ["--enable-scheme=pytorchjob", "--leader-elect"]
    assert deployment["spec"]["replicas"] == 1
    assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 8081}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 8081}
    match = deployment["spec"]["selector"]["matchLabels"]
    assert match and match.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    # the system group's nodes, as the control plane labels them from AWS (no node can claim it)
    assert (
        pod["nodeSelector"]
        == {contract.PROTECTED_LABEL_GROUP: SYSTEM_GROUP}
        == {"node-restriction.kubernetes.io/training-cluster-instance-group": "system"}
    )
    assert objects["Namespace"]["metadata"]["name"] == deployment["metadata"]["namespace"] == "kubeflow"


def test_the_certificate_rotator_finds_its_secret_mounted_and_no_webhook_is_registered() -> None:
    objects = operator_objects()
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    secret = objects["Secret"]
    assert (secret["metadata"]["name"], secret["metadata"]["namespace"]) == (
        "training-operator-webhook-cert",
        "kubeflow",
    )
    assert "data" not in secret and "stringData" not in secret  # the rotator writes the certificates
    volumes = {v["name"]: v for v in pod["volumes"]}
    (mount,) = container["volumeMounts"]
    assert mount == {"name": mount["name"], "mountPath": "/tmp/k8s-webhook-server/serving-certs", "readOnly": True}
    assert volumes[mount["name"]]["secret"] == {"secretName": secret["metadata"]["name"]}
    kinds = {obj["kind"] for obj in ko.training_operator()}
    assert not kinds & {"ValidatingWebhookConfiguration", "MutatingWebhookConfiguration", "Service"}


@pytest.mark.parametrize(
    "break_it",
    [
        lambda v: v["schema"]["openAPIV3Schema"].update(requird=["spec"]),  # unknown schema keyword
        lambda v: v["schema"]["openAPIV3Schema"]["properties"]["spec"].update(type=5),  # wrong type
        lambda v: v["subresources"]["scale"].pop("specReplicasPath"),  # required field
    ],
    ids=["unknown-keyword", "wrong-type", "missing-required"],
)
def test_the_same_validation_refuses_a_broken_definition(break_it: Callable[[dict[str, Any]], Any]) -> None:
    crd = operator_objects()["CustomResourceDefinition"]
    break_it(crd["spec"]["versions"][0])
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(crd)


def test_the_definition_is_pytorchjob_v1_only() -> None:
    crds = [obj for obj in ko.training_operator() if obj["kind"] == "CustomResourceDefinition"]
    (crd,) = crds
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "pytorchjobs.kubeflow.org"
    assert (spec["group"], spec["scope"], spec["names"]["kind"], spec["names"]["plural"]) == (
        "kubeflow.org", "Namespaced", "PyTorchJob", "pytorchjobs",
    )  # fmt: skip
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1", True, True)


# The PyTorchJob definition's schema --------------------------------------------------------------


def crd_schema() -> dict[str, Any]:
    crd = operator_objects()["CustomResourceDefinition"]
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def strict(node: dict[str, Any]) -> dict[str, Any]:
    """A definition's structural schema as plain JSON Schema, applied as kubectl's strict field
    validation (its default since Kubernetes 1.27) has the API server apply it: x-kubernetes-*
    keys dropped, and an object that lists its properties refusing any other unless it keeps
    unknown fields."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-"):
            continue
        if key == "properties":
            out[key] = {name: strict(child) for name, child in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = strict(value)
        elif key == "anyOf":
            out[key] = [strict(child) for child in value]
        else:
            out[key] = value
    if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def schema_problems(document: Any) -> list[tuple[str, str]]:
    validator = jsonschema.Draft7Validator(strict(crd_schema()))
    return sorted(
        (".".join(map(str, error.absolute_path)), error.validator) for error in validator.iter_errors(document)
    )


def schema_at(schema: dict[str, Any], path: str) -> dict[str, Any]:
    """The schema of a field path such as ``.spec.pytorchReplicaSpecs.Worker.replicas`` (a map's
    key stands for any key)."""
    node = schema
    for part in path.strip(".").split("."):
        node = node["properties"][part] if part in node.get("properties", {}) else node["additionalProperties"]
    return node


def test_the_example_job_passes_the_definitions_schema(job: dict[str, Any]) -> None:
    assert schema_problems(job) == []


def test_the_definitions_schema_refuses_a_broken_job(job: dict[str, Any]) -> None:
    broken = copy.deepcopy(job)
    broken["spec"]["elasticPolicy"]["minReplica"] = 1  # a misspelt field
    broken["spec"]["elasticPolicy"]["maxRestarts"] = "100"  # a string for an int
    broken["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] = "4"
    broken["spec"]["runPolicy"]["managedBy"] = "kueue.x-k8s.io/multikueue"  # the SDK's, not v1.8.1's
    assert schema_problems(broken) == [
        ("spec.elasticPolicy", "additionalProperties"),
        ("spec.elasticPolicy.maxRestarts", "type"),
        ("spec.pytorchReplicaSpecs.Worker.replicas", "type"),
        ("spec.runPolicy", "additionalProperties"),
    ]
    del broken["spec"]["pytorchReplicaSpecs"]
    assert ("spec", "required") in schema_problems(broken)


def test_run_policy_is_optional_as_in_the_operators_own_definition(job: dict[str, Any]) -> None:
    without = copy.deepcopy(job)
    del without["spec"]["runPolicy"]
    assert schema_problems(without) == []


def test_pod_templates_are_open_objects_and_the_scale_paths_exist() -> None:
    schema = crd_schema()
    assert schema_at(schema, ".spec.pytorchReplicaSpecs.Worker.template") == {
        "type": "object", "x-kubernetes-preserve-unknown-fields": True,
    }  # fmt: skip
    assert schema["properties"]["metadata"] == {"type": "object"}
    version = operator_objects()["CustomResourceDefinition"]["spec"]["versions"][0]
    scale = version["subresources"]["scale"]
    assert schema_at(schema, scale["specReplicasPath"])["type"] == "integer"
    assert schema_at(schema, scale["statusReplicasPath"])["type"] == "integer"
    assert schema_at(schema, scale["labelSelectorPath"])["type"] == "string"
    assert version["subresources"]["status"] == {}


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_pytorchjob_crd", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_shipped_schema_is_what_the_generator_writes() -> None:
    # The lint target's --check path, as it runs there.
    result = subprocess.run([sys.executable, str(GENERATOR), "--check"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_the_generator_check_fails_on_a_stale_schema(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    generator = load_generator()
    stale = tmp_path / "schema.json"
    stale.write_text('{"openAPIV3Schema":{}}\n')
    monkeypatch.setattr(generator, "OUTPUT", stale)
    assert generator.main(["--check"]) == 1
    assert generator.main([]) == 0
    assert generator.main(["--check"]) == 0
    assert json.loads(stale.read_text())["openAPIV3Schema"] == crd_schema()


@pytest.mark.parametrize(
    ("first", "code"), [("", 0), ("import kubeflow.training; ", 1)], ids=["package", "check-works"]
)
def test_the_package_builds_the_operator_without_the_sdk(first: str, code: int) -> None:
    script = (
        f"import sys; {first}from training_cluster import kube_operator as ko; ko.training_operator(); "
        "sys.exit(sorted(m for m in sys.modules if m.split('.')[0] in ('kubeflow', 'kubernetes')) or 0)"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert result.returncode == code, result.stderr


def test_jobs_run_where_pod_security_refuses_what_would_take_a_node() -> None:
    """Whoever may run jobs in ``training`` cannot run a privileged pod or mount a host path there,
    so cannot read the tokens of what runs on the node (the training operator's, the Neuron plugin's)."""
    (namespace,) = km.training_namespace()
    labels = namespace["metadata"]["labels"]
    assert (namespace["metadata"]["name"], labels["pod-security.kubernetes.io/enforce"]) == ("training", "baseline")
    _, claim = km.fsx_volume(file_system_id="fs-01234567", dns_name="d", mount_name="m", capacity_gib=1200)
    job = yaml.safe_load(EXAMPLE.read_text())
    assert job["metadata"]["namespace"] == claim["metadata"]["namespace"] == namespace["metadata"]["name"]
    pod = job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]
    # within baseline: no privileged container, host path, host network or added capability
    assert not pod.get("hostNetwork") and not [v for v in pod.get("volumes", []) if "hostPath" in v]
    for container in pod["containers"]:
        context = container.get("securityContext", {})
        assert not context.get("privileged") and not context.get("capabilities", {}).get("add")
