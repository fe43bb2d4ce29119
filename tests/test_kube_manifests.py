"""The Kubernetes objects the cluster installs (kube_manifests) and the PyTorchJob example.

No API server exists offline (REFERENCE §9). What is checked:
- every object against the Kubernetes 1.35 OpenAPI schemas, strictly (an unknown field fails),
  with kubernetes-validate; a broken object is refused by the same call;
- what the schemas cannot see: that selectors select the pods and the contract's node labels,
  which taints are tolerated, the volume-claim binding, label and name syntax;
- the PyTorchJob: its pod template as above, and the custom resource's own fields against the
  typed models of the Kubeflow training SDK (1.9.4), when it is installed. The training
  operator's CRD itself cannot be fetched here, and nothing checks what the operator's webhook
  would refuse beyond those types.
"""

from __future__ import annotations

import copy
import importlib
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes_validate
import pytest
import yaml

from conftest import ROOT
from training_cluster import contract
from training_cluster import kube_manifests as km

KUBERNETES_VERSION = "1.35"
"""The Kubernetes minor the cluster pins."""
EXAMPLE = ROOT / "examples" / "eks" / "pytorchjob.yaml"
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
    """Every (key, value) of every labels, matchLabels and nodeSelector map in ``obj``."""
    if isinstance(obj, dict):
        for key, value in obj.items():
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
        ("neuron-device-plugin", {contract.LABEL_ACCELERATOR: "neuron"}),
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
    assert (claim["metadata"]["namespace"], claim["metadata"]["name"]) == ("default", "fsx-claim")
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
    first[-1]["spec"].clear()
    for obj in first:
        obj["metadata"]["labels"]["changed"] = "yes"
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
