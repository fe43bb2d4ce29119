"""Session fixtures: every config is synthesized once per test run, with cdk-nag attached.

Apps are built with the context of cdk.json so feature flags match ``cdk synth``.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, CfnElement, Validations
from aws_cdk.assertions import Template
from cdk_nag import AwsSolutionsChecks
from constructs import IConstruct
from kube_stub import Pki
from syrupy.assertion import SnapshotAssertion
from syrupy.extensions.json import JSONSnapshotExtension

from training_cluster import ClusterConfig, ConfigError, TrainingClusterStack
from training_cluster.node_bootstrap import expand

ROOT = Path(__file__).resolve().parents[1]
# Code that runs outside synthesis is imported as it runs there: the Lambda asset root and node/.
sys.path[:0] = [str(ROOT / "lambda" / "repair")] + [
    str(ROOT / "node" / d) for d in ("", "health", "observability", "slurm")
]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
CDK_CONTEXT: dict[str, Any] = json.loads((ROOT / "cdk.json").read_text())["context"]
ASSET_HASH = re.compile(r"[0-9a-f]{64}")


def _stage_node_tree() -> Path:
    """``node/`` laid out as on a node's ``/opt/training-cluster``: the scripts with ``contract.sh``
    beside ``lib.sh``, as user data writes it. Node tests run the scripts from here, so the tree
    holds no generated file."""
    from training_cluster.node_bootstrap import node_library

    staged = Path(tempfile.mkdtemp(prefix="training-cluster-node-")) / "node"
    shutil.copytree(ROOT / "node", staged, ignore=shutil.ignore_patterns("__pycache__"))
    for name, text in node_library().items():
        (staged / name).write_text(text, encoding="utf-8")
    atexit.register(shutil.rmtree, staged.parent, ignore_errors=True)
    return staged


NODE = _stage_node_tree()


def readme_library_example() -> str:
    """The README's example of the library in another CDK app (a config, then the pieces)."""
    readme = (ROOT / "README.md").read_text()
    (code,) = [block for block in re.findall(r"```python\n(.*?)```", readme, re.S) if "ClusterNetwork(" in block]
    return code


@dataclass
class Synthesized:
    """One synthesized cluster: its stack, template and cdk-nag report."""

    config: ClusterConfig
    stack: TrainingClusterStack
    template_json: dict[str, Any]
    nag_report: dict[str, Any]
    outdir: Path
    _template: Template | None = field(default=None, repr=False)

    @property
    def template(self) -> Template:
        if self._template is None:
            self._template = Template.from_json(self.template_json)
        return self._template

    @property
    def template_path(self) -> Path:
        return self.outdir / f"{self.stack.artifact_id}.template.json"

    def resources(self, type_name: str | None = None) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.template_json["Resources"].items() if type_name is None or v["Type"] == type_name}

    def logical_ids(self, scope: IConstruct) -> set[str]:
        """The logical ids of every CloudFormation element under ``scope``."""
        return {self.stack.resolve(c.logical_id) for c in scope.node.find_all() if isinstance(c, CfnElement)}

    def resources_of(self, scope: IConstruct) -> dict[str, dict[str, Any]]:
        ids = self.logical_ids(scope)
        return {k: v for k, v in self.template_json["Resources"].items() if k in ids}

    def only(self, scope: IConstruct, type_name: str) -> dict[str, Any]:
        """The one resource of ``type_name`` under ``scope``."""
        (resource,) = [r for r in self.resources_of(scope).values() if r["Type"] == type_name]
        return resource

    def launch_data(self, group: str) -> dict[str, Any]:
        """The launch template data of a fleet."""
        data: dict[str, Any] = self.only(self.stack.fleets[group], "AWS::EC2::LaunchTemplate")["Properties"][
            "LaunchTemplateData"
        ]
        return data

    def user_data(self, group: str, reference: str = "<ref>") -> str:
        """A fleet's user data as text, each CloudFormation reference shown as ``reference``."""
        joined = self.launch_data(group)["UserData"]["Fn::Base64"]
        if isinstance(joined, str):
            return expand(joined)
        return expand("".join(part if isinstance(part, str) else reference for part in joined["Fn::Join"][1]))


def mask_asset_hashes(value: Any) -> Any:
    """What snapshots keep of resources. Asset hashes change with any byte of an asset: only their
    place is kept. User data embeds the whole bootstrap script, which targeted tests check (and
    run): only its place is kept. IAM's lists of statements and resources are sets: sorted, so a
    masked hash does not move a statement."""
    return _snapshot_form(json.loads(ASSET_HASH.sub("<asset-hash>", json.dumps(value))))


def _snapshot_form(value: Any) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "UserData":
                out[key] = "<user data: see the bootstrap and user-data tests>"
            elif key in ("Statement", "Resource", "Action") and isinstance(item, list):
                out[key] = sorted((_snapshot_form(i) for i in item), key=lambda i: json.dumps(i, sort_keys=True))
            else:
                out[key] = _snapshot_form(item)
        return out
    if isinstance(value, list):
        return [_snapshot_form(item) for item in value]
    return value


def synthesize(config: ClusterConfig, outdir: Path, stack_id: str = "Cluster") -> Synthesized:
    app = App(context=CDK_CONTEXT, outdir=str(outdir))
    stack = TrainingClusterStack(app, stack_id, config=config)
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    try:
        app.synth()
    except RuntimeError as exc:  # cdk-nag findings: the report says which; test_nag asserts none
        if "ValidationFailed" not in str(exc):
            raise
    template = json.loads((outdir / f"{stack.artifact_id}.template.json").read_text())
    report = json.loads((outdir / "validation-report.json").read_text())
    return Synthesized(config=config, stack=stack, template_json=template, nag_report=report, outdir=outdir)


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Synthesized]]:
    """``synth(config_or_path)``: synthesized once per test run for each distinct config."""
    cache: dict[str, Synthesized] = {}

    def get(source: ClusterConfig | Path | str) -> Synthesized:
        config = source if isinstance(source, ClusterConfig) else ClusterConfig.from_yaml(source)
        key = config.model_dump_json()
        if key not in cache:
            cache[key] = synthesize(config, tmp_path_factory.mktemp(config.name))
        return cache[key]

    yield get


@pytest.fixture(scope="session")
def default_cluster(synth: Callable[..., Synthesized]) -> Synthesized:
    return synth(ROOT / "examples" / "default.yaml")


@pytest.fixture(scope="session")
def p4d(synth: Callable[..., Synthesized]) -> Synthesized:
    return synth(ROOT / "examples" / "p4d-reservation.yaml")


@pytest.fixture(scope="session")
def trn2(synth: Callable[..., Synthesized]) -> Synthesized:
    return synth(ROOT / "examples" / "trn2-capacity-block.yaml")


@pytest.fixture(scope="session")
def b300(synth: Callable[..., Synthesized]) -> Synthesized:
    return synth(ROOT / "examples" / "existing-vpc.yaml")


@pytest.fixture(scope="session")
def lean(synth: Callable[..., Synthesized]) -> Synthesized:
    return synth(ROOT / "tests" / "configs" / "lean.yaml")


@pytest.fixture(params=[p.name for p in EXAMPLES])
def example(request: pytest.FixtureRequest, synth: Callable[..., Synthesized]) -> Synthesized:
    return synth(ROOT / "examples" / request.param)


DEBIAN_TOOLS = ("promtool", "amtool")
"""Tools from Debian's packages that ``make test`` installs; tests asking for them are slow
(``make test-fast`` skips them), as are the real-Slurm tests."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if set(getattr(item, "fixturenames", ())) & set(DEBIAN_TOOLS):
            item.add_marker(pytest.mark.slow)


def _debian_tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} comes from Debian's prometheus packages, which make test installs"
    return path


@pytest.fixture(scope="session")
def promtool() -> str:
    return _debian_tool("promtool")


@pytest.fixture(scope="session")
def amtool() -> str:
    return _debian_tool("amtool")


@pytest.fixture
def snapshot_json(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    return snapshot.use_extension(JSONSnapshotExtension)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A throwaway cluster CA and the loopback Kubernetes stand-in's certificate (tests/kube_stub.py)."""
    return Pki.make(tmp_path_factory.mktemp("kube-pki"))


def cli_against(endpoint: str, *argv: str, env: dict[str, str] | None = None, stdin: str = "") -> tuple[int, str, str]:
    """The installed ``training-cluster`` script run in a subprocess against an AWS stand-in at
    ``endpoint`` (moto's server), with test credentials and nothing of the machine's AWS
    configuration; ``env`` adds (or, with "", removes) variables. (code, stdout, stderr)."""
    environment = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        "AWS_EC2_METADATA_DISABLED": "true",
        **(env or {}),
    }
    script = Path(sys.executable).parent / "training-cluster"
    result = subprocess.run(
        [str(script), *argv],
        env={k: v for k, v in environment.items() if v},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return result.returncode, result.stdout, result.stderr


def errors_of(data: dict[str, Any]) -> list[str]:
    """The problems ``data`` is refused with, each ``path: message``."""
    with pytest.raises(ConfigError) as info:
        ClusterConfig.from_dict(data)
    assert str(info.value).startswith(f"{len(info.value.findings)} problem")
    return [str(f) for f in info.value.findings]


def minimal_config(**overrides: Any) -> dict[str, Any]:
    """A small valid config as a dict, for tests that change one thing."""
    data: dict[str, Any] = {
        "name": "t",
        "region": "us-east-1",
        "availability_zone": "us-east-1a",
        "instance_groups": [{"name": "gpu", "instance_type": "p5.48xlarge", "count": 2}],
        "storage": {"lustre": {}},
    }
    data.update(overrides)
    return data


def twenty_groups() -> ClusterConfig:
    """20 instance groups (19 p5 groups of 16 nodes and a login group): the size limits' test case."""
    groups: list[dict[str, Any]] = [
        {"name": f"gpu-{i:02d}", "instance_type": "p5.48xlarge", "count": 16} for i in range(19)
    ]
    groups.append({"name": "login", "instance_type": "m7i.2xlarge", "count": 2, "placement_group": False})
    groups[0]["placement_group"] = False  # one warning to see: EFA without a placement group
    return ClusterConfig.from_dict(minimal_config(name="twenty", instance_groups=groups))


def slurm_rds() -> ClusterConfig:
    """Slurm in a new VPC with its accounting in RDS and every Slurm option away from its default."""
    return ClusterConfig.from_dict(
        minimal_config(
            name="slurm-rds",
            instance_groups=[
                {"name": "gpu", "instance_type": "p5.48xlarge", "count": 2, "spares": 1},
                {"name": "l40s", "instance_type": "g6e.48xlarge", "count": 2},
            ],
            orchestrator={
                "controller_instance_type": "m7i.8xlarge",
                "login_nodes": 2,
                "login_instance_type": "m7i.xlarge",
                "accounting": "rds",
                "accounting_instance_class": "db.r7g.large",
                "partitions": {"train": ["gpu"], "all": ["gpu", "l40s"]},
                "users": {"alice": 2001},
                "containers": True,
                "ssh_key_name": "ops",
                "users_can_use_node_role": True,
            },
        )
    )


# Every config the gates (cfn-lint, cdk-nag) check: the examples and the test variants.
GATED: dict[str, Callable[[], ClusterConfig]] = {
    **{p.name: (lambda p=p: ClusterConfig.from_yaml(p)) for p in EXAMPLES},  # type: ignore[misc]
    "lean.yaml": lambda: ClusterConfig.from_yaml(ROOT / "tests" / "configs" / "lean.yaml"),
    "eks-own-vpc.yaml": lambda: ClusterConfig.from_yaml(ROOT / "tests" / "configs" / "eks-own-vpc.yaml"),
    "hyperpod-own-vpc.yaml": lambda: ClusterConfig.from_yaml(ROOT / "tests" / "configs" / "hyperpod-own-vpc.yaml"),
    "twenty-groups": twenty_groups,
    "slurm-rds": slurm_rds,
}

__all__ = [
    "EXAMPLES",
    "GATED",
    "ROOT",
    "Synthesized",
    "cli_against",
    "errors_of",
    "mask_asset_hashes",
    "minimal_config",
    "slurm_rds",
    "twenty_groups",
]
