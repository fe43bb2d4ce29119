"""The order of boot stages is their own (issue 10): by phase, then by name, whatever the order
in which constructs add them."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from training_cluster.node_bootstrap import NodeBootstrap, expand


def stage_files(bootstrap: NodeBootstrap) -> list[str]:
    return re.findall(
        r"^cat > /opt/training-cluster/bootstrap\.d/(\S+)\.sh ", expand(bootstrap.render_text()), re.MULTILINE
    )


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


def test_the_packed_scripts_unpack_on_a_node_as_written(tmp_path: Path) -> None:
    """The real base64 and gunzip give back exactly the scripts the packing took in."""
    bootstrap = NodeBootstrap()
    bootstrap.add_stage("metrics", "echo 'metrics' \"$HOME\"\nexit 0")
    text = bootstrap.render_text()
    assert "cat > /opt/training-cluster/bootstrap.sh" not in text  # packed, not in the clear
    lines = text.split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith("base64 -d <<"))
    end = lines.index("TRAINING_CLUSTER_PAYLOAD", start + 1)
    unpack = tmp_path / "unpack.sh"
    unpack.write_text(
        "\n".join([lines[start].replace("| bash -eu", "> unpacked.sh"), *lines[start + 1 : end + 1]]) + "\n"
    )
    subprocess.run(["bash", "-euo", "pipefail", str(unpack)], cwd=tmp_path, check=True)
    expanded = expand(text)
    unpacked = (tmp_path / "unpacked.sh").read_text()
    assert unpacked.rstrip("\n") in expanded
    assert (
        "cat > /opt/training-cluster/bootstrap.d/01-metrics.sh <<'TRAINING_CLUSTER_EOF'\necho 'metrics' \"$HOME\"\nexit 0\n"
        in unpacked
    )
    assert len(text.encode()) < len(expanded.encode()) * 0.75


def test_packing_is_deterministic() -> None:
    assert NodeBootstrap().render_text() == NodeBootstrap().render_text()
