"""A real Slurm (Debian's slurmctld, slurmd and munge) on this machine, configured by
node/slurm/slurm_config.py as the controller renders it: two dynamic nodes register configless
(the second in its own network namespace, as a second machine would), a job runs on both, the
health check drains a failing node with its reason, the repair hook takes it down and deletes it,
the job is requeued, a replacement registers, and the job finishes from its checkpoint."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

import slurm_config
from auto_repair.scheduler_state import SINFO, slurm_states
from conftest import NODE
from slurm_harness import munged, scratch_paths, wait_for
from stand_ins import script as stand_in
from stand_ins import stand_ins

SLURM = NODE / "slurm"
CONTROLLER_PORT, NODE_PORT = 16817, 16818
NAMESPACE, HOST_IP, NAMESPACE_IP = "tc-slurm", "10.231.0.1", "10.231.0.2"
NODE_A, NODE_B, NODE_C = "i-0aaaaaaaaaaaaaaa1", "i-0bbbbbbbbbbbbbbb2", "i-0ccccccccccccccc3"
LAYOUT = {
    "cluster": "demo",
    "accounting": False,
    "groups": [{"name": "gpu", "gpus": 0, "memory_mib": 8192}],
    "partitions": {"train": ["gpu"]},
}
pytestmark = pytest.mark.slow


def sh(*command: str) -> None:
    subprocess.run(list(command), check=True, capture_output=True)


class Slurm:
    def __init__(self, root: Path, paths: slurm_config.Paths) -> None:
        self.root = root
        self.paths = paths
        self.env = {**os.environ, "SLURM_CONF": str(root / "etc" / "slurm.conf")}
        self.daemons: dict[str, subprocess.Popen[bytes]] = {}

    node_conf = slurm_config.node_conf(slurm_config.Layout.from_json(json.dumps(LAYOUT)).group("gpu"))
    server = f"{HOST_IP}:{CONTROLLER_PORT}"

    def write_config(self, controller_address: str) -> None:
        """The files the controller writes, rendered by the code it runs, with the controller at
        ``controller_address``. This machine cannot delegate cgroups to slurmd: they are off."""
        layout = slurm_config.Layout.from_json(json.dumps(LAYOUT))
        files = slurm_config.render(
            layout, controller=f"localhost({controller_address})", paths=self.paths, cgroups=False
        )
        conf = files["slurm.conf"].replace("SlurmUser=slurm", "SlurmUser=root")
        conf = conf.replace("SlurmctldPort=6817", f"SlurmctldPort={CONTROLLER_PORT}").replace(
            "SlurmdPort=6818", f"SlurmdPort={NODE_PORT}"
        )
        conf = conf.replace("slurmd.pid", "slurmd-%n.pid").replace("slurmd.log", "slurmd-%n.log")
        (self.root / "etc" / "slurm.conf").write_text(conf)

    def start(self, name: str, *command: str) -> None:
        log = (self.root / "log" / f"{name}.out").open("wb")
        self.daemons[name] = subprocess.Popen(list(command), env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def start_node(self, name: str, *, namespace: bool | str) -> None:
        """``slurmd -Z`` as compute nodes run it: named after the instance, configless, with the
        group's ``--conf`` line from the layout. ``namespace``: the test's second machine, or the
        network namespace of that name."""
        conf, server = self.node_conf, self.server
        # nsenter joins only the network namespace (ip netns exec would also remount /sys).
        where = NAMESPACE if namespace is True else namespace
        prefix = ["nsenter", f"--net=/run/netns/{where}"] if where else []
        self.start(name, *prefix, "slurmd", "-D", "-Z", "-N", name, "--conf", conf, "--conf-server", server)
        wait_for(f"{name} to register", lambda: "State=IDLE" in self.node(name))

    def stop(self, name: str) -> None:
        process = self.daemons.pop(name)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()

    def run(self, *command: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(command), env={**self.env, **(extra_env or {})}, capture_output=True, text=True, timeout=60
        )

    def node(self, name: str) -> str:
        return self.run("scontrol", "show", "node", name).stdout

    def job(self, job_id: str) -> str:
        return self.run("scontrol", "show", "job", job_id).stdout

    def idle_nodes(self) -> list[str]:
        return sorted(self.run("sinfo", "-h", "-N", "-t", "idle", "-o", "%N").stdout.split())


def network_namespace(
    name: str = NAMESPACE, host_ip: str = HOST_IP, inside_ip: str = NAMESPACE_IP, veth: str = "tc-veth"
) -> Iterator[None]:
    """Another machine's network: a namespace joined to this one by a veth pair, routed through
    this one (so that it reaches the controller at ``HOST_IP`` whichever pair it has)."""
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    subprocess.run(["ip", "link", "del", f"{veth}0"], capture_output=True)
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "link", "add", f"{veth}0", "type", "veth", "peer", "name", f"{veth}1")
        sh("ip", "link", "set", f"{veth}1", "netns", name)
        sh("ip", "addr", "add", f"{host_ip}/24", "dev", f"{veth}0")
        sh("ip", "link", "set", f"{veth}0", "up")
        inside = ["ip", "netns", "exec", name]
        sh(*inside, "ip", "addr", "add", f"{inside_ip}/24", "dev", f"{veth}1")
        sh(*inside, "ip", "link", "set", f"{veth}1", "up")
        sh(*inside, "ip", "link", "set", "lo", "up")
        sh(*inside, "ip", "route", "add", "default", "via", host_ip)
        yield
    finally:
        subprocess.run(["ip", "link", "del", f"{veth}0"], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def hook(tmp_path: Path, script: str) -> Path:
    """The prolog or epilog as slurmd runs it, writing to this test's textfile folder."""
    return stand_in(tmp_path / script, f"TEXTFILE_DIR={tmp_path / 'textfile'} exec {SLURM / script}")


@pytest.fixture
def slurm(tmp_path: Path) -> Iterator[Slurm]:
    for tool in ("munged", "slurmctld", "slurmd", "scontrol", "sbatch", "ip"):
        assert shutil.which(tool), f"{tool} comes from Debian's munge and slurm packages, which make test installs"
    (tmp_path / "textfile").mkdir()
    # Two slurmd on one file system: one spool each, under a short path (step sockets live there
    # and a socket path has at most 108 characters).
    spool = Path(tempfile.mkdtemp(prefix="tcs-"))
    paths = scratch_paths(
        tmp_path,
        f"{spool}/%n",
        health_check=str(SLURM / "slurm-health-check.sh"),
        prolog=str(hook(tmp_path, "slurm-prolog.sh")),
        epilog=str(hook(tmp_path, "slurm-epilog.sh")),
    )
    namespace = network_namespace()
    next(namespace)
    cluster = Slurm(tmp_path, paths)
    cluster.write_config(HOST_IP)
    try:
        with munged(tmp_path):
            try:
                cluster.start("slurmctld", "slurmctld", "-D", "-f", str(tmp_path / "etc" / "slurm.conf"))
                wait_for("slurmctld", lambda: cluster.run("scontrol", "ping").stdout.count("UP") == 1)
                cluster.start_node(NODE_A, namespace=False)
                cluster.start_node(NODE_B, namespace=True)
                yield cluster
            finally:
                for name in reversed(list(cluster.daemons)):
                    cluster.stop(name)
    finally:
        namespace.close()
        shutil.rmtree(spool, ignore_errors=True)


def test_rendered_config() -> None:
    layout = slurm_config.Layout.from_json(
        json.dumps({**LAYOUT, "accounting": True, "groups": [{"name": "gpu", "gpus": 8, "memory_mib": 2097152}]})
    )
    files = slurm_config.render(layout, controller="ip-10-0-128-5(10.0.128.5)", paths=slurm_config.Paths())
    conf = files["slurm.conf"]
    assert "SlurmctldHost=ip-10-0-128-5(10.0.128.5)" in conf and "SlurmctldParameters=enable_configless" in conf
    assert "JobRequeue=1" in conf and "ReturnToService=2" in conf
    assert "Nodeset=gpu Feature=gpu" in conf and "PartitionName=train Nodes=gpu Default=YES" in conf
    # A job that asks for no memory gets a GPU's share of the node (1991270 MiB / 8), not all of it.
    assert "PartitionName=train Nodes=gpu Default=YES MaxTime=INFINITE State=UP DefMemPerGPU=248908\n" in conf
    cpu = slurm_config.Group("cpu", 0, 65536, 16)
    assert slurm_config.default_memory([cpu]) == " DefMemPerCPU=3827"
    assert slurm_config.default_memory([slurm_config.Group("gpu", 8, 2097152, 192), cpu]) == " DefMemPerCPU=3827"
    assert slurm_config.default_memory([slurm_config.Group("x")]) == ""  # memory not known
    assert "AccountingStorageHost=10.0.128.5" in conf and "ProctrackType=proctrack/cgroup" in conf
    assert "StorageType=accounting_storage/mysql" in files["slurmdbd.conf"]
    assert files["gres.conf"] == "AutoDetect=nvml\n" and "ConstrainDevices=yes" in files["cgroup.conf"]
    # A p5.48xlarge: 8 GPUs and its memory less the kernel's share and a system reserve.
    assert slurm_config.node_conf(layout.group("gpu")) == "Feature=gpu Gres=gpu:8 RealMemory=1991270"
    with pytest.raises(ValueError, match="partition x names unknown instance groups: nope"):
        slurm_config.render_slurm_conf(
            cluster="d", controller="c", groups=[slurm_config.Group("gpu")], partitions={"x": ["nope"]}
        )
    with pytest.raises(KeyError, match="no instance group 'cpu'"):
        layout.group("cpu")
    # Accounting in RDS: the secret's fields; slurmdbd.conf has no quoting, so only letters and digits.
    remote = {"host": "db.example", "port": 3306, "username": "slurm", "password": "abc123"}
    dbd = slurm_config.render_slurmdbd_conf(database=remote)
    assert "StorageHost=db.example\nStoragePort=3306\nStorageUser=slurm\nStoragePass=abc123\n" in dbd
    with pytest.raises(ValueError, match="letters and digits"):
        slurm_config.render_slurmdbd_conf(database={**remote, "password": "ab#c"})


def test_the_cli_writes_the_files_the_controller_serves(tmp_path: Path) -> None:
    (tmp_path / "layout.json").write_text(json.dumps(LAYOUT))
    script = str(SLURM / "slurm_config.py")
    out = tmp_path / "etc"
    out.mkdir()
    subprocess.run(
        ["python3", script, "render", "--layout", str(tmp_path / "layout.json"), "--controller", "ctl(10.0.0.9)",
         "--state-dir", "/fsx/.slurm/demo/state", "--out-dir", str(out)],
        check=True,
    )  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["cgroup.conf", "gres.conf", "slurm.conf"]
    assert "StateSaveLocation=/fsx/.slurm/demo/state" in (out / "slurm.conf").read_text()
    line = subprocess.run(
        ["python3", script, "node-conf", "--layout", str(tmp_path / "layout.json"), "--group", "gpu"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert line == "Feature=gpu RealMemory=6758\n"


def test_two_dynamic_nodes_register_configless_with_their_group(slurm: Slurm) -> None:
    for name, address in ((NODE_A, HOST_IP), (NODE_B, NAMESPACE_IP)):
        info = slurm.node(name)
        assert "AvailableFeatures=gpu" in info and "Partitions=train" in info and "RealMemory=6758" in info
        assert f"NodeAddr={address} " in info  # the address it registered from: no DNS needed
    assert slurm.idle_nodes() == [NODE_A, NODE_B]


def test_a_failed_node_drains_requeues_and_the_job_finishes_on_its_replacement(slurm: Slurm, tmp_path: Path) -> None:
    checkpoint = tmp_path / "checkpoint"
    # A two-node training job that checkpoints each step and, when requeued, resumes from there.
    script = stand_in(
        tmp_path / "train.sh",
        f"step=$(cat {checkpoint} 2>/dev/null || echo 0)\n"
        f'echo "start at step $step (restart ${{SLURM_RESTART_COUNT:-0}}) on $SLURM_JOB_NODELIST" >> {tmp_path}/runs.log\n'
        "while ((step < 6)); do sleep 1; step=$((step + 1)); "
        f"echo $step > {checkpoint}; done",
    )
    submitted = slurm.run(
        "sbatch", "--parsable", "--requeue", "-N", "2", "-p", "train", "-o", str(tmp_path / "job.out"), str(script)
    )
    assert submitted.returncode == 0, submitted.stderr
    job = submitted.stdout.strip()
    wait_for("the job to run", lambda: "JobState=RUNNING" in slurm.job(job))
    wait_for("a checkpoint", lambda: checkpoint.exists())
    # The prolog labelled the nodes' metrics with the job (node_exporter's textfile collector).
    label = tmp_path / "textfile" / f"slurm-job-{job}.prom"
    assert f'training_cluster_slurm_job_info{{job_id="{job}",user="root",partition="train"}} 1' in label.read_text()
    promtool = shutil.which("promtool")
    assert promtool, "promtool comes from Debian's prometheus package, which make test installs"
    checked = subprocess.run([promtool, "check", "metrics"], input=label.read_text(), capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    # The health check on node B fails (the agent reports a missing GPU): B drains with the reason.
    agent = tmp_path / "agent.py"
    agent.write_text(
        'import json\nprint(json.dumps([{"check": "gpu_count", "code": None, "message": "7 of 8 GPUs visible"}]))\n'
    )
    check = slurm.run(
        str(SLURM / "slurm-health-check.sh"), extra_env={"HEALTH_AGENT": str(agent), "SLURMD_NODENAME": NODE_B}
    )
    assert check.returncode == 1
    assert "Reason=health: 7 of 8 GPUs visible" in slurm.node(NODE_B) and "DRAIN" in slurm.node(NODE_B)

    # Auto-repair's hook on the controller before replacing B: down (the job is requeued), deleted.
    down = slurm.run(str(SLURM / "slurm-drain.sh"), NODE_B, "replace", "xid 79: replace")
    assert down.returncode == 0, down.stderr
    assert f"{NODE_B} deleted" in down.stdout
    wait_for(
        "the job to be requeued", lambda: "Restarts=1" in slurm.job(job) and "JobState=RUNNING" not in slurm.job(job)
    )
    assert slurm.run("scontrol", "show", "node", NODE_B).returncode != 0  # no ghost left behind
    slurm.stop(NODE_B)  # the instance is terminated

    # The replacement boots and registers under its own instance id: the partition is whole again.
    slurm.start_node(NODE_C, namespace=True)
    assert slurm.idle_nodes() == [NODE_A, NODE_C]
    # Slurm holds a requeued batch job until its credential has expired (cred_expire, 60 s here);
    # the test moves its start to now rather than wait (make bench measures the wait).
    eligible = re.search(r"EligibleTime=(\S+)", slurm.job(job))
    assert eligible is not None
    hold = datetime.fromisoformat(eligible.group(1)) - datetime.now()
    assert (
        timedelta(seconds=slurm_config.CRED_EXPIRE_SECONDS - 15)
        < hold
        <= timedelta(seconds=slurm_config.CRED_EXPIRE_SECONDS + 1)
    )
    slurm.run("scontrol", "update", f"jobid={job}", "starttime=now")
    wait_for("the job to complete", lambda: "JobState=COMPLETED" in slurm.job(job), timeout=60)
    runs = (tmp_path / "runs.log").read_text().splitlines()
    assert runs[0] == f"start at step 0 (restart 0) on {slurm_nodelist(NODE_A, NODE_B)}"
    assert re.fullmatch(rf"start at step [1-5] \(restart 1\) on {re.escape(slurm_nodelist(NODE_A, NODE_C))}", runs[-1])
    assert checkpoint.read_text().strip() == "6", (runs, slurm.job(job))
    wait_for("the epilog to remove the job's label", lambda: not label.exists())


def slurm_nodelist(*names: str) -> str:
    return ",".join(sorted(names))


def test_each_check_resumes_only_what_it_may(slurm: Slurm, tmp_path: Path) -> None:
    """Who undoes a drain: Slurm's health check its own ("health:"); the health agent, once the
    node is healthy, its own, the health check's and a repair reboot's; nobody a person's."""
    healthy = tmp_path / "healthy.py"
    healthy.write_text("print('[]')\n")
    env = {"HEALTH_AGENT": str(healthy), "SLURMD_NODENAME": NODE_A}
    check, resume = str(SLURM / "slurm-health-check.sh"), str(SLURM / "slurm-agent-resume.sh")

    def state() -> str:
        info = slurm.node(NODE_A)
        found = re.search(r"State=(\S+)", info)
        reason = re.search(r"Reason=(.*?) \[", info)
        return f"{found.group(1) if found else '?'} {reason.group(1) if reason else ''}".strip()

    def settles(expected: str) -> bool:  # Slurm pings a node it resumes: NOT_RESPONDING for a moment
        wait_for(f"state {expected!r}", lambda: state() == expected, timeout=30)
        return True

    # The health check drained the node; it passes again: back in service.
    slurm.run("scontrol", "update", f"nodename={NODE_A}", "state=drain", "reason=health: 7 of 8 GPUs visible")
    assert slurm.run(check, extra_env=env).returncode == 0
    assert settles("IDLE+DYNAMIC_NORM")
    # The agent drained it (its deep checks see more than the quick check): the check leaves it.
    slurm.run(str(SLURM / "slurm-agent-drain.sh"), "dcgmi diag: memory test failed", extra_env=env)
    assert state() == "IDLE+DRAIN+DYNAMIC_NORM agent: dcgmi diag: memory test failed"
    assert slurm.run(check, extra_env=env).returncode == 0
    assert state().endswith("agent: dcgmi diag: memory test failed")
    # Auto-repair reboots it (down first); it comes back healthy and the agent resumes it.
    slurm.run(str(SLURM / "slurm-drain.sh"), NODE_A, "reboot", "reboot: dcgm")
    assert state().startswith("DOWN") and "repair (reboot): reboot: dcgm" in state()
    slurm.stop(NODE_A)  # the reboot
    slurm.start(NODE_A, "slurmd", "-D", "-Z", "-N", NODE_A, "--conf", slurm.node_conf, "--conf-server", slurm.server)
    wait_for("slurmd to register again", lambda: "NOT_RESPONDING" not in state() and "DOWN" not in state())
    # Registered, but still drained: Slurm keeps the agent's drain across the reboot.
    assert state() == "IDLE+DRAIN+DYNAMIC_NORM repair (reboot): reboot: dcgm"
    assert slurm.run(resume, extra_env=env).returncode == 0
    assert settles("IDLE+DYNAMIC_NORM")
    # Without the health agent (auto-repair off) the check has nothing to say.
    absent = slurm.run(check, extra_env={**env, "HEALTH_AGENT": str(tmp_path / "absent.py")})
    assert absent.returncode == 0 and settles("IDLE+DYNAMIC_NORM")
    # A node a person drained stays drained, whoever looks.
    slurm.run("scontrol", "update", f"nodename={NODE_A}", "state=drain", "reason=maintenance")
    assert slurm.run(check, extra_env=env).returncode == 0
    assert slurm.run(resume, extra_env=env).returncode == 0
    assert state() == "IDLE+DRAIN+DYNAMIC_NORM maintenance"


def test_the_reaper_deletes_down_nodes_whose_instances_are_gone(slurm: Slurm, tmp_path: Path) -> None:
    for name in (NODE_A, NODE_B):
        slurm.run("scontrol", "update", f"nodename={name}", "state=down", "reason=lost")
    # EC2 knows only node A's instance (still running); node B's is gone.
    bin_dir = stand_ins(tmp_path / "bin", {"aws": f'echo "$*" >> {tmp_path}/aws.log\nprintf "{NODE_A}\\n"'})
    reaped = slurm.run(str(SLURM / "slurm-reap.sh"), extra_env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert reaped.returncode == 0, reaped.stderr
    assert reaped.stdout.strip() == f"deleted {NODE_B}: its instance is gone"
    assert f"Values={NODE_A},{NODE_B}" in (tmp_path / "aws.log").read_text()
    assert slurm.run("scontrol", "show", "node", NODE_B).returncode != 0
    assert "Reason=lost" in slurm.node(NODE_A)


def test_the_controller_keeps_its_jobs_across_a_restart(slurm: Slurm, tmp_path: Path) -> None:
    held = slurm.run("sbatch", "--parsable", "--hold", "-p", "train", "-o", "/dev/null", "--wrap", "true")
    assert held.returncode == 0, held.stderr
    job = held.stdout.strip()
    slurm.stop("slurmctld")
    # Meanwhile a repair's drain cannot be done, and says so (the repair records it and goes on).
    unanswered = slurm.run(str(SLURM / "slurm-drain.sh"), NODE_A, "reboot", "status check")
    assert unanswered.returncode == 1 and f"slurmctld does not answer: {NODE_A} was not drained" in unanswered.stderr
    slurm.start("slurmctld", "slurmctld", "-D", "-f", str(tmp_path / "etc" / "slurm.conf"))
    wait_for("slurmctld", lambda: slurm.run("scontrol", "ping").stdout.count("UP") == 1)
    assert "JobState=PENDING" in slurm.job(job) and "Reason=JobHeldUser" in slurm.job(job)
    assert sorted(slurm.run("sinfo", "-h", "-N", "-o", "%N").stdout.split()) == [NODE_A, NODE_B]


def test_a_replaced_controller_at_a_new_address_keeps_the_jobs_and_the_nodes(slurm: Slurm, tmp_path: Path) -> None:
    """What happens when auto-repair replaces the controller: the new one starts at another
    address with the same state (on the file system), pushes its configuration to the nodes it
    finds in that state, and they work for it."""
    held = slurm.run("sbatch", "--parsable", "--hold", "-p", "train", "-N", "2", "-o", "/dev/null", "--wrap", "true")
    assert held.returncode == 0, held.stderr
    job = held.stdout.strip()
    slurm.stop("slurmctld")
    # The replacement: another machine (the namespace's address), configuration rendered there.
    slurm.write_config(NAMESPACE_IP)
    conf = str(tmp_path / "etc" / "slurm.conf")
    slurm.start("slurmctld", "nsenter", f"--net=/run/netns/{NAMESPACE}", "slurmctld", "-D", "-f", conf)
    wait_for("the new slurmctld", lambda: slurm.run("scontrol", "ping").stdout.count("UP") == 1)
    shown = slurm.run("scontrol", "show", "config").stdout
    assert re.search(rf"SlurmctldHost\[0\]\s*=\s*\S+\({re.escape(NAMESPACE_IP)}\)", shown), shown
    assert slurm.run("scontrol", "reconfigure").returncode == 0  # as slurm-node.sh does
    assert "Reason=JobHeldUser" in slurm.job(job)  # the job state came along
    slurm.run("scontrol", "release", job)
    wait_for("the job to complete on both nodes", lambda: "JobState=COMPLETED" in slurm.job(job))
    assert f" NodeList={NODE_A},{NODE_B}\n" in slurm.job(job)
    # Both nodes report to the new controller: they stay responsive (not DOWN*/NOT_RESPONDING).
    assert slurm.idle_nodes() == [NODE_A, NODE_B]


THIRD_NAMESPACE, THIRD_HOST_IP, THIRD_IP = "tc-slurm-3", "10.231.1.1", "10.231.1.2"
NODE_D = "i-0ddddddddddddddd4"


def test_a_hot_spare_takes_a_failed_nodes_place_and_its_replacement_becomes_the_spare(
    slurm: Slurm, tmp_path: Path
) -> None:
    """A group of 2 with 1 spare on three real slurmd: the spare is held in its reservation while a
    job runs on the other two; a node fails and the repair's hook lets the spare go at once, so the
    requeued job runs on it; the failed node's replacement registers and becomes the spare."""
    third = network_namespace(THIRD_NAMESPACE, THIRD_HOST_IP, THIRD_IP, veth="tc-vetc")
    next(third)
    try:
        slurm.start_node(NODE_C, namespace=THIRD_NAMESPACE)
        layout = tmp_path / "layout.json"
        group = {**LAYOUT["groups"][0], "count": 2, "spares": 1}  # type: ignore[index]
        layout.write_text(json.dumps({**LAYOUT, "groups": [group]}))
        textfile = tmp_path / "textfile"
        spares = ["python3", str(SLURM / "slurm_spares.py"), "reconcile", "--layout", str(layout)]

        def pool() -> list[str]:
            shown = slurm.run("scontrol", "show", "reservation", "spares-gpu", "--oneliner").stdout
            found = re.search(r" Nodes=(\S+)", shown)
            return slurm.run("scontrol", "show", "hostnames", found.group(1)).stdout.split() if found else []

        def gauge() -> str:
            return (textfile / "slurm-spares.prom").read_text()

        kept = slurm.run(*spares, "--textfile-dir", str(textfile))
        assert kept.returncode == 0, kept.stderr
        assert kept.stdout == f"gpu: {NODE_A} is a spare\n"  # the first idle node by name
        assert pool() == [NODE_A] and 'training_cluster_slurm_spares{group="gpu"} 1' in gauge()
        # What training-cluster nodes shows: sinfo says idle; the keeper's list says spare.
        shown = slurm.run(*SINFO.replace("'", "").split()).stdout
        shown += slurm.run("python3", str(SLURM / "slurm_spares.py"), "show", "--layout", str(layout)).stdout
        assert f"spares gpu 1/1 {NODE_A}\n" in shown
        assert slurm_states(shown) == {NODE_A: "idle, hot spare", NODE_B: "idle", NODE_C: "idle"}
        again = slurm.run(*spares)
        assert again.returncode == 0 and again.stdout == ""  # a full pool: nothing to do

        job = slurm.run("sbatch", "--parsable", "--requeue", "-N", "2", "-p", "train", "-o", "/dev/null",
                        "--wrap", "sleep 300").stdout.strip()  # fmt: skip
        wait_for("the job to run", lambda: "JobState=RUNNING" in slurm.job(job))
        assert f" NodeList={NODE_B},{NODE_C}\n" in slurm.job(job)  # not on the spare
        # A three-node job cannot have the spare either: it waits.
        wide = slurm.run("sbatch", "--parsable", "-N", "3", "-p", "train", "-o", "/dev/null", "--wrap", "true")
        assert wide.returncode == 0
        slurm.run("scontrol", "hold", wide.stdout.strip())

        # Node B fails; auto-repair's hook takes it down, the spare is let go, B is deleted.
        down = slurm.run(str(SLURM / "slurm-drain.sh"), NODE_B, "replace", "xid 79: replace",
                         extra_env={"SLURM_LAYOUT_FILE": str(layout)})  # fmt: skip
        assert down.returncode == 0, down.stderr
        assert (
            f"gpu: spare {NODE_A} promoted (the group is short)" in down.stdout and f"{NODE_B} deleted" in down.stdout
        )
        assert pool() == []
        slurm.stop(NODE_B)
        # The timer's next pass writes an empty pool: the alert's condition.
        assert slurm.run(*spares, "--textfile-dir", str(textfile)).returncode == 0
        assert 'training_cluster_slurm_spares{group="gpu"} 0' in gauge()
        assert 'training_cluster_slurm_spares_wanted{group="gpu"} 1' in gauge()
        wait_for("the job to be requeued", lambda: "Restarts=1" in slurm.job(job))
        slurm.run("scontrol", "update", f"jobid={job}", "starttime=now")  # the hold is measured in make bench
        wait_for("the job to run on the spare", lambda: "JobState=RUNNING" in slurm.job(job))
        assert f" NodeList={NODE_A},{NODE_C}\n" in slurm.job(job)

        # B's replacement boots (in B's place on the network) and becomes the spare.
        slurm.start_node(NODE_D, namespace=True)
        refilled = slurm.run(*spares, "--textfile-dir", str(textfile))
        assert refilled.stdout == f"gpu: {NODE_D} is a spare\n", refilled.stderr
        assert pool() == [NODE_D] and 'training_cluster_slurm_spares{group="gpu"} 1' in gauge()
        assert "JobState=RUNNING" in slurm.job(job) and f" NodeList={NODE_A},{NODE_C}\n" in slurm.job(job)
        # The spare itself fails: it leaves the pool, and with no healthy node over the count none replaces it.
        slurm.run("scontrol", "update", f"nodename={NODE_D}", "state=drain", "reason=health: 7 of 8 GPUs visible")
        dropped = slurm.run(*spares)
        assert dropped.stdout == f"gpu: {NODE_D} left the spares (unhealthy, busy or gone)\n"
        assert pool() == []
    finally:
        third.close()
