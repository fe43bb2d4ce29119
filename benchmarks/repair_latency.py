"""Detection-to-action time of a replace-class fault, on a simulated timeline.

    fault -> the agent's next check (check interval) -> EventBridge delivery -> the repair
    handler (measured here for real, under moto, on an 8-node group) -> terminate, with the
    evidence capture bounded by its wait.

The handler is timed over several runs in one process; the other parts are the settings' values
(the check interval and evidence wait) and an assumed delivery time. Goal: <= 60 s worst case.
Compared with EKS node auto repair (acts after 10 min for accelerator conditions) and
ParallelCluster (replaces after 180 s of failed status checks, on a 60 s loop).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "lambda" / "repair"), str(ROOT / "tests")]

from moto import mock_aws  # noqa: E402

from auto_repair.settings import Settings  # noqa: E402
from auto_repair.signals import AGENT_SOURCE, from_event  # noqa: E402

EVENT_DELIVERY_SECONDS = 1.0  # EventBridge to Lambda, assumed (typically well under a second)


def handler_seconds(runs: int) -> list[float]:
    from repair_world import make_world

    times = []
    for _ in range(runs + 1):  # the first run warms moto and botocore up, and is dropped
        with mock_aws():
            world = make_world({"gpu": 8})
            repairer = world.repairer(evidence_wait_seconds=Settings.evidence_wait_seconds)
            bad = world.instances()[0]
            event = {
                "source": AGENT_SOURCE,
                "detail-type": "Node Health Changed",
                "detail": {"cluster": "demo", "instance_id": bad, "state": "unhealthy",
                           "failures": [{"check": "xid", "code": "79", "message": "GPU has fallen off the bus"}]},
            }  # fmt: skip
            start = time.perf_counter()
            (outcome,) = repairer.handle(from_event(event))
            times.append(time.perf_counter() - start)
            assert outcome.result == "replaced"
    return times[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--check-interval", type=float, default=30.0, help="the agent's check interval, seconds")
    args = parser.parse_args()
    measured = handler_seconds(args.runs)
    handler = statistics.median(measured)
    evidence = Settings.evidence_wait_seconds
    median = args.check_interval / 2 + EVENT_DELIVERY_SECONDS + handler
    worst = args.check_interval + EVENT_DELIVERY_SECONDS + evidence + handler
    print(f"handler, replace-class XID on an 8-node group under moto: median {handler:.3f} s "
          f"(min {min(measured):.3f}, max {max(measured):.3f}, n={len(measured)})")  # fmt: skip
    print(f"{'':34s} {'typical':>8s} {'worst':>8s}")
    print(f"{'agent check interval':34s} {args.check_interval / 2:7.1f}s {args.check_interval:7.1f}s")
    print(f"{'event delivery (assumed)':34s} {EVENT_DELIVERY_SECONDS:7.1f}s {EVENT_DELIVERY_SECONDS:7.1f}s")
    print(f"{'evidence capture (bounded wait)':34s} {0.0:7.1f}s {evidence:7.1f}s")
    print(f"{'handler (measured)':34s} {handler:7.1f}s {handler:7.1f}s")
    verdict = "met" if worst <= 60 else "NOT met"
    print(f"{'detection to action':34s} {median:7.1f}s {worst:7.1f}s   goal <= 60 s: {verdict}")
    print("for comparison: EKS node auto repair waits 600 s; ParallelCluster 180 s + its 60 s loop")


if __name__ == "__main__":
    main()
