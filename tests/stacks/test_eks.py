"""An EKS cluster whose nodes are the cluster's fleets: what the synthesized template holds."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from aws_cdk import App, Stack, Tags
from aws_cdk import aws_ec2 as ec2

from conftest import CDK_CONTEXT, GATED, ROOT, Synthesized
from training_cluster import ClusterConfig, contract, kube_access
from training_cluster.build import build_cluster
from training_cluster.constructs import ClusterNetwork, Fleet
from training_cluster.constructs.eks import EksCluster, EksOptions
from training_cluster.rules import PropsError
from training_cluster.rules.eks import DEFAULT_KUBERNETES_VERSION as VERSION

NODE_CONFIG_FIELDS = {"apiVersion", "kind", "spec"}
"""What nodeadm's NodeConfig (node.eks.aws/v1alpha1) documents, as far as we use it."""
CLUSTER_FIELDS = {"name", "apiServerEndpoint", "certificateAuthority", "cidr"}


@pytest.fixture(scope="module")
def eks(synth: Callable[..., Synthesized]) -> Synthesized:
    return synth(ROOT / "examples" / "eks.yaml")


@pytest.fixture(scope="module")
def eks_own_vpc(synth: Callable[..., Synthesized]) -> Synthesized:
    return synth(GATED["eks-own-vpc.yaml"]())


def _cluster(s: Synthesized) -> dict[str, Any]:
    (cluster,) = s.resources("AWS::EKS::Cluster").values()
    return cluster["Properties"]


def _parts(user_data: str) -> dict[str, str]:
    """The MIME parts of a fleet's user data, by content type."""
    head, _, body = user_data.partition("\n\n")
    boundary = re.search(r'boundary="([^"]+)"', head)
    assert boundary is not None, head
    parts = body.split(f"--{boundary[1]}")
    assert parts[0] == "" and parts[-1] == "--\n", (parts[0], parts[-1])
    out = {}
    for part in parts[1:-1]:
        headers, _, content = part.strip("\n").partition("\n\n")
        out[headers.removeprefix("Content-Type: ").split(";")[0]] = content
    return out


def _node_config(s: Synthesized, group: str) -> dict[str, Any]:
    part = _parts(s.user_data(group, reference="REF"))["application/node.eks.aws"]
    assert part.startswith("---\n")
    config: dict[str, Any] = json.loads(part.removeprefix("---\n"))
    return config


def _flags(config: dict[str, Any]) -> dict[str, str]:
    return dict(flag.removeprefix("--").split("=", 1) for flag in config["spec"]["kubelet"]["flags"])


def test_the_cluster_is_native_private_encrypted_and_logged(eks: Synthesized) -> None:
    cluster = _cluster(eks)
    assert cluster["Name"] == "demo-eks" and cluster["Version"] == "1.35"
    assert cluster["AccessConfig"] == {"AuthenticationMode": "API", "BootstrapClusterCreatorAdminPermissions": False}
    assert cluster["ComputeConfig"] == {"Enabled": False}  # Auto Mode off
    assert cluster["BootstrapSelfManagedAddons"] is False
    vpc = cluster["ResourcesVpcConfig"]
    assert (vpc["EndpointPrivateAccess"], vpc["EndpointPublicAccess"]) == (True, False)
    assert len(vpc["SubnetIds"]) == 2
    (key_id,) = [k for k, v in eks.resources("AWS::KMS::Key").items() if "Eks" in k]
    assert cluster["EncryptionConfig"] == [
        {"Provider": {"KeyArn": {"Fn::GetAtt": [key_id, "Arn"]}}, "Resources": ["secrets"]}
    ]
    assert eks.resources("AWS::KMS::Key")[key_id]["Properties"]["EnableKeyRotation"] is True
    logged = [t["Type"] for t in cluster["Logging"]["ClusterLogging"]["EnabledTypes"]]
    assert logged == ["api", "audit", "authenticator"]
    (log_group,) = [
        r
        for r in eks.resources("AWS::Logs::LogGroup").values()
        if r["Properties"].get("LogGroupName") == "/aws/eks/demo-eks/cluster"
    ]
    assert log_group["Properties"]["RetentionInDays"] == 90


def test_control_plane_subnets_are_new_and_in_two_zones(eks: Synthesized) -> None:
    ids = [ref["Ref"] for ref in _cluster(eks)["ResourcesVpcConfig"]["SubnetIds"]]
    zones = {eks.resources("AWS::EC2::Subnet")[i]["Properties"]["AvailabilityZone"] for i in ids}
    assert zones == {"us-east-1c", "us-east-1a"}  # the cluster's zone and the region's first other one


def test_own_vpc_uses_the_given_subnets_and_a_public_range(eks_own_vpc: Synthesized) -> None:
    vpc = _cluster(eks_own_vpc)["ResourcesVpcConfig"]
    assert vpc["SubnetIds"] == ["subnet-0aaaaaaaaaaaaaaa1", "subnet-0bbbbbbbbbbbbbbb2"]
    assert (vpc["EndpointPrivateAccess"], vpc["EndpointPublicAccess"]) == (True, True)
    assert vpc["PublicAccessCidrs"] == ["203.0.113.0/24"]
    assert eks_own_vpc.resources("AWS::EC2::Subnet") == {}


def test_service_cidr_on_the_cluster_is_the_one_nodes_are_told(eks: Synthesized) -> None:
    cidr = _cluster(eks)["KubernetesNetworkConfig"]["ServiceIpv4Cidr"]
    for group in ("gpu", "trn", "system"):
        assert _node_config(eks, group)["spec"]["cluster"]["cidr"] == cidr


def test_node_config_has_the_documented_fields_and_the_cluster_values(eks: Synthesized) -> None:
    config = _node_config(eks, "gpu")
    assert set(config) == NODE_CONFIG_FIELDS
    assert (config["apiVersion"], config["kind"]) == ("node.eks.aws/v1alpha1", "NodeConfig")
    assert set(config["spec"]) == {"cluster", "kubelet"}
    assert set(config["spec"]["cluster"]) == CLUSTER_FIELDS
    # Endpoint and CA are the cluster's CloudFormation attributes.
    joined = eks.launch_data("gpu")["UserData"]["Fn::Base64"]["Fn::Join"][1]
    attributes = [
        p["Fn::GetAtt"][1]
        for p in joined
        if isinstance(p, dict) and "Fn::GetAtt" in p and p["Fn::GetAtt"][0].startswith("EksCluster")
    ]
    assert attributes == ["Endpoint", "CertificateAuthorityData"]
    assert config["spec"]["cluster"]["name"] == "demo-eks"


def test_labels_and_taints_per_group(eks: Synthesized) -> None:
    gpu, trn, system = (_flags(_node_config(eks, g)) for g in ("gpu", "trn", "system"))
    labels = dict(pair.split("=") for pair in gpu["node-labels"].split(","))
    assert labels == {
        contract.LABEL_CLUSTER: "demo-eks",
        contract.LABEL_GROUP: "gpu",
        contract.LABEL_INSTANCE_TYPE: "p5.48xlarge",
        contract.LABEL_ACCELERATOR: "nvidia",
        contract.LABEL_EFA: "true",
        contract.LABEL_HEALTH: "Schedulable",
    }
    assert "register-with-taints" not in gpu
    assert trn["register-with-taints"] == "aws.amazon.com/neuron=true:NoSchedule"
    assert f"{contract.LABEL_ACCELERATOR}=neuron" in trn["node-labels"]
    assert f"{contract.LABEL_ACCELERATOR}=none" in system["node-labels"]
    assert f"{contract.LABEL_EFA}=false" in system["node-labels"]


def test_deep_checks_register_accelerator_nodes_unschedulable(eks_own_vpc: Synthesized) -> None:
    flags = _flags(_node_config(eks_own_vpc, "h200"))
    assert f"{contract.LABEL_HEALTH}=Unschedulable" in flags["node-labels"]
    assert flags["register-with-taints"] == f"{contract.LABEL_HEALTH}=Unschedulable:NoSchedule"
    cpu = _flags(_node_config(eks_own_vpc, "cpu"))  # a CPU type with EFA: its EFA check runs at first boot
    assert cpu["register-with-taints"] == f"{contract.LABEL_HEALTH}=Unschedulable:NoSchedule"
    system = _flags(_node_config(eks_own_vpc, "system"))  # no deep checks on CPU nodes without EFA
    assert f"{contract.LABEL_HEALTH}=Schedulable" in system["node-labels"] and "register-with-taints" not in system


def test_the_bootstrap_runs_beside_node_config(eks: Synthesized) -> None:
    parts = _parts(eks.user_data("gpu"))
    assert list(parts) == ["application/node.eks.aws", "text/x-shellscript"]
    assert parts["text/x-shellscript"].startswith("#!/bin/bash\n")
    assert "/opt/training-cluster/bootstrap.sh" in parts["text/x-shellscript"]


def test_cluster_security_group_on_the_primary_interface_only(eks: Synthesized) -> None:
    cluster_id = next(iter(eks.resources("AWS::EKS::Cluster")))
    cluster_group = {"Fn::GetAtt": [cluster_id, "ClusterSecurityGroupId"]}
    interfaces = eks.launch_data("gpu")["NetworkInterfaces"]
    assert (
        len(interfaces) == len(eks.stack.fleets["gpu"].interfaces) and eks.stack.fleets["gpu"].efa_interface_count == 32
    )
    for interface in interfaces:
        primary = (interface["NetworkCardIndex"], interface["DeviceIndex"]) == (0, 0)
        assert (cluster_group in interface["Groups"]) is primary
        assert len(interface["Groups"]) == (2 if primary else 1)
    assert "SecurityGroupIds" not in eks.launch_data("gpu")


def test_nodes_join_through_access_entries_and_node_policies(eks: Synthesized) -> None:
    entries = [r["Properties"] for r in eks.resources("AWS::EKS::AccessEntry").values()]
    nodes = [e for e in entries if e.get("Type") == "EC2_LINUX"]
    roles = {eks.stack.resolve(f.role.role_arn)["Fn::GetAtt"][0] for f in eks.stack.fleets.values()}
    assert {e["PrincipalArn"]["Fn::GetAtt"][0] for e in nodes} == roles
    assert all(e["AccessPolicies"] == [] for e in nodes)
    admins = [e for e in entries if e["PrincipalArn"] == "arn:aws:iam::111122223333:role/Admin"]
    assert len(admins) == 1 and "AmazonEKSClusterAdminPolicy" in json.dumps(admins[0]["AccessPolicies"])
    for fleet in eks.stack.fleets.values():
        role = eks.only(fleet, "AWS::IAM::Role")["Properties"]
        policies = json.dumps(role["ManagedPolicyArns"])
        assert "AmazonEKSWorkerNodePolicy" in policies and "AmazonEC2ContainerRegistryPullOnly" in policies
        assert "AmazonEKS_CNI_Policy" not in policies  # the CNI's permissions are its pods', through Pod Identity


def test_add_ons_and_pod_identity(eks: Synthesized) -> None:
    addons = {r["Properties"]["AddonName"]: r for r in eks.resources("AWS::EKS::Addon").values()}
    assert set(addons) == {"vpc-cni", "kube-proxy", "coredns", "eks-pod-identity-agent", "aws-fsx-csi-driver"}
    (association,) = addons["vpc-cni"]["Properties"]["PodIdentityAssociations"]
    assert association["ServiceAccount"] == "aws-node"
    role = eks.resources("AWS::IAM::Role")[association["RoleArn"]["Fn::GetAtt"][0]]["Properties"]
    assert "AmazonEKS_CNI_Policy" in json.dumps(role["ManagedPolicyArns"])
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    assert sorted(trust["Action"]) == ["sts:AssumeRole", "sts:TagSession"]
    groups = {k for k, v in eks.resources("AWS::AutoScaling::AutoScalingGroup").items()}
    for name in ("coredns", "aws-fsx-csi-driver"):  # their pods need nodes: they wait for the groups
        assert set(addons[name]["DependsOn"]) == groups


def test_node_groups_wait_for_their_access_entry(eks: Synthesized) -> None:
    entries = set(eks.resources("AWS::EKS::AccessEntry"))
    for group in eks.resources("AWS::AutoScaling::AutoScalingGroup").values():
        assert len(set(group["DependsOn"]) & entries) == 1


def test_instances_carry_the_cluster_tag_and_no_metadata_tags(eks: Synthesized) -> None:
    for name in eks.stack.fleets:
        data = eks.launch_data(name)
        assert data["MetadataOptions"]["InstanceMetadataTags"] == "disabled"
        (instance_tags,) = [s for s in data["TagSpecifications"] if s["ResourceType"] == "instance"]
        assert {"Key": "kubernetes.io/cluster/demo-eks", "Value": "owned"} in instance_tags["Tags"]


@pytest.mark.parametrize("name", sorted(GATED))
def test_no_instance_tag_key_has_a_slash_while_metadata_tags_are_on(
    name: str, synth: Callable[..., Synthesized]
) -> None:
    """EC2 refuses to launch such an instance, and neither cfn-lint nor moto notices."""
    s = synth(GATED[name]())
    templates = s.resources("AWS::EC2::LaunchTemplate").values()
    for template in templates:
        data = template["Properties"]["LaunchTemplateData"]
        if data.get("MetadataOptions", {}).get("InstanceMetadataTags") != "enabled":
            continue
        keys = [t["Key"] for spec in data.get("TagSpecifications", []) for t in spec["Tags"]]
        assert not [k for k in keys if "/" in k]


def test_a_fleet_with_metadata_tags_and_a_slash_tag_fails_synthesis() -> None:
    app = App(context=CDK_CONTEXT)
    stack = Stack(app, "S", env={"region": "us-east-1"})
    network = ClusterNetwork(stack, "Net", availability_zone="us-east-1a")
    fleet = Fleet(
        stack, "F", cluster_name="c", group_name="gpu", vpc=network.vpc, subnet=network.compute_subnet,
        instance_type="m7i.xlarge", count=1, instance_metadata_tags=True,
    )  # fmt: skip
    Tags.of(fleet).add("kubernetes.io/cluster/c", "owned")
    with pytest.raises(RuntimeError, match=r"metadata tags.*kubernetes.io/cluster/c"):
        app.synth()


def test_outputs(eks: Synthesized) -> None:
    outputs = eks.template_json["Outputs"]
    assert outputs["UpdateKubeconfigCommand"]["Value"] == "aws eks update-kubeconfig --name demo-eks --region us-east-1"
    assert outputs["EksClusterName"]["Value"] == {"Ref": next(iter(eks.resources("AWS::EKS::Cluster")))}
    assert "EksClusterArn" in outputs


def test_images_follow_the_accelerator(eks: Synthesized) -> None:
    parameters = json.dumps(eks.template_json["Parameters"])
    for variant in ("nvidia", "neuron", "standard"):
        assert (
            f"/aws/service/eks/optimized-ami/1.35/amazon-linux-2023/x86_64/{variant}/recommended/image_id" in parameters
        )


def _hand_made() -> tuple[Stack, ClusterNetwork, EksCluster]:
    stack = Stack(App(context=CDK_CONTEXT), "S", env={"region": "us-east-1"})
    network = ClusterNetwork(stack, "Net", availability_zone="us-east-1a")
    subnets = network.add_control_plane_subnets(["us-east-1a", "us-east-1b"])
    cluster = EksCluster(
        stack,
        "Eks",
        cluster_name="c",
        vpc=network.vpc,
        control_plane_subnets=subnets,
        options=EksOptions(kubectl=False),
    )
    return stack, network, cluster


def _fleet(stack: Stack, network: ClusterNetwork, **overrides: Any) -> Fleet:
    props: dict[str, Any] = {
        "cluster_name": "c", "group_name": "cpu", "vpc": network.vpc, "subnet": network.compute_subnet,
        "instance_type": "m7i.xlarge", "count": 1, "os": "amazon-linux-2023",
        "machine_image": ec2.MachineImage.generic_linux({"us-east-1": "ami-0123456789abcdef0"}), **overrides,
    }  # fmt: skip
    return Fleet(stack, f"Fleet{len(stack.node.children)}", **props)


def test_hand_made_cluster_refuses_what_cannot_join() -> None:
    stack, network, cluster = _hand_made()
    with pytest.raises(PropsError, match=r"fleets\[0\]\.os: .*allowed: amazon-linux-2023 \(got 'ubuntu-22.04'\)"):
        cluster.add_fleet(_fleet(stack, network, os="ubuntu-22.04"))
    with pytest.raises(ValueError, match="belongs to cluster 'other', not 'c'"):
        cluster.add_fleet(_fleet(stack, network, cluster_name="other"))
    fleet = _fleet(stack, network)
    cluster.add_fleet(fleet)
    with pytest.raises(ValueError, match="joined already"):
        cluster.add_fleet(fleet)
    with pytest.raises(PropsError, match=r"taints\.cpu-two\[0\]: must be a taint"):
        cluster.add_fleet(_fleet(stack, network, group_name="cpu-two"), taints=["oops"])
    with pytest.raises(ValueError, match="runs its default image, which has no nodeadm"):
        cluster.add_fleet(_fleet(stack, network, group_name="dlami", machine_image=None))
    other = EksCluster(
        stack, "Other", cluster_name="c", vpc=network.vpc, control_plane_subnets=network.add_control_plane_subnets(["us-east-1c", "us-east-1d"]),
        options=EksOptions(kubectl=False),
    )  # fmt: skip
    with pytest.raises(ValueError, match="has joined EKS cluster 'S/Eks' already"):
        other.add_fleet(fleet)
    elsewhere = Stack(stack.node.scope, "T", env={"region": "us-east-1"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="is in another stack"):
        cluster.add_fleet(_fleet(elsewhere, network, group_name="far"))
    cluster.add_components()
    with pytest.raises(ValueError, match="add_components: called already"):
        cluster.add_components()
    with pytest.raises(ValueError, match="add_components has run already"):
        cluster.add_fleet(_fleet(stack, network, group_name="late"))


def test_hand_made_cluster_needs_two_zones() -> None:
    stack = Stack(App(context=CDK_CONTEXT), "S", env={"region": "us-east-1"})
    network = ClusterNetwork(stack, "Net", availability_zone="us-east-1a")
    (one,) = network.add_control_plane_subnets(["us-east-1a"])
    with pytest.raises(ValueError, match="two or more availability zones"):
        EksCluster(stack, "Eks", cluster_name="c", vpc=network.vpc, control_plane_subnets=[one, one])


def _manifest(resource: dict[str, Any]) -> list[dict[str, Any]]:
    """The objects a kubectl-provider resource applies, each CloudFormation reference shown as "REF"."""
    value = resource["Properties"]["Manifest"]
    text = (
        value if isinstance(value, str) else "".join(p if isinstance(p, str) else "REF" for p in value["Fn::Join"][1])
    )
    objects: list[dict[str, Any]] = json.loads(text)
    return objects


def test_components_go_where_the_fleets_need_them_and_are_applied_on_deploy(eks: Synthesized) -> None:
    assert list(eks.stack.kubernetes_manifests) == [
        "nvidia-device-plugin",
        "dcgm-exporter",
        "efa-device-plugin",
        "neuron-device-plugin",
        "training-operator",
        "training-namespace",
        "fsx-volume",
        "repair-access",
    ]
    applied = [_manifest(r) for r in eks.resources("Custom::AWSCDK-EKS-KubernetesResource").values()]
    kinds = sorted(o["kind"] for objects in applied for o in objects)
    expected = sorted(o["kind"] for objects in eks.stack.kubernetes_manifests.values() for o in objects)
    assert kinds == expected
    # The claim is bound to the cluster's own file system, through the CSI driver add-on.
    (volume,) = [
        r
        for r in eks.resources("Custom::AWSCDK-EKS-KubernetesResource").values()
        if "PersistentVolume" in json.dumps(r)
    ]
    fs_id = next(iter(eks.resources("AWS::FSx::FileSystem")))
    assert {"Ref": fs_id} in volume["Properties"]["Manifest"]["Fn::Join"][1]
    (driver,) = [
        k for k, r in eks.resources("AWS::EKS::Addon").items() if r["Properties"]["AddonName"] == "aws-fsx-csi-driver"
    ]
    assert driver in volume["DependsOn"]
    assert eks.template_json["Outputs"]["FileSystemClaimName"]["Value"] == "fsx-claim"


def test_the_kubectl_provider_runs_in_the_vpc(eks: Synthesized) -> None:
    """The endpoint is private: what applies manifests must reach it from inside the VPC."""
    compute = {"Ref": eks.stack.resolve(eks.stack.network.compute_subnet.node.default_child.logical_id)}
    functions = [r for k, r in eks.resources("AWS::Lambda::Function").items() if "KubectlProvider" in k]
    assert len(functions) == 2  # the handler and the provider framework's function
    # in the compute subnet, which has a route out (the control-plane subnets have none)
    assert all(r["Properties"]["VpcConfig"]["SubnetIds"] == [compute] for r in functions)
    routes = [r["Properties"] for r in eks.resources("AWS::EC2::Route").values() if r["Properties"].get("NatGatewayId")]
    associations = eks.resources("AWS::EC2::SubnetRouteTableAssociation").values()
    (table,) = [a["Properties"]["RouteTableId"] for a in associations if a["Properties"]["SubnetId"] == compute]
    assert any(r["RouteTableId"] == table and r["DestinationCidrBlock"] == "0.0.0.0/0" for r in routes)


def test_no_components_without_the_fleets_that_need_them(eks_own_vpc: Synthesized) -> None:
    """A GPU-only cluster with no file system: no Neuron plugin, no volume; and handed over, not applied."""
    assert list(eks_own_vpc.stack.kubernetes_manifests) == [
        "nvidia-device-plugin",
        "dcgm-exporter",
        "efa-device-plugin",
        "training-operator",
        "training-namespace",
        "repair-access",
    ]
    assert eks_own_vpc.resources("Custom::AWSCDK-EKS-KubernetesResource") == {}
    assert not [k for k in eks_own_vpc.resources("AWS::Lambda::Function") if "KubectlProvider" in k]


def test_gpu_metrics_come_from_the_cluster_on_eks_nodes(eks: Synthesized) -> None:
    assert "GPU_EXPORTER='kubernetes'" in eks.user_data("gpu")


def test_handed_over_manifests_are_written_into_the_assembly(tmp_path: Path) -> None:
    config = tmp_path / "cluster.yaml"
    config.write_text(
        (ROOT / "examples" / "eks.yaml").read_text().replace("type: eks\n", "type: eks\n  install_components: false\n")
    )
    app = App(context=CDK_CONTEXT, outdir=str(tmp_path / "out"))
    built = build_cluster(app, config)
    folder = tmp_path / "out" / f"{built.stack.artifact_id}.kubernetes"
    files = sorted(p.name for p in folder.iterdir())
    assert files == [
        "01-nvidia-device-plugin.yaml",
        "02-dcgm-exporter.yaml",
        "03-efa-device-plugin.yaml",
        "04-neuron-device-plugin.yaml",
        "05-training-operator.yaml",
        "06-training-namespace.yaml",
        "07-fsx-volume.yaml",
        "08-repair-access.yaml",
        "README.txt",
    ]
    volume, _claim = yaml.safe_load_all((folder / "07-fsx-volume.yaml").read_text())
    assert volume["spec"]["csi"]["volumeHandle"] == "${FILE_SYSTEM_ID}"
    assert volume["spec"]["csi"]["volumeAttributes"] == {
        "dnsname": "${FILE_SYSTEM_DNS_NAME}",
        "mountname": "${FILE_SYSTEM_MOUNT_NAME}",
    }
    assert "${Token[" not in "".join(p.read_text() for p in folder.iterdir())
    assert "FileSystemId" in (folder / "README.txt").read_text()
    template = json.loads(Path(built.artifact.template_full_path).read_text())
    assert not [r for r in template["Resources"].values() if r["Type"] == "Custom::AWSCDK-EKS-KubernetesResource"]


@pytest.mark.parametrize("name", ["eks.yaml", "eks-own-vpc.yaml"])
def test_every_manifest_in_the_stack_passes_kubernetes_validate(name: str, synth: Callable[..., Synthesized]) -> None:
    s = synth(GATED[name]())
    objects = [o for objects in s.stack.kubernetes_manifests.values() for o in objects]
    assert objects
    for obj in objects:
        assert kubernetes_validate.validate(obj, VERSION, strict=True) == VERSION


def test_the_repair_function_reaches_the_api_from_the_vpc_with_exactly_its_verbs(eks: Synthesized) -> None:
    repair = eks.stack.auto_repair
    assert repair is not None
    function = eks.resources_of(repair)
    (props,) = [
        r["Properties"]
        for k, r in function.items()
        if r["Type"] == "AWS::Lambda::Function" and "Function" in k and "Intake" not in k
    ]
    assert props["VpcConfig"]["SubnetIds"] == [
        {"Ref": eks.stack.resolve(eks.stack.network.compute_subnet.node.default_child.logical_id)}
    ]
    env = props["Environment"]["Variables"]
    cluster_id = next(iter(eks.resources("AWS::EKS::Cluster")))
    assert env["EKS_ENDPOINT"] == {"Fn::GetAtt": [cluster_id, "Endpoint"]}
    assert env["EKS_CERTIFICATE_AUTHORITY"] == {"Fn::GetAtt": [cluster_id, "CertificateAuthorityData"]}
    # HTTPS from the function's security group to the control plane's.
    function_group = props["VpcConfig"]["SecurityGroupIds"][0]
    ingress = [
        r["Properties"]
        for r in eks.resources("AWS::EC2::SecurityGroupIngress").values()
        if r["Properties"].get("SourceSecurityGroupId") == function_group
    ]
    assert {(i["FromPort"], i["ToPort"]) for i in ingress} == {(443, 443)}
    cluster = _cluster(eks)
    endpoints = eks.stack.resolve(eks.stack.network.endpoint_security_group.security_group_id)  # type: ignore[union-attr]
    control_plane = [
        *cluster["ResourcesVpcConfig"]["SecurityGroupIds"],
        {"Fn::GetAtt": [cluster_id, "ClusterSecurityGroupId"]},
        endpoints,  # SSM and CloudWatch, whose private DNS names answer in the VPC
    ]
    assert sorted(json.dumps(i["GroupId"]) for i in ingress) == sorted(json.dumps(g) for g in control_plane)
    # Its access entry has no access policy, only the group the ClusterRole is bound to.
    role_id = props["Role"]["Fn::GetAtt"][0]
    (entry,) = [
        r["Properties"]
        for r in eks.resources("AWS::EKS::AccessEntry").values()
        if r["Properties"]["PrincipalArn"] == {"Fn::GetAtt": [role_id, "Arn"]}
    ]
    assert entry["KubernetesGroups"] == [kube_access.REPAIR_GROUP] and "AccessPolicies" not in entry
    role, binding = eks.stack.kubernetes_manifests["repair-access"]
    granted = {
        (g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]
    }
    assert granted == kube_access.granted()
    assert binding["subjects"] == [
        {"kind": "Group", "name": kube_access.REPAIR_GROUP, "apiGroup": "rbac.authorization.k8s.io"}
    ]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]


def test_the_shell_part_passes_shellcheck(eks: Synthesized, tmp_path: Path) -> None:
    script = tmp_path / "user-data.sh"
    script.write_text(_parts(eks.user_data("gpu", reference="resolved-at-deploy"))["text/x-shellscript"])
    shellcheck = shutil.which("shellcheck")
    assert shellcheck is not None
    result = subprocess.run([shellcheck, "--severity=style", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_every_function_in_the_vpc_reaches_the_interface_endpoints(eks: Synthesized) -> None:
    """SSM and CloudWatch resolve to the endpoints everywhere in the VPC (private DNS): a function
    there that the endpoints' group does not admit waits for a timeout on every call to them."""
    endpoint_group = eks.stack.resolve(eks.stack.network.endpoint_security_group.security_group_id)  # type: ignore[union-attr]
    admitted = {
        json.dumps(r["Properties"]["SourceSecurityGroupId"])
        for r in eks.resources("AWS::EC2::SecurityGroupIngress").values()
        if r["Properties"]["GroupId"] == endpoint_group
        and r["Properties"]["FromPort"] <= 443 <= r["Properties"]["ToPort"]
    }
    calling = {
        k: r
        for k, r in eks.resources("AWS::Lambda::Function").items()
        if "VpcConfig" in r["Properties"] and "KubectlProvider" not in k
    }
    assert calling  # the repair function, at least
    for name, function in calling.items():
        groups = {json.dumps(g) for g in function["Properties"]["VpcConfig"]["SecurityGroupIds"]}
        assert groups & admitted, name


def test_reordering_groups_and_admins_moves_no_access_entry(
    eks: Synthesized, synth: Callable[..., Synthesized]
) -> None:
    """An entry's principal cannot change in place: an id that moved to another principal would
    make CloudFormation create a second entry for one principal, which EKS refuses."""
    data = eks.config.model_dump(exclude_unset=True, mode="json")
    data["instance_groups"].reverse()
    data["orchestrator"]["admin_role_arns"] = [
        "arn:aws:iam::111122223333:role/Ops",
        *data["orchestrator"]["admin_role_arns"],
    ]
    reordered = synth(ClusterConfig.from_dict(data))

    def principals(s: Synthesized) -> dict[str, str]:
        return {k: json.dumps(r["Properties"]["PrincipalArn"]) for k, r in s.resources("AWS::EKS::AccessEntry").items()}

    before, after = principals(eks), principals(reordered)
    assert {k: v for k, v in after.items() if k in before} == before
    assert len(after) == len(before) + 1


def test_hand_made_cluster_refuses_bad_options_and_taints_of_no_fleet() -> None:
    stack = Stack(App(context=CDK_CONTEXT), "S", env={"region": "us-east-1"})
    network = ClusterNetwork(stack, "Net", availability_zone="us-east-1a")
    subnets = network.add_control_plane_subnets(["us-east-1a", "us-east-1b"])
    with pytest.raises(PropsError, match=r"service_ipv4_cidr: must be an IPv4 CIDR block .* \(got 'banana'\)"):
        EksCluster(stack, "A", cluster_name="c", vpc=network.vpc, control_plane_subnets=subnets,
                   options=EksOptions(kubectl=False, service_ipv4_cidr="banana"))  # fmt: skip
    with pytest.raises(ValueError, match="kubectl_subnets: the kubectl provider"):
        EksCluster(stack, "B", cluster_name="c", vpc=network.vpc, control_plane_subnets=subnets)
    EksCluster(
        stack, "C", cluster_name="c", vpc=network.vpc, control_plane_subnets=subnets,
        options=EksOptions(kubectl=False, taints={"gpu": ["a=b:NoSchedule"]}),
    )  # fmt: skip
    with pytest.raises(RuntimeError, match=r"options\.taints: no fleet of group 'gpu' joined the cluster"):
        stack.node.root.synth()  # type: ignore[attr-defined]


def test_hand_made_components_that_select_protected_labels_need_the_repair_control_plane() -> None:
    """The Neuron plugin and the training operator select labels only the control plane writes:
    without it (or without a system group for the operator) they would never run, silently."""
    stack, network, cluster = _hand_made()
    trn = _fleet(stack, network, group_name="trn", instance_type="trn1.32xlarge")
    cluster.add_fleet(trn)
    cluster.add_components()
    with pytest.raises(RuntimeError) as info:
        stack.node.root.synth()  # type: ignore[attr-defined]
    message = str(info.value)
    assert "neuron-device-plugin and training-operator select node labels that only the repair control plane" in message
    assert "no fleet named 'system' joined the cluster" in message


def test_the_example_synthesizes_without_a_warning(eks: Synthesized) -> None:
    metadata = json.loads((eks.outdir / f"{eks.stack.artifact_id}.metadata.json").read_text())
    warnings = [e["data"] for entries in metadata.values() for e in entries if e["type"] == "aws:cdk:warning"]
    assert warnings == []


def test_the_cni_keeps_the_configs_pod_addresses_not_a_spare_interface(eks: Synthesized) -> None:
    (cni,) = [a for a in eks.resources("AWS::EKS::Addon").values() if a["Properties"]["AddonName"] == "vpc-cni"]
    assert json.loads(cni["Properties"]["ConfigurationValues"]) == {
        "env": {"MINIMUM_IP_TARGET": "16", "WARM_IP_TARGET": "2"}
    }
    others = [a for a in eks.resources("AWS::EKS::Addon").values() if a["Properties"]["AddonName"] != "vpc-cni"]
    assert not [a for a in others if "ConfigurationValues" in a["Properties"]]
