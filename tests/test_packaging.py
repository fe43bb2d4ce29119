"""The wheel carries everything a construct needs at deploy time, so other CDK apps can use it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT, readme_library_example

PRINT_ORIGIN = """
import json, training_cluster
from training_cluster._assets import asset_path
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
    for shipped in ("node/bootstrap.sh", "node/lib.sh", "node/health/health_agent.py", "lambda/repair/handler.py"):
        assert f"training_cluster/_assets/{shipped}" in names
    assert "training_cluster/contract.py" in names and "training_cluster/repair_policy.py" in names
    assert "training_cluster/catalog.json" in names
    assert not any("__pycache__" in n or n.startswith(("tests/", "examples/")) for n in names)


@pytest.mark.slow
def test_installed_wheel_composes_the_pieces_in_another_app(wheel: Path, tmp_path: Path) -> None:
    """The README's example (the whole cluster from a config, then the pieces by hand), run on
    the installed wheel."""
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (tmp_path / "cluster.yaml").write_text((ROOT / "examples" / "default.yaml").read_text())
    code = readme_library_example().replace("app = App()", f"app = App(outdir={str(tmp_path / 'out')!r})")
    env = {**os.environ, "PYTHONPATH": str(site)}  # ahead of the editable checkout
    result = subprocess.run(
        [sys.executable, "-c", code + PRINT_ORIGIN],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    used = json.loads(result.stdout.strip().splitlines()[-1])
    assert used["package"].startswith(str(site)) and used["bootstrap"].startswith(str(site))
    demo = json.loads((tmp_path / "out" / "demo.template.json").read_text())
    assert any(r["Type"] == "AWS::FSx::FileSystem" for r in demo["Resources"].values())
    pieces = json.loads((tmp_path / "out" / "pieces.template.json").read_text())
    types = [r["Type"] for r in pieces["Resources"].values()]
    assert {
        "AWS::FSx::FileSystem",
        "AWS::DynamoDB::Table",
        "AWS::APS::Workspace",
        "AWS::SecretsManager::Secret",
    } <= set(types)
    assert types.count("AWS::AutoScaling::AutoScalingGroup") == 2
    # The repair function's asset, staged from the wheel, carries the contract it imports.
    manifest = json.loads((tmp_path / "out" / "pieces.assets.json").read_text())
    folders = [tmp_path / "out" / a["source"]["path"] for a in manifest["files"].values()]
    assert any((f / "handler.py").is_file() and (f / "training_cluster" / "contract.py").is_file() for f in folders)
