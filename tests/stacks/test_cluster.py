"""TrainingClusterStack: composition, outputs, safe updates, limits and purity."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from conftest import ROOT, Synthesized, synthesize, twenty_groups
from training_cluster import ClusterConfig


@pytest.fixture(scope="module")
def twenty(synth: Callable[..., Synthesized]) -> Synthesized:
    return synth(twenty_groups())


def test_public_api() -> None:
    import training_cluster

    assert {"ClusterConfig", "TrainingClusterStack"} <= set(training_cluster.__all__)


def test_outputs(default_cluster: Synthesized) -> None:
    outputs = default_cluster.template_json["Outputs"]
    assert {
        "VpcId",
        "ComputeSubnetId",
        "NodeSecurityGroupId",
        "EventsTopicArn",
        "FileSystemId",
        "FileSystemDnsName",
        "FileSystemMountName",
        "GpuAutoScalingGroupName",
    } <= set(outputs)
    fs = next(iter(default_cluster.resources("AWS::FSx::FileSystem")))
    assert outputs["FileSystemMountName"]["Value"] == {"Fn::GetAtt": [fs, "LustreMountName"]}


def test_stack_is_placed_in_the_config_region(example: Synthesized) -> None:
    assert example.stack.region == example.config.region


ACCOUNT = "111122223333"
PSEUDO = {"AWS::AccountId": ACCOUNT, "AWS::Partition": "aws", "AWS::URLSuffix": "amazonaws.com"}


def render(value: Any) -> Any:
    """A value with its pseudo parameters filled in and its joins joined: what the policy reads."""
    if isinstance(value, dict) and set(value) == {"Ref"} and value["Ref"] in PSEUDO:
        return PSEUDO[value["Ref"]]
    if isinstance(value, dict) and set(value) == {"Fn::Join"}:
        separator, parts = value["Fn::Join"]
        rendered = [render(p) for p in parts]
        return separator.join(rendered) if all(isinstance(p, str) for p in rendered) else value
    if isinstance(value, dict):
        return {k: render(v) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v) for v in value]
    return value


def events_key(sy: Synthesized) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The events topic and its key's policy statements."""
    (topic,) = sy.resources("AWS::SNS::Topic").values()
    key = sy.resources("AWS::KMS::Key")[topic["Properties"]["KmsMasterKeyId"]["Fn::GetAtt"][0]]
    assert key["Properties"]["EnableKeyRotation"] is True
    return topic, render(key["Properties"]["KeyPolicy"]["Statement"])


def test_events_topic_is_encrypted_and_usable_by_auto_scaling(default_cluster: Synthesized) -> None:
    """Issue 9: the Auto Scaling service-linked role is a role, not a service principal: its requests
    carry no aws:SourceAccount/aws:SourceArn. It may use the key through SNS, for this topic only."""
    topic, statements = events_key(default_cluster)
    assert topic["Properties"]["TopicName"] == "demo-events"
    (auto_scaling,) = [s for s in statements if "AWSServiceRoleForAutoScaling" in json.dumps(s["Principal"])]
    role = "role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling"
    assert auto_scaling["Principal"] == {"AWS": f"arn:aws:iam::{ACCOUNT}:{role}"}
    assert set(auto_scaling["Action"]) == {"kms:GenerateDataKey*", "kms:Decrypt"}
    assert auto_scaling["Condition"] == {
        "StringEquals": {
            "kms:ViaService": "sns.us-east-1.amazonaws.com",
            "kms:EncryptionContext:aws:sns:topicArn": f"arn:aws:sns:us-east-1:{ACCOUNT}:demo-events",
        }
    }


def test_service_principals_on_the_events_key_and_topic_act_for_this_account_only(example: Synthesized) -> None:
    """Issue 9 (confused deputy): every service principal in the key and topic policies is held to
    aws:SourceAccount and aws:SourceArn; on the key, to this topic's encryption context too."""
    _, key_statements = events_key(example)
    (policy,) = example.resources("AWS::SNS::TopicPolicy").values()
    topic_statements = render(policy["Properties"]["PolicyDocument"]["Statement"])
    topic_arn = f"arn:aws:sns:{example.config.region}:{ACCOUNT}:{example.config.name}-events"
    services = set()
    for statement in key_statements + topic_statements:
        if statement["Effect"] != "Allow" or "Service" not in statement["Principal"]:
            continue
        services.add(statement["Principal"]["Service"])
        condition = statement["Condition"]
        assert condition["StringEquals"]["aws:SourceAccount"] == ACCOUNT, statement
        assert any("aws:SourceArn" in condition.get(op, {}) for op in ("ArnEquals", "ArnLike")), statement
        if statement in key_statements:
            assert condition["StringEquals"]["kms:EncryptionContext:aws:sns:topicArn"] == topic_arn, statement
    expected = {"cloudwatch.amazonaws.com"} | (
        {"aps.amazonaws.com"} if example.config.observability.prometheus else set()
    )
    assert services == expected


def test_alarms_may_publish_to_the_encrypted_topic(default_cluster: Synthesized) -> None:
    """The repair circuit breaker's alarm notifies through the topic: CloudWatch may publish to it and
    use its key, for this account's alarms in this region."""
    assert default_cluster.resources("AWS::CloudWatch::Alarm")
    _, key_statements = events_key(default_cluster)
    (policy,) = default_cluster.resources("AWS::SNS::TopicPolicy").values()
    alarms = f"arn:aws:cloudwatch:us-east-1:{ACCOUNT}:alarm:*"
    for statements in (key_statements, render(policy["Properties"]["PolicyDocument"]["Statement"])):
        (cloudwatch,) = [s for s in statements if s["Principal"] == {"Service": "cloudwatch.amazonaws.com"}]
        assert cloudwatch["Condition"]["ArnLike"] == {"aws:SourceArn": alarms}


def test_the_key_names_the_topic_without_referring_to_it(default_cluster: Synthesized) -> None:
    """The topic refers to its key; a reference back (its ARN in the key policy) is a dependency cycle
    that CloudFormation refuses (cfn-lint E3004 in the gates)."""
    topic, _ = events_key(default_cluster)
    (topic_id,) = default_cluster.resources("AWS::SNS::Topic")
    key_id = topic["Properties"]["KmsMasterKeyId"]["Fn::GetAtt"][0]
    assert topic_id not in json.dumps(default_cluster.resources()[key_id])


def test_changing_a_count_changes_only_that_groups_size(p4d_pair: tuple[Synthesized, Synthesized]) -> None:
    """Growing a fleet must not replace the subnet, the file system or another group's nodes."""
    before, after = p4d_pair
    old, new = before.template_json["Resources"], after.template_json["Resources"]
    assert set(old) == set(new)
    changed = {k for k in old if old[k] != new[k]}
    (gpu_asg,) = [
        k
        for k in before.logical_ids(before.stack.fleets["gpu"])
        if old[k]["Type"] == "AWS::AutoScaling::AutoScalingGroup"
    ]
    assert changed == {gpu_asg}
    diff = {p for p in old[gpu_asg]["Properties"] if old[gpu_asg]["Properties"][p] != new[gpu_asg]["Properties"][p]}
    assert diff == {"MinSize", "MaxSize"}


@pytest.fixture(scope="module")
def p4d_pair(synth: Callable[..., Synthesized]) -> tuple[Synthesized, Synthesized]:
    before = ClusterConfig.from_yaml(ROOT / "examples" / "p4d-reservation.yaml")
    data: dict[str, Any] = before.model_dump(exclude_unset=True, mode="json")
    data["instance_groups"][0]["count"] = 8
    return synth(before), synth(ClusterConfig.from_dict(data))


def test_group_ids_do_not_depend_on_order(
    p4d_pair: tuple[Synthesized, Synthesized], synth: Callable[..., Synthesized]
) -> None:
    before, _ = p4d_pair
    data: dict[str, Any] = before.config.model_dump(exclude_unset=True, mode="json")
    data["instance_groups"].reverse()
    reordered = synth(ClusterConfig.from_dict(data))
    assert set(reordered.template_json["Resources"]) == set(before.template_json["Resources"])

    def group_settings(synthesized: Synthesized) -> dict[str, Any]:
        """The functions' settings that name the Auto Scaling groups (an update of each if they moved)."""
        return {
            logical_id: resource["Properties"]["Environment"]
            for logical_id, resource in synthesized.template_json["Resources"].items()
            if resource["Type"] == "AWS::Lambda::Function"
            and "AUTO_SCALING_GROUPS" in json.dumps(resource["Properties"].get("Environment", {}))
        }

    assert len(before.config.instance_groups) > 1 and group_settings(before)
    assert group_settings(reordered) == group_settings(before)


def test_same_config_gives_the_same_template(
    default_cluster: Synthesized, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Pure synthesis: no clock, environment or AWS reads. (This test synthesizes a second time on purpose.)"""
    again = synthesize(
        default_cluster.config, tmp_path_factory.mktemp("again"), stack_id=default_cluster.stack.stack_name
    )
    assert again.template_path.read_bytes() == default_cluster.template_path.read_bytes()


def test_twenty_groups_stay_within_cloudformation_limits(twenty: Synthesized) -> None:
    assert len(twenty.template_json["Resources"]) < 500
    assert twenty.template_path.stat().st_size < 1_000_000
    assert len(twenty.stack.fleets) == 20


def test_config_warnings_become_cdk_warnings(twenty: Synthesized) -> None:
    metadata = json.loads((twenty.outdir / f"{twenty.stack.artifact_id}.metadata.json").read_text())
    warnings = [
        entry["data"] for entries in metadata.values() for entry in entries if entry["type"] == "aws:cdk:warning"
    ]
    placement = [str(w) for w in warnings if "EFA without a cluster placement group" in str(w)]
    # Once, by the config field's path: the fleet's own copy of it (by its prop) is acknowledged.
    assert len(placement) == 1 and placement[0].startswith("instance_groups[0].placement_group: "), placement


def test_cloudwatch_dashboard_shows_fleets_and_file_system(default_cluster: Synthesized) -> None:
    dashboards = default_cluster.resources("AWS::CloudWatch::Dashboard")
    body = json.dumps(
        [d["Properties"] for d in dashboards.values() if d["Properties"]["DashboardName"] == "demo-cluster"]
    )
    for metric in (
        "GroupInServiceInstances",
        "DataReadBytes",
        "DataWriteBytes",
        "MetadataOperations",
        "FreeDataStorageCapacity",
    ):
        assert metric in body
    assert default_cluster.stack.file_system is not None
    assert (
        default_cluster.stack.resolve(default_cluster.stack.file_system.metric_free_data_storage_capacity().statistic)
        == "Minimum"
    )
