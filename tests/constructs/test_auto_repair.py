"""AutoRepair: the control plane's resources, its least-privilege permissions and the node agent."""

from __future__ import annotations

import json
import typing
from collections.abc import Callable
from typing import Any

import pytest
from syrupy.assertion import SnapshotAssertion

from auto_repair.policy import CHECKS
from conftest import Synthesized, mask_asset_hashes, minimal_config
from training_cluster import ClusterConfig
from training_cluster.config import HealthCheck

READ_ONLY = ("Describe", "Get", "List", "Query", "Scan", "BatchGet", "ConditionCheck")


@pytest.fixture(scope="module")
def tuned(synth: Callable[..., Synthesized]) -> Synthesized:
    """A cluster with every auto-repair setting away from its default."""
    return synth(
        ClusterConfig.from_dict(
            minimal_config(
                name="tuned",
                auto_repair={
                    "dry_run": True,
                    "max_parallel_replacements": 2,
                    "unhealthy_threshold_percent": 30,
                    "reboot_before_replace": False,
                    "notification_email": "ops@example.com",
                    "policy": {"xid": {"79": "observe"}, "checks": {"lustre": "observe"}},
                    "check_interval_seconds": 60,
                    "deep_checks": True,
                },
            )
        )
    )


def repair_function(sy: Synthesized) -> dict[str, Any]:
    assert sy.stack.auto_repair is not None
    return sy.only(sy.stack.auto_repair, "AWS::Lambda::Function")


def agent_settings(sy: Synthesized, group: str) -> dict[str, Any]:
    text = sy.user_data(group)
    start = text.index("/etc/training-cluster/health-agent.json <<'JSON'\n") + len(
        "/etc/training-cluster/health-agent.json <<'JSON'\n"
    )
    settings: dict[str, Any] = json.loads(text[start : text.index("\nJSON\n", start)])
    assert len(text.encode()) < 16 * 1024
    return settings


def test_snapshot(default_cluster: Synthesized, snapshot_json: SnapshotAssertion) -> None:
    assert default_cluster.stack.auto_repair is not None
    assert mask_asset_hashes(default_cluster.resources_of(default_cluster.stack.auto_repair)) == snapshot_json


def test_function(default_cluster: Synthesized) -> None:
    props = repair_function(default_cluster)["Properties"]
    assert (props["Runtime"], props["Handler"], props["Timeout"], props["ReservedConcurrentExecutions"]) == (
        "python3.14",
        "handler.handler",
        300,
        1,
    )
    assert "TargetArn" in props["DeadLetterConfig"]
    env = props["Environment"]["Variables"]
    assert env["CLUSTER_NAME"] == "demo" and env["DRY_RUN"] == "false" and env["POLICY"] == "{}"
    assert (env["MAX_PARALLEL_REPLACEMENTS"], env["UNHEALTHY_THRESHOLD_PERCENT"], env["REBOOT_BEFORE_REPLACE"]) == (
        "1",
        "20",
        "true",
    )
    asg = default_cluster.stack.resolve(default_cluster.stack.fleets["gpu"].auto_scaling_group.auto_scaling_group_name)
    parts = env["AUTO_SCALING_GROUPS"]["Fn::Join"][1]
    assert parts[parts.index(asg) + 1].startswith('":"gpu"')  # ASG name -> instance group
    for name in ("controller", "login"):  # Slurm's groups are repaired like any other
        other = default_cluster.stack.resolve(
            default_cluster.stack.fleets[name].auto_scaling_group.auto_scaling_group_name
        )
        assert parts[parts.index(other) + 1].startswith(f'":"{name}"')


def test_settings_from_the_config_reach_the_function_and_agent(tuned: Synthesized) -> None:
    env = repair_function(tuned)["Properties"]["Environment"]["Variables"]
    assert (
        env["DRY_RUN"],
        env["MAX_PARALLEL_REPLACEMENTS"],
        env["UNHEALTHY_THRESHOLD_PERCENT"],
        env["REBOOT_BEFORE_REPLACE"],
    ) == ("true", "2", "30", "false")
    assert json.loads(env["POLICY"]) == {"checks": {"lustre": "observe"}, "xid": {"79": "observe"}}
    settings = agent_settings(tuned, "gpu")
    assert settings["interval_seconds"] == 60 and settings["deep_checks"] is True
    assert "79" in settings["transient_xids"]  # observed by policy: not held as a fault
    tuned.template.has_resource_properties(
        "AWS::SNS::Subscription", {"Protocol": "email", "Endpoint": "ops@example.com"}
    )


def test_rules_feed_the_function(default_cluster: Synthesized) -> None:
    rules = {k: r["Properties"] for k, r in default_cluster.resources("AWS::Events::Rule").items()}
    patterns = [r.get("EventPattern", {}) for r in rules.values()]
    sources = sorted(p["source"][0] for p in patterns if "source" in p)
    assert sources == ["aws.autoscaling", "aws.ec2", "aws.health", "training-cluster.health"]
    agent = next(p for p in patterns if p.get("source") == ["training-cluster.health"])
    assert agent["detail"] == {"cluster": ["demo"]}
    assert [r["ScheduleExpression"] for r in rules.values() if "ScheduleExpression" in r] == ["rate(1 minute)"]
    for rule in rules.values():
        (target,) = rule["Targets"]
        assert "DeadLetterConfig" in target and target["RetryPolicy"]["MaximumRetryAttempts"] == 4


def statements_of(sy: Synthesized, role_scope: Any) -> list[dict[str, Any]]:
    policies = [r for r in sy.resources_of(role_scope).values() if r["Type"] == "AWS::IAM::Policy"]
    return [s for p in policies for s in p["Properties"]["PolicyDocument"]["Statement"]]


@pytest.mark.parametrize("scope", ["control plane", "nodes"])
def test_no_mutating_permission_on_an_unconditioned_wildcard(default_cluster: Synthesized, scope: str) -> None:
    assert default_cluster.stack.auto_repair is not None
    owner = (
        default_cluster.stack.auto_repair.function.role
        if scope == "control plane"
        else default_cluster.stack.fleets["gpu"].role
    )
    statements = statements_of(default_cluster, owner)
    assert statements
    for statement in statements:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        mutating = [a for a in actions if not a.split(":")[1].startswith(READ_ONLY)]
        if mutating and "*" in resources:
            assert "Condition" in statement, statement
        for resource in resources:
            if mutating and isinstance(resource, str) and resource.endswith(":instance/*"):
                assert "Condition" in statement, statement


def test_reboot_and_run_command_only_on_this_clusters_instances(default_cluster: Synthesized) -> None:
    assert default_cluster.stack.auto_repair is not None
    statements = statements_of(default_cluster, default_cluster.stack.auto_repair.function.role)
    tagged = {"StringEquals": {"aws:ResourceTag/training-cluster:cluster": "demo"}}

    def having(action: str) -> list[dict[str, Any]]:
        return [s for s in statements if action in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])]

    (reboot,) = having("ec2:RebootInstances")
    assert reboot["Condition"] == tagged
    for send in having("ssm:SendCommand"):  # instances by tag; the one shell-script document by ARN
        assert send.get("Condition") == tagged or "document/AWS-RunShellScript" in json.dumps(send["Resource"])
    (terminate,) = having("autoscaling:TerminateInstanceInAutoScalingGroup")
    asg = default_cluster.stack.resolve(default_cluster.stack.fleets["gpu"].auto_scaling_group.auto_scaling_group_name)
    assert any(asg in resource["Fn::Join"][1] for resource in terminate["Resource"])
    assert len(terminate["Resource"]) == len(default_cluster.stack.fleets)  # each group's own ASG, no wildcard


def test_agent_settings_come_from_the_catalog(default_cluster: Synthesized, synth: Callable[..., Synthesized]) -> None:
    settings = agent_settings(default_cluster, "gpu")
    assert (settings["expected_gpus"], settings["expected_efa_devices"], settings["expected_neuron_devices"]) == (
        8,
        32,
        0,
    )
    assert settings["lustre_mount_path"] == "/fsx" and settings["cluster"] == "demo"
    assert settings["transient_xids"] == ["13", "31", "43", "63", "92", "94"]
    trn = synth(
        ClusterConfig.from_dict(
            minimal_config(
                name="trn",
                region="us-east-2",
                availability_zone="us-east-2a",
                instance_groups=[{"name": "trn", "instance_type": "trn2.48xlarge", "count": 1}],
                storage={},
            )
        )
    )
    settings = agent_settings(trn, "trn")
    assert (settings["expected_gpus"], settings["expected_efa_devices"], settings["expected_neuron_devices"]) == (
        0,
        16,
        16,
    )
    assert settings["lustre_mount_path"] is None


def test_switched_off(synth: Callable[..., Synthesized]) -> None:
    sy = synth(ClusterConfig.from_dict(minimal_config(name="manual", auto_repair={"enabled": False})))
    assert sy.stack.auto_repair is None
    sy.template.resource_count_is("AWS::Events::Rule", 0)
    sy.template.resource_count_is("AWS::DynamoDB::Table", 0)
    (template,) = sy.resources("AWS::EC2::LaunchTemplate").values()
    assert "health-agent" not in json.dumps(template)


def test_ledger_and_evidence_are_kept(default_cluster: Synthesized) -> None:
    (table,) = default_cluster.resources("AWS::DynamoDB::Table").values()
    assert table["DeletionPolicy"] == "Retain"
    assert table["Properties"]["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    keys = {k["AttributeName"]: k["KeyType"] for k in table["Properties"]["KeySchema"]}
    assert keys == {"pk": "HASH", "sk": "RANGE"}
    (bucket,) = default_cluster.resources("AWS::S3::Bucket").values()
    assert bucket["DeletionPolicy"] == "Retain"
    assert bucket["Properties"]["LifecycleConfiguration"]["Rules"][0]["ExpirationInDays"] == 90


def test_config_checks_match_the_policy() -> None:
    """Every health check the config lets users override is one the control plane knows."""
    assert set(typing.get_args(HealthCheck)) == set(CHECKS)


def test_circuit_breaker_alarm_notifies(default_cluster: Synthesized) -> None:
    (alarm,) = default_cluster.resources("AWS::CloudWatch::Alarm").values()
    props = alarm["Properties"]
    assert (props["MetricName"], props["Namespace"], props["Threshold"]) == (
        "CircuitBreakerOpened",
        "TrainingCluster/Repair",
        1,
    )
    assert {d["Name"]: d["Value"] for d in props["Dimensions"]} == {"Cluster": "demo", "InstanceGroup": "gpu"}
    assert props["AlarmActions"] == [{"Ref": next(iter(default_cluster.resources("AWS::SNS::Topic")))}]
