"""ClusterNetwork: a VPC ready for EFA, or the user's own."""

from __future__ import annotations

from typing import Any

import pytest
from syrupy.assertion import SnapshotAssertion

from conftest import Synthesized, mask_asset_hashes


def node_group_id(sy: Synthesized) -> str:
    (logical_id,) = sy.logical_ids(sy.stack.network.security_group.node.default_child)  # type: ignore[arg-type]
    return logical_id


def test_snapshot(example: Synthesized, snapshot_json: SnapshotAssertion) -> None:
    assert mask_asset_hashes(example.resources_of(example.stack.network)) == snapshot_json


def test_new_vpc_has_a_large_compute_subnet_in_the_capacity_zone(default_cluster: Synthesized) -> None:
    t = default_cluster.template
    t.resource_count_is("AWS::EC2::VPC", 1)
    t.has_resource_properties("AWS::EC2::VPC", {"CidrBlock": "10.0.0.0/16"})
    subnets = default_cluster.resources("AWS::EC2::Subnet")
    assert {s["Properties"]["AvailabilityZone"] for s in subnets.values()} == {"us-east-1a"}
    assert sorted(s["Properties"]["CidrBlock"] for s in subnets.values()) == ["10.0.0.0/24", "10.0.128.0/17"]
    t.resource_count_is("AWS::EC2::NatGateway", 1)


def test_endpoints_sit_in_the_compute_subnet_behind_their_own_group(default_cluster: Synthesized) -> None:
    endpoints = default_cluster.resources("AWS::EC2::VPCEndpoint")
    gateway = [e for e in endpoints.values() if e["Properties"].get("VpcEndpointType") != "Interface"]
    interface = [e for e in endpoints.values() if e["Properties"].get("VpcEndpointType") == "Interface"]
    assert len(gateway) == 1 and "s3" in str(gateway[0]["Properties"]["ServiceName"])
    services = sorted(str(e["Properties"]["ServiceName"]).rsplit(".", 1)[-1] for e in interface)
    assert services == ["ec2messages", "logs", "monitoring", "ssm", "ssmmessages"]
    compute = default_cluster.stack.resolve(default_cluster.stack.network.compute_subnet.subnet_id)
    for endpoint in interface:
        assert endpoint["Properties"]["SubnetIds"] == [compute]
        assert endpoint["Properties"]["PrivateDnsEnabled"] is True
    (group_id,) = [
        k
        for k, v in default_cluster.resources("AWS::EC2::SecurityGroup").items()
        if v["Properties"]["GroupDescription"] == "Interface endpoints: HTTPS from cluster nodes"
    ]
    for endpoint in interface:
        assert endpoint["Properties"]["SecurityGroupIds"] == [{"Fn::GetAtt": [group_id, "GroupId"]}]
    ingress = [
        r["Properties"]
        for r in default_cluster.resources("AWS::EC2::SecurityGroupIngress").values()
        if r["Properties"]["GroupId"] == {"Fn::GetAtt": [group_id, "GroupId"]}
    ]
    assert [(i["FromPort"], i["ToPort"], i["SourceSecurityGroupId"]) for i in ingress] == [
        (443, 443, {"Fn::GetAtt": [node_group_id(default_cluster), "GroupId"]})
    ]


def test_flow_logs_record_all_traffic(default_cluster: Synthesized) -> None:
    default_cluster.template.has_resource_properties(
        "AWS::EC2::FlowLog",
        {"TrafficType": "ALL", "LogDestinationType": "cloud-watch-logs", "ResourceType": "VPC"},
    )
    default_cluster.template.has_resource(
        "AWS::Logs::LogGroup", {"Properties": {"RetentionInDays": 90}, "DeletionPolicy": "Retain"}
    )


def test_efa_security_group_allows_all_traffic_to_and_from_itself_only(example: Synthesized) -> None:
    """EFA needs all traffic in and out to the group itself; nothing enters from outside it."""
    sg = node_group_id(example)
    self_ref = {"Fn::GetAtt": [sg, "GroupId"]}
    ingress = [
        r["Properties"]
        for r in example.resources("AWS::EC2::SecurityGroupIngress").values()
        if r["Properties"]["GroupId"] == self_ref
    ]
    egress = [
        r["Properties"]
        for r in example.resources("AWS::EC2::SecurityGroupEgress").values()
        if r["Properties"]["GroupId"] == self_ref
    ]
    assert {"IpProtocol": "-1", "SourceSecurityGroupId": self_ref} in [
        _rule(i, "SourceSecurityGroupId") for i in ingress
    ]
    assert {"IpProtocol": "-1", "DestinationSecurityGroupId": self_ref} in [
        _rule(e, "DestinationSecurityGroupId") for e in egress
    ]
    # Every other way in is a Lustre port from the file system's servers.
    for rule in ingress:
        assert rule["SourceSecurityGroupId"] == self_ref or rule["FromPort"] in (988, 1018)
    properties = example.resources("AWS::EC2::SecurityGroup")[sg]["Properties"]
    assert {(e["CidrIp"], e["FromPort"]) for e in properties["SecurityGroupEgress"]} == {
        ("0.0.0.0/0", 443),
        ("0.0.0.0/0", 80),
    }
    assert "SecurityGroupIngress" not in properties


def _rule(rule: dict[str, Any], peer: str) -> dict[str, Any]:
    return {"IpProtocol": rule["IpProtocol"], peer: rule.get(peer)}


def test_nothing_is_open_to_the_internet(example: Synthesized) -> None:
    for resource in example.resources().values():
        props = resource.get("Properties", {})
        rules = props.get("SecurityGroupIngress", []) + (
            [props] if resource["Type"] == "AWS::EC2::SecurityGroupIngress" else []
        )
        for rule in rules:
            assert rule.get("CidrIp") != "0.0.0.0/0" and rule.get("CidrIpv6") != "::/0"


def test_own_vpc_creates_no_network_and_uses_the_subnet(b300: Synthesized) -> None:
    for kind in (
        "AWS::EC2::VPC",
        "AWS::EC2::Subnet",
        "AWS::EC2::NatGateway",
        "AWS::EC2::VPCEndpoint",
        "AWS::EC2::FlowLog",
    ):
        b300.template.resource_count_is(kind, 0)
    b300.template.has_resource_properties("AWS::EC2::SecurityGroup", {"VpcId": "vpc-0123456789abcdef0"})
    b300.template.has_resource_properties(
        "AWS::AutoScaling::AutoScalingGroup", {"VPCZoneIdentifier": ["subnet-0123456789abcdef0"]}
    )
    b300.template.has_resource_properties("AWS::FSx::FileSystem", {"SubnetIds": ["subnet-0123456789abcdef0"]})


def test_endpoints_and_flow_logs_can_be_switched_off(lean: Synthesized) -> None:
    lean.template.resource_count_is("AWS::EC2::FlowLog", 0)
    endpoints = lean.resources("AWS::EC2::VPCEndpoint").values()
    assert [e["Properties"].get("VpcEndpointType", "Gateway") for e in endpoints] == ["Gateway"]
    lean.template.has_resource_properties("AWS::EC2::VPC", {"CidrBlock": "172.16.0.0/20"})
    lean.template.has_resource_properties("AWS::EC2::Subnet", {"CidrBlock": "172.16.8.0/21"})


def test_vpc_and_subnet_go_together() -> None:
    from aws_cdk import App, Stack
    from aws_cdk import aws_ec2 as ec2

    from training_cluster.constructs import ClusterNetwork

    stack = Stack(App(), "S")
    vpc = ec2.Vpc.from_vpc_attributes(stack, "V", vpc_id="vpc-1", availability_zones=["us-east-1a"])
    with pytest.raises(ValueError, match="give both vpc and compute_subnet"):
        ClusterNetwork(stack, "N", availability_zone="us-east-1a", vpc=vpc)
