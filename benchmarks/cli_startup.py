"""Start-up of the ``training-cluster`` command line, against the Python interpreter alone.

Each command runs in a new process, the sides alternating in one run (after a warm-up of each)
so all see the same machine load; medians and their ratios to ``python -c pass`` are printed.

- ``--help``: the CLI's start-up (it imports neither aws-cdk-lib nor jsii);
- ``validate examples/default.yaml``: every check synthesis runs on the config, and the plan.
  Goal: well under a second;
- ``import aws_cdk``: what the CLI would pay at every start if it loaded the CDK.

    make bench            # or: python benchmarks/cli_startup.py --rounds 15
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).parent / "training-cluster"
SIDES = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "training-cluster --help": [str(SCRIPT), "--help"],
    "training-cluster validate default.yaml": [str(SCRIPT), "validate", str(ROOT / "examples" / "default.yaml")],
    "python -c 'import aws_cdk'": [sys.executable, "-c", "import aws_cdk"],
}


def seconds(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=11)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in SIDES}
    for command in SIDES.values():
        seconds(command)  # warm-up: file caches
    for _ in range(args.rounds):
        for name, command in SIDES.items():
            times[name].append(seconds(command))
    base = statistics.median(times["python -c pass"])
    print(f"CLI start-up, {args.rounds} rounds, medians (ratio to the interpreter alone):")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:<40} {median * 1000:8.0f} ms  x{median / base:5.1f}")


if __name__ == "__main__":
    main()
