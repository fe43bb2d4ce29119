"""Observability: Managed Prometheus with alert rules that promtool accepts, the alert route to SNS
(checked with amtool), Managed Grafana, and metric names that the nodes really export."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aws_cdk import App, Stack
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk.assertions import Template
from syrupy.assertion import SnapshotAssertion

import health_agent
import slurm_spares
from conftest import CDK_CONTEXT, ROOT, Synthesized, mask_asset_hashes, minimal_config
from training_cluster import ClusterConfig
from training_cluster.constructs.observability import (
    Observability,
    ObservabilityOptions,
    alert_manager_config,
    alert_rules,
    dashboards,
)


def exported_metrics() -> set[str]:
    dcgm = [
        line.split(",")[0] for line in (ROOT / "node" / "observability" / "dcgm-counters.csv").read_text().splitlines()
    ]
    node = (ROOT / "tests" / "data" / "node_exporter_metrics.txt").read_text().splitlines()
    agent = [*health_agent.EFA_COUNTERS.values(), "training_cluster_node_healthy"]
    agent += re.findall(r"# TYPE (\w+) ", (ROOT / "node" / "slurm" / "slurm-prolog.sh").read_text())  # the job label
    agent += re.findall(r"# TYPE (\w+) ", slurm_spares.metrics([slurm_spares.GroupPlan("gpu", 1, ())]))
    return {m.strip() for m in [*dcgm, *node, *agent] if m.strip() and not m.startswith("#")}


def only(sy: Synthesized, type_name: str) -> dict[str, Any]:
    (resource,) = sy.resources(type_name).values()
    return resource


def test_snapshot(default_cluster: Synthesized, snapshot_json: SnapshotAssertion) -> None:
    assert default_cluster.stack.observability is not None
    assert mask_asset_hashes(default_cluster.resources_of(default_cluster.stack.observability)) == snapshot_json


def test_alert_rules_pass_promtool(default_cluster: Synthesized, tmp_path: Path, promtool: str) -> None:
    data = only(default_cluster, "AWS::APS::RuleGroupsNamespace")["Properties"]["Data"]
    assert data == alert_rules()
    rules = tmp_path / "rules.yaml"
    rules.write_text(data)
    result = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 13 rules found" in result.stdout


def test_alert_rules_cover_what_the_issue_asks(tmp_path: Path) -> None:
    names = {r["alert"] for g in yaml.safe_load(alert_rules())["groups"] for r in g["rules"]}
    assert {
        "GpuXidError",
        "GpuTemperatureHigh",
        "GpuThermalThrottling",
        "GpuDoubleBitEccErrors",
        "NodeStoppedReporting",
        "HotSparesEmpty",
        "EfaRetransmits",
        "LustreNearlyFull",
    } <= names


def test_every_metric_in_the_rules_is_exported() -> None:
    exported = exported_metrics()
    for group in yaml.safe_load(alert_rules())["groups"]:
        for rule in group["rules"]:
            used = set(re.findall(r"\b(DCGM_FI_[A-Z_]+|node_[a-zA-Z_]+|training_cluster_[a-z_]+|up)\b", rule["expr"]))
            assert used, rule["alert"]
            assert used <= exported, (rule["alert"], used - exported)


def test_alert_manager_sends_to_sns_and_passes_amtool(
    default_cluster: Synthesized, tmp_path: Path, amtool: str
) -> None:
    definition = only(default_cluster, "AWS::APS::Workspace")["Properties"]["AlertManagerDefinition"]["Fn::Join"][1]
    # The topic by its name, not by a reference (see test_the_topic_key_names_this_workspace_and_topic).
    assert [p for p in definition if not isinstance(p, str)] == [{"Ref": "AWS::AccountId"}]
    text = "".join(p if isinstance(p, str) else "111122223333" for p in definition)
    inner = yaml.safe_load(text)["alertmanager_config"]
    config = tmp_path / "alertmanager.yaml"
    config.write_text(inner)
    result = subprocess.run([amtool, "check-config", str(config)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    parsed = yaml.safe_load(inner)
    (receiver,) = parsed["receivers"]
    assert receiver["sns_configs"][0]["topic_arn"] == "arn:aws:sns:us-east-1:111122223333:demo-events"
    assert alert_manager_config("T", "R", "C").startswith("route:")


def test_workspace_is_encrypted_and_logs(default_cluster: Synthesized) -> None:
    props = only(default_cluster, "AWS::APS::Workspace")["Properties"]
    assert props["Alias"] == "demo-metrics"
    assert "Fn::GetAtt" in props["KmsKeyArn"] and "Fn::GetAtt" in props["LoggingConfiguration"]["LogGroupArn"]


def test_prometheus_may_publish_alerts_to_the_topic(default_cluster: Synthesized) -> None:
    (policy,) = default_cluster.resources("AWS::SNS::TopicPolicy").values()
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    (aps,) = [s for s in statements if s.get("Principal") == {"Service": "aps.amazonaws.com"}]
    assert set(aps["Action"]) == {"sns:Publish", "sns:GetTopicAttributes"}
    workspace = {"Fn::GetAtt": [next(iter(default_cluster.resources("AWS::APS::Workspace"))), "Arn"]}
    assert aps["Condition"] == {
        "ArnEquals": {"aws:SourceArn": workspace},
        "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
    }


def test_the_topic_key_names_this_workspace_and_topic(default_cluster: Synthesized) -> None:
    """Issue 9 (confused deputy): the service may use the topic's key for this workspace, this
    account and this topic only. The workspace's ARN in the key policy is safe from a cycle because
    the alert route names the topic by its name (the topic refers to the key)."""
    keys = [k for k in default_cluster.resources("AWS::KMS::Key").values() if "aps.amazonaws.com" in json.dumps(k)]
    (key,) = keys  # the events topic's key; the workspace's own key needs no service principal
    (aps,) = [
        s for s in key["Properties"]["KeyPolicy"]["Statement"] if s.get("Principal") == {"Service": "aps.amazonaws.com"}
    ]
    assert set(aps["Action"]) == {"kms:GenerateDataKey*", "kms:Decrypt"}
    workspace = {"Fn::GetAtt": [next(iter(default_cluster.resources("AWS::APS::Workspace"))), "Arn"]}
    topic_arn = {"Fn::Join": ["", ["arn:aws:sns:us-east-1:", {"Ref": "AWS::AccountId"}, ":demo-events"]]}
    assert aps["Condition"] == {
        "ArnEquals": {"aws:SourceArn": workspace},
        "StringEquals": {
            "aws:SourceAccount": {"Ref": "AWS::AccountId"},
            "kms:EncryptionContext:aws:sns:topicArn": topic_arn,
        },
    }


def test_a_topic_without_a_name_gets_no_cycle() -> None:
    """Observability on its own, with a topic CloudFormation names: the alert route refers to the
    topic, so the key allows the service for this account's workspaces instead of naming this one."""
    stack = Stack(App(context=CDK_CONTEXT), "Alone", env={"region": "eu-west-1"})
    key = kms.Key(stack, "TopicKey")
    topic = sns.Topic(stack, "Topic", master_key=key)
    Observability(stack, "Observability", cluster_name="alone", topic=topic, topic_key=key,
                  options=ObservabilityOptions(grafana=False))  # fmt: skip
    template = Template.from_stack(stack).to_json()
    (key_id,) = [k for k, v in template["Resources"].items() if v["Type"] == "AWS::KMS::Key" and "Topic" in k]
    (aps,) = [
        s
        for s in template["Resources"][key_id]["Properties"]["KeyPolicy"]["Statement"]
        if s.get("Principal") == {"Service": "aps.amazonaws.com"}
    ]
    assert aps["Condition"] == {
        "ArnLike": {
            "aws:SourceArn": {"Fn::Join": ["", ["arn:aws:aps:eu-west-1:", {"Ref": "AWS::AccountId"}, ":workspace/*"]]}
        },
        "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
    }


def test_grafana_reads_prometheus_and_cloudwatch(default_cluster: Synthesized) -> None:
    props = only(default_cluster, "AWS::Grafana::Workspace")["Properties"]
    assert (props["AccountAccessType"], props["AuthenticationProviders"], props["PermissionType"]) == (
        "CURRENT_ACCOUNT",
        ["AWS_SSO"],
        "CUSTOMER_MANAGED",
    )
    assert props["DataSources"] == ["PROMETHEUS", "CLOUDWATCH"]
    outputs = default_cluster.template_json["Outputs"]
    assert {"PrometheusRemoteWriteUrl", "GrafanaUrl"} <= set(outputs)


@pytest.fixture(scope="module")
def variants(synth: Callable[..., Synthesized]) -> dict[str, Synthesized]:
    def make(name: str, **observability: Any) -> Synthesized:
        return synth(
            ClusterConfig.from_dict(
                minimal_config(name=name, storage={}, auto_repair={"enabled": False}, observability=observability)
            )
        )

    return {
        "saml": make("saml", grafana_auth="SAML", alert_email="alerts@example.com"),
        "no-grafana": make("nografana", grafana=False),
        "none": make("nometrics", prometheus=False, grafana=False),
    }


def test_switches(variants: dict[str, Synthesized]) -> None:
    saml = only(variants["saml"], "AWS::Grafana::Workspace")["Properties"]
    assert saml["AuthenticationProviders"] == ["SAML"]
    variants["saml"].template.has_resource_properties("AWS::SNS::Subscription", {"Endpoint": "alerts@example.com"})
    variants["no-grafana"].template.resource_count_is("AWS::Grafana::Workspace", 0)
    variants["no-grafana"].template.resource_count_is("AWS::APS::Workspace", 1)
    variants["none"].template.resource_count_is("AWS::APS::Workspace", 0)


def prometheus_exprs(board: dict[str, Any]) -> list[str]:
    return [
        t["expr"] for panel in board["panels"] if panel["datasource"]["type"] == "prometheus" for t in panel["targets"]
    ]


def test_dashboards_are_json_with_queries_promtool_accepts(tmp_path: Path, promtool: str) -> None:
    boards = dashboards("demo", "fs-0123456789abcdef0")
    assert [b["uid"] for b in boards] == [
        "tc-demo-overview",
        "tc-demo-gpu",
        "tc-demo-efa",
        "tc-demo-fsx",
        "tc-demo-repair",
    ]
    rules = []
    for board in boards:
        json.loads(json.dumps(board))
        for i, expr in enumerate(prometheus_exprs(board)):
            # Grafana's variables become what they stand for, so that promtool can parse the query.
            concrete = expr.replace("$__rate_interval", "5m").replace("$instance_group", ".+")
            rules.append({"record": f"check:{board['uid'].replace('-', '_')}:{i}", "expr": concrete})
    path = tmp_path / "dashboards.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(rules) > 20


def test_every_metric_in_the_dashboards_is_exported() -> None:
    exported = exported_metrics()
    for board in dashboards("demo", "fs-1"):
        for expr in prometheus_exprs(board):
            used = set(re.findall(r"\b(DCGM_FI_[A-Z_]+|node_[a-zA-Z_]+|training_cluster_[a-z_]+|up)\b", expr))
            assert used and used <= exported, (board["uid"], expr)
        for panel in board["panels"]:
            for target in panel["targets"]:
                assert target.get("namespace") in (None, "AWS/FSx", "TrainingCluster/Repair")


def test_no_file_system_no_fsx_dashboard() -> None:
    assert "tc-demo-fsx" not in [b["uid"] for b in dashboards("demo", None)]


def test_dashboards_are_provisioned_by_a_custom_resource(default_cluster: Synthesized) -> None:
    (resource,) = default_cluster.resources("Custom::GrafanaProvisioning").values()
    props = resource["Properties"]
    assert props["PrometheusDataSourceUid"] == "training-cluster-prometheus"
    boards = props["Dashboards"]
    text = boards if isinstance(boards, str) else json.dumps(boards)
    assert "tc-demo-gpu" in text and "FileSystemId" in text
    assert default_cluster.stack.observability is not None
    role = default_cluster.stack.observability.node.find_child("ProvisionerRole")
    statements = [
        s
        for p in default_cluster.resources_of(role).values()
        if p["Type"] == "AWS::IAM::Policy"
        for s in p["Properties"]["PolicyDocument"]["Statement"]
    ]
    grafana = next(s for s in statements if "grafana:CreateWorkspaceServiceAccount" in s["Action"])
    assert "/workspaces/" in json.dumps(grafana["Resource"]) and "*" not in json.dumps(grafana["Resource"])
    # Issue 9: the provisioner asks Managed Grafana where the workspace is; the event names no host.
    assert "grafana:DescribeWorkspace" in grafana["Action"]
    assert set(props) == {
        "ServiceToken",
        "WorkspaceId",
        "PrometheusUrl",
        "Region",
        "PrometheusDataSourceUid",
        "CloudWatchDataSourceUid",
        "Dashboards",
    }


def test_no_grafana_no_provisioning(variants: dict[str, Synthesized]) -> None:
    variants["no-grafana"].template.resource_count_is("Custom::GrafanaProvisioning", 0)


def test_nodes_run_the_collectors_and_may_write_metrics(default_cluster: Synthesized) -> None:
    fleet = default_cluster.stack.fleets["gpu"]
    assert "metrics" in fleet.bootstrap.stage_names
    settings = fleet.bootstrap.environment
    assert settings["EXPECTED_GPUS"] == "8" and settings["SCRAPE_INTERVAL_SECONDS"] == "15"
    statements = [
        s
        for p in default_cluster.resources_of(fleet.role).values()
        if p["Type"] == "AWS::IAM::Policy"
        for s in p["Properties"]["PolicyDocument"]["Statement"]
    ]
    (write,) = [s for s in statements if s["Action"] == "aps:RemoteWrite"]
    assert write["Resource"] == {"Fn::GetAtt": [next(iter(default_cluster.resources("AWS::APS::Workspace"))), "Arn"]}
