"""A SageMaker HyperPod cluster (``AWS::SageMaker::Cluster``) on this library's network and file system.

The nodes are HyperPod's: its health agent, deep health checks and automatic node recovery run
them, so this library's repair control plane never acts on them. What stays ours: the VPC and
compute subnet, the EFA security group (all traffic to and from itself, the FSx ports; with EKS
the cluster security group too, for the private API endpoint), the FSx for Lustre file system
(mounted by HyperPod through ``InstanceStorageConfigs``), and the lifecycle scripts, which
HyperPod runs on every new node once its own setup is done (``OnInitComplete``).

**Lifecycle scripts.** HyperPod downloads ``SourceS3Uri`` (a prefix) whole and runs the group's
script from it. The scripts go into a bucket of this construct's, under ``lifecycle/<digest>/``,
where the digest is the SHA-256 of the scripts and of every (literal) setting, so that a changed
script is a new URI; copied there on deploy by aws-cdk-lib's ``BucketDeployment`` (a Lambda
custom resource; the only one here), which keeps the old prefix (nodes HyperPod replaces during
an update still find it); old versions expire after 30 days. The bucket's name is
CloudFormation's, not ``sagemaker-*``: the execution role is granted read on that prefix alone.

**The execution role** has AWS's ``AmazonSageMakerClusterInstanceRolePolicy``,
``AmazonEC2ContainerRegistryPullOnly`` (image pulls), with EKS ``AmazonEKSWorkerNodePolicy``
(kubelet's needs, Pod Identity's credentials), and what the nodes need beyond them: network
interfaces in the cluster's compute subnet (HyperPod attaches them to the nodes; tags only when
created) and read of its own lifecycle prefix. With EKS, HyperPod makes its own access entry for
it (none is made here).
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Literal, cast

from aws_cdk import Acknowledgment, Aws, CfnElement, Duration, RemovalPolicy, Stack, Token, Validations
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_deployment as s3_deployment
from aws_cdk import aws_sagemaker as sagemaker
from aws_cdk import aws_sns as sns
from constructs import Construct

from .._lambda import python_function
from .._nag import acknowledge
from ..contract import DIMENSION_CLUSTER, DIMENSION_GROUP, HYPERPOD_EVENTS, REPAIR_NAMESPACE
from ..node_bootstrap import node_library
from ..patterns import HYPERPOD_NAME_PATTERN
from ..rules import hyperpod as rules
from ..rules.eks import parse_taint
from .auto_repair import SHIPPED_MODULES, ledger_table
from .eks import EksCluster
from .lustre import LustreFileSystem
from .network import ClusterNetwork

LIFECYCLE_PREFIX = "lifecycle"
ON_CREATE = "on_create.sh"
SETTINGS = "settings.env"
SlurmNodeType = Literal["Controller", "Login", "Compute"]

_SETTING = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
EBS_VOLUME_GIB = 500
"""The secondary EBS volume per node (``/opt/sagemaker``), HyperPod's place for containers and caches."""


@dataclass(frozen=True)
class HyperPodGroup:
    """One HyperPod instance group. ``instance_type`` is EC2's name (``p5.48xlarge``): the
    construct makes it HyperPod's (``ml.p5.48xlarge``)."""

    name: str
    instance_type: str
    count: int
    threads_per_core: Literal[1, 2] | None = None
    ebs_volume_gib: int = EBS_VOLUME_GIB
    deep_health_checks: Sequence[str] | None = None
    """Default: both of HyperPod's on accelerator types, none on CPU types."""
    training_plan_arn: str | None = None
    slurm_node_type: SlurmNodeType | None = None
    """Slurm: the group's role (``Compute`` for the instance groups)."""
    partitions: Sequence[str] = ()
    """Slurm: the partitions a compute group's nodes are in."""
    labels: Mapping[str, str] = field(default_factory=dict)
    """EKS: labels HyperPod gives the group's Nodes."""
    taints: Sequence[str] = ()
    """EKS: taints (``key=value:Effect``) HyperPod gives the group's Nodes."""
    image_id: str | None = None
    """EKS: a custom AMI (HyperPod's ``ImageId``); default HyperPod's own."""
    lifecycle_script: str | None = None
    """The user's own script (its text), run as root after ``on_create.sh`` on the group's nodes."""


class HyperPodCluster(Construct):
    """``AWS::SageMaker::Cluster`` with ``NodeRecovery: Automatic`` (see the module).

    :param cluster_name: the HyperPod cluster's name (and the EKS cluster's, when there is one).
    :param network: the VPC, compute subnet and EFA security group the nodes use.
    :param groups: the instance groups, in order.
    :param eks: run the groups as nodes of this EKS cluster; otherwise HyperPod's Slurm.
    :param file_system: mounted on every node by HyperPod at its ``mount_path``.
    :param settings: literal settings the lifecycle scripts read (``settings.env``): ``CLUSTER_NAME``
        (default ``cluster_name``), ``FSX_MOUNT_PATH`` (default the file system's),
        ``CLUSTER_USERS`` (``"alice:2001 bob:2002"``, made on every node, homes on the file system)
        and ``USERS_CAN_USE_NODE_ROLE`` (``true``: users reach the instance metadata service, so the
        execution role; default only root does).
    :param node_recovery: HyperPod reboots or replaces faulty nodes itself (``Automatic``);
        ``False``: it only labels them (``None``), as a dry run.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster_name: str,
        network: ClusterNetwork,
        groups: Sequence[HyperPodGroup],
        eks: EksCluster | None = None,
        file_system: LustreFileSystem | None = None,
        settings: Mapping[str, str] | None = None,
        node_recovery: bool = True,
    ) -> None:
        super().__init__(scope, construct_id)
        region = Stack.of(self).region
        problems = [
            f"groups[{i}]{finding.path}: {finding.message}"
            for i, group in enumerate(groups)
            for finding in rules.hyperpod_group_findings(
                "",
                instance_type=group.instance_type,
                count=group.count,
                deep_health_checks=group.deep_health_checks,
                training_plan_arn=group.training_plan_arn,
                region=None if Token.is_unresolved(region) else region,
            )
            if finding.level == "error"
        ]
        if not groups:
            problems.append("groups: at least one instance group")
        problems += _shape_problems(groups, eks is not None, file_system is not None, settings or {})
        if len(groups) > rules.MAX_GROUPS:
            problems.append(f"groups: at most {rules.MAX_GROUPS}, got {len(groups)}")
        if problems:
            raise ValueError(f"{self.node.path}: " + "; ".join(problems))
        self.cluster_name = cluster_name
        self.groups = list(groups)
        self.bucket = s3.Bucket(
            self,
            "LifecycleBucket",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=True,
            # old prefixes stay while nodes made from them may still be replaced; a month later they go
            lifecycle_rules=[
                s3.LifecycleRule(
                    prefix=f"{LIFECYCLE_PREFIX}/",
                    noncurrent_version_expiration=Duration.days(30),
                )
            ],
            removal_policy=RemovalPolicy.RETAIN,
        )
        self._bucket_id = Stack.of(self).get_logical_id(cast(CfnElement, self.bucket.node.default_child))
        acknowledge(
            self.bucket,
            "S1",
            "the bucket holds only the lifecycle scripts, which the template itself carries; reads are by the "
            "execution role and appear in CloudTrail",
        )
        values = {"CLUSTER_NAME": cluster_name}
        if file_system is not None:
            values["FSX_MOUNT_PATH"] = file_system.mount_path
        values.update(settings or {})
        tokens = sorted(k for k, v in values.items() if Token.is_unresolved(v) or not _SETTING.fullmatch(k))
        if tokens:
            raise ValueError(f"{self.node.path}: settings must be literal, with names like CLUSTER_USERS: {tokens}")
        scripts = {
            ON_CREATE: _script(ON_CREATE),
            **node_library(),
            SETTINGS: "".join(f"{k}={shlex.quote(v)}\n" for k, v in sorted(values.items())),
        }
        self._entries: dict[str, str] = {}  # group -> the script HyperPod runs on its nodes
        for group in groups:
            if group.lifecycle_script is None:
                continue
            scripts[f"user-{group.name}.sh"] = group.lifecycle_script
            scripts[f"start-{group.name}.sh"] = _USER_SCRIPT_WRAPPER.format(group=group.name)
            self._entries[group.name] = f"start-{group.name}.sh"
        digest = hashlib.sha256(json.dumps(scripts, sort_keys=True).encode()).hexdigest()[:16]
        self.lifecycle_prefix = f"{LIFECYCLE_PREFIX}/{digest}/"
        deployment = s3_deployment.BucketDeployment(
            self,
            "LifecycleScripts",
            destination_bucket=self.bucket,
            destination_key_prefix=self.lifecycle_prefix,
            sources=[s3_deployment.Source.data(name, text) for name, text in sorted(scripts.items())],
            prune=False,  # a node being created may still be downloading the previous set
            retain_on_delete=True,  # and an update must not empty the old prefix before the cluster moves on
        )
        self.role = self._execution_role(network, eks)
        self._grant_lifecycle_read()
        self._acknowledge_deployment()
        source = f"s3://{self.bucket.bucket_name}/{self.lifecycle_prefix}"
        self.resource = sagemaker.CfnCluster(
            self,
            "Resource",
            cluster_name=cluster_name,
            node_recovery="Automatic" if node_recovery else "None",
            vpc_config=sagemaker.CfnCluster.VpcConfigProperty(
                # with EKS, the cluster security group too: it admits the nodes to the private
                # API endpoint and the control plane to the kubelets, as on self-managed nodes
                security_group_ids=[network.security_group.security_group_id]
                + ([eks.cluster_security_group.security_group_id] if eks is not None else []),
                subnets=[network.compute_subnet.subnet_id],
            ),
            orchestrator=sagemaker.CfnCluster.OrchestratorProperty(
                eks=sagemaker.CfnCluster.ClusterOrchestratorEksConfigProperty(cluster_arn=eks.cluster.cluster_arn)
            )
            if eks is not None
            else sagemaker.CfnCluster.OrchestratorProperty(
                slurm=sagemaker.CfnCluster.ClusterOrchestratorSlurmConfigProperty(slurm_config_strategy="Managed")
            ),
            instance_groups=[self._group(g, source, file_system, eks is not None) for g in groups],
        )
        self.resource.node.add_dependency(deployment)
        types = sorted({rules.ml_type(g.instance_type) for g in groups})
        lag = (
            "the region schemas' list of ml. instance types lags AWS; every type here ("
            + ", ".join(types)
            + ") is one botocore's SageMaker model offers for HyperPod (ClusterInstanceType), checked at synthesis"
        )
        Validations.of(self.resource).acknowledge(Acknowledgment(id="CloudFormation-Validate::E3644", reason=lag))
        # and for cfn-lint run on the template itself: this rule, on this resource alone, with why
        self.resource.add_metadata("cfn-lint", {"config": {"ignore_checks": ["E3644"]}})
        self.resource.add_metadata("training-cluster:cfn-lint-E3644", lag)
        if eks is not None:
            self.resource.node.add_dependency(eks.cluster)
            eks.add_node_source(self.resource)

    @property
    def cluster_arn(self) -> str:
        return self.resource.attr_cluster_arn

    def _execution_role(self, network: ClusterNetwork, eks: EksCluster | None) -> iam.Role:
        managed = ["AmazonSageMakerClusterInstanceRolePolicy", "AmazonEC2ContainerRegistryPullOnly"]
        if eks is not None:  # kubelet's needs, Pod Identity's AssumeRoleForPodIdentity among them
            managed.append("AmazonEKSWorkerNodePolicy")
        role = iam.Role(
            self,
            "ExecutionRole",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description=f"HyperPod nodes of cluster {self.cluster_name}",
            managed_policies=[iam.ManagedPolicy.from_aws_managed_policy_name(name) for name in managed],
        )
        acknowledge(
            role,
            "IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/AmazonEC2ContainerRegistryPullOnly]",
            "nodes pull container images (EKS add-ons, jobs' images) with the read actions AWS keeps in this policy",
        )
        if eks is not None:
            acknowledge(
                role,
                "IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/AmazonEKSWorkerNodePolicy]",
                "EKS nodes need what AWS keeps current in its worker node policy, Pod Identity's credentials among it",
            )
        acknowledge(
            role,
            "IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/AmazonSageMakerClusterInstanceRolePolicy]",
            "HyperPod's nodes need what AWS keeps current in its instance policy (its agent, logs, metrics)",
        )

        def arn(resource: str) -> str:
            return f"arn:{Aws.PARTITION}:ec2:{Aws.REGION}:{Aws.ACCOUNT_ID}:{resource}"

        subnet_arn = arn(f"subnet/{network.compute_subnet.subnet_id}")
        in_subnet = {"ArnEquals": {"ec2:Subnet": subnet_arn}}
        group_arn = arn(f"security-group/{network.security_group.security_group_id}")
        interfaces = arn("network-interface/*")
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="NetworkInterfacesInTheClusterSubnet",
                actions=["ec2:CreateNetworkInterface"],
                resources=[subnet_arn, group_arn],
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="NewNetworkInterfaces", actions=["ec2:CreateNetworkInterface"], resources=[interfaces]
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="TagsOnlyWhenCreated",
                actions=["ec2:CreateTags"],
                resources=[interfaces],
                conditions={"StringEquals": {"ec2:CreateAction": "CreateNetworkInterface"}},
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="NetworkInterfacesInTheSubnet",
                actions=[
                    "ec2:CreateNetworkInterfacePermission",
                    "ec2:DeleteNetworkInterface",
                    "ec2:DeleteNetworkInterfacePermission",
                    "ec2:DetachNetworkInterface",
                    "ec2:AssignPrivateIpAddresses",
                    "ec2:UnassignPrivateIpAddresses",
                ],
                resources=[interfaces],
                conditions=in_subnet,
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="DescribeTheNetwork",
                actions=[
                    "ec2:DescribeNetworkInterfaces",
                    "ec2:DescribeVpcs",
                    "ec2:DescribeDhcpOptions",
                    "ec2:DescribeSubnets",
                    "ec2:DescribeSecurityGroups",
                ],
                resources=["*"],  # Describe* calls take no resource
            )
        )
        acknowledge(
            role, "IAM5[Resource::*]", "the EC2 Describe* calls HyperPod makes for the network take no resource ARN"
        )
        acknowledge(
            role,
            "IAM5[Resource::arn:<AWS::Partition>:ec2:<AWS::Region>:<AWS::AccountId>:network-interface/*]",
            "HyperPod creates and attaches the nodes' network interfaces; their ids are not known before, and "
            "every other action on them is limited to the cluster's compute subnet",
        )
        return role

    def _grant_lifecycle_read(self) -> None:
        """HyperPod lists and downloads the lifecycle prefix as the execution role: that prefix only."""
        self.role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="ListLifecycleScripts",
                actions=["s3:ListBucket"],
                resources=[self.bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [self.lifecycle_prefix, f"{self.lifecycle_prefix}*"]}},
            )
        )
        self.role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="ReadLifecycleScripts",
                actions=["s3:GetObject"],
                resources=[self.bucket.arn_for_objects(f"{self.lifecycle_prefix}*")],
            )
        )
        acknowledge(
            self.role,
            f"IAM5[Resource::<{self._bucket_id}.Arn>/{self.lifecycle_prefix}*]",
            "HyperPod downloads every object under the cluster's lifecycle prefix, whose names the scripts set",
        )

    def _acknowledge_deployment(self) -> None:
        """aws-cdk-lib's BucketDeployment: one function per stack that copies the scripts on deploy."""
        stack = Stack.of(self)
        for child in stack.node.children:
            if not child.node.id.startswith("Custom::CDKBucketDeployment"):
                continue
            for rule in ("IAM5[Action::s3:GetBucket*]", "IAM5[Action::s3:GetObject*]", "IAM5[Action::s3:List*]",
                         "IAM5[Action::s3:Abort*]", "IAM5[Action::s3:DeleteObject*]"):  # fmt: skip
                acknowledge(
                    child,
                    rule,
                    "aws-cdk-lib's BucketDeployment copies the lifecycle scripts from the CDK asset bucket into the "
                    "lifecycle bucket with the S3 actions its grants name",
                )
            for rule in (
                f"IAM5[Resource::<{self._bucket_id}.Arn>/*]",
                *(
                    [
                        f"IAM5[Resource::arn:{stack.partition}:s3:::cdk-hnb659fds-assets-<AWS::AccountId>-{stack.region}/*]"
                    ]
                    if not Token.is_unresolved(stack.region) and not Token.is_unresolved(stack.partition)
                    else []
                ),
                "IAM5[Resource::arn:<AWS::Partition>:s3:::cdk-hnb659fds-assets-<AWS::AccountId>-<AWS::Region>/*]",
            ):
                acknowledge(
                    child,
                    rule,
                    "the deployment reads the staged scripts from the CDK asset bucket and writes them under the "
                    "lifecycle prefix it is given; asset names are content hashes",
                )
            acknowledge(
                child,
                "IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]",
                "the deployment function writes its logs with the Lambda managed policy for logs",
            )
            acknowledge(
                child,
                "L1",
                "aws-cdk-lib chooses the BucketDeployment function's runtime to match the AWS CLI layer it ships with",
            )

    def _group(
        self, group: HyperPodGroup, source: str, file_system: LustreFileSystem | None, eks: bool
    ) -> sagemaker.CfnCluster.ClusterInstanceGroupProperty:
        checks = group.deep_health_checks
        if checks is None:
            checks = rules.default_deep_health_checks(group.instance_type)
        storage = [
            sagemaker.CfnCluster.ClusterInstanceStorageConfigProperty(
                ebs_volume_config=sagemaker.CfnCluster.ClusterEbsVolumeConfigProperty(
                    volume_size_in_gb=group.ebs_volume_gib
                )
            )
        ]
        if file_system is not None:
            storage.append(
                sagemaker.CfnCluster.ClusterInstanceStorageConfigProperty(
                    fsx_lustre_config=sagemaker.CfnCluster.ClusterFsxLustreConfigProperty(
                        dns_name=file_system.dns_name,
                        mount_name=file_system.mount_name,
                        mount_path=file_system.mount_path,
                    )
                )
            )
        kubernetes = None
        if eks and (group.labels or group.taints):
            taints = [parse_taint(t) for t in group.taints]
            kubernetes = sagemaker.CfnCluster.ClusterKubernetesConfigProperty(
                labels=dict(group.labels) or None,
                taints=[
                    sagemaker.CfnCluster.ClusterKubernetesTaintProperty(key=k, value=v, effect=e) for k, v, e in taints
                ]
                or None,
            )
        slurm = None
        if not eks and group.slurm_node_type is not None:
            slurm = sagemaker.CfnCluster.ClusterSlurmConfigProperty(
                node_type=group.slurm_node_type, partition_names=list(group.partitions) or None
            )
        return sagemaker.CfnCluster.ClusterInstanceGroupProperty(
            instance_group_name=group.name,
            instance_type=rules.ml_type(group.instance_type),
            instance_count=group.count,
            execution_role=self.role.role_arn,
            life_cycle_config=sagemaker.CfnCluster.ClusterLifeCycleConfigProperty(
                source_s3_uri=source, on_init_complete=self._entries.get(group.name, ON_CREATE)
            ),
            image_id=group.image_id if eks else None,
            threads_per_core=group.threads_per_core,
            instance_storage_configs=storage,
            on_start_deep_health_checks=list(checks) or None,
            training_plan_arn=group.training_plan_arn,
            kubernetes_config=kubernetes,
            slurm_config=slurm,
        )


_USER_SCRIPT_WRAPPER = """#!/bin/bash
# Group {group}: the cluster's lifecycle script, then the user's own (lifecycle_script).
set -euo pipefail
here="$(cd "$(dirname "${{BASH_SOURCE[0]}}")" && pwd)"
bash "$here/on_create.sh"
bash "$here/user-{group}.sh"
"""
_RESERVED_SETTINGS = frozenset({"PATH", "IFS", "BASH_ENV", "ENV", "HOME", "SHELL", "LD_PRELOAD", "LD_LIBRARY_PATH"})


def _shape_problems(
    groups: Sequence[HyperPodGroup], eks: bool, file_system: bool, settings: Mapping[str, str]
) -> list[str]:
    """What HyperPod would refuse at deploy time (or a node at boot), said at synthesis."""
    problems = []
    names = [g.name for g in groups]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"groups: {name!r} is given twice; group names are unique")
    for i, group in enumerate(groups):
        if not re.fullmatch(HYPERPOD_NAME_PATTERN, group.name):
            problems.append(f"groups[{i}].name: letters, digits and single hyphens, at most 63 (got {group.name!r})")
        if not 1 <= group.ebs_volume_gib <= 16384:
            problems.append(f"groups[{i}].ebs_volume_gib: 1 to 16384 GiB (got {group.ebs_volume_gib})")
        if eks and (group.slurm_node_type is not None or group.partitions):
            problems.append(f"groups[{i}]: slurm_node_type and partitions are Slurm's; this cluster runs EKS")
        if not eks and group.image_id is not None:
            problems.append(f"groups[{i}].image_id: a custom image only with EKS; HyperPod's Slurm runs its own")
        if not eks and (group.labels or group.taints):
            problems.append(f"groups[{i}]: labels and taints are EKS's; this cluster runs Slurm")
        if not eks and group.slurm_node_type is None:
            problems.append(
                f"groups[{i}].slurm_node_type: every group of a Slurm cluster has one (Controller, Login, Compute)"
            )
        problem = rules.partitions_problem(group.partitions)
        if problem is not None:
            problems.append(f"groups[{i}].partitions: {problem} (got {list(group.partitions)})")
    if not eks and groups and [g.slurm_node_type for g in groups].count("Controller") != 1:
        problems.append("groups: a Slurm cluster has exactly one group of slurm_node_type Controller")
    reserved = sorted(_RESERVED_SETTINGS & set(settings))
    if reserved:
        problems.append(f"settings: {', '.join(reserved)} would change how the lifecycle script runs; use other names")
    if settings.get("CLUSTER_USERS") and not file_system:
        problems.append("settings: CLUSTER_USERS need the file system for their homes; give file_system")
    return problems


def _script(name: str) -> str:
    return files("training_cluster.hyperpod").joinpath(name).read_text(encoding="utf-8")


class HyperPodLedger(Construct):
    """What HyperPod does to its nodes, in a repair ledger (the layout of :class:`AutoRepair`'s),
    so that ``training-cluster incidents`` tells HyperPod's repairs as it tells ours.

    A function (``lambda/repair``'s ``handler.hyperpod``) gets HyperPod's node health, cluster
    state and cluster events of this cluster only (EventBridge refuses ``aws.`` sources from
    anyone but AWS), and every five minutes lists HyperPod's nodes to close the incidents of the
    ones it replaced. It acts on no node: its role may write the ledger, publish to the topic and
    read this cluster's nodes from SageMaker, nothing else.
    """

    def __init__(self, scope: Construct, construct_id: str, *, cluster: HyperPodCluster, topic: sns.ITopic) -> None:
        super().__init__(scope, construct_id)
        self.cluster = cluster
        self.table = ledger_table(self, "Ledger")
        self.function = python_function(
            self,
            "Function",
            code="repair",
            handler="handler.hyperpod",
            modules=SHIPPED_MODULES,
            role_id="Role",
            logs_id="Logs",
            log_retention=logs.RetentionDays.THREE_MONTHS,
            timeout=Duration.minutes(2),
            memory_size=256,
            reserved_concurrent_executions=1,  # one writer: an incident opens once
            max_event_age=Duration.hours(1),
            environment={
                "CLUSTER_NAME": cluster.cluster_name,
                "LEDGER_TABLE": self.table.table_name,
                "TOPIC_ARN": topic.topic_arn,
            },
            description=f"HyperPod's repairs of cluster {cluster.cluster_name}, into the ledger",
        )
        role = self.function.role
        assert role is not None
        self.table.grant(  # reads and writes items; deletes none
            role, "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query", "dynamodb:Scan"
        )
        topic.grant_publish(role)
        acknowledge(
            role,
            "IAM5[Action::kms:GenerateDataKey*]",
            "SNS needs data keys of the events topic's own key to publish; the grant names that key only",
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="ReadTheClustersNodes",
                actions=["sagemaker:DescribeClusterNode", "sagemaker:ListClusterNodes"],
                resources=[cluster.cluster_arn],
            )
        )
        target = targets.LambdaFunction(self.function, retry_attempts=4, max_event_age=Duration.hours(1))
        # by the cluster's name, as every event carries it (AWS's examples show an ARN of the name in
        # ``resources``, the resource's attribute one of an id: the name is the field both agree on)
        events.Rule(
            self,
            "HyperPodEvents",
            event_pattern=events.EventPattern(
                source=[HYPERPOD_EVENTS.source],
                detail_type=[HYPERPOD_EVENTS.node_health, HYPERPOD_EVENTS.state_change],
                detail={"ClusterName": [cluster.cluster_name]},
            ),
            targets=[target],
        )
        events.Rule(
            self,
            "HyperPodClusterEvents",
            event_pattern=events.EventPattern(
                source=[HYPERPOD_EVENTS.source],
                detail_type=[HYPERPOD_EVENTS.cluster_event],
                detail={"EventDetails": {"ClusterName": [cluster.cluster_name]}},
            ),
            targets=[target],
        )
        events.Rule(
            self,
            "Sweep",
            schedule=events.Schedule.rate(Duration.minutes(5)),
            targets=[targets.LambdaFunction(self.function, retry_attempts=2)],
        )

    def metric_incidents(self, group_name: str, *, period: Duration | None = None) -> cloudwatch.Metric:
        """Nodes of a group HyperPod found unhealthy (incidents the ledger opened; the sum over 5
        minutes by default), as :meth:`AutoRepair.metric_incidents` counts ours."""
        groups = [g.name for g in self.cluster.groups]
        if group_name not in groups:
            raise ValueError(
                f"group_name must be one of the cluster's groups: {', '.join(groups)} (got {group_name!r})"
            )
        return cloudwatch.Metric(
            namespace=REPAIR_NAMESPACE,
            metric_name="Incidents",
            dimensions_map={DIMENSION_CLUSTER: self.cluster.cluster_name, DIMENSION_GROUP: group_name},
            statistic="Sum",
            period=period or Duration.minutes(5),
            label=group_name,
        )
