"""Detection-to-action time of a replace-class fault, on a simulated timeline.

    fault -> the agent's next check (check interval) -> EventBridge delivery -> the repair
    handler (measured here for real, under moto, on an 8-node group, with and without Slurm's
    drain hook) -> terminate, with the evidence capture and the Slurm drain each bounded by its
    wait; they run at once, so the longer bound counts.

The handler is timed over several runs in one process; the other parts are the settings' values
(the check interval, evidence and drain waits) and assumed delivery times (EventBridge, and SSM
Run Command to the controller for the drain). Goal: <= 60 s worst case.
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

from auto_repair.drain import WAIT_SECONDS as RUN_COMMAND_DRAIN_WAIT  # noqa: E402
from auto_repair.settings import Settings  # noqa: E402
from auto_repair.signals import AGENT_SOURCE, from_event  # noqa: E402

EVENT_DELIVERY_SECONDS = 1.0  # EventBridge to Lambda, assumed (typically well under a second)
DRAIN_TYPICAL_SECONDS = 2.0  # Run Command to the controller and scontrol there, assumed


def handler_seconds(runs: int, *, slurm: bool) -> list[float]:
    import handler
    from auto_repair.drain import RunCommandDrain
    from repair_world import make_world

    times = []
    for _ in range(runs + 1):  # the first run warms moto and botocore up, and is dropped
        with mock_aws():
            world = make_world({"gpu": 8, "controller": 1} if slurm else {"gpu": 8})
            drain = {"drain_group": "demo-controller-asg", "drain_command": "slurm-drain.sh"} if slurm else {}
            settings = world.settings(evidence_wait_seconds=Settings.evidence_wait_seconds, **drain)
            repairer = handler.make_repairer(settings, world.clients)
            assert isinstance(repairer.drain_hook, RunCommandDrain) == slurm
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
    plain = handler_seconds(args.runs, slurm=False)
    with_drain = handler_seconds(args.runs, slurm=True)
    evidence, drain = Settings.evidence_wait_seconds, RUN_COMMAND_DRAIN_WAIT
    for name, measured in (("no orchestrator", plain), ("Slurm drain hook", with_drain)):
        median, low, high = statistics.median(measured), min(measured), max(measured)
        print(f"handler, replace-class XID on an 8-node group under moto, {name}: median {median:.3f} s "
              f"(min {low:.3f}, max {high:.3f}, n={len(measured)})")  # fmt: skip
    handler = statistics.median(with_drain)
    typical = args.check_interval / 2 + EVENT_DELIVERY_SECONDS + DRAIN_TYPICAL_SECONDS + handler
    worst = args.check_interval + EVENT_DELIVERY_SECONDS + max(evidence, drain) + handler
    reboot_worst = args.check_interval + EVENT_DELIVERY_SECONDS + drain + handler
    print(f"{'with Slurm, replace':38s} {'typical':>8s} {'worst':>8s}")
    print(f"{'agent check interval':38s} {args.check_interval / 2:7.1f}s {args.check_interval:7.1f}s")
    print(f"{'event delivery (assumed)':38s} {EVENT_DELIVERY_SECONDS:7.1f}s {EVENT_DELIVERY_SECONDS:7.1f}s")
    # The drain (typical: assumed) and the evidence capture run at once; each wait is bounded.
    print(f"{'Slurm drain and evidence, at once':38s} {DRAIN_TYPICAL_SECONDS:7.1f}s {max(evidence, drain):7.1f}s")
    print(f"{'handler (measured)':38s} {handler:7.1f}s {handler:7.1f}s")
    verdict = "met" if max(worst, reboot_worst) <= 60 else "NOT met"
    print(f"{'detection to action':38s} {typical:7.1f}s {worst:7.1f}s   goal <= 60 s: {verdict}")
    print(f"{'(a reboot: drain, no evidence)':38s} {'':8s} {reboot_worst:7.1f}s")
    print("for comparison: EKS node auto repair waits 600 s; ParallelCluster 180 s + its 60 s loop")


if __name__ == "__main__":
    main()
