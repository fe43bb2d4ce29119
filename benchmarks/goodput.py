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
import json
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
    restart_min: float = 10.0  # assumed: load the checkpoint, re-form the collective, warm up
    replacement_boot_min: float = 15.0  # assumed: launch, bootstrap, mount FSx, health checks
    groups: int = 1  # instance groups the nodes are split into (each keeps its own spares)
    spares_per_group: int = 0
    checkpoint_write_min: float = 0.0  # training stalls this long for each checkpoint
    requeue_min: float = 0.0  # measured: the repair's hook to the job running again (Slurm's part)

    @property
    def period_min(self) -> float:
        """Wall-clock minutes per checkpoint interval of training: the interval and the write."""
        return self.checkpoint_interval_min + self.checkpoint_write_min


@dataclass(frozen=True)
class Repair:
    name: str
    detect_min_low: float  # fault to repair action, drawn uniformly between low and high
    detect_min_high: float


AUTO = Repair("auto-repair", detect_min_low=0.1, detect_min_high=1.0)
HUMAN = Repair("human (1-4 h)", detect_min_low=60.0, detect_min_high=240.0)


def downtime_min(fleet: Fleet, detect: float, spare: bool) -> float:
    """From the fault to training again: detection, Slurm's requeue, the replacement's boot
    (unless a spare takes the node's place), the framework's restart."""
    # Without a spare, Slurm's requeue hold runs while the replacement boots.
    requeue = fleet.requeue_min if spare else max(fleet.requeue_min, fleet.replacement_boot_min)
    return detect + requeue + fleet.restart_min


def lost_minutes_per_failure(fleet: Fleet, repair: Repair) -> float:
    """Wall-clock minutes one failure costs: the work since the last checkpoint (half a period on
    average) and the downtime. With spares, as if one is always there (the simulation knows better)."""
    detect = (repair.detect_min_low + repair.detect_min_high) / 2
    return fleet.period_min / 2 + downtime_min(fleet, detect, spare=fleet.spares_per_group > 0)


def expected_ett(fleet: Fleet, repair: Repair) -> float:
    """Closed form: failures are rare against the run, so each one costs its own downtime; of the
    time that trains, the checkpoint writes take their share."""
    total = fleet.days * 24 * 60
    failures = fleet.nodes * fleet.days * fleet.failures_per_1000_node_days / 1000
    training = fleet.checkpoint_interval_min / fleet.period_min
    return max(0.0, (1 - failures * lost_minutes_per_failure(fleet, repair) / total) * training)


def simulate_ett(fleet: Fleet, repair: Repair, rng: random.Random) -> float:
    """One run: the job trains (stalling for each checkpoint it writes), fails, waits for repair
    and restart, loses the work since its last checkpoint. A failed node's group lends a spare if
    it has one left (the job goes on without waiting for the boot) and gets it back when the
    replacement has booted; otherwise the job waits for the replacement."""
    total = fleet.days * 24 * 60
    rate_per_min = fleet.nodes * fleet.failures_per_1000_node_days / 1000 / (24 * 60)
    if rate_per_min == 0:
        return 1.0
    period, interval = fleet.period_min, fleet.checkpoint_interval_min
    refills: list[list[float]] = [[] for _ in range(fleet.groups)]  # per group: when lent spares come back
    clock = kept = 0.0
    while clock < total:
        run = rng.expovariate(rate_per_min)  # training until the next failure anywhere in the fleet
        if clock + run >= total:
            kept += (total - clock) * interval / period
            break
        kept += (run // period) * interval  # the work checkpointed before the failure
        clock += run
        detect = rng.uniform(repair.detect_min_low, repair.detect_min_high)
        group = refills[rng.randrange(fleet.groups)]  # groups are the same size
        group[:] = [t for t in group if t > clock]
        spare = len(group) < fleet.spares_per_group
        if spare:
            group.append(clock + detect + fleet.replacement_boot_min)
        clock += downtime_min(fleet, detect, spare)
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


SCALE_SPARES = (0, 1, 2)
SCALE_INTERVALS = (10.0, 30.0, 60.0)
GOAL = 0.95


def scale_fleet(requeue_min: float, write_min: float, restart_min: float) -> Fleet:
    """1,024 p5 in 8 groups of 128 for 30 days (the scale issue's case)."""
    return Fleet(nodes=1024, groups=8, requeue_min=requeue_min, checkpoint_write_min=write_min, restart_min=restart_min)


def scale_table(base: Fleet, runs: int, seed: int) -> dict[tuple[int, float], float]:
    """Simulated effective training time for each number of spares and checkpoint interval."""
    out = {}
    for spares in SCALE_SPARES:
        for interval in SCALE_INTERVALS:
            fleet = replace(base, spares_per_group=spares, checkpoint_interval_min=interval)
            rng = random.Random(seed)
            out[spares, interval] = statistics.mean(simulate_ett(fleet, AUTO, rng) for _ in range(runs))
    return out


def restart_for_goal(base: Fleet) -> float:
    """The longest framework restart (min) at which the closed form still reaches the goal."""
    low, high = 0.0, base.restart_min
    if expected_ett(replace(base, restart_min=0.0), AUTO) < GOAL:
        return 0.0
    for _ in range(40):
        middle = (low + high) / 2
        low, high = (middle, high) if expected_ett(replace(base, restart_min=middle), AUTO) >= GOAL else (low, middle)
    return low


def measured_requeue_min(path: Path) -> float | None:
    """fault_to_running.py's figure with a spare under this project's slurm.conf, if it ran."""
    if not path.exists():
        return None
    return float(json.loads(path.read_text())["ours-spare"]["running"]) / 60


def scale(args: argparse.Namespace) -> None:
    measured = measured_requeue_min(args.measured)
    requeue = args.requeue_min if args.requeue_min is not None else measured if measured is not None else 1.2
    source = "--requeue-min" if args.requeue_min is not None else args.measured if measured is not None else "default"
    base = scale_fleet(requeue, args.write_min, args.restart_min)
    print(
        f"\n1,024 nodes (8 groups of 128) x 30 days, {base.nodes * 30 * base.failures_per_1000_node_days / 1000:.0f} "
        f"expected failures; measured: requeue to running {60 * requeue:.0f} s ({source}); assumed: boot "
        f"{base.replacement_boot_min:g} min, restart {base.restart_min:g} min, {60 * base.checkpoint_write_min:.0f} s "
        "stall per checkpoint"
    )
    results = scale_table(base, args.runs, args.seed)
    print(f"{'spares/group':>12s} " + " ".join(f"{f'ckpt {i:g} min':>12s}" for i in SCALE_INTERVALS))
    for spares in SCALE_SPARES:
        print(f"{spares:12d} " + " ".join(f"{100 * results[spares, i]:11.2f}%" for i in SCALE_INTERVALS))
    (best_spares, best_interval), best = max(results.items(), key=lambda item: item[1])
    verdict = "reached" if best >= GOAL else "not reached"
    print(
        f"best: {best_spares} spare(s) per group, checkpoint every {best_interval:g} min: {100 * best:.2f}% "
        f"(goal {100 * GOAL:g}% {verdict})"
    )
    for interval in SCALE_INTERVALS:
        needed = restart_for_goal(replace(base, spares_per_group=1, checkpoint_interval_min=interval))
        reach = f"a framework restart of {needed:.1f} min or less" if needed > 0 else "no restart time at all"
        print(f"with 1 spare per group and a checkpoint every {interval:g} min, the goal needs {reach}")
    plot_scale(base, results, args.scale_plot)
    print(f"plot: {args.scale_plot}")


def plot_scale(base: Fleet, results: dict[tuple[int, float], float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for spares, style in zip(SCALE_SPARES, ("--s", "-o", "-^"), strict=True):
        ax.plot(
            SCALE_INTERVALS,
            [100 * results[spares, i] for i in SCALE_INTERVALS],
            style,
            label=f"{spares} spare(s)/group",
        )
    ax.axhline(100 * GOAL, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xticks(SCALE_INTERVALS)
    ax.set_xlabel("checkpoint interval (min)")
    ax.set_ylabel("effective training time (%)")
    ax.set_title(
        f"1,024 nodes, 8 groups; restart {base.restart_min:g} min, boot {base.replacement_boot_min:g} min "
        f"(assumed), requeue {60 * base.requeue_min:.0f} s (measured)",
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
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
    parser.add_argument("--scale-plot", type=Path, default=Path("benchmarks/out/goodput_1024.png"))
    parser.add_argument("--measured", type=Path, default=Path("benchmarks/out/fault_to_running.json"))
    parser.add_argument("--requeue-min", type=float, help="default: fault_to_running.py's measured figure")
    parser.add_argument(
        "--write-min", type=float, default=0.1, help="assumed stall per checkpoint (an asynchronous save: 6 s)"
    )
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
    scale(args)


if __name__ == "__main__":
    main()
