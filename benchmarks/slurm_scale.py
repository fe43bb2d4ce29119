"""Slurm's controller with 128 and 1,024 node records (Debian's slurmctld 22.05, this project's
slurm.conf): how long the commands the cluster and its operators run take at that size.

1,024 slurmd cannot run on two cores, so the nodes are records made the way a dynamic node's
registration makes one (``scontrol create``, one at a time, then a thousand more at once), with a
p5's CPUs, memory and GPUs and the group's feature, as CLOUD nodes (powered down: no daemon answers
for them, and Slurm lists them, which it does not do for FUTURE ones).
Measured on them, side by side at both sizes (median of repeats): ``sinfo``, ``sinfo -N``,
``squeue``, the full node listing the spares keeper and the reaper read (``scontrol show nodes
--oneliner``), the keeper's whole pass, a drain and a resume, a delete, and ``scontrol reconfigure``.
slurmctld's MessageTimeout (10 s) is set against the slowest of them.

    python benchmarks/slurm_scale.py        (as root)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "node" / "slurm"), str(ROOT / "tests" / "node")]

import slurm_config  # noqa: E402
import slurm_spares  # noqa: E402
from slurm_harness import munged, scratch_paths  # noqa: E402

PORT = 16837
SIZES = (128, 1024)
P5 = "CPUs=192 Boards=1 SocketsPerBoard=2 CoresPerSocket=48 ThreadsPerCore=2 RealMemory=1991270 Gres=gpu:8"


def name(k: int) -> str:
    return f"i-{k:017d}"


class Controller:
    def __init__(self, root: Path) -> None:
        self.root = root
        paths = scratch_paths(root, str(root / "spool"))
        layout = slurm_config.Layout.from_json('{"cluster": "scale", "groups": [{"name": "gpu", "gpus": 8}]}')
        conf = slurm_config.render(layout, controller="localhost(127.0.0.1)", paths=paths, cgroups=False)
        text = conf["slurm.conf"].replace("SlurmUser=slurm", "SlurmUser=root")
        text = text.replace("SlurmctldPort=6817", f"SlurmctldPort={PORT}")
        (root / "etc" / "slurm.conf").write_text(text + "PrivateData=cloud\n")  # list powered-down cloud nodes
        (root / "etc" / "gres.conf").write_text("Name=gpu Count=8\n")
        self.env = {**os.environ, "SLURM_CONF": str(root / "etc" / "slurm.conf")}
        self.daemons = ExitStack()
        self.daemons.enter_context(munged(root))
        self.daemon = subprocess.Popen(
            ["slurmctld", "-D", "-f", self.env["SLURM_CONF"]], env=self.env, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 30
        while "UP" not in self.run("scontrol", "ping").stdout:
            if time.monotonic() > deadline:
                raise RuntimeError("slurmctld did not start")
            time.sleep(0.2)

    def run(self, *command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(command), env=self.env, capture_output=True, text=True, timeout=120)

    def ok(self, *command: str) -> None:
        done = self.run(*command)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)}: {done.stderr.strip()}")

    def stop(self) -> None:
        self.daemon.send_signal(signal.SIGTERM)
        self.daemon.wait(timeout=30)
        self.daemons.close()


def timed(action: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(size: int, repeats: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="tc-scale-", ignore_cleanup_errors=True) as tmp:
        ctl = Controller(Path(tmp))
        try:
            figures: dict[str, float] = {}
            one_by_one = min(size, 128)  # as nodes register: one record at a time
            started = time.perf_counter()
            for k in range(1, one_by_one + 1):
                ctl.ok("scontrol", "create", f"NodeName={name(k)}", *P5.split(), "Feature=gpu", "State=CLOUD")
            figures["create one (ms)"] = 1000 * (time.perf_counter() - started) / one_by_one
            if size > one_by_one:
                rest = f"i-{one_by_one + 1:017d}"[:-4] + f"[{one_by_one + 1:04d}-{size:04d}]"
                ctl.ok("scontrol", "create", f"NodeName={rest}", *P5.split(), "Feature=gpu", "State=CLOUD")
            listed = ctl.run("scontrol", "show", "nodes", "--oneliner").stdout
            assert listed.count("NodeName=") == size, listed.count("NodeName=")
            figures["sinfo (ms)"] = 1000 * timed(lambda: ctl.ok("sinfo"), repeats)
            figures["sinfo -N (ms)"] = 1000 * timed(lambda: ctl.ok("sinfo", "-N"), repeats)
            figures["squeue (ms)"] = 1000 * timed(lambda: ctl.ok("squeue"), repeats)
            figures["show nodes (ms)"] = 1000 * timed(
                lambda: ctl.ok("scontrol", "show", "nodes", "--oneliner"), repeats
            )
            pools = slurm_spares.Pools(counts={"gpu": size - 8}, spares={"gpu": 8})
            scontrol = slurm_spares.Scontrol()
            os.environ["SLURM_CONF"] = ctl.env["SLURM_CONF"]
            figures["spares pass (ms)"] = 1000 * timed(lambda: slurm_spares.reconcile(pools, scontrol), repeats)
            node = name(size // 2)

            def drain_and_resume() -> None:
                ctl.ok("scontrol", "update", f"nodename={node}", "state=drain", "reason=bench")
                ctl.ok("scontrol", "update", f"nodename={node}", "state=resume")

            figures["drain + resume (ms)"] = 1000 * timed(drain_and_resume, repeats) / 2
            doomed = iter(range(size, 0, -1))
            figures["delete (ms)"] = 1000 * timed(
                lambda: ctl.ok("scontrol", "delete", f"nodename={name(next(doomed))}"), repeats
            )
            figures["reconfigure (ms)"] = 1000 * timed(lambda: ctl.ok("scontrol", "reconfigure"), repeats)
            return figures
        finally:
            ctl.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/out/slurm_scale.json"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("slurm_scale.py runs slurmctld and munged: run it as root")
    results = {size: measure(size, args.repeats) for size in SIZES}
    print(f"slurmctld 22.05 with node records (median of {args.repeats}; one run, side by side)")
    print(f"{'':22s} " + " ".join(f"{size:>9d}" for size in SIZES) + "     ratio")
    for key in results[SIZES[0]]:
        small, large = results[SIZES[0]][key], results[SIZES[-1]][key]
        print(f"{key:22s} " + " ".join(f"{results[s][key]:9.1f}" for s in SIZES) + f"  {large / small:7.2f}x")
    slowest = max(results[SIZES[-1]].values())
    print(f"slowest call at {SIZES[-1]} nodes: {slowest:.0f} ms against MessageTimeout's 10,000 ms")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({str(k): v for k, v in results.items()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
