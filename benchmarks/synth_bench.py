"""Synthesis time of the default cluster against a bare CDK app holding one ec2.Vpc.

Two measurements, each alternating the two sides in one run (after a warm-up of each) so both
see the same machine load; medians and their ratio are printed.

1. Whole app, as ``cdk synth`` runs it: ``python app.py`` against ``python bare_vpc_app.py``
   in a new process each time (Python, jsii and Node start-up included). Goal: ratio <= 2.0.
2. In one warm process: building and synthesizing the stack only, where the difference between
   the two apps is all there is.

    make bench            # or: python benchmarks/synth_bench.py --rounds 7
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from aws_cdk import App, Stack
from aws_cdk import aws_ec2 as ec2

from training_cluster import ClusterConfig, TrainingClusterStack

ROOT = Path(__file__).resolve().parents[1]
CONTEXT = json.loads((ROOT / "cdk.json").read_text())["context"]
CONFIG = ClusterConfig.from_yaml(ROOT / "examples" / "default.yaml")


def run_app(script: Path) -> Callable[[str], None]:
    """Run an app in a new process the way the CDK CLI does (context and output folder in the environment)."""

    def run(outdir: str) -> None:
        env = {**os.environ, "CDK_OUTDIR": outdir, "CDK_CONTEXT_JSON": json.dumps(CONTEXT)}
        subprocess.run([sys.executable, str(script)], cwd=ROOT, env=env, check=True, capture_output=True)

    return run


def bare_vpc(outdir: str) -> None:
    app = App(context=CONTEXT, outdir=outdir)
    ec2.Vpc(Stack(app, "Bare", env={"region": "us-east-1"}), "Vpc")
    app.synth()


def default_cluster(outdir: str) -> None:
    app = App(context=CONTEXT, outdir=outdir)
    TrainingClusterStack(app, "demo-training-cluster", config=CONFIG)
    app.synth()


def timed(run: Callable[[str], None]) -> float:
    with tempfile.TemporaryDirectory() as outdir:
        start = time.perf_counter()
        run(outdir)
        return time.perf_counter() - start


def compare(title: str, baseline: Callable[[str], None], cluster: Callable[[str], None], rounds: int) -> float:
    timed(baseline)
    timed(cluster)
    times: dict[str, list[float]] = {"bare ec2.Vpc": [], "default cluster": []}
    for _ in range(rounds):
        times["bare ec2.Vpc"].append(timed(baseline))
        times["default cluster"].append(timed(cluster))
    print(title)
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:16s} median {median:7.3f} s  (min {min(values):.3f}, max {max(values):.3f}, n={rounds})")
    ratio = statistics.median(times["default cluster"]) / statistics.median(times["bare ec2.Vpc"])
    print(f"  ratio default cluster / bare ec2.Vpc: {ratio:.2f}x")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7, help="timed runs of each side (at least 5)")
    rounds = max(5, parser.parse_args().rounds)
    app_ratio = compare(
        "1. whole app (python app.py vs a bare ec2.Vpc app), new process each:",
        run_app(ROOT / "benchmarks" / "bare_vpc_app.py"),
        run_app(ROOT / "app.py"),
        rounds,
    )
    compare("2. construct + synthesize in one warm process:", bare_vpc, default_cluster, rounds)
    print(f"goal: whole-app ratio <= 2.0x: {'met' if app_ratio <= 2.0 else 'NOT met'} ({app_ratio:.2f}x)")


if __name__ == "__main__":
    main()
