"""The wheel carries everything a construct needs at deploy time, so other CDK apps can use it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT

USE_FROM_WHEEL = """
import json, sys
from aws_cdk import App
import training_cluster
from training_cluster import ClusterConfig, TrainingClusterStack
from training_cluster._assets import asset_path

app = App(outdir=sys.argv[2])
TrainingClusterStack(app, "Other", config=ClusterConfig.from_yaml(sys.argv[1]))
app.synth()
print(json.dumps({"package": training_cluster.__file__, "bootstrap": str(asset_path("node", "bootstrap.sh"))}))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("cdk_training_cluster-*.whl")
    return built


@pytest.mark.slow
def test_wheel_contains_the_node_scripts_and_catalog(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "training_cluster/_assets/node/bootstrap.sh" in names
    assert "training_cluster/catalog.json" in names
    assert not any("__pycache__" in n or n.startswith(("tests/", "examples/")) for n in names)


@pytest.mark.slow
def test_installed_wheel_builds_a_cluster_in_another_app(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    config = tmp_path / "cluster.yaml"
    config.write_text((ROOT / "examples" / "default.yaml").read_text())
    env = {**os.environ, "PYTHONPATH": str(site)}  # ahead of the editable checkout
    result = subprocess.run(
        [sys.executable, "-c", USE_FROM_WHEEL, str(config), str(tmp_path / "out")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    used = json.loads(result.stdout.strip().splitlines()[-1])
    assert used["package"].startswith(str(site)) and used["bootstrap"].startswith(str(site))
    template = json.loads((tmp_path / "out" / "Other.template.json").read_text())
    assert any(r["Type"] == "AWS::FSx::FileSystem" for r in template["Resources"].values())
