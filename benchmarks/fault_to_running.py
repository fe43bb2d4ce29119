"""Fault to job running again, on real Slurm (Debian's slurmctld, slurmd and munge, 22.05).

The same two-node job and the same fault, four ways: with a hot spare and without one, under this
project's slurm.conf and under Slurm's defaults for the two settings it changes (the job
credential's lifetime, 120 s, which a requeued job waits out, and the main scheduler's interval,
60 s). Real daemons: three slurmd (two in network namespaces of their own). The clock starts when
auto-repair's hook runs on the controller (``slurm-drain.sh NODE replace``: the node goes down, its
job is requeued, a spare is let go, the node is deleted) and stops when the job runs again.

Without a spare the job also waits for the replacement instance. Its slurmd registers here the
moment the failed one stops, so the figure is Slurm's part only; EC2's launch and the node's boot
(``--boot-min``, 15 min by default, as benchmarks/goodput.py assumes) are an assumption, added and
labelled as such. The time from the fault to the hook (detection, event, handler, Run Command) is
benchmarks/repair_latency.py's.

    python benchmarks/fault_to_running.py [--boot-min 15]     (as root: namespaces and daemons)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "node"), str(ROOT / "node" / "slurm")]

import slurm_config  # noqa: E402
from conftest import NODE  # noqa: E402 (the node tree as on a node)
from slurm_harness import munged, scratch_paths, wait_for  # noqa: E402
from test_real_slurm import (  # noqa: E402
    HOST_IP,
    LAYOUT,
    NAMESPACE,
    NODE_A,
    NODE_B,
    NODE_C,
    THIRD_HOST_IP,
    THIRD_IP,
    THIRD_NAMESPACE,
    Slurm,
    network_namespace,
)

SLURM = NODE / "slurm"
NODE_D = "i-0ddddddddddddddd4"
SLURM_DEFAULTS = {
    f",cred_expire={slurm_config.CRED_EXPIRE_SECONDS}": "",
    f"SchedulerParameters=sched_interval={slurm_config.SCHED_INTERVAL_SECONDS}\n": "",
}


def scenario(*, spare: bool, defaults: bool) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="tc-bench-"))
    spool = Path(tempfile.mkdtemp(prefix="tcb-"))
    paths = scratch_paths(root, f"{spool}/%n")
    second = network_namespace()
    next(second)
    third = network_namespace(THIRD_NAMESPACE, THIRD_HOST_IP, THIRD_IP, veth="tc-vetc")
    next(third)
    cluster = Slurm(root, paths)
    cluster.write_config(HOST_IP)
    conf = root / "etc" / "slurm.conf"
    if defaults:
        text = conf.read_text()
        for ours, theirs in SLURM_DEFAULTS.items():
            assert ours in text, ours
            text = text.replace(ours, theirs)
        conf.write_text(text)
    layout = root / "layout.json"
    group = {**LAYOUT["groups"][0], "count": 2, "spares": int(spare)}
    layout.write_text(json.dumps({**LAYOUT, "groups": [group]}))
    job = ""
    daemons = ExitStack()
    daemons.enter_context(munged(root))
    try:
        cluster.start("slurmctld", "slurmctld", "-D", "-f", str(conf))
        wait_for("slurmctld", lambda: cluster.run("scontrol", "ping").stdout.count("UP") == 1)
        cluster.start_node(NODE_A, namespace=False)
        cluster.start_node(NODE_B, namespace=True)
        if spare:
            cluster.start_node(NODE_C, namespace=THIRD_NAMESPACE)
            kept = cluster.run("python3", str(SLURM / "slurm_spares.py"), "reconcile", "--layout", str(layout))
            assert kept.stdout == f"gpu: {NODE_A} is a spare\n", kept.stdout + kept.stderr
        job = cluster.run(
            "sbatch", "--parsable", "--requeue", "-N", "2", "-p", "train", "-o", "/dev/null", "--wrap", "sleep 600"
        ).stdout.strip()
        wait_for("the job to run", lambda: "JobState=RUNNING" in cluster.job(job))
        started = time.monotonic()
        hook = cluster.run(
            str(SLURM / "slurm-drain.sh"), NODE_B, "replace", "xid 79", extra_env={"SLURM_LAYOUT_FILE": str(layout)}
        )
        assert hook.returncode == 0, hook.stderr
        hooked = time.monotonic() - started
        cluster.stop(NODE_B)  # the instance is terminated
        after_registration = 0.0
        if not spare:
            # The replacement boots for minutes (the assumption), long after the requeue hold is
            # over: its slurmd starts once the job is eligible, and the clock is what follows.
            wait_for("the requeue", lambda: "Restarts=1" in cluster.job(job))
            eligible = re.search(r"EligibleTime=(\S+)", cluster.job(job))
            assert eligible is not None
            while datetime.now() < datetime.fromisoformat(eligible.group(1)) + timedelta(seconds=2):
                time.sleep(0.5)
            booted = time.monotonic()
            # (not start_node, which waits for IDLE: the job may take the node the moment it registers)
            cluster.start(
                NODE_D, "nsenter", f"--net=/run/netns/{NAMESPACE}", "slurmd", "-D", "-Z", "-N", NODE_D,
                "--conf", cluster.node_conf, "--conf-server", cluster.server,
            )  # fmt: skip
        wait_for("the job to run again", lambda: "JobState=RUNNING" in cluster.job(job), timeout=400)
        running = time.monotonic() - started
        if not spare:
            after_registration = time.monotonic() - booted
        nodes = re.search(r" NodeList=(\S+)\n", cluster.job(job))
        assert nodes is not None and NODE_B not in nodes.group(1)
        return {"hook": hooked, "running": running, "after_registration": after_registration}
    finally:
        if job:
            cluster.run("scancel", "--full", job)  # no job step outlives the run
        for name in reversed(list(cluster.daemons)):
            cluster.stop(name)
        daemons.close()  # munged
        third.close()
        second.close()
        shutil.rmtree(spool, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--boot-min", type=float, default=15.0, help="assumed: EC2 launch and the node's boot")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/out/fault_to_running.json"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("fault_to_running.py runs real Slurm in network namespaces: run it as root")
    print("fault to job running again, real Slurm 22.05 (3 slurmd, one run each)")
    print(
        f"{'slurm.conf':18s} {'spare':6s} {'hook':>6s} {'hook to running':>16s} {'registered to running':>22s} "
        f"{'fault to running':>17s}"
    )
    results = {}
    for defaults in (False, True):
        for spare in (True, False):
            figures = scenario(spare=spare, defaults=defaults)
            # Without a spare: the boot (assumed), then Slurm's part once the replacement registers.
            total = figures["running"] if spare else 60 * args.boot_min + figures["after_registration"]
            label = "Slurm's defaults" if defaults else "this project's"
            results[f"{'defaults' if defaults else 'ours'}-{'spare' if spare else 'no-spare'}"] = {
                **figures,
                "fault_to_running": total,
            }
            registered = "-" if spare else f"{figures['after_registration']:.1f} s"
            whole = f"{total:.0f} s" if spare else f"{total / 60:.1f} min (boot assumed)"
            print(
                f"{label:18s} {'yes' if spare else 'no':6s} {figures['hook']:5.1f}s {figures['running']:15.1f}s "
                f"{registered:>22s} {whole:>17s}"
            )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"figures: {args.json}")


if __name__ == "__main__":
    main()
