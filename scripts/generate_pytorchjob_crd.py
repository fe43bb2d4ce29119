"""Regenerate ``src/training_cluster/data/pytorchjob-crd-schema.json`` from the Kubeflow training SDK.

The PyTorchJob custom resource definition the cluster installs (``kube_operator.training_operator``)
takes its ``openAPIV3Schema`` from this file. The schema is built from the typed models of the
``kubeflow-training`` SDK (a dev dependency: the package never imports it) and of the ``kubernetes``
client they refer to, walking ``openapi_types`` (the Python type of each attribute) and
``attribute_map`` (its JSON name) from ``KubeflowOrgV1PyTorchJob``. A field is required when the
model's setter refuses ``None``. Pod templates stay open objects (``x-kubernetes-preserve-unknown-fields``):
the API server checks them as Pods when the operator creates the pods, and spelling out the whole
PodSpec would make the definition ~600 KB.

    python scripts/generate_pytorchjob_crd.py            # rewrite the schema
    python scripts/generate_pytorchjob_crd.py --check    # exit 1 if the committed schema is stale
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
import types
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).resolve().parents[1] / "src" / "training_cluster" / "data" / "pytorchjob-crd-schema.json"
ROOT_MODEL = "KubeflowOrgV1PyTorchJob"

OPEN_OBJECTS = frozenset({"V1PodTemplateSpec"})
"""Kept as objects of any shape (see the module docstring)."""
ALIASES = {
    # The SDK names autoscaling/v2 MetricSpec after its Go package and ships no such model; the
    # kubernetes client calls the same type V2MetricSpec.
    "K8sIoApiAutoscalingV2MetricSpec": "V2MetricSpec",
}
QUANTITIES = frozenset({("V2MetricTarget", "average_value"), ("V2MetricTarget", "value")})
"""resource.Quantity fields that the kubernetes client types as ``str``: a quantity is an integer
or a string (kubeflow/trainer manifests/base/crds/kubeflow.org_pytorchjobs.yaml, MetricTarget)."""
LEFT_OUT = frozenset({("KubeflowOrgV1RunPolicy", "managed_by")})
"""Fields the SDK (1.9) has and the pinned operator (1.8.1) does not: ``runPolicy.managedBy`` came
with v1.9.0 ("Support managed by external controller", #2203, kubeflow/training-operator CHANGELOG.md)."""
OPTIONAL = frozenset({("KubeflowOrgV1PyTorchJobSpec", "run_policy")})
"""Required in the SDK's models, optional in the operator's own definition, which requires only
``pytorchReplicaSpecs`` (kubeflow/trainer manifests/base/crds/kubeflow.org_pytorchjobs.yaml)."""

_PRIMITIVES: dict[str, dict[str, Any]] = {
    "str": {"type": "string"},
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "bool": {"type": "boolean"},
    "datetime": {"type": "string", "format": "date-time"},
    # The form Kubernetes' own definitions give an int-or-string (IntOrString, Quantity).
    "Quantity": {"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": True},
}
_LIST = re.compile(r"list\[(.+)\]")
_MAP = re.compile(r"dict\(str, (.+)\)")


def _model(name: str) -> Any:
    sdk = importlib.import_module("kubeflow.training.models")
    kubernetes = importlib.import_module("kubernetes.client.models")
    name = ALIASES.get(name, name)
    found = getattr(sdk, name, None) or getattr(kubernetes, name, None)
    if found is None:
        raise LookupError(f"no model {name!r} in kubeflow.training.models or kubernetes.client.models")
    return found


def _required(model: Any, attribute: str) -> bool:
    """Whether the model's generated setter refuses ``None`` (its client-side required check)."""
    bare = model.__new__(model)
    bare.local_vars_configuration = types.SimpleNamespace(client_side_validation=True)
    try:
        setattr(bare, attribute, None)
    except ValueError:
        return True
    return False


def schema_of(type_name: str) -> dict[str, Any]:
    """The structural schema of one SDK type name (``str``, ``list[X]``, ``dict(str, X)``, a model)."""
    if type_name in _PRIMITIVES:
        copy: dict[str, Any] = json.loads(json.dumps(_PRIMITIVES[type_name]))
        return copy
    if match := _LIST.fullmatch(type_name):
        return {"type": "array", "items": schema_of(match.group(1))}
    if match := _MAP.fullmatch(type_name):
        return {"type": "object", "additionalProperties": schema_of(match.group(1))}
    if type_name in OPEN_OBJECTS:
        return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    if type_name == "V1ObjectMeta":
        return {"type": "object"}  # a custom resource's metadata is the API server's to check
    model = _model(type_name)
    name = model.__name__
    properties: dict[str, Any] = {}
    required: list[str] = []
    for attribute, attribute_type in model.openapi_types.items():
        if (name, attribute) in LEFT_OUT:
            continue
        json_name = model.attribute_map[attribute]
        quantity = (name, attribute) in QUANTITIES
        properties[json_name] = schema_of("Quantity" if quantity else attribute_type)
        if (name, attribute) not in OPTIONAL and _required(model, attribute):
            required.append(json_name)
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = sorted(required)
    return schema


def build() -> dict[str, Any]:
    return {
        "source": f"kubeflow-training {version('kubeflow-training')}, kubernetes {version('kubernetes')} "
        f"(scripts/generate_pytorchjob_crd.py, from {ROOT_MODEL})",
        "openAPIV3Schema": schema_of(ROOT_MODEL),
    }


def render() -> str:
    return json.dumps(build(), indent=None, separators=(",", ":"), sort_keys=True) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the committed schema differs")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(f"{OUTPUT} is stale: run python scripts/generate_pytorchjob_crd.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT} ({len(text)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
