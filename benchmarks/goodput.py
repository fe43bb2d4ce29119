"""Goodput model: effective training time of a fleet with this auto-repair against a human repair.

A training job spans the whole fleet; any node failure stops it. Node failures arrive as a Poisson
process (default 3.8 per 1,000 node-days: Llama 3 405B's 419 unexpected interruptions on 16,384
H100s in 54 days, arXiv 2407.21783). Each failure costs:

- the work since the last checkpoint (on average half the checkpoint interval);
- the time from the fault to the repair action: the agent's check interval, event delivery and
  the handler (``repair_latency.py`` measures these) for auto-repair, or a human noticing and
  acting (1 to 4 hours) without it;
- the replacement node's launch and boot, then the job's restart from its checkpoint.

Effective training time = time spent training on work that is kept / wall-clock time. The model is
simulated (seeded, repeated) and checked against its closed form.

    python benchmarks/goodput.py [--nodes 128 --days 30 --rate 3.8 ...] [--plot goodput.png]
"""

from __future__ import annotations

import argparse
import random
import statistics
from dataclasses import dataclass, replace
from pathlib import Path


@dataclass(frozen=True)
class Fleet:
    nodes: int = 128
    days: float = 30.0
    failures_per_1000_node_days: float = 3.8
    checkpoint_interval_min: float = 30.0
    restart_min: float = 10.0  # load the checkpoint, re-form the collective, warm up
    replacement_boot_min: float = 15.0  # launch, bootstrap, mount FSx, health checks


@dataclass(frozen=True)
class Repair:
    name: str
    detect_min_low: float  # fault to repair action, drawn uniformly between low and high
    detect_min_high: float


AUTO = Repair("auto-repair", detect_min_low=0.1, detect_min_high=1.0)
HUMAN = Repair("human (1-4 h)", detect_min_low=60.0, detect_min_high=240.0)


def lost_minutes_per_failure(fleet: Fleet, repair: Repair) -> float:
    detect = (repair.detect_min_low + repair.detect_min_high) / 2
    return fleet.checkpoint_interval_min / 2 + detect + fleet.replacement_boot_min + fleet.restart_min


def expected_ett(fleet: Fleet, repair: Repair) -> float:
    """Closed form: failures are rare against the run, so each one costs its own downtime."""
    total = fleet.days * 24 * 60
    failures = fleet.nodes * fleet.days * fleet.failures_per_1000_node_days / 1000
    return max(0.0, 1 - failures * lost_minutes_per_failure(fleet, repair) / total)


def simulate_ett(fleet: Fleet, repair: Repair, rng: random.Random) -> float:
    """One run: the job trains, fails, waits for repair and restart, loses uncheckpointed work."""
    total = fleet.days * 24 * 60
    rate_per_min = fleet.nodes * fleet.failures_per_1000_node_days / 1000 / (24 * 60)
    if rate_per_min == 0:
        return 1.0
    clock = kept = 0.0
    while clock < total:
        run = rng.expovariate(rate_per_min)  # training until the next failure anywhere in the fleet
        if clock + run >= total:
            kept += total - clock
            break
        checkpointed = (run // fleet.checkpoint_interval_min) * fleet.checkpoint_interval_min
        kept += checkpointed
        downtime = rng.uniform(repair.detect_min_low, repair.detect_min_high)
        downtime += fleet.replacement_boot_min + fleet.restart_min
        clock += run + downtime
    return kept / total


def table(fleet: Fleet, runs: int, seed: int) -> list[tuple[str, float, float, float]]:
    rows = []
    for repair in (AUTO, HUMAN):
        rng = random.Random(seed)
        simulated = [simulate_ett(fleet, repair, rng) for _ in range(runs)]
        rows.append(
            (repair.name, expected_ett(fleet, repair), statistics.mean(simulated), statistics.pstdev(simulated))
        )
    return rows


def plot(fleet: Fleet, path: Path, runs: int, seed: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [8, 16, 32, 64, 128, 256, 512, 1024, 2048]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    lowest = 100.0
    for repair, style in ((AUTO, "-o"), (HUMAN, "--s")):
        rng = random.Random(seed)
        ett = [
            100 * statistics.mean(simulate_ett(replace(fleet, nodes=n), repair, rng) for _ in range(runs))
            for n in sizes
        ]
        lowest = min(lowest, *ett)
        ax.plot(sizes, ett, style, label=repair.name)
    ax.axhline(97, color="grey", linewidth=0.8, linestyle=":")
    ax.text(sizes[-1], 97.4, "97% goal", color="grey", fontsize=8, ha="right")
    ax.axvline(fleet.nodes, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.set_xlabel("nodes in the job (8 GPUs each); simulated, mean of runs")
    ax.set_ylabel("effective training time (%)")
    ax.set_title(
        f"{fleet.failures_per_1000_node_days} failures / 1,000 node-days, checkpoint every "
        f"{fleet.checkpoint_interval_min:g} min",
        fontsize=10,
    )
    ax.set_ylim(max(0.0, lowest - 5), 100)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = Fleet()
    parser.add_argument("--nodes", type=int, default=defaults.nodes)
    parser.add_argument("--days", type=float, default=defaults.days)
    parser.add_argument(
        "--rate", type=float, default=defaults.failures_per_1000_node_days, help="failures per 1,000 node-days"
    )
    parser.add_argument("--checkpoint-min", type=float, default=defaults.checkpoint_interval_min)
    parser.add_argument("--restart-min", type=float, default=defaults.restart_min)
    parser.add_argument("--boot-min", type=float, default=defaults.replacement_boot_min)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--plot", type=Path, default=Path("benchmarks/out/goodput.png"))
    args = parser.parse_args()
    fleet = Fleet(args.nodes, args.days, args.rate, args.checkpoint_min, args.restart_min, args.boot_min)
    failures = fleet.nodes * fleet.days * fleet.failures_per_1000_node_days / 1000
    print(
        f"{fleet.nodes} nodes x {fleet.days:g} days, {failures:.1f} expected failures, checkpoint every "
        f"{fleet.checkpoint_interval_min:g} min, boot {fleet.replacement_boot_min:g} min, "
        f"restart {fleet.restart_min:g} min"
    )
    print(f"{'repair':16s} {'model':>8s} {'simulated':>10s} {'sd':>6s}  lost per failure")
    for name, model, mean, sd in table(fleet, args.runs, args.seed):
        repair = AUTO if name == AUTO.name else HUMAN
        lost = lost_minutes_per_failure(fleet, repair)
        print(f"{name:16s} {100 * model:7.2f}% {100 * mean:9.2f}% {100 * sd:5.2f}  {lost:.0f} min")
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    plot(fleet, args.plot, runs=max(20, args.runs // 4), seed=args.seed)
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
