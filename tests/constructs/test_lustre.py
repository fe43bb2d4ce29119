"""LustreFileSystem: FSx for Lustre defaults, S3 links, retention and the Lustre ports."""

from __future__ import annotations

from typing import Any

from syrupy.assertion import SnapshotAssertion

from conftest import Synthesized, mask_asset_hashes


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
    fsx_sg = {
        "Fn::GetAtt": [
            *example.logical_ids(example.stack.file_system.security_group.node.default_child),
            "GroupId",
        ]
    }  # type: ignore[arg-type]
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
