"""The README's library example runs as written."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import pytest

from conftest import ROOT, readme_library_example
from training_cluster.cli import main


@pytest.mark.slow
def test_readme_library_example_synthesizes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = readme_library_example()
    (tmp_path / "cluster.yaml").write_text((ROOT / "examples" / "default.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    # The jsii Node process is already running, so the output folder is passed, not set in the environment.
    code = code.replace("app = App()", f"app = App(outdir={str(tmp_path / 'out')!r})")
    exec(compile(code, "README.md", "exec"), {})
    assert {"demo.template.json", "pieces.template.json"} <= set(os.listdir(tmp_path / "out"))
    pieces = (tmp_path / "out" / "pieces.template.json").read_text()
    assert pieces.count('"efa-only"') == 32
    # Slurm from the pieces: the munge key, and a controller that mounts the file system first.
    assert '"AWS::SecretsManager::Secret"' in pieces and "SLURM_ROLE='controller'" in pieces
    assert "FSX_MOUNT_PATH='/fsx'" in pieces and "CLUSTER_NAME='pieces'" in pieces
    # Auto-repair and observability from the pieces: the agent and the collectors on both fleets.
    assert pieces.count("HEALTH_AGENT_SETTINGS=") == 2 and pieces.count("COLLECTORS_S3_URI=") == 2
    assert '"AWS::APS::Workspace"' in pieces and '"AWS::DynamoDB::Table"' in pieces
    assert "slurm-drain.sh" in pieces  # the repair function drains in Slurm first


def test_readme_config_reference_is_a_valid_config() -> None:
    import yaml

    from training_cluster import ClusterConfig

    readme = (ROOT / "README.md").read_text()
    (block,) = [b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S) if "instance_groups:" in b]
    config = ClusterConfig.from_dict(yaml.safe_load(block))
    assert config.auto_repair.policy.xid == {"79": "replace", "13": "observe"}
    # every top-level key of the config appears in the reference
    assert set(ClusterConfig.model_fields) == set(yaml.safe_load(block))


def test_the_readmes_validate_sample_is_what_validate_prints() -> None:
    readme = (ROOT / "README.md").read_text()
    (sample,) = re.findall(r"```\n\$ training-cluster validate examples/default.yaml\n(.*?)```", readme, re.S)
    out, err = io.StringIO(), io.StringIO()
    assert main(["validate", str(ROOT / "examples" / "default.yaml")], out=out, err=err) == 0
    assert out.getvalue() == sample
