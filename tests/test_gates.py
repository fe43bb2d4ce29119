"""The gates every synthesized template passes: cfn-lint (CloudFormation's own schemas) and cdk-nag."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aws_cdk import App, Stack, Validations
from aws_cdk import aws_sns as sns
from cdk_nag import AwsSolutionsChecks
from cfnlint.api import ManualArgs, lint

from conftest import CDK_CONTEXT, GATED, ROOT, Synthesized

CFN_LINT_SETTINGS: dict[str, Any] = yaml.safe_load((ROOT / ".cfnlintrc.yaml").read_text())


@pytest.fixture(params=sorted(GATED))
def gated(request: pytest.FixtureRequest, synth: Callable[..., Synthesized]) -> Synthesized:
    return synth(GATED[request.param]())


def test_cfn_lint_finds_nothing(gated: Synthesized) -> None:
    matches = lint(
        gated.template_path.read_text(),
        config=ManualArgs(regions=[gated.config.region], ignore_checks=CFN_LINT_SETTINGS["ignore_checks"]),
    )
    assert [f"{m.rule.id} {m.message} at {'/'.join(map(str, m.path))}" for m in matches] == []


def test_cfn_lint_ignores_only_what_is_explained() -> None:
    text = (ROOT / ".cfnlintrc.yaml").read_text()
    for rule in CFN_LINT_SETTINGS["ignore_checks"]:
        before = text[: text.index(f"- {rule}")].rstrip().splitlines()[-1]
        assert before.strip().startswith("#"), f"{rule} is ignored without a reason above it"


def test_cfn_lint_would_catch_a_broken_template(default_cluster: Synthesized) -> None:
    """The gate is live: a volume type CloudFormation does not know is reported."""
    broken = default_cluster.template_path.read_text().replace('"gp3"', '"gp9"', 1)
    assert any(m.rule.id.startswith("E") for m in lint(broken, config=ManualArgs(regions=["us-east-1"])))


def test_cdk_nag_has_no_unacknowledged_findings(gated: Synthesized) -> None:
    reports = {r["pluginName"]: r for r in gated.nag_report["pluginReports"]}
    assert "AwsSolutions" in reports
    for name, report in reports.items():
        if name == "Construct Annotations":
            continue  # config warnings are reported on purpose (tests/stacks)
        assert [
            (v["ruleName"], [c["constructPath"] for c in v["violatingConstructs"]]) for v in report["violations"]
        ] == [], name
        assert report["conclusion"] == "success"


def test_every_acknowledgment_gives_a_specific_reason(gated: Synthesized) -> None:
    for report in gated.nag_report["pluginReports"]:
        for acknowledged in report.get("suppressedViolations", []):
            reason = acknowledged.get("reason", "")
            assert len(reason.split()) >= 8, (acknowledged["ruleName"], reason)


def test_cdk_nag_would_catch_a_finding(tmp_path: Path) -> None:
    """The gate is live: an unencrypted topic that accepts plain HTTP is reported."""
    app = App(context=CDK_CONTEXT, outdir=str(tmp_path))
    sns.Topic(Stack(app, "Leaky"), "Topic")
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    report = json.loads((tmp_path / "validation-report.json").read_text())
    rules = {v["ruleName"] for r in report["pluginReports"] for v in r["violations"]}
    assert "AwsSolutions-SNS3" in rules
