"""node/observability: the collector configuration (rendered by the code the node runs, checked by
promtool) and collectors.sh run for real under bash with stand-ins for downloads and systemd."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

import collector_config
from conftest import ROOT
from stand_ins import stand_ins

SCRIPT = ROOT / "node" / "observability" / "collectors.sh"


@pytest.mark.parametrize(
    ("gpu", "neuron", "jobs"),
    [(True, False, ["node", "dcgm"]), (False, True, ["node", "neuron"]), (False, False, ["node"])],
)
def test_rendered_config_passes_promtool(
    tmp_path: Path, gpu: bool, neuron: bool, jobs: list[str], promtool: str
) -> None:
    config = collector_config.render(
        cluster="demo",
        instance_group="gpu",
        instance_id="i-0abc",
        remote_write_url="https://aps-workspaces.us-east-1.amazonaws.com/workspaces/ws-1/api/v1/remote_write",
        region="us-east-1",
        scrape_interval_seconds=15,
        gpu=gpu,
        neuron=neuron,
    )
    assert [job["job_name"] for job in config["scrape_configs"]] == jobs
    assert config["global"]["external_labels"] == {"cluster": "demo", "instance_group": "gpu", "instance_id": "i-0abc"}
    assert config["remote_write"][0]["sigv4"] == {"region": "us-east-1"}
    path = tmp_path / "agent.yml"
    path.write_text(json.dumps(config))
    result = subprocess.run([promtool, "check", "config", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def release(tmp: Path, name: str, version: str, corrupt: bool = False) -> None:
    """A release tarball with a stand-in binary, and its sha256sums.txt, where the fake curl serves them."""
    tarball = f"{name}-{version}.linux-amd64.tar.gz"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        body = f"#!/bin/sh\necho '{name}, version {version} (branch: HEAD)'\n".encode()
        info = tarfile.TarInfo(f"{name}-{version}.linux-amd64/{name}")
        info.size, info.mode = len(body), 0o755
        archive.addfile(info, io.BytesIO(body))
    data = buffer.getvalue()
    (tmp / "downloads" / tarball).write_bytes(data + (b"tampered" if corrupt else b""))
    sums = tmp / "downloads" / f"{name}-sha256sums.txt"
    sums.write_text(f"{hashlib.sha256(data).hexdigest()}  {tarball}\n")


@pytest.fixture
def node(tmp_path: Path) -> dict[str, str]:
    for d in ("bin", "install", "systemd", "config", "textfile", "downloads", "collectors"):
        (tmp_path / d).mkdir()
    for item in ("collector_config.py", "dcgm-counters.csv"):
        shutil.copy(ROOT / "node" / "observability" / item, tmp_path / "collectors" / item)
    fakes = {
        # curl -fsSL --retry 5 -o OUT URL: serve from downloads/ (sha256sums.txt per project)
        "curl": (  # curl ... -o OUT URL: serve from downloads/; sha256sums.txt is kept per project
            'out="${*: -2:1}"; url="${*: -1}"; file="${url##*/}"; repo="${url#*github.com/prometheus/}"; '
            '[[ $file == sha256sums.txt ]] && file="${repo%%/*}-sha256sums.txt"; cp "$FAKE_DOWNLOADS/$file" "$out"'
        ),
        "systemctl": 'echo "systemctl $*" >>"$FAKE_LOG"',
        "docker": 'echo "docker $*" >>"$FAKE_LOG"',
    }
    stand_ins(tmp_path / "bin", fakes)
    (tmp_path / "instance-id").write_text("i-0abc\n")
    return {
        "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}",
        "FAKE_LOG": str(tmp_path / "calls.log"),
        "FAKE_DOWNLOADS": str(tmp_path / "downloads"),
        "CLUSTER_NAME": "demo",
        "INSTANCE_GROUP": "gpu",
        "NODE_OS": "ubuntu-22.04",
        "PROMETHEUS_REMOTE_WRITE_URL": "https://aps-workspaces.us-east-1.amazonaws.com/workspaces/ws-1/api/v1/remote_write",
        "AWS_REGION_NAME": "us-east-1",
        "EXPECTED_GPUS": "8",
        "COLLECTOR_DIR": str(tmp_path / "collectors"),
        "INSTALL_DIR": str(tmp_path / "install"),
        "TRAINING_CLUSTER_SYSTEMD_DIR": str(tmp_path / "systemd"),
        "CONFIG_DIR": str(tmp_path / "config"),
        "TEXTFILE_DIR": str(tmp_path / "textfile"),
        "INSTANCE_ID_FILE": str(tmp_path / "instance-id"),
    }


def run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)


def test_installs_checks_configures_and_starts(node: dict[str, str], tmp_path: Path, promtool: str) -> None:
    release(tmp_path, "node_exporter", "1.8.2")
    release(tmp_path, "prometheus", "2.53.2")
    result = run(node)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "install" / "node_exporter").exists() and (tmp_path / "install" / "prometheus").exists()
    units = sorted(p.name for p in (tmp_path / "systemd").iterdir())
    assert units == [
        "training-cluster-dcgm-exporter.service",
        "training-cluster-node-exporter.service",
        "training-cluster-prometheus-agent.service",
    ]
    agent = (tmp_path / "systemd" / "training-cluster-prometheus-agent.service").read_text()
    assert "--enable-feature=agent" in agent
    config = tmp_path / "config" / "prometheus-agent.yml"
    assert json.loads(config.read_text())["global"]["external_labels"]["instance_id"] == "i-0abc"
    check = subprocess.run([promtool, "check", "config", str(config)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    calls = (tmp_path / "calls.log").read_text()
    assert "docker pull --quiet nvcr.io/nvidia/k8s/dcgm-exporter:3.3.9-3.6.1-ubuntu22.04" in calls
    assert "systemctl restart training-cluster-prometheus-agent.service" in calls
    again = run(node)
    assert again.returncode == 0 and "node_exporter 1.8.2: already installed" in again.stdout


def test_on_eks_the_cluster_runs_the_gpu_exporter(node: dict[str, str], tmp_path: Path) -> None:
    """EKS images have no Docker: the DCGM exporter is the cluster's DaemonSet, still scraped at :9400."""
    release(tmp_path, "node_exporter", "1.8.2")
    release(tmp_path, "prometheus", "2.53.2")
    (tmp_path / "bin" / "docker").unlink()
    result = run({**node, "GPU_EXPORTER": "kubernetes"})
    assert result.returncode == 0, result.stdout + result.stderr
    units = sorted(p.name for p in (tmp_path / "systemd").iterdir())
    assert units == ["training-cluster-node-exporter.service", "training-cluster-prometheus-agent.service"]
    config = json.loads((tmp_path / "config" / "prometheus-agent.yml").read_text())
    assert "localhost:9400" in json.dumps(config["scrape_configs"])
    assert "docker" not in (tmp_path / "calls.log").read_text()
    assert run({**node, "GPU_EXPORTER": "podman"}).returncode != 0


def test_a_download_that_does_not_match_its_checksum_is_refused(node: dict[str, str], tmp_path: Path) -> None:
    release(tmp_path, "node_exporter", "1.8.2", corrupt=True)
    release(tmp_path, "prometheus", "2.53.2")
    result = run(node)
    assert result.returncode == 1
    assert "does not match its published SHA-256" in result.stdout
    assert not (tmp_path / "install" / "node_exporter").exists()


def test_collectors_script_passes_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck is not None
    result = subprocess.run([shellcheck, "--severity=style", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
