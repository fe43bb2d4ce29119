"""The budgets :func:`training_cluster.build.build_cluster` checks: what CloudFormation and EC2
would refuse at deploy time (500 resources, a 1 MB template, 16 KB of user data) is a config
error naming the field, and the number of groups it says fit is honest (issue 9, section 1)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from aws_cdk import App

from conftest import CDK_CONTEXT, ROOT, minimal_config
from training_cluster import ClusterConfig, ConfigError, TrainingClusterStack
from training_cluster.build import (
    CLOUDFORMATION_MAX_RESOURCES,
    CLOUDFORMATION_MAX_TEMPLATE_BYTES,
    BuiltCluster,
    build_cluster,
    count_resources,
    resource_budget,
)


def groups_data(n: int) -> dict[str, Any]:
    """``n`` alike instance groups (names of one length, so that each adds the same bytes)."""
    groups = [{"name": f"g{i:02d}", "instance_type": "p5.48xlarge", "count": 1} for i in range(n)]
    return minimal_config(name="many", instance_groups=groups)


def groups_config(tmp_path: Path, n: int) -> Path:
    path = tmp_path / f"groups-{n}.yaml"
    path.write_text(yaml.safe_dump(groups_data(n)))
    return path


def test_template_size_is_measured_and_the_groups_that_fit_are_honest(tmp_path: Path) -> None:
    """CloudFormation refuses a template over 1 MB (the CDK only warns). The largest count of
    these groups that two small syntheses predict is accepted and really synthesizes within the
    limit; one more is refused, naming instance_groups, the size found and that same count."""
    limit = CLOUDFORMATION_MAX_TEMPLATE_BYTES

    def build(n: int) -> BuiltCluster:
        return build_cluster(App(context=CDK_CONTEXT, outdir=str(tmp_path / f"out-{n}")), groups_config(tmp_path, n))

    one, two = (Path(build(n).artifact.template_full_path).stat().st_size for n in (1, 2))
    largest = 1 + (limit - one) // (two - one)
    built = build(largest)
    assert Path(built.artifact.template_full_path).stat().st_size <= limit

    with pytest.raises(ConfigError) as info:
        build(largest + 1)
    (finding,) = info.value.findings
    assert finding.path == "instance_groups"
    match = re.search(
        r"the template would be ([0-9,]+) bytes, more than the 1,000,000 CloudFormation takes: .*"
        r"so at most (\d+) groups like these fit \(got (\d+)\)",
        finding.message,
    )
    assert match, finding.message
    assert int(match.group(1).replace(",", "")) > limit
    assert (int(match.group(2)), int(match.group(3))) == (largest, largest + 1)
    assert not list((tmp_path / f"out-{largest + 1}").glob("*.template.json"))  # no template left behind


def test_resource_budget_is_checked_before_synthesis_and_is_honest(tmp_path: Path) -> None:
    """Counted on the built stack. With today's groups the template size binds first (a group
    adds at least ~20 KB), so the resource budget is asked directly here, and the count it allows
    is synthesized (the CDK only warns about the size) to see it really stays within 500."""

    def built(n: int) -> tuple[App, TrainingClusterStack]:
        app = App(context=CDK_CONTEXT, outdir=str(tmp_path / f"res-{n}"))
        config = ClusterConfig.from_dict(groups_data(n))
        return app, TrainingClusterStack(app, "many-training-cluster", config=config)

    one, two = (count_resources(built(n)[1]) for n in (1, 2))
    beyond = 2 + (CLOUDFORMATION_MAX_RESOURCES - one) // (two - one)  # more than fit, even with no overflow policy
    (finding,) = resource_budget(built(beyond)[1])
    assert finding.path == "instance_groups"
    match = re.search(r"more than the 500 CloudFormation allows in one stack.*so at most (\d+) groups like these fit",
                      finding.message)  # fmt: skip
    assert match, finding.message
    fits = largest = int(match.group(1))
    while not resource_budget(built(largest + 1)[1]):  # the estimate may be cautious; never generous
        largest += 1
    assert largest - fits <= 2
    app, stack = built(largest)
    assert not resource_budget(stack)
    assert len(app.synth().get_stack_by_name(stack.stack_name).template["Resources"]) <= 500


def test_every_example_passes_the_budgets(tmp_path: Path) -> None:
    for example in sorted((ROOT / "examples").glob("*.yaml")):
        built = build_cluster(App(context=CDK_CONTEXT, outdir=str(tmp_path / example.stem)), example)
        assert Path(built.artifact.template_full_path).stat().st_size <= CLOUDFORMATION_MAX_TEMPLATE_BYTES


def test_user_data_budget_is_checked_before_synthesis(tmp_path: Path) -> None:
    """Every cluster user is listed in each node's user data, which EC2 caps at 16 KB: too many
    would make every launch fail at deploy time."""
    users = {f"user{i:04d}": 2001 + i for i in range(1000)}
    path = tmp_path / "users.yaml"
    path.write_text(yaml.safe_dump(minimal_config(orchestrator={"users": users})))
    with pytest.raises(ConfigError) as info:
        build_cluster(App(context=CDK_CONTEXT, outdir=str(tmp_path / "out")), path)
    (finding,) = info.value.findings
    assert finding.path == "orchestrator.users"
    assert "more than the 16,384 EC2 allows" in finding.message and "(got 1000): list fewer" in finding.message
