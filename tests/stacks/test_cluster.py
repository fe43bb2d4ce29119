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


def test_events_topic_is_encrypted_and_usable_by_auto_scaling(default_cluster: Synthesized) -> None:
    (topic,) = default_cluster.resources("AWS::SNS::Topic").values()
    assert "KmsMasterKeyId" in topic["Properties"]
    key_id = topic["Properties"]["KmsMasterKeyId"]["Fn::GetAtt"][0]
    key = default_cluster.resources("AWS::KMS::Key")[key_id]
    assert key["Properties"]["EnableKeyRotation"] is True
    statements = key["Properties"]["KeyPolicy"]["Statement"]
    principals = json.dumps([s["Principal"] for s in statements])
    assert "AWSServiceRoleForAutoScaling" in principals


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
    assert any("instance_groups[0].placement_group: EFA without a cluster placement group" in str(w) for w in warnings)


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
