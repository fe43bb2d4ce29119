"""The order of boot stages is their own (issue 10): by phase, then by name, whatever the order
in which constructs add them."""

from __future__ import annotations

import re

import pytest

from training_cluster.node_bootstrap import NodeBootstrap


def stage_files(bootstrap: NodeBootstrap) -> list[str]:
    return re.findall(r"^cat > /opt/training-cluster/bootstrap\.d/(\S+)\.sh ", bootstrap.render_text(), re.MULTILINE)


def test_the_scheduler_runs_after_the_node_software_whatever_the_call_order() -> None:
    bootstrap = NodeBootstrap()
    bootstrap.add_stage("slurm", "echo slurm", phase="scheduler")  # a Slurm construct made first
    bootstrap.add_stage("metrics", "echo metrics")
    bootstrap.add_stage("health-agent", "echo agent")
    assert bootstrap.stage_names == ["health-agent", "metrics", "slurm"]
    assert stage_files(bootstrap) == ["01-health-agent", "02-metrics", "03-slurm"]


def test_the_same_stages_in_any_order_give_the_same_user_data() -> None:
    stages = [
        ("metrics", "echo m", "software"),
        ("slurm", "echo s", "scheduler"),
        ("health-agent", "echo h", "software"),
    ]
    texts = set()
    for order in (stages, stages[::-1], stages[1:] + stages[:1]):
        bootstrap = NodeBootstrap()
        for name, script, phase in order:
            bootstrap.add_stage(name, script, phase=phase)  # type: ignore[arg-type]
        texts.add(bootstrap.render_text())
    assert len(texts) == 1


def test_an_unknown_phase_is_refused() -> None:
    with pytest.raises(ValueError, match="stage 'x': phase must be one of software, scheduler, got 'early'"):
        NodeBootstrap().add_stage("x", "true", phase="early")  # type: ignore[arg-type]
