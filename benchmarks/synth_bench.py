"""Synthesis time of the default cluster (and the EKS example) against a bare CDK app holding one
ec2.Vpc.

Two measurements, each alternating the sides in one run (after a warm-up of each) so all see the
same machine load; medians and their ratios to the bare app are printed.

1. Whole app, as ``cdk synth`` runs it: ``python app.py`` (the default config, then
   ``examples/eks.yaml``) against ``python bare_vpc_app.py`` in a new process each time (Python,
   jsii and Node start-up included). Goal: each ratio <= 2.0.
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


def run_app(script: Path, config: Path | None = None) -> Callable[[str], None]:
    """Run an app in a new process the way the CDK CLI does (context and output folder in the environment)."""
    context = {**CONTEXT, **({"config": str(config)} if config else {})}

    def run(outdir: str) -> None:
        env = {**os.environ, "CDK_OUTDIR": outdir, "CDK_CONTEXT_JSON": json.dumps(context)}
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


def compare(title: str, sides: dict[str, Callable[[str], None]], rounds: int) -> dict[str, float]:
    """Each side's median time over ``rounds`` alternating runs, and its ratio to the first side's."""
    for run in sides.values():
        timed(run)
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(rounds):
        for name, run in sides.items():
            times[name].append(timed(run))
    print(title)
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:16s} median {median:7.3f} s  (min {min(values):.3f}, max {max(values):.3f}, n={rounds})")
    baseline, *others = sides
    ratios = {name: statistics.median(times[name]) / statistics.median(times[baseline]) for name in others}
    for name, ratio in ratios.items():
        print(f"  ratio {name} / {baseline}: {ratio:.2f}x")
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7, help="timed runs of each side (at least 5)")
    rounds = max(5, parser.parse_args().rounds)
    ratios = compare(
        "1. whole app (python app.py vs a bare ec2.Vpc app), new process each:",
        {
            "bare ec2.Vpc": run_app(ROOT / "benchmarks" / "bare_vpc_app.py"),
            "default cluster": run_app(ROOT / "app.py"),
            "EKS cluster": run_app(ROOT / "app.py", ROOT / "examples" / "eks.yaml"),
        },
        rounds,
    )
    compare(
        "2. construct + synthesize in one warm process:",
        {"bare ec2.Vpc": bare_vpc, "default cluster": default_cluster},
        rounds,
    )
    for name, ratio in ratios.items():
        print(f"goal: whole-app ratio <= 2.0x for the {name}: {'met' if ratio <= 2.0 else 'NOT met'} ({ratio:.2f}x)")


if __name__ == "__main__":
    main()
