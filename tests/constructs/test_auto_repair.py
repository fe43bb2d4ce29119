"""AutoRepair: the control plane's resources, its least-privilege permissions and the node agent."""

from __future__ import annotations

import fnmatch
import json
import re
import typing
from collections.abc import Callable
from typing import Any

import pytest
from syrupy.assertion import SnapshotAssertion

from conftest import Synthesized, mask_asset_hashes, minimal_config
from training_cluster import ClusterConfig
from training_cluster.config import HealthCheck
from training_cluster.repair_policy import CHECKS

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
                    "max_unhealthy_per_group": 8,
                    "max_unhealthy_in_cluster": 24,
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
    return sy.only(sy.stack.auto_repair.function, "AWS::Lambda::Function")


def agent_settings(sy: Synthesized, group: str) -> dict[str, Any]:
    text = sy.user_data(group)
    (line,) = [line for line in text.splitlines() if line.startswith("HEALTH_AGENT_SETTINGS='")]
    settings: dict[str, Any] = json.loads(line.removeprefix("HEALTH_AGENT_SETTINGS='").removesuffix("'"))
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
    assert (env["MAX_UNHEALTHY_PER_GROUP"], env["MAX_UNHEALTHY_IN_CLUSTER"]) == ("16", "32")
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
    assert (env["MAX_UNHEALTHY_PER_GROUP"], env["MAX_UNHEALTHY_IN_CLUSTER"]) == ("8", "24")
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
    assert sources == ["aws.autoscaling", "aws.ec2", "aws.health", "aws.tag", "training-cluster.health"]
    agent = next(p for p in patterns if p.get("source") == ["training-cluster.health"])
    # An agent event of another detail-type never reaches the function.
    assert agent == {
        "source": ["training-cluster.health"],
        "detail-type": ["Node Health Changed"],
        "detail": {"cluster": ["demo"]},
    }
    assert [r["ScheduleExpression"] for r in rules.values() if "ScheduleExpression" in r] == ["rate(1 minute)"]
    function = default_cluster.stack.resolve(default_cluster.stack.auto_repair.function.node.default_child.logical_id)  # type: ignore[union-attr]
    for rule in rules.values():
        (target,) = rule["Targets"]
        if rule.get("EventPattern") == agent:
            continue  # the intake's: see below
        assert target["Arn"] == {"Fn::GetAtt": [function, "Arn"]}
        assert "DeadLetterConfig" in target and target["RetryPolicy"]["MaximumRetryAttempts"] == 4


def intake_function(sy: Synthesized) -> tuple[str, dict[str, Any]]:
    assert sy.stack.auto_repair is not None
    logical_id = sy.stack.resolve(sy.stack.auto_repair.intake.node.default_child.logical_id)  # type: ignore[union-attr]
    return logical_id, sy.template_json["Resources"][logical_id]


def test_the_agents_events_go_to_the_intake_never_to_the_repair_function(default_cluster: Synthesized) -> None:
    """Issue 9: waiting on forged reports must never delay real repairs. Whoever may put events on
    the bus reaches the intake (its own function, concurrency and queue), not the repair function."""
    intake, function = intake_function(default_cluster)
    rules = [r["Properties"] for r in default_cluster.resources("AWS::Events::Rule").values()]
    to_intake = [r for r in rules if r["Targets"][0]["Arn"] == {"Fn::GetAtt": [intake, "Arn"]}]
    assert [r["EventPattern"]["source"] for r in to_intake] == [["training-cluster.health"]]
    (target,) = to_intake[0]["Targets"]
    # No dead-letter queue: forged reports must not fill the repair function's, which holds real failures.
    assert "DeadLetterConfig" not in target
    assert target["RetryPolicy"] == {"MaximumEventAgeInSeconds": 600, "MaximumRetryAttempts": 2}
    props = function["Properties"]
    assert (props["Handler"], props["ReservedConcurrentExecutions"], props["Timeout"]) == ("handler.intake", 2, 30)
    assert props["Code"] == repair_function(default_cluster)["Properties"]["Code"]  # the same asset
    assert "DeadLetterConfig" not in props
    env = props["Environment"]["Variables"]
    repair = default_cluster.stack.resolve(default_cluster.stack.auto_repair.function.node.default_child.logical_id)  # type: ignore[union-attr]
    assert env["REPAIR_FUNCTION"] == {"Fn::GetAtt": [repair, "Arn"]} and env["CLUSTER_NAME"] == "demo"
    assert (
        env["AUTO_SCALING_GROUPS"]
        == repair_function(default_cluster)["Properties"]["Environment"]["Variables"]["AUTO_SCALING_GROUPS"]
    )
    (config,) = [
        r["Properties"]
        for r in default_cluster.resources("AWS::Lambda::EventInvokeConfig").values()
        if r["Properties"]["FunctionName"] == {"Ref": intake}
    ]
    assert config["MaximumEventAgeInSeconds"] == 600  # a flood's backlog is dropped, not kept for 6 hours
    logs = default_cluster.resources("AWS::Logs::LogGroup")
    assert props["LoggingConfig"]["LogGroup"] == {
        "Ref": next(k for k in logs if k.startswith("AutoRepairReportIntakeLogs"))
    }


def test_old_events_are_not_kept_for_the_repair_function(default_cluster: Synthesized) -> None:
    """Lambda keeps an asynchronous event, retrying, for six hours by default: a tag-change event
    hours late could act on a tag that has moved on. Older than 10 minutes it is dropped (to the
    dead-letter queue); the one-minute sweep reads the tags as they are."""
    assert default_cluster.stack.auto_repair is not None
    repair = default_cluster.stack.resolve(default_cluster.stack.auto_repair.function.node.default_child.logical_id)  # type: ignore[union-attr]
    (config,) = [
        r["Properties"]
        for r in default_cluster.resources("AWS::Lambda::EventInvokeConfig").values()
        if r["Properties"]["FunctionName"] == {"Ref": repair}
    ]
    assert config["MaximumEventAgeInSeconds"] == 600


def test_health_tag_changes_reach_the_function(default_cluster: Synthesized) -> None:
    """AWS's own event for a node's health tag (the proof of which node spoke), for this cluster's
    instances only, in the shape the Tagging user guide gives."""
    rules = [r["Properties"] for r in default_cluster.resources("AWS::Events::Rule").values()]
    (pattern,) = [r["EventPattern"] for r in rules if r.get("EventPattern", {}).get("source") == ["aws.tag"]]
    assert pattern == {
        "source": ["aws.tag"],
        "detail-type": ["Tag Change on Resource"],
        "detail": {
            "service": ["ec2"],
            "resource-type": ["instance"],
            "changed-tag-keys": ["training-cluster:health"],
            "tags": {"training-cluster:cluster": ["demo"]},
        },
    }


def test_the_function_knows_the_instance_arns(default_cluster: Synthesized) -> None:
    """Evidence of a node goes under its instance ARN, the one prefix that node may write."""
    env = repair_function(default_cluster)["Properties"]["Environment"]["Variables"]
    assert rendered(env["INSTANCE_ARN_PREFIX"]) == "arn:aws:ec2:us-east-1:123456789012:instance/"


def statements_of(sy: Synthesized, role_scope: Any) -> list[dict[str, Any]]:
    policies = [r for r in sy.resources_of(role_scope).values() if r["Type"] == "AWS::IAM::Policy"]
    return [s for p in policies for s in p["Properties"]["PolicyDocument"]["Statement"]]


@pytest.mark.parametrize("scope", ["control plane", "intake", "nodes"])
def test_no_mutating_permission_on_an_unconditioned_wildcard(default_cluster: Synthesized, scope: str) -> None:
    assert default_cluster.stack.auto_repair is not None
    owner = {
        "control plane": default_cluster.stack.auto_repair.function.role,
        "intake": default_cluster.stack.auto_repair.intake.role,
        "nodes": default_cluster.stack.fleets["gpu"].role,
    }[scope]
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

    (reads,) = having("ec2:DescribeTags")  # read-only, with the other Describe calls
    assert all(a.split(":")[1].startswith(READ_ONLY) for a in reads["Action"])
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
    text = sy.user_data("gpu")
    assert "HEALTH_AGENT_S3_URI" not in text
    assert "-health-agent.sh" not in text


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
    (query,) = props["Metrics"]
    stat = query["MetricStat"]
    assert (stat["Metric"]["MetricName"], stat["Metric"]["Namespace"], stat["Stat"], props["Threshold"]) == (
        "CircuitBreakerOpened",
        "TrainingCluster/Repair",
        "Sum",
        1,
    )
    dimensions = {d["Name"]: d["Value"] for d in stat["Metric"]["Dimensions"]}
    assert dimensions == {"Cluster": "demo", "InstanceGroup": "gpu"}
    assert props["AlarmActions"] == [{"Ref": next(iter(default_cluster.resources("AWS::SNS::Topic")))}]


# What a node may do, read from the synthesized template: every statement of every policy on a
# node's role, plus AmazonSSMManagedInstanceCore as AWS documents it (version v2), evaluated for
# requests made with the node's instance credentials. Node roles hold Allow statements only; an
# unknown condition operator fails the test rather than being guessed at.
SSM_MANAGED_INSTANCE_CORE = [
    "ssm:DescribeAssociation",
    "ssm:GetDeployablePatchSnapshotForInstance",
    "ssm:GetDocument",
    "ssm:DescribeDocument",
    "ssm:GetManifest",
    "ssm:GetParameter",
    "ssm:GetParameters",
    "ssm:ListAssociations",
    "ssm:ListInstanceAssociations",
    "ssm:PutInventory",
    "ssm:PutComplianceItems",
    "ssm:PutConfigurePackageResult",
    "ssm:UpdateAssociationStatus",
    "ssm:UpdateInstanceAssociationStatus",
    "ssm:UpdateInstanceInformation",
    "ssmmessages:CreateControlChannel",
    "ssmmessages:CreateDataChannel",
    "ssmmessages:OpenControlChannel",
    "ssmmessages:OpenDataChannel",
    "ec2messages:AcknowledgeMessage",
    "ec2messages:DeleteMessage",
    "ec2messages:FailMessage",
    "ec2messages:GetEndpoint",
    "ec2messages:GetMessages",
    "ec2messages:SendReply",
]
PSEUDO = {"AWS::Partition": "aws", "AWS::Region": "us-east-1", "AWS::AccountId": "123456789012"}
OWN = "arn:aws:ec2:us-east-1:123456789012:instance/i-0aaaaaaaaaaaaaaa1"  # the node making the requests
OTHER = "arn:aws:ec2:us-east-1:123456789012:instance/i-0bbbbbbbbbbbbbbb2"  # another node of the cluster
BUS = "arn:aws:events:us-east-1:123456789012:event-bus/default"


def rendered(value: Any) -> str:
    """A template value as text: pseudo parameters as the test account's, other references as
    ``<LogicalId>`` or ``<LogicalId.Attribute>``."""
    if isinstance(value, str):
        return value
    if "Ref" in value:
        return PSEUDO.get(value["Ref"], f"<{value['Ref']}>")
    if "Fn::GetAtt" in value:
        return "<{}.{}>".format(*value["Fn::GetAtt"])
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return str(separator).join(rendered(part) for part in parts)
    if "Fn::Sub" in value:
        return re.sub(r"\$\{(AWS::\w+)\}", lambda m: PSEUDO[m.group(1)], value["Fn::Sub"])
    raise AssertionError(f"cannot render {value}")


def listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


EKS_NODE_POLICIES = {
    # AWS managed policies an EKS node holds (their documents, as the IAM reference gives them):
    # reads of its network and cluster, Pod Identity's credential exchange, and image pulls.
    "arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy": [
        "ec2:DescribeInstances",
        "ec2:DescribeRouteTables",
        "ec2:DescribeSecurityGroups",
        "ec2:DescribeSubnets",
        "ec2:DescribeVolumes",
        "ec2:DescribeVolumesModifications",
        "ec2:DescribeVpcs",
        "eks:DescribeCluster",
        "eks-auth:AssumeRoleForPodIdentity",
    ],
    "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryPullOnly": [
        "ecr:GetAuthorizationToken",
        "ecr:BatchGetImage",
        "ecr:GetDownloadUrlForLayer",
    ],
}


def node_statements(sy: Synthesized, group: str) -> list[dict[str, Any]]:
    role = sy.stack.resolve(sy.stack.fleets[group].role.node.default_child.logical_id)  # type: ignore[union-attr]
    props = sy.template_json["Resources"][role]["Properties"]
    managed = [rendered(arn) for arn in props["ManagedPolicyArns"]]
    eks = list(EKS_NODE_POLICIES) if sy.config.orchestrator.eks else []
    assert managed == ["arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore", *eks]
    assert "Policies" not in props
    statements = [{"Effect": "Allow", "Action": SSM_MANAGED_INSTANCE_CORE, "Resource": "*"}]
    statements += [{"Effect": "Allow", "Action": EKS_NODE_POLICIES[arn], "Resource": "*"} for arn in eks]
    for resource in sy.template_json["Resources"].values():
        attached = resource["Properties"].get("Roles", []) if resource["Type"].startswith("AWS::IAM::") else []
        if resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy") and {"Ref": role} in attached:
            statements += resource["Properties"]["PolicyDocument"]["Statement"]
    return statements


def allows(statements: list[dict[str, Any]], action: str, resource: str, **context: Any) -> bool:
    """Whether a statement allows the request, made with ``OWN``'s instance credentials."""
    variables = {"ec2:SourceInstanceARN": OWN}

    def substituted(text: str) -> str:
        return re.sub(r"\$\{([\w:]+)\}", lambda m: variables[m.group(1)], text)

    def holds(operator: str, key: str, expected: Any) -> bool:
        wanted = [substituted(e) for e in listed(expected)]
        actual = context.get(key) or None  # an empty key list is an absent key
        if operator == "StringEquals":
            return isinstance(actual, str) and actual in wanted
        if operator == "ForAllValues:StringEquals":
            return all(v in wanted for v in actual or [])
        if operator == "ForAllValues:StringLike":
            return all(any(fnmatch.fnmatchcase(v, w) for w in wanted) for v in actual or [])
        if operator == "Null":
            return (actual is None) == (wanted == ["true"])
        raise AssertionError(f"the test does not know the condition operator {operator}")

    for statement in statements:
        assert statement["Effect"] == "Allow", statement
        if not any(fnmatch.fnmatchcase(action.lower(), a.lower()) for a in listed(statement["Action"])):
            continue
        if not any(fnmatch.fnmatchcase(resource, substituted(rendered(r))) for r in listed(statement["Resource"])):
            continue
        conditions = statement.get("Condition", {})
        if all(holds(op, key, expected) for op, block in conditions.items() for key, expected in block.items()):
            return True
    return False


def test_a_node_can_speak_only_for_itself(example: Synthesized) -> None:
    """Issue 9: a report naming node X is believed only when it provably comes from X. Every
    group of every example: Slurm's controller and login nodes as well as the compute groups."""
    for group in example.stack.fleets:
        can_only_speak_for_itself(example, group)


def can_only_speak_for_itself(sy: Synthesized, group: str) -> None:
    statements = node_statements(sy, group)

    def may(action: str, resource: str, **context: Any) -> bool:
        return allows(statements, action, resource, **context)

    health, cluster = "training-cluster:health", "training-cluster:cluster"
    # Its health tag, on itself: yes. Another node, another key, or no key at all: no.
    assert may("ec2:CreateTags", OWN, **{"aws:ARN": OWN, "aws:TagKeys": [health]})
    assert not may("ec2:CreateTags", OTHER, **{"aws:ARN": OTHER, "aws:TagKeys": [health]})
    assert not may("ec2:CreateTags", OWN, **{"aws:ARN": OWN, "aws:TagKeys": [cluster]})
    assert not may("ec2:CreateTags", OWN, **{"aws:ARN": OWN, "aws:TagKeys": [health, "training-cluster:group"]})
    assert not may("ec2:CreateTags", OWN, **{"aws:ARN": OWN, "aws:TagKeys": []})  # ForAllValues alone: vacuous
    # The agent's events only: no other source or detail-type.
    agent = {"events:source": "training-cluster.health", "events:detail-type": "Node Health Changed"}
    assert may("events:PutEvents", BUS, **agent)
    for source, detail_type in [
        ("training-cluster.health", "Repair Action"),
        ("training-cluster.repair", "Node Health Changed"),
        ("aws.tag", "Tag Change on Resource"),
    ]:
        assert not may("events:PutEvents", BUS, **{"events:source": source, "events:detail-type": detail_type})
    # Evidence under its own instance's ARN only.
    assert sy.stack.auto_repair is not None
    bucket = sy.stack.resolve(sy.stack.auto_repair.evidence_bucket.node.default_child.logical_id)  # type: ignore[union-attr]
    evidence = f"<{bucket}.Arn>/evidence/{sy.config.name}/"
    assert may("s3:PutObject", f"{evidence}{OWN}/incident-1/command/i-0aaaaaaaaaaaaaaa1/awsrunShellScript/stdout")
    assert not may("s3:PutObject", f"{evidence}{OTHER}/incident-1/command/i-0bbbbbbbbbbbbbbb2/stdout")
    assert not may("s3:PutObject", f"{evidence}incident-1/stdout")
    assert not may("s3:PutObject", f"<{bucket}.Arn>/evidence/other-cluster/{OWN}/incident-1/stdout")
    # Nothing that changes another node, or the control plane, is granted at all, on any resource.
    for action in (
        "ec2:DeleteTags",
        "ec2:RebootInstances",
        "ec2:StopInstances",
        "ec2:TerminateInstances",
        "autoscaling:TerminateInstanceInAutoScalingGroup",
        "autoscaling:SetInstanceHealth",
        "ssm:SendCommand",
        "ssm:StartSession",
        "lambda:InvokeFunction",
        "dynamodb:PutItem",
        "sns:Publish",
        "iam:PassRole",
    ):
        granted = [s for s in statements if any(fnmatch.fnmatchcase(action, a) for a in listed(s["Action"]))]
        assert granted == [], action


def test_policy_variables_survive_synthesis(default_cluster: Synthesized) -> None:
    """``${ec2:SourceInstanceARN}`` reaches IAM as written: CloudFormation would read it as a
    reference of its own only inside Fn::Sub."""
    text = default_cluster.template_path.read_text()
    assert '"aws:ARN": "${ec2:SourceInstanceARN}"' in text
    assert '"/evidence/demo/${ec2:SourceInstanceARN}/*"' in text

    def subs(value: Any) -> list[Any]:
        if isinstance(value, dict):
            return ([value["Fn::Sub"]] if "Fn::Sub" in value else []) + [s for v in value.values() for s in subs(v)]
        return [s for v in value for s in subs(v)] if isinstance(value, list) else []

    assert not [s for s in subs(default_cluster.template_json) if "SourceInstanceARN" in json.dumps(s)]


def test_the_intake_reads_tags_writes_report_items_and_invokes_the_repair_function_only(
    default_cluster: Synthesized,
) -> None:
    """What the report intake's role may do: it faces whatever anyone puts on the bus."""
    assert default_cluster.stack.auto_repair is not None
    repair = default_cluster.stack.auto_repair
    statements = statements_of(default_cluster, repair.intake.role)

    def logical(scope: Any) -> str:
        return str(default_cluster.stack.resolve(scope.node.default_child.logical_id))

    def may(action: str, resource: str, **context: Any) -> bool:
        return allows(statements, action, resource, **context)

    table, function = f"<{logical(repair.table)}.Arn>", f"<{logical(repair.function)}.Arn>"
    assert may("ec2:DescribeTags", "*")
    # The ledger's report# items, and no others: not an incident, an instance's or a group's state.
    assert may("dynamodb:UpdateItem", table, **{"dynamodb:LeadingKeys": ["report#i-0aaaaaaaaaaaaaaa1"]})
    for keys in (["instance#i-0aaaaaaaaaaaaaaa1"], ["group#gpu"], ["incident#1"], ["report#i-1", "group#gpu"], []):
        assert not may("dynamodb:UpdateItem", table, **{"dynamodb:LeadingKeys": keys}), keys
    for action in ("PutItem", "DeleteItem", "GetItem", "Query", "Scan", "BatchWriteItem", "TransactWriteItems"):
        assert not may(f"dynamodb:{action}", table, **{"dynamodb:LeadingKeys": ["report#i-1"]}), action
    # The repair function, and nothing else.
    assert may("lambda:InvokeFunction", function)
    assert not may("lambda:InvokeFunction", f"{function}:$LATEST")
    assert not may("lambda:InvokeFunction", f"<{logical(repair.intake)}.Arn>")
    # Its own log group (the helper's grant); nothing that changes an instance or tells anyone.
    assert {a for s in statements for a in listed(s["Action"]) if a.startswith("logs:")} <= {
        "logs:CreateLogStream",
        "logs:PutLogEvents",
    }
    granted = {a for s in statements for a in listed(s["Action"])}
    assert granted - {"logs:CreateLogStream", "logs:PutLogEvents"} == {
        "ec2:DescribeTags",
        "dynamodb:UpdateItem",
        "lambda:InvokeFunction",
    }
    for action in (
        "ec2:CreateTags",
        "ec2:RebootInstances",
        "autoscaling:TerminateInstanceInAutoScalingGroup",
        "ssm:SendCommand",
        "sns:Publish",
        "events:PutEvents",
        "cloudwatch:PutMetricData",
        "s3:PutObject",
        "kms:Decrypt",
    ):
        assert not any(fnmatch.fnmatchcase(action, a) for s in statements for a in listed(s["Action"])), action
