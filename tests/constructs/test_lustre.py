"""LustreFileSystem: FSx for Lustre defaults, S3 links, retention and the Lustre ports; every
deployment type composed alone, and its props checked by its own rules."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk import App, CfnParameter, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_s3 as s3
from aws_cdk.assertions import Match, Template
from syrupy.assertion import SnapshotAssertion

from conftest import Synthesized, mask_asset_hashes
from training_cluster.constructs import LustreFileSystem
from training_cluster.rules import PropsError


def file_system(sy: Synthesized) -> dict[str, Any]:
    (resource,) = sy.resources("AWS::FSx::FileSystem").values()
    return resource


def test_snapshot(example: Synthesized, snapshot_json: SnapshotAssertion) -> None:
    assert example.stack.file_system is not None
    assert mask_asset_hashes(example.resources_of(example.stack.file_system)) == snapshot_json


def test_persistent_2_defaults(default_cluster: Synthesized) -> None:
    fs = file_system(default_cluster)
    props = fs["Properties"]
    assert props["FileSystemType"] == "LUSTRE" and props["FileSystemTypeVersion"] == "2.15"
    assert props["StorageCapacity"] == 1200
    assert props["LustreConfiguration"] == {
        "DeploymentType": "PERSISTENT_2",
        "PerUnitStorageThroughput": 250,
        "DataCompressionType": "LZ4",
        "MetadataConfiguration": {"Mode": "AUTOMATIC"},
    }
    assert props["SubnetIds"] == [default_cluster.stack.resolve(default_cluster.stack.network.compute_subnet.subnet_id)]
    assert "KmsKeyId" not in props  # the AWS managed key for FSx
    # A file system is never deleted or replaced by surprise.
    assert fs["DeletionPolicy"] == "Retain" and fs["UpdateReplacePolicy"] == "Retain"
    default_cluster.template.resource_count_is("AWS::FSx::DataRepositoryAssociation", 0)


def test_persistent_2_links_s3_with_a_data_repository_association(b300: Synthesized) -> None:
    props = file_system(b300)["Properties"]
    assert props["LustreConfiguration"]["MetadataConfiguration"] == {"Mode": "USER_PROVISIONED", "Iops": 6000}
    assert props["LustreConfiguration"]["PerUnitStorageThroughput"] == 1000
    assert "ImportPath" not in props["LustreConfiguration"]  # not supported on PERSISTENT_2
    (dra,) = b300.resources("AWS::FSx::DataRepositoryAssociation").values()
    events = ["NEW", "CHANGED", "DELETED"]
    assert {k: v for k, v in dra["Properties"].items() if k != "Tags"} == {
        "FileSystemId": {"Ref": next(iter(b300.resources("AWS::FSx::FileSystem")))},
        "FileSystemPath": "/",
        "DataRepositoryPath": "s3://example-training-data/checkpoints",
        "BatchImportMetaDataOnCreate": True,
        "S3": {"AutoImportPolicy": {"Events": events}, "AutoExportPolicy": {"Events": events}},
    }


def test_scratch_links_s3_on_the_file_system(trn2: Synthesized) -> None:
    config = file_system(trn2)["Properties"]["LustreConfiguration"]
    assert config["DeploymentType"] == "SCRATCH_2"
    assert config["ImportPath"] == config["ExportPath"] == "s3://example-training-data/tokenized"
    assert config["AutoImportPolicy"] == "NEW_CHANGED_DELETED"
    assert "PerUnitStorageThroughput" not in config and "MetadataConfiguration" not in config
    trn2.template.resource_count_is("AWS::FSx::DataRepositoryAssociation", 0)


def test_customer_key_and_deletion_when_asked(lean: Synthesized) -> None:
    fs = file_system(lean)
    props = fs["Properties"]
    assert props["KmsKeyId"] == "arn:aws:kms:eu-central-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    assert props["LustreConfiguration"]["DeploymentType"] == "PERSISTENT_1"
    assert props["LustreConfiguration"]["DataCompressionType"] == "NONE"
    assert fs["DeletionPolicy"] == "Delete"


def _ports(rules: list[dict[str, Any]]) -> set[tuple[int, int]]:
    return {(r["FromPort"], r["ToPort"]) for r in rules if r["IpProtocol"] == "tcp"}


def test_lustre_ports_open_between_servers_and_nodes(example: Synthesized) -> None:
    assert example.stack.file_system is not None
    fsx_sg = example.stack.resolve(example.stack.file_system.security_group.security_group_id)
    node_sg = example.stack.resolve(example.stack.network.security_group.security_group_id)
    ingress = [r["Properties"] for r in example.resources("AWS::EC2::SecurityGroupIngress").values()]
    egress = [r["Properties"] for r in example.resources("AWS::EC2::SecurityGroupEgress").values()]
    lustre = {(988, 988), (1018, 1023)}

    def rules(rows: list[dict[str, Any]], group: Any, peer_key: str, peer: Any) -> set[tuple[int, int]]:
        return _ports([r for r in rows if r["GroupId"] == group and r.get(peer_key) == peer])

    assert rules(ingress, fsx_sg, "SourceSecurityGroupId", node_sg) == lustre  # nodes mount the file system
    assert rules(ingress, fsx_sg, "SourceSecurityGroupId", fsx_sg) == {(988, 1023)}  # servers talk to each other
    assert rules(ingress, node_sg, "SourceSecurityGroupId", fsx_sg) == lustre  # servers call clients back
    assert rules(egress, node_sg, "DestinationSecurityGroupId", fsx_sg) == lustre
    assert rules(egress, fsx_sg, "DestinationSecurityGroupId", node_sg) == lustre


# Composed by hand (issue 10): each deployment type alone in a plain Stack, no TrainingClusterStack.


def alone(**props: Any) -> tuple[Stack, LustreFileSystem, Template]:
    stack = Stack(App(), "Pieces", env={"account": "111122223333", "region": "us-east-1"})
    vpc = ec2.Vpc.from_vpc_attributes(stack, "Vpc", vpc_id="vpc-0123456789abcdef0", availability_zones=["us-east-1a"])
    subnet = ec2.Subnet.from_subnet_attributes(
        stack, "Subnet", subnet_id="subnet-0123456789abcdef0", availability_zone="us-east-1a"
    )
    file_system = LustreFileSystem(stack, "Lustre", vpc=vpc, subnet=subnet, **props)
    return stack, file_system, Template.from_stack(stack)


@pytest.mark.parametrize(
    ("deployment_type", "throughput"),
    [("SCRATCH_1", None), ("SCRATCH_2", None), ("PERSISTENT_1", 200), ("PERSISTENT_2", 250)],
)
def test_every_deployment_type_composes_alone(deployment_type: str, throughput: int | None) -> None:
    _, file_system, template = alone(deployment_type=deployment_type)
    assert file_system.throughput_mbps_per_tib == throughput
    template.resource_count_is("AWS::FSx::FileSystem", 1)
    template.resource_count_is("AWS::EC2::SecurityGroup", 1)
    (resource,) = template.find_resources("AWS::FSx::FileSystem").values()
    props = resource["Properties"]
    assert props["StorageCapacity"] == 1200 and props["SubnetIds"] == ["subnet-0123456789abcdef0"]
    config = props["LustreConfiguration"]
    assert config["DeploymentType"] == deployment_type
    # The throughput default follows the type: none on scratch types, which take no setting.
    assert config.get("PerUnitStorageThroughput") == throughput
    assert ("MetadataConfiguration" in config) == (deployment_type == "PERSISTENT_2")


def test_scratch_1_links_s3_without_automatic_import() -> None:
    _, _, template = alone(deployment_type="SCRATCH_1", s3_import_path="s3://bucket/prefix", storage_capacity_gib=3600)
    (resource,) = template.find_resources("AWS::FSx::FileSystem").values()
    config = resource["Properties"]["LustreConfiguration"]
    assert config["ImportPath"] == config["ExportPath"] == "s3://bucket/prefix"
    assert "AutoImportPolicy" not in config
    assert resource["Properties"]["StorageCapacity"] == 3600


def test_a_security_group_of_yours_is_used_as_it_is() -> None:
    stack = Stack(App(), "Pieces")
    group = ec2.SecurityGroup.from_security_group_id(stack, "Servers", "sg-0123456789abcdef0")
    vpc = ec2.Vpc.from_vpc_attributes(stack, "Vpc", vpc_id="vpc-0123456789abcdef0", availability_zones=["us-east-1a"])
    subnet = ec2.Subnet.from_subnet_attributes(stack, "Subnet", subnet_id="subnet-0", availability_zone="us-east-1a")
    file_system = LustreFileSystem(stack, "Lustre", vpc=vpc, subnet=subnet, security_group=group)
    template = Template.from_stack(stack)
    template.resource_count_is("AWS::EC2::SecurityGroup", 0)
    template.has_resource_properties("AWS::FSx::FileSystem", {"SecurityGroupIds": ["sg-0123456789abcdef0"]})
    assert file_system.security_group is group
    assert [g.security_group_id for g in file_system.connections.security_groups] == ["sg-0123456789abcdef0"]


def test_bad_props_fail_at_synthesis_with_one_error_listing_each() -> None:
    with pytest.raises(PropsError) as info:
        alone(deployment_type="SCRATCH_2", storage_capacity_gib=1000, throughput_mbps_per_tib=250, metadata_iops=3000)
    assert [f.path for f in info.value.findings] == ["storage_capacity_gib", "throughput_mbps_per_tib", "metadata_iops"]
    assert str(info.value) == (
        "3 problems with the props of LustreFileSystem 'Pieces/Lustre':\n"
        "  - storage_capacity_gib: SCRATCH_2 takes 1200, 2400 or a multiple of 2400 GiB (got 1000)\n"
        "  - throughput_mbps_per_tib: SCRATCH_2 has no throughput setting; remove it\n"
        "  - metadata_iops: only PERSISTENT_2 has a metadata configuration, not SCRATCH_2"
    )


def test_values_known_only_at_deploy_time_are_left_to_deploy_time() -> None:
    stack = Stack(App(), "Pieces")
    iops = CfnParameter(stack, "MetadataIops", type="Number", default=6000)
    bucket = s3.Bucket.from_bucket_name(stack, "Data", "example-training-data")
    vpc = ec2.Vpc.from_vpc_attributes(stack, "Vpc", vpc_id="vpc-0123456789abcdef0", availability_zones=["us-east-1a"])
    subnet = ec2.Subnet.from_subnet_attributes(stack, "Subnet", subnet_id="subnet-0", availability_zone="us-east-1a")
    tokens: dict[str, Any] = {
        "metadata_iops": iops.value_as_number,
        "s3_import_path": bucket.s3_url_for_object("tokenized"),
    }
    LustreFileSystem(stack, "Lustre", vpc=vpc, subnet=subnet, **tokens)
    template = Template.from_stack(stack)
    template.has_resource_properties(
        "AWS::FSx::FileSystem",
        {
            "LustreConfiguration": Match.object_like(
                {"MetadataConfiguration": {"Mode": "USER_PROVISIONED", "Iops": {"Ref": "MetadataIops"}}}
            )
        },
    )
    template.resource_count_is("AWS::FSx::DataRepositoryAssociation", 1)
    # A known bad value next to them is still refused.
    with pytest.raises(PropsError, match="mount_path: must be an absolute path such as /fsx"):
        LustreFileSystem(stack, "Bad", vpc=vpc, subnet=subnet, mount_path="x", **tokens)
