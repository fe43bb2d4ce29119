"""An Amazon EKS cluster whose nodes are the cluster's fleets."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from aws_cdk import CfnCondition, CfnElement, RemovalPolicy, Stack, Tags, Token
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_eks as eks_cfn
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk.lambda_layer_kubectl_v35 import KubectlV35Layer
from constructs import Construct

from .. import eks_node, kube_access, kube_manifests, kube_operator
from .._nag import acknowledge
from ..errors import Finding, show
from ..rules.eks import (
    CNI_WARM_ADDRESSES,
    DEFAULT_KUBERNETES_VERSION,
    DEFAULT_POD_ADDRESSES,
    DEFAULT_SERVICE_CIDR,
    SYSTEM_GROUP,
    EksFleet,
    eks_findings,
    image_parameter,
    taint_problem,
)
from ._ids import pascal
from ._props import SynthesisCheck, check_props
from .fleet import Fleet
from .lustre import LustreFileSystem

CONTROL_PLANE_LOGS = (eks.ClusterLoggingTypes.API, eks.ClusterLoggingTypes.AUDIT, eks.ClusterLoggingTypes.AUTHENTICATOR)
LOG_RETENTION = logs.RetentionDays.THREE_MONTHS
NODE_POLICIES = ("AmazonEKSWorkerNodePolicy", "AmazonEC2ContainerRegistryPullOnly")
"""What kubelet needs of AWS on a node. The VPC CNI's permissions go to its own service account
through Pod Identity, not to the node."""
ADDONS = ("vpc-cni", "kube-proxy", "coredns", "eks-pod-identity-agent")


def cni_configuration(pod_addresses: int) -> dict[str, Any]:
    """The ``vpc-cni`` add-on's configuration: ``pod_addresses`` addresses on each node, two more
    ready, instead of a whole spare interface's (the CNI's default, ``WARM_ENI_TARGET=1``)."""
    return {"env": {"MINIMUM_IP_TARGET": str(pod_addresses), "WARM_IP_TARGET": str(CNI_WARM_ADDRESSES)}}


FSX_CSI_ADDON = "aws-fsx-csi-driver"


@dataclass(frozen=True, kw_only=True)
class EksComponents:
    """The in-cluster components (:mod:`training_cluster.kube_manifests`, each image pinned). Each
    goes only where a joined fleet needs it: the NVIDIA plugin and GPU metrics with a GPU fleet,
    the EFA plugin with an EFA fleet, the Neuron plugin with a Trainium or Inferentia fleet."""

    nvidia_device_plugin: bool = True
    efa_device_plugin: bool = True
    neuron_device_plugin: bool = True
    gpu_metrics: bool = True
    training_operator: bool = True
    """The Kubeflow training operator (``PyTorchJob``), with an accelerator fleet."""


FILE_SYSTEM_PLACEHOLDERS = {
    "file_system_id": "${FILE_SYSTEM_ID}",
    "dns_name": "${FILE_SYSTEM_DNS_NAME}",
    "mount_name": "${FILE_SYSTEM_MOUNT_NAME}",
}
"""What handed-over manifests carry where the file system's values are known only after deploy
(the stack's outputs ``FileSystemId``, ``FileSystemDnsName`` and ``FileSystemMountName``)."""


@dataclass(frozen=True, kw_only=True)
class EksOptions:
    """How the EKS cluster is set up. The defaults are a private endpoint and no admins but the
    roles you list."""

    version: str = DEFAULT_KUBERNETES_VERSION
    """A Kubernetes version in EKS standard support (``training_cluster.rules.eks.KUBERNETES_VERSIONS``)."""
    endpoint_public_cidrs: Sequence[str] = ()
    """Ranges that may reach the API endpoint from the internet; empty: private endpoint only."""
    admin_role_arns: Sequence[str] = ()
    """IAM roles given cluster-admin through access entries."""
    service_ipv4_cidr: str = DEFAULT_SERVICE_CIDR
    log_retention: logs.RetentionDays = LOG_RETENTION
    kubectl: bool = True
    """Give the cluster a kubectl provider (a Lambda function in the VPC) so manifests can be
    applied on deploy; ``False`` for a cluster whose in-cluster components you apply yourself."""
    taints: dict[str, Sequence[str]] = field(default_factory=dict)
    """Instance group name -> taints its nodes register with (``key[=value]:Effect``)."""
    pod_addresses_per_node: int = DEFAULT_POD_ADDRESSES
    """Subnet addresses the VPC CNI keeps on each node for its pods (``MINIMUM_IP_TARGET``, with
    ``WARM_IP_TARGET`` 2 more ready): training nodes run few pods, and the CNI's default (a whole
    spare interface of addresses, 50 on a p5) would take a /17 at 600 nodes."""


class EksCluster(Construct):
    """An Amazon EKS cluster (native ``AWS::EKS::Cluster``) in the cluster's VPC, whose data plane
    is self-managed fleets: every EFA card, placement group, reservation or Capacity Block and the
    cluster's own repair apply unchanged (managed node groups would bring a repair and a rolling
    replacement of their own).

    Access entries only (no aws-auth ConfigMap); secrets encrypted with a customer-managed key;
    control-plane logs (api, audit, authenticator) kept three months; the service CIDR set
    explicitly so nodes can be told it; Auto Mode off and no default capacity. The EKS add-ons
    ``vpc-cni`` (its AWS permissions through Pod Identity), ``kube-proxy``, ``coredns`` and
    ``eks-pod-identity-agent`` are ``AWS::EKS::Addon`` resources, and so is the FSx CSI driver
    when :meth:`add_file_system` is called.

    Fleets join with :meth:`add_fleet`: an ``EC2_LINUX`` access entry for the node role, the node
    role's EKS policies, the cluster security group on each node's primary interface, the
    ``kubernetes.io/cluster/<name>`` tag and a nodeadm ``NodeConfig`` in the user data, with
    labels and taints.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster_name: str,
        vpc: ec2.IVpc,
        control_plane_subnets: Sequence[ec2.ISubnet],
        kubectl_subnets: Sequence[ec2.ISubnet] = (),
        options: EksOptions = EksOptions(),
    ) -> None:
        """
        :param cluster_name: the EKS cluster's name, and the name its fleets carry.
        :param control_plane_subnets: two or more subnets in different zones, where EKS puts the
            control plane's network interfaces.
        :param kubectl_subnets: private subnets with a route out (NAT) where the kubectl
            provider's functions run (``options.kubectl``): they reach the private endpoint from
            the VPC, and EKS, Lambda, STS and CloudFormation's S3 response URLs through the route.
            aws-cdk-lib would otherwise put them in the control-plane subnets, which may have no
            route out at all.
        """
        super().__init__(scope, construct_id)
        check_props(
            self,
            eks_findings(
                version=options.version,
                endpoint_public_cidrs=options.endpoint_public_cidrs,
                admin_role_arns=options.admin_role_arns,
                service_ipv4_cidr=options.service_ipv4_cidr,
            )
            + [
                Finding(path=f"taints.{group}[{i}]", message=f"{problem} (got {show(taint)})")
                for group, taints in options.taints.items()
                for i, taint in enumerate(taints)
                if (problem := taint_problem(taint)) is not None
            ],
            values={"version": options.version, "service_ipv4_cidr": options.service_ipv4_cidr},
        )
        zones = _zones(control_plane_subnets)
        if len(control_plane_subnets) < 2 or (zones is not None and len(zones) < 2):
            raise ValueError("control_plane_subnets: EKS needs subnets in two or more availability zones")
        self.cluster_name = cluster_name
        self.options = options
        self.version = options.version
        self.service_ipv4_cidr = options.service_ipv4_cidr
        self._fleets: list[Fleet] = []
        self._node_roles: dict[str, eks.AccessEntry] = {}
        self._after_nodes: list[Construct] = []
        self.claim_name: str | None = None
        """The file system's claim in namespace ``training``, once :meth:`add_components` made it."""
        self.manifests: dict[str, list[kube_manifests.Manifest]] = {}
        """What the cluster runs besides its add-ons, by component, in the order to apply them:
        applied on deploy when the cluster has a kubectl provider, otherwise handed over."""
        self._install = options.kubectl
        self._repair_entry: eks_cfn.CfnAccessEntry | None = None
        self._components_added = False
        self.node.add_validation(SynthesisCheck(self._unjoined_taints))
        self.node.add_validation(SynthesisCheck(self._unlabelled_components))

        self.secrets_key = kms.Key(
            self,
            "SecretsKey",
            description=f"Kubernetes secrets of EKS cluster {cluster_name}",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.log_group = logs.LogGroup(
            self,
            "ControlPlaneLogs",
            log_group_name=f"/aws/eks/{cluster_name}/cluster",  # the group EKS writes to: made first, with retention
            retention=options.log_retention,
            removal_policy=RemovalPolicy.RETAIN,
        )
        endpoint = (
            eks.EndpointAccess.PUBLIC_AND_PRIVATE.only_from(*options.endpoint_public_cidrs)
            if options.endpoint_public_cidrs
            else eks.EndpointAccess.PRIVATE
        )
        kubectl = None
        if options.kubectl:
            if not kubectl_subnets:
                raise ValueError(
                    "kubectl_subnets: the kubectl provider (options.kubectl) needs private subnets with a route out "
                    "(NAT) to reach AWS's APIs; give them, or EksOptions(kubectl=False)"
                )
            kubectl = eks.KubectlProviderOptions(
                kubectl_layer=KubectlV35Layer(self, "KubectlLayer"),
                private_subnets=list(kubectl_subnets),
            )
        self.cluster = eks.Cluster(
            self,
            "Cluster",
            cluster_name=cluster_name,
            version=eks.KubernetesVersion.of(options.version),
            vpc=vpc,
            vpc_subnets=[ec2.SubnetSelection(subnets=list(control_plane_subnets))],
            endpoint_access=endpoint,
            secrets_encryption_key=self.secrets_key,
            cluster_logging=list(CONTROL_PLANE_LOGS),
            service_ipv4_cidr=options.service_ipv4_cidr,
            default_capacity_type=eks.DefaultCapacityType.EC2,
            default_capacity=0,
            bootstrap_self_managed_addons=False,
            bootstrap_cluster_creator_admin_permissions=False,
            output_config_command=False,
            kubectl_provider_options=kubectl,
        )
        self.cluster.node.add_dependency(self.log_group)
        self._acknowledge_cdk_parts()
        if self.cluster.kubectl_provider is not None:
            # aws-cdk-lib 2.275 places the provider in the cluster's own subnets whenever the
            # endpoint is private, whatever private_subnets says: put its functions where there is a route.
            subnet_ids = [subnet.subnet_id for subnet in kubectl_subnets]
            for child in self.cluster.kubectl_provider.node.find_all():
                if isinstance(child, lambda_.CfnFunction):
                    child.add_property_override("VpcConfig.SubnetIds", subnet_ids)
        for arn in options.admin_role_arns:
            eks.AccessEntry(
                self,
                # by the ARN, not its place in the list: reordering the list must not move an entry
                # to another principal (CloudFormation would create the new one before deleting the old)
                f"Admin{hashlib.sha256(arn.encode()).hexdigest()[:12]}",
                cluster=cast(eks.ICluster, self.cluster),  # jsii's stubs miss that Cluster is one
                principal=arn,
                access_policies=[
                    eks.AccessPolicy.from_access_policy_name(
                        "AmazonEKSClusterAdminPolicy", access_scope_type=eks.AccessScopeType.CLUSTER
                    )
                ],
            )
        self.cni_role = self._pod_role("CniRole", "the Amazon VPC CNI (aws-node)", ["AmazonEKS_CNI_Policy"])
        self.addons: dict[str, eks_cfn.CfnAddon] = {}
        for name in ADDONS:
            identities = None
            if name == "vpc-cni":
                identities = [
                    eks_cfn.CfnAddon.PodIdentityAssociationProperty(
                        service_account="aws-node", role_arn=self.cni_role.role_arn
                    )
                ]
            configuration = cni_configuration(options.pod_addresses_per_node) if name == "vpc-cni" else None
            self._addon(name, identities, configuration)
        self._after_nodes.append(self.addons["coredns"])  # its pods need nodes to become ACTIVE

    def _acknowledge_cdk_parts(self) -> None:
        """What aws-cdk-lib's EKS cluster brings: the service role and the kubectl provider."""
        acknowledge(
            self.cluster.role,
            "IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/AmazonEKSClusterPolicy]",
            "the EKS service needs exactly what AWS keeps current in AmazonEKSClusterPolicy to run the control plane",
        )
        provider = self.cluster.kubectl_provider
        if provider is None:
            return
        lambda_policies = (
            "service-role/AWSLambdaBasicExecutionRole",
            "service-role/AWSLambdaVPCAccessExecutionRole",
            "AmazonEC2ContainerRegistryReadOnly",
        )
        for policy in lambda_policies:
            acknowledge(
                provider,
                f"IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/{policy}]",
                "aws-cdk-lib's kubectl provider functions run in the VPC with the Lambda managed policies for logs, "
                "network interfaces and image pulls; they apply the cluster's manifests on deploy",
            )
        stack = Stack.of(self)
        handler = provider.node.find_child("Handler").node.default_child
        assert isinstance(handler, CfnElement)
        conditions = [c for c in provider.node.find_all() if isinstance(c, CfnCondition)]
        assert len(conditions) == 1, [c.node.path for c in conditions]
        acknowledge(
            provider,
            "IAM4[Policy::"
            f'{{"Fn::If":["{stack.get_logical_id(conditions[0])}",{{"Fn::Join":["",["arn:",{{"Ref":'
            '"AWS::Partition"},":iam::aws:policy/AmazonElasticContainerRegistryPublicReadOnly"]]},{"Ref":'
            '"AWS::NoValue"}]}]',
            "aws-cdk-lib's kubectl provider pulls public ECR images only in regions that have ECR Public, through "
            "its managed read-only policy",
        )
        acknowledge(
            provider,
            "L1",
            "aws-cdk-lib chooses the kubectl provider's runtime to match the kubectl layer it ships with",
        )
        acknowledge(
            provider,
            f"IAM5[Resource::<{stack.get_logical_id(handler)}.Arn>:*]",
            "the provider framework invokes any version of the kubectl handler function, which it creates itself",
        )

    def _unlabelled_components(self) -> list[str]:
        """The Neuron device plugin and the training operator select labels only the repair control
        plane writes (``node-restriction.kubernetes.io/...``), and the operator the system group."""
        selective = [name for name in ("neuron-device-plugin", "training-operator") if name in self.manifests]
        problems = []
        if selective and self._repair_entry is None:
            problems.append(
                f"add_components: {' and '.join(selective)} select node labels that only the repair control plane "
                "writes (a node cannot set them itself): give it access with AutoRepair.use_kubernetes(cluster), or "
                "leave them out (EksComponents)"
            )
        if "training-operator" in self.manifests and SYSTEM_GROUP not in {f.group_name for f in self._fleets}:
            problems.append(
                f"add_components: the training operator runs on the system group, and no fleet named {SYSTEM_GROUP!r} "
                "joined the cluster: join one (CPU nodes), or EksComponents(training_operator=False)"
            )
        return problems

    def _unjoined_taints(self) -> list[str]:
        joined = {fleet.group_name for fleet in self._fleets}
        return [
            f"options.taints: no fleet of group {group!r} joined the cluster (add_fleet); joined: "
            f"{', '.join(sorted(joined)) or 'none'}"
            for group in self.options.taints
            if group not in joined
        ]

    @property
    def cluster_security_group(self) -> ec2.ISecurityGroup:
        """The group EKS makes for the control plane and nodes to talk (all traffic among members)."""
        return self.cluster.cluster_security_group

    @property
    def update_kubeconfig_command(self) -> str:
        return f"aws eks update-kubeconfig --name {self.cluster_name} --region {Stack.of(self).region}"

    def machine_image(self, instance_type: str) -> ec2.IMachineImage:
        """The EKS-optimized AL2023 image for ``instance_type`` and the cluster's version: NVIDIA on
        GPU types, Neuron on Trainium and Inferentia, standard otherwise (resolved at deploy time)."""
        return ec2.MachineImage.from_ssm_parameter(image_parameter(self.version, instance_type))

    def add_fleet(self, fleet: Fleet, *, taints: Sequence[str] = (), schedulable_at_boot: bool = True) -> None:
        """Join ``fleet``'s nodes to the cluster (see the class). ``taints``: what the nodes
        register with, besides the health taint; ``schedulable_at_boot=False`` registers them
        ``Unschedulable`` and tainted until the control plane verifies their first-boot deep checks."""
        group_taints = list(taints) or list(self.options.taints.get(fleet.group_name, ()))
        findings = eks_findings(
            version=self.version,
            fleets=[EksFleet(group_name=fleet.group_name, os=fleet.os)],
            taints={fleet.group_name: group_taints} if group_taints else None,
        )
        # only what is about the fleet: the cluster's own props were checked when it was made
        about_fleet = [f for f in findings if f.path.startswith(("fleets", "taints"))]
        check_props(self, about_fleet, values={"fleets[0].group_name": fleet.group_name})
        if fleet.cluster_name != self.cluster_name:
            raise ValueError(
                f"add_fleet: fleet {fleet.node.path!r} belongs to cluster {fleet.cluster_name!r}, "
                f"not {self.cluster_name!r}"
            )
        if fleet in self._fleets:
            raise ValueError(f"add_fleet: fleet {fleet.node.path!r} is joined already")
        if fleet.orchestrator is not None:
            raise ValueError(f"add_fleet: fleet {fleet.node.path!r} has joined {fleet.orchestrator} already")
        if Stack.of(fleet) is not Stack.of(self):
            raise ValueError(
                f"add_fleet: fleet {fleet.node.path!r} is in another stack; the cluster and its nodes refer to each "
                "other (the node configuration, the access entries), so they must be in one stack"
            )
        if fleet.default_image:
            raise ValueError(
                f"add_fleet: fleet {fleet.node.path!r} runs its default image, which has no nodeadm and never "
                "joins; build it with machine_image=cluster.machine_image(instance_type) (the EKS-optimized AL2023 "
                "image of the cluster's version) or an image of your own built from it"
            )
        if self._components_added:
            raise ValueError(
                "add_fleet: add_components has run already and chose the components by the fleets joined then; join "
                "every fleet first"
            )
        fleet.orchestrator = f"EKS cluster {self.node.path!r}"
        self._fleets.append(fleet)
        role = fleet.role
        for policy in NODE_POLICIES:
            role.add_managed_policy(iam.ManagedPolicy.from_aws_managed_policy_name(policy))
            acknowledge(
                role,
                f"IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/{policy}]",
                "kubelet needs exactly what AWS keeps current in the EKS node policies: describe its own instance "
                "and pull images; the VPC CNI's network permissions go to its pods through Pod Identity",
            )
        if role.role_arn not in self._node_roles:  # fleets may share a role
            self._node_roles[role.role_arn] = eks.AccessEntry(
                self,
                # by the group, not the order of joining: see the admins' entries
                "Nodes" + pascal(fleet.group_name),
                cluster=cast(eks.ICluster, self.cluster),  # jsii's stubs miss that Cluster is one
                principal=role.role_arn,
                access_entry_type=eks.AccessEntryType.EC2_LINUX,
                access_policies=[],
            )
        fleet.add_primary_security_group(self.cluster_security_group)
        Tags.of(fleet).add(f"kubernetes.io/cluster/{self.cluster_name}", "owned")
        info = fleet.instance_type
        labels = eks_node.node_labels(
            cluster_name=self.cluster_name,
            group_name=fleet.group_name,
            instance_type=info.name,
            accelerator=info.accelerator,
            efa=fleet.efa_enabled,
            schedulable=schedulable_at_boot,
        )
        config = eks_node.node_config(
            cluster_name=self.cluster_name,
            api_server_endpoint=self.cluster.cluster_endpoint,
            certificate_authority=self.cluster.cluster_certificate_authority_data,
            service_cidr=self.service_ipv4_cidr,
            labels=labels,
            taints=eks_node.node_taints(group_taints, schedulable=schedulable_at_boot),
        )
        fleet.bootstrap.add_part(eks_node.CONTENT_TYPE, eks_node.render(config))
        # The EKS images run containerd, not Docker: GPU metrics come from the cluster's DCGM
        # exporter DaemonSet on the host network, which each node's collector scrapes as before.
        fleet.bootstrap.set("GPU_EXPORTER", "kubernetes")
        # Nodes launched before the entry exists cannot join; add-ons whose pods need nodes wait for the groups.
        fleet.auto_scaling_group.node.add_dependency(self._node_roles[role.role_arn])
        for construct in self._after_nodes:
            construct.node.add_dependency(fleet.auto_scaling_group)

    def add_node_source(self, source: Construct) -> None:
        """Nodes this construct does not join itself (a HyperPod cluster's): the add-ons whose pods
        need nodes wait for ``source``, and ``source`` waits for the others (networking, kube-proxy,
        Pod Identity), which its nodes need from their first boot."""
        waiting = {id(construct) for construct in self._after_nodes}
        for addon in self.addons.values():
            if id(addon) in waiting:
                addon.node.add_dependency(source)
            else:
                source.node.add_dependency(addon)

    def add_file_system_driver(self) -> eks_cfn.CfnAddon:
        """The FSx CSI driver add-on. Static volumes need no AWS access of the driver (the file
        system exists; nodes mount it), so it has no Pod Identity role."""
        if FSX_CSI_ADDON not in self.addons:
            addon = self._addon(FSX_CSI_ADDON, None)
            self._after_nodes.append(addon)
            for fleet in self._fleets:
                addon.node.add_dependency(fleet.auto_scaling_group)
        return self.addons[FSX_CSI_ADDON]

    @property
    def fleets(self) -> list[Fleet]:
        return list(self._fleets)

    def allow_api_from(self, peer: ec2.IConnectable) -> None:
        """Let ``peer`` (a function in the VPC) reach the Kubernetes API endpoint (HTTPS)."""
        self.cluster.connections.allow_default_port_from(peer, "Kubernetes API from the cluster's control plane")

    def grant_repair(self, role: iam.IRole) -> None:
        """The repair control plane's access: an access entry mapping ``role`` to the Kubernetes
        group :data:`~training_cluster.kube_access.REPAIR_GROUP`, bound to a ClusterRole with
        exactly the verbs the control plane's client uses
        (:data:`~training_cluster.kube_access.REPAIR_RULES`); no access policy, so nothing more."""
        if self._repair_entry is not None:
            raise ValueError("grant_repair: the cluster has a repair role already")
        self._repair_entry = eks_cfn.CfnAccessEntry(
            self,
            "RepairAccess",
            cluster_name=self.cluster.cluster_name,
            principal_arn=role.role_arn,
            type="STANDARD",
            kubernetes_groups=[kube_access.REPAIR_GROUP],
        )
        name = "training-cluster-repair"
        objects = [
            kube_access.cluster_role(name),
            kube_access.cluster_role_binding(name, name, kube_access.REPAIR_GROUP),
        ]
        self._apply("repair-access", objects)

    def _apply(self, name: str, objects: list[kube_manifests.Manifest]) -> Construct | None:
        """Keep ``objects`` under ``name`` (:attr:`manifests`) and apply them through the kubectl
        provider when the cluster installs its components."""
        self.manifests[name] = objects
        if not self._install:
            return None
        return self.cluster.add_manifest(pascal(name), *objects)

    def add_components(
        self,
        components: EksComponents = EksComponents(),
        *,
        file_system: LustreFileSystem | None = None,
        claim_name: str = "fsx",
    ) -> dict[str, list[kube_manifests.Manifest]]:
        """The in-cluster components the joined fleets need, and the file system's static volume
        and claim (``<claim_name>-claim`` in namespace ``training``, which enforces Pod Security's
        ``baseline``: :func:`~training_cluster.kube_manifests.training_namespace`) with the FSx CSI
        driver add-on. Call after
        :meth:`add_fleet`. Returns :attr:`manifests`; each is applied through the cluster's kubectl
        provider when it has one (``EksOptions.kubectl``). Manifests not applied carry
        ``${FILE_SYSTEM_ID}``-style placeholders (:data:`FILE_SYSTEM_PLACEHOLDERS`) for what only
        the deployed stack knows."""
        if self._components_added:
            raise ValueError("add_components: called already; call it once, after every add_fleet")
        self._components_added = True
        install = self._install
        accelerators = {fleet.instance_type.accelerator for fleet in self._fleets}
        efa = any(fleet.efa_enabled for fleet in self._fleets)
        wanted: dict[str, Callable[[], list[kube_manifests.Manifest]]] = {}
        if components.nvidia_device_plugin and "nvidia" in accelerators:
            wanted["nvidia-device-plugin"] = kube_manifests.nvidia_device_plugin
        if components.gpu_metrics and "nvidia" in accelerators:
            wanted["dcgm-exporter"] = kube_manifests.dcgm_exporter
        if components.efa_device_plugin and efa:
            region = Stack.of(self).region
            wanted["efa-device-plugin"] = lambda: kube_manifests.efa_device_plugin(region)
        if components.neuron_device_plugin and "neuron" in accelerators:
            wanted["neuron-device-plugin"] = kube_manifests.neuron_device_plugin
        if components.training_operator and accelerators - {"none"}:
            wanted["training-operator"] = kube_operator.training_operator
        wanted["training-namespace"] = kube_manifests.training_namespace
        if file_system is not None:
            driver = self.add_file_system_driver()
            values = (
                {
                    "file_system_id": file_system.file_system_id,
                    "dns_name": file_system.dns_name,
                    "mount_name": file_system.mount_name,
                }
                if install
                else FILE_SYSTEM_PLACEHOLDERS
            )
            capacity = file_system.storage_capacity_gib
            wanted["fsx-volume"] = lambda: kube_manifests.fsx_volume(**values, capacity_gib=capacity, name=claim_name)
            self.claim_name = f"{claim_name}-claim"
        for name, make in wanted.items():
            applied = self._apply(name, make())
            if applied is not None and name == "fsx-volume":
                applied.node.add_dependency(driver)
        return self.manifests

    def _addon(
        self,
        name: str,
        identities: list[eks_cfn.CfnAddon.PodIdentityAssociationProperty] | None,
        configuration: dict[str, Any] | None = None,
    ) -> eks_cfn.CfnAddon:
        addon = eks_cfn.CfnAddon(
            self,
            pascal(name) + "Addon",
            addon_name=name,
            cluster_name=self.cluster.cluster_name,
            resolve_conflicts="OVERWRITE",
            pod_identity_associations=identities,
            configuration_values=json.dumps(configuration, sort_keys=True) if configuration else None,
        )
        self.addons[name] = addon
        return addon

    def _pod_role(self, construct_id: str, what: str, policies: list[str]) -> iam.Role:
        """A role pods of one service account assume through the EKS Pod Identity agent."""
        role = iam.Role(
            self,
            construct_id,
            assumed_by=iam.SessionTagsPrincipal(iam.ServicePrincipal("pods.eks.amazonaws.com")),
            description=f"Pod Identity: {what} in EKS cluster {self.cluster_name}",
            managed_policies=[iam.ManagedPolicy.from_aws_managed_policy_name(p) for p in policies],
        )
        for policy in policies:
            acknowledge(
                role,
                f"IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/{policy}]",
                f"{what} needs what AWS keeps current in {policy}, and only its service account can assume the role",
            )
        return role


def _zones(subnets: Sequence[ec2.ISubnet]) -> set[str] | None:
    """The subnets' zones, or ``None`` where one is not known: a subnet imported by id alone has
    none to ask for (asking raises, and leaves an error file in the cloud assembly)."""
    zones = set()
    for subnet in subnets:
        if not isinstance(subnet, ec2.Subnet) or Token.is_unresolved(subnet.availability_zone):
            return None
        zones.add(subnet.availability_zone)
    return zones


__all__ = ["EksCluster", "EksComponents", "EksOptions"]
