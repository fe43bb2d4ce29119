"""A real Slurm (Debian's slurmctld, slurmd and munge) on localhost, configured by
node/slurm/slurm_config.py: a dynamic node registers configless, a job runs, the health check
drains the failing node with its reason, the repair hook takes it down and the job is requeued,
the node comes back and the job finishes from its checkpoint."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

import slurm_config
from conftest import ROOT

SLURM = ROOT / "node" / "slurm"
CONTROLLER_PORT, NODE_PORT = 16817, 16818
pytestmark = pytest.mark.slow


def wait_for(what: str, check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


class Slurm:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = {**os.environ, "SLURM_CONF": str(root / "slurm.conf")}
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, *command: str) -> None:
        self.processes.append(
            subprocess.Popen(list(command), env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )

    def run(self, *command: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(command), env={**self.env, **(extra_env or {})}, capture_output=True, text=True, timeout=60
        )

    def node(self, name: str) -> str:
        return self.run("scontrol", "show", "node", name).stdout

    def job(self, job_id: str) -> str:
        return self.run("scontrol", "show", "job", job_id).stdout

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def slurm(tmp_path: Path) -> Iterator[Slurm]:
    for tool in ("munged", "slurmctld", "slurmd", "scontrol", "sbatch"):
        assert shutil.which(tool), f"{tool} comes from Debian's munge and slurm packages, which make test installs"
    for d in ("state", "spool", "log", "run"):
        (tmp_path / d).mkdir()
    paths = slurm_config.Paths(
        state_dir=str(tmp_path / "state"),
        spool_dir=str(tmp_path / "spool"),
        log_dir=str(tmp_path / "log"),
        run_dir=str(tmp_path / "run"),
        health_check=str(SLURM / "slurm-health-check.sh"),
    )
    conf = slurm_config.render_slurm_conf(
        cluster="demo",
        controller="localhost",
        groups=[slurm_config.Group("gpu")],
        partitions={"train": ["gpu"]},
        paths=paths,
        controller_port=CONTROLLER_PORT,
        node_port=NODE_PORT,
        max_nodes=8,
        user="root",
    )
    (tmp_path / "slurm.conf").write_text(conf.replace("CR_Core_Memory", "CR_Core"))
    key = tmp_path / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    Path("/run/munge").mkdir(exist_ok=True)
    cluster = Slurm(tmp_path)
    subprocess.run(
        ["munged", "--force", f"--key-file={key}", f"--log-file={tmp_path / 'munged.log'}",
         f"--pid-file={tmp_path / 'munged.pid'}", f"--seed-file={tmp_path / 'munged.seed'}"],
        check=True,
    )  # fmt: skip
    try:
        cluster.start("slurmctld", "-D", "-f", str(tmp_path / "slurm.conf"))
        wait_for("slurmctld", lambda: cluster.run("scontrol", "ping").stdout.count("UP") == 1)
        cluster.start(
            "slurmd", "-D", "-Z", "-N", "node-a",
            "--conf", slurm_config.node_conf(slurm_config.Group("gpu")),
            "--conf-server", f"localhost:{CONTROLLER_PORT}",
        )  # fmt: skip
        wait_for("node-a to register", lambda: "State=IDLE" in cluster.node("node-a"))
        yield cluster
    finally:
        cluster.stop()
        pid = (tmp_path / "munged.pid").read_text().strip() if (tmp_path / "munged.pid").exists() else ""
        if pid:
            os.kill(int(pid), signal.SIGTERM)


def test_rendered_config(tmp_path: Path) -> None:
    conf = slurm_config.render_slurm_conf(
        cluster="demo",
        controller="ip-10-0-128-5",
        groups=[slurm_config.Group("gpu", 8), slurm_config.Group("spare", 8)],
        partitions={"train": ["gpu", "spare"]},
    )
    assert "SlurmctldParameters=enable_configless" in conf and "JobRequeue=1" in conf
    assert "Nodeset=gpu Feature=gpu" in conf and "PartitionName=train Nodes=gpu,spare Default=YES" in conf
    assert slurm_config.node_conf(slurm_config.Group("gpu", 8)) == "Feature=gpu Gres=gpu:8"
    with pytest.raises(ValueError, match="partition x names unknown instance groups: nope"):
        slurm_config.render_slurm_conf(
            cluster="d", controller="c", groups=[slurm_config.Group("gpu")], partitions={"x": ["nope"]}
        )


def test_a_failed_node_drains_requeues_its_job_and_the_job_finishes(slurm: Slurm, tmp_path: Path) -> None:
    node_info = slurm.node("node-a")
    assert "AvailableFeatures=gpu" in node_info and "Partitions=train" in node_info
    checkpoint = tmp_path / "checkpoint"
    script = tmp_path / "train.sh"
    # A training job that checkpoints each step and, when requeued, resumes from its checkpoint.
    script.write_text(
        "#!/bin/bash\n"
        f"step=$(cat {checkpoint} 2>/dev/null || echo 0)\n"
        f'echo "start at step $step (restart ${{SLURM_RESTART_COUNT:-0}})" >> {tmp_path}/runs.log\n'
        "while ((step < 6)); do sleep 1; step=$((step + 1)); "
        f"echo $step > {checkpoint}; done\n"
    )
    script.chmod(0o755)
    submitted = slurm.run(
        "sbatch", "--parsable", "--requeue", "-p", "train", "-o", str(tmp_path / "job.out"), str(script)
    )
    assert submitted.returncode == 0, submitted.stderr
    job = submitted.stdout.strip()
    wait_for("the job to run", lambda: "JobState=RUNNING" in slurm.job(job))
    wait_for("a checkpoint", lambda: checkpoint.exists())

    # The health check fails (the agent reports a missing GPU): the node drains with the reason.
    agent = tmp_path / "agent.py"
    agent.write_text(
        'import json\nprint(json.dumps([{"check": "gpu_count", "code": None, "message": "7 of 8 GPUs visible"}]))\n'
    )
    check = slurm.run(
        str(SLURM / "slurm-health-check.sh"), extra_env={"HEALTH_AGENT": str(agent), "SLURMD_NODENAME": "node-a"}
    )
    assert check.returncode == 1
    assert "Reason=health: 7 of 8 GPUs visible" in slurm.node("node-a")
    assert "DRAIN" in slurm.node("node-a")

    # Auto-repair's orchestrator hook before a reboot or replacement: down, and the job is requeued.
    down = slurm.run(str(SLURM / "slurm-drain.sh"), "node-a", "xid 79: replace")
    assert down.returncode == 0, down.stderr
    wait_for(
        "the job to be requeued", lambda: "Restarts=1" in slurm.job(job) and "JobState=RUNNING" not in slurm.job(job)
    )
    assert "Reason=repair: xid 79: replace" in slurm.node("node-a")

    # The node is back (rebooted, or its replacement registered): the job runs again to the end.
    slurm.run("scontrol", "update", "nodename=node-a", "state=resume")
    # Slurm holds a requeued batch job for about two minutes (Reason=BeginTime); the test moves its
    # start to now rather than wait.
    eligible = re.search(r"EligibleTime=(\S+)", slurm.job(job))
    assert eligible is not None
    assert datetime.fromisoformat(eligible.group(1)) > datetime.now() + timedelta(seconds=60)
    slurm.run("scontrol", "update", f"jobid={job}", "starttime=now")
    wait_for("the job to complete", lambda: "JobState=COMPLETED" in slurm.job(job), timeout=60)
    runs = (tmp_path / "runs.log").read_text().splitlines()
    assert runs[0] == "start at step 0 (restart 0)"
    assert (
        runs[-1].startswith("start at step ")
        and runs[-1].endswith("(restart 1)")
        and runs[-1] != "start at step 0 (restart 1)"
    )
    assert checkpoint.read_text().strip() == "6"


def test_a_healthy_node_passes_the_check(slurm: Slurm, tmp_path: Path) -> None:
    agent = tmp_path / "agent.py"
    agent.write_text("print('[]')\n")
    check = slurm.run(
        str(SLURM / "slurm-health-check.sh"), extra_env={"HEALTH_AGENT": str(agent), "SLURMD_NODENAME": "node-a"}
    )
    assert check.returncode == 0, check.stderr
    assert "State=IDLE" in slurm.node("node-a")
