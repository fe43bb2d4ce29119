"""The goodput model behaves as its closed form says (the benchmark's figures rest on it)."""

from __future__ import annotations

import importlib.util
import random
import statistics
import sys
from dataclasses import replace
from types import ModuleType

import pytest

from conftest import ROOT


@pytest.fixture(scope="module")
def goodput() -> ModuleType:
    spec = importlib.util.spec_from_file_location("goodput", ROOT / "benchmarks" / "goodput.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["goodput"] = module
    spec.loader.exec_module(module)
    return module


def test_no_failures_means_all_time_trains(goodput: ModuleType) -> None:
    fleet = goodput.Fleet(failures_per_1000_node_days=0.0)
    assert goodput.expected_ett(fleet, goodput.HUMAN) == 1.0
    assert goodput.simulate_ett(fleet, goodput.HUMAN, random.Random(1)) == 1.0


@pytest.mark.parametrize("repair", ["AUTO", "HUMAN"])
def test_simulation_agrees_with_the_closed_form(goodput: ModuleType, repair: str) -> None:
    fleet, r = goodput.Fleet(), getattr(goodput, repair)
    rng = random.Random(3)
    simulated = statistics.mean(goodput.simulate_ett(fleet, r, rng) for _ in range(300))
    assert simulated == pytest.approx(goodput.expected_ett(fleet, r), abs=0.006)


def test_faster_repair_and_fewer_nodes_keep_more_time(goodput: ModuleType) -> None:
    fleet = goodput.Fleet()
    assert goodput.expected_ett(fleet, goodput.AUTO) > goodput.expected_ett(fleet, goodput.HUMAN)
    assert goodput.expected_ett(replace(fleet, nodes=64), goodput.AUTO) > goodput.expected_ett(fleet, goodput.AUTO)
    # 128 nodes x 30 days x 3.8 / 1000 = 14.6 failures; 41 min lost each with auto-repair
    assert goodput.lost_minutes_per_failure(fleet, goodput.AUTO) == pytest.approx(15 + 0.55 + 15 + 10)


def test_the_repair_latency_benchmark_times_both_paths() -> None:
    """The claim path (the report intake, then the repair handler's own tag read) and the
    tag-change path (the repair handler alone) are both measured."""
    spec = importlib.util.spec_from_file_location("repair_latency", ROOT / "benchmarks" / "repair_latency.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for trigger in ("agent", "tag"):
        (seconds,) = module.handler_seconds(1, slurm=False, trigger=trigger)
        assert 0 < seconds < 10
    (seconds,) = module.intake_seconds(1)
    assert 0 < seconds < 10


def test_a_spare_saves_the_boot_and_a_checkpoint_write_costs_training(goodput: ModuleType) -> None:
    base = goodput.scale_fleet(requeue_min=1.2, write_min=0.1, restart_min=10.0)
    spare = replace(base, spares_per_group=1)
    # With a spare a failure costs the requeue instead of the boot (which the requeue hold overlaps).
    saved = goodput.lost_minutes_per_failure(base, goodput.AUTO) - goodput.lost_minutes_per_failure(spare, goodput.AUTO)
    assert saved == pytest.approx(15 - 1.2)
    assert goodput.expected_ett(spare, goodput.AUTO) > goodput.expected_ett(base, goodput.AUTO)
    # Writing checkpoints is not free: more often costs more stalls, less often more lost work.
    free = replace(spare, checkpoint_write_min=0.0)
    assert goodput.expected_ett(free, goodput.AUTO) > goodput.expected_ett(spare, goodput.AUTO)
    often = replace(spare, checkpoint_write_min=2.0, checkpoint_interval_min=5.0)
    assert goodput.expected_ett(often, goodput.AUTO) < goodput.expected_ett(
        replace(often, checkpoint_interval_min=30.0), goodput.AUTO
    )


def test_spares_run_out_only_when_failures_crowd_a_group(goodput: ModuleType) -> None:
    spare = replace(goodput.scale_fleet(requeue_min=1.2, write_min=0.1, restart_min=10.0), spares_per_group=1)
    rng = random.Random(5)
    simulated = statistics.mean(goodput.simulate_ett(spare, goodput.AUTO, rng) for _ in range(200))
    # A second failure in the same group within a boot is rare: the closed form (a spare always
    # there) is close, and never worse than the simulation by more than noise.
    assert simulated == pytest.approx(goodput.expected_ett(spare, goodput.AUTO), abs=0.004)
    # One group of 1,024 with one spare runs out far more often than eight groups with one each.
    crowded = replace(spare, groups=1)
    rng = random.Random(5)
    alone = statistics.mean(goodput.simulate_ett(crowded, goodput.AUTO, rng) for _ in range(200))
    assert alone < simulated
