"""The repair control plane at 128 and 1,024 nodes, side by side in one run, under moto: the
sweep (every instance's status checks and health tag, the ledger) and the handler for one
replace-class fault, each timed over a few runs (median). Goal (issue 14): the cost per node stays
flat from 128 to 1,024 nodes. moto's own work is in the figures (it answers in-process, with no
network): they compare sizes, not AWS's latency."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "lambda" / "repair"), str(ROOT / "tests")]

from moto import mock_aws  # noqa: E402

from auto_repair.signals import from_event  # noqa: E402
from repair_world import make_world, xid  # noqa: E402

GROUP_SIZE = 128


def measure(nodes: int, runs: int) -> dict[str, float]:
    with mock_aws():
        world = make_world({f"g{i}": GROUP_SIZE for i in range(nodes // GROUP_SIZE)})
        sweeps = []
        for _ in range(runs):
            repairer = world.repairer(max_parallel_replacements=25)
            start = time.perf_counter()
            assert repairer.sweep() == []
            sweeps.append(time.perf_counter() - start)
        handles = []
        for n in range(runs):
            bad = world.instances(f"g{n % (nodes // GROUP_SIZE)}")[n // (nodes // GROUP_SIZE)]
            event = from_event(world.agent(bad, xid(79)))
            repairer = world.repairer(max_parallel_replacements=25)
            start = time.perf_counter()
            (outcome,) = repairer.handle(event)
            handles.append(time.perf_counter() - start)
            assert outcome.result == "replaced", outcome
    sweep, handle = statistics.median(sweeps), statistics.median(handles)
    return {"nodes": nodes, "sweep_s": sweep, "sweep_ms_per_node": 1000 * sweep / nodes, "handle_s": handle}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    small, large = measure(128, args.runs), measure(1024, args.runs)
    print("control plane under moto (medians):")
    for r in (small, large):
        print(
            f"  {r['nodes']:>5} nodes: sweep {r['sweep_s']:.2f} s ({r['sweep_ms_per_node']:.2f} ms a node), "
            f"handler for one fault {r['handle_s']:.2f} s"
        )
    per_node = large["sweep_ms_per_node"] / small["sweep_ms_per_node"]
    print(f"  sweep cost per node, 1,024 against 128: x{per_node:.2f} (flat is x1)")
    print(f"  handler, 1,024 against 128: x{large['handle_s'] / small['handle_s']:.2f}")


if __name__ == "__main__":
    main()
