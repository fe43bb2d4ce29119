"""The whole cluster as one stack, composed from a :class:`ClusterConfig`."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from aws_cdk import Acknowledgment, Annotations, CfnElement, CfnOutput, RemovalPolicy, Stack, Tags, Validations
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from .. import catalog, contract
from ..config import ClusterConfig, InstanceGroupConfig
from ..constructs._ids import pascal
from ..constructs.auto_repair import AutoRepair, AutoRepairOptions
from ..constructs.eks import EksCluster, EksComponents, EksOptions
from ..constructs.events import ClusterEvents
from ..constructs.fleet import Fleet, FleetCapacity
from ..constructs.hyperpod import HyperPodCluster, HyperPodGroup, HyperPodLedger
from ..constructs.lustre import LustreFileSystem
from ..constructs.network import ClusterNetwork
from ..constructs.observability import Observability, ObservabilityOptions
from ..constructs.slurm import Slurm, SlurmAccountingDatabase, SlurmOptions
from ..errors import Finding
from ..node_bootstrap import NodeBootstrap
from ..rules.eks import SYSTEM_GROUP
from ..types import EKS_OS, SLURM_OS


def _own_subnet(subnet: ec2.ISubnet) -> None:
    """A subnet of the user's VPC, imported by id: the CDK warns that its route table is unknown."""
    Validations.of(subnet).acknowledge(
        Acknowledgment(
            id="Annotation::@aws-cdk/aws-ec2:noSubnetRouteTableId",
            reason="the cluster adds no routes to your subnet and never reads its route table",
        )
    )


_CONSTRUCT_WARNING = re.compile(r"[\w.\[\]]+: (?P<message>.*) \[ack: (?P<id>training-cluster:[^\]]+)\]", re.S)
"""A warning a construct adds from its rules (:func:`~training_cluster.constructs._props.check_props`)."""


class TrainingClusterStack(Stack):
    """A training cluster: network, file system and one fleet per instance group.

    ``env`` defaults to the config's region (the account stays the one you deploy with). The
    config's warnings become CDK warnings on the stack.
    """

    def __init__(self, scope: Construct, construct_id: str, *, config: ClusterConfig, **stack_kwargs: Any) -> None:
        stack_kwargs.setdefault("env", {"region": config.region})
        stack_kwargs.setdefault("description", f"Training cluster {config.name} (cdk-training-cluster)")
        super().__init__(scope, construct_id, **stack_kwargs)
        self.config = config
        Tags.of(self).add(contract.TAG_CLUSTER, config.name)
        warnings = config.warnings()
        for finding in warnings:
            rule = finding.path.replace("[", ".").replace("]", "")
            Annotations.of(self).add_warning_v2(f"training-cluster:{rule}", str(finding))

        self.network = self._network()
        self.events = ClusterEvents(self, "Events", cluster_name=config.name)
        # The key keeps the logical id it had as the stack's child "EventsKey" (a new id would
        # replace it); the topic, its policy and subscriptions keep theirs by themselves.
        key = self.events.key.node.default_child
        assert isinstance(key, CfnElement)
        key.override_logical_id("EventsKeyB314AFD5")
        self.events_key, self.events_topic = self.events.key, self.events.topic
        self._subscribe()
        self.file_system: LustreFileSystem | None = None
        lustre = config.storage.lustre
        if lustre is not None:
            self.file_system = LustreFileSystem(
                self,
                "Lustre",
                vpc=self.network.vpc,
                subnet=self.network.compute_subnet,
                storage_capacity_gib=lustre.storage_capacity_gib,
                deployment_type=lustre.deployment_type,
                throughput_mbps_per_tib=lustre.throughput,
                compression=lustre.compression,
                metadata_iops=lustre.metadata_iops,
                kms_key=kms.Key.from_key_arn(self, "LustreKey", lustre.kms_key_arn) if lustre.kms_key_arn else None,
                s3_import_path=lustre.s3_import_path,
                mount_path=lustre.mount_path,
                removal_policy=RemovalPolicy.RETAIN if lustre.retain_on_delete else RemovalPolicy.DESTROY,
            )
            self.file_system.allow_clients(self.network)

        self.eks = self._eks_cluster()
        self.hyperpod: HyperPodCluster | None = None
        self.compute_fleets: dict[str, Fleet] = {}
        self.fleets: dict[str, Fleet] = {}
        """Every fleet: the instance groups, Slurm's controller and login groups, and EKS's system
        group (none with ``backend: hyperpod``, whose nodes are HyperPod's)."""
        if config.backend == "hyperpod":
            self.hyperpod = self._hyperpod()
        else:
            self.compute_fleets = {group.name: self._fleet(group) for group in config.instance_groups}
            self.fleets = {**self.compute_fleets, **self._slurm_fleets(), **self._eks_fleets()}
            self._join_eks()
        self.auto_repair = self._auto_repair()
        self.hyperpod_ledger: HyperPodLedger | None = None
        if self.hyperpod is not None and config.auto_repair.enabled:  # HyperPod's repairs, recorded
            self.hyperpod_ledger = HyperPodLedger(
                self, "HyperPodLedger", cluster=self.hyperpod, topic=self.events_topic
            )
        if self.auto_repair is not None and self.eks is not None:
            self.auto_repair.use_kubernetes(self.eks)
            self.network.allow_endpoints_from(self.auto_repair.function, "HTTPS from the repair function")
        self.observability = self._observability()
        self.slurm = self._slurm()
        self.dashboard = self._dashboard()
        self._outputs()
        self._acknowledge_repeated_warnings(warnings)

    @property
    def kubernetes_manifests(self) -> dict[str, list[dict[str, Any]]]:
        """EKS: the in-cluster components, by name (applied on deploy, or handed over); none without EKS."""
        return self.eks.manifests if self.eks is not None else {}

    def _acknowledge_repeated_warnings(self, reported: list[Finding]) -> None:
        """A construct warns about its own props too (``<prop>: <message>``): where the stack has
        already given that message with the config field's path, the construct's copy is
        acknowledged, so each warning shows once, where the user can find the field. Only the
        constructs this stack made from the config check props (a walk of the whole tree costs
        a second of jsii calls)."""
        messages = {finding.message for finding in reported}
        if not messages:
            return
        pieces = [
            self.network,
            self.events,
            self.file_system,
            *self.fleets.values(),
            self.auto_repair,
            self.slurm,
            self.eks,
        ]
        for construct in [*pieces, self.observability]:
            if construct is None:
                continue
            for entry in construct.node.metadata:
                found = _CONSTRUCT_WARNING.fullmatch(str(entry.data)) if entry.type == "aws:cdk:warning" else None
                if found is not None and found["message"] in messages:
                    Annotations.of(construct).acknowledge_warning(found["id"], "reported on the stack, by config path")

    def _network(self) -> ClusterNetwork:
        net = self.config.network
        az = self.config.availability_zone
        if not net.uses_existing_vpc:
            return ClusterNetwork(
                self,
                "Network",
                availability_zone=az,
                vpc_cidr=net.vpc_cidr,
                compute_subnet_prefix_length=net.compute_subnet_prefix_length,
                interface_endpoints=net.interface_endpoints,
                flow_logs=net.flow_logs,
            )
        assert net.vpc_id is not None and net.subnet_id is not None
        subnet = ec2.Subnet.from_subnet_attributes(
            self,
            "ComputeSubnet",
            subnet_id=net.subnet_id,
            availability_zone=az,
            ipv4_cidr_block=net.subnet_cidr,
        )
        _own_subnet(subnet)
        vpc = ec2.Vpc.from_vpc_attributes(self, "Vpc", vpc_id=net.vpc_id, availability_zones=[az])
        return ClusterNetwork(self, "Network", availability_zone=az, vpc=vpc, compute_subnet=subnet)

    def _slurm_fleets(self) -> dict[str, Fleet]:
        """The controller and login groups: CPU nodes, one ENA interface, no placement group."""
        orchestrator = self.config.orchestrator
        if not orchestrator.enabled:
            return {}
        groups = [("controller", orchestrator.controller_instance_type, 1)]
        if orchestrator.login_nodes:
            groups.append(("login", orchestrator.login_instance_type, orchestrator.login_nodes))
        fleets = [
            self._fleet(
                InstanceGroupConfig(
                    name=name,
                    instance_type=instance_type,
                    count=count,
                    efa="off",
                    placement_group=False,
                    os=SLURM_OS,
                    root_volume_gib=100,
                ),
                key_pair_name=orchestrator.ssh_key_name,
            )
            for name, instance_type, count in groups
        ]
        return {fleet.group_name: fleet for fleet in fleets}

    def _eks_cluster(self) -> EksCluster | None:
        orchestrator = self.config.orchestrator
        if not orchestrator.eks:
            return None
        subnets = self._small_subnets(
            "ControlPlaneSubnet", self.config.network.control_plane_subnet_ids, self.network.add_control_plane_subnets
        )
        return EksCluster(
            self,
            "Eks",
            cluster_name=self.config.name,
            vpc=self.network.vpc,
            control_plane_subnets=subnets,
            kubectl_subnets=[self.network.compute_subnet],
            options=EksOptions(
                version=orchestrator.kubernetes_version,
                endpoint_public_cidrs=orchestrator.endpoint_public_cidrs,
                admin_role_arns=orchestrator.admin_role_arns,
                # with HyperPod, its nodes take the taints and it installs its own components
                kubectl=orchestrator.install_components and self.config.backend != "hyperpod",
                taints=dict(orchestrator.taints) if self.config.backend != "hyperpod" else {},
                service_ipv4_cidr=orchestrator.service_cidr,
                pod_addresses_per_node=orchestrator.pod_addresses_per_node,
            ),
        )

    def _hyperpod(self) -> HyperPodCluster:
        """The same groups as HyperPod's: the instance groups, and the orchestrator's own (Slurm's
        controller and login groups, EKS's system group) as CPU groups."""
        config, orchestrator = self.config, self.config.orchestrator
        partitions: dict[str, list[str]] = {}
        for partition, names in (orchestrator.partitions or {}).items():
            for name in names:
                partitions.setdefault(name, []).append(partition)
        groups = [
            HyperPodGroup(
                name=g.name,
                instance_type=g.instance_type,
                count=g.count,
                threads_per_core=g.threads_per_core,
                ebs_volume_gib=g.root_volume_gib,  # the node's disk for containers and caches
                deep_health_checks=g.deep_health_checks,
                training_plan_arn=g.training_plan_arn,
                slurm_node_type="Compute" if orchestrator.enabled else None,
                partitions=partitions.get(g.name, ()),
                taints=orchestrator.taints.get(g.name, ()) if orchestrator.eks else (),
                # what a job selects a group by (HyperPod's own labels say the node's health)
                labels={contract.LABEL_GROUP: g.name} if orchestrator.eks else {},
                image_id=g.image_id if orchestrator.eks else None,
                lifecycle_script=g.lifecycle_script.read_text(encoding="utf-8") if g.lifecycle_script else None,
            )
            for g in config.instance_groups
        ]
        small = 100  # GiB, as the self-managed controller, login and system nodes have
        if orchestrator.enabled:
            groups.append(
                HyperPodGroup(
                    "controller",
                    orchestrator.controller_instance_type,
                    1,
                    ebs_volume_gib=small,
                    slurm_node_type="Controller",
                )
            )
            if orchestrator.login_nodes:
                groups.append(
                    HyperPodGroup(
                        "login",
                        orchestrator.login_instance_type,
                        orchestrator.login_nodes,
                        ebs_volume_gib=small,
                        slurm_node_type="Login",
                    )
                )
        if orchestrator.eks:
            groups.append(
                HyperPodGroup(
                    SYSTEM_GROUP,
                    orchestrator.system_instance_type,
                    orchestrator.system_nodes,
                    ebs_volume_gib=small,
                    labels={contract.LABEL_GROUP: SYSTEM_GROUP},
                )
            )
        settings = {"USERS_CAN_USE_NODE_ROLE": str(orchestrator.users_can_use_node_role).lower()}
        if orchestrator.enabled and orchestrator.users:
            settings["CLUSTER_USERS"] = " ".join(f"{name}:{uid}" for name, uid in orchestrator.users.items())
        return HyperPodCluster(
            self,
            "HyperPod",
            cluster_name=config.name,
            network=self.network,
            groups=groups,
            eks=self.eks,
            file_system=self.file_system,
            settings=settings,
            # auto_repair.dry_run: HyperPod labels faulty nodes and acts on none
            node_recovery=not (config.auto_repair.enabled and config.auto_repair.dry_run),
        )

    def _eks_fleets(self) -> dict[str, Fleet]:
        """EKS's system group: CPU nodes for add-ons and operators, one ENA interface, no placement group."""
        orchestrator = self.config.orchestrator
        if not orchestrator.eks:
            return {}
        group = InstanceGroupConfig(
            name=SYSTEM_GROUP,
            instance_type=orchestrator.system_instance_type,
            count=orchestrator.system_nodes,
            efa="off",
            placement_group=False,
            os=EKS_OS,
            root_volume_gib=100,
        )
        return {SYSTEM_GROUP: self._fleet(group)}

    def _join_eks(self) -> None:
        if self.eks is None:
            return
        deep_checks = self.config.auto_repair.enabled and self.config.auto_repair.deep_checks
        for fleet in self.fleets.values():
            # the first-boot checks run on accelerators and on EFA (a CPU type with EFA included)
            checked = fleet.instance_type.accelerator != "none" or fleet.efa_enabled
            self.eks.add_fleet(fleet, schedulable_at_boot=not (deep_checks and checked))
        # the config's switches are the construct's, by the same names
        components = EksComponents(**self.config.orchestrator.components.model_dump())
        self.eks.add_components(components, file_system=self.file_system)

    def _slurm(self) -> Slurm | None:
        orchestrator = self.config.orchestrator
        if not orchestrator.enabled or self.hyperpod is not None:  # HyperPod runs its own Slurm
            return None
        assert self.file_system is not None  # validation requires one with Slurm
        slurm = Slurm(
            self,
            "Slurm",
            controller=self.fleets["controller"],
            login=self.fleets.get("login"),
            compute=list(self.compute_fleets.values()),
            file_system_mount_path=self.file_system.mount_path,
            accounting_database=self._accounting_database(),
            options=SlurmOptions(
                accounting=orchestrator.accounting != "off",
                partitions=orchestrator.partitions,
                users=orchestrator.users,
                containers=orchestrator.containers,
                users_can_use_node_role=orchestrator.users_can_use_node_role,
            ),
        )
        if self.auto_repair is not None:
            self.auto_repair.set_drain_command(slurm.controller, slurm.drain_command)
        return slurm

    def _small_subnets(
        self, construct_id: str, ids: list[str] | None, make: Callable[[list[str]], list[ec2.ISubnet]]
    ) -> list[ec2.ISubnet]:
        """Subnets in two zones for a database or the EKS control plane: the user's (by id), or
        two made in a new VPC (the cluster's zone and the region's next one)."""
        if ids:
            subnets = [
                ec2.Subnet.from_subnet_id(self, f"{construct_id}{i}", subnet_id)
                for i, subnet_id in enumerate(ids, start=1)
            ]
            for subnet in subnets:
                _own_subnet(subnet)
            return subnets
        az = self.config.availability_zone
        second = next(z for z in catalog.availability_zones(self.config.region) if z != az)
        return make([az, second])

    def _accounting_database(self) -> SlurmAccountingDatabase | None:
        """RDS for slurmdbd with ``accounting: rds``: in two small subnets of a new VPC (the
        cluster's zone and the region's next one), or in the user's database subnets."""
        if self.config.orchestrator.accounting != "rds":
            return None
        subnets = self._small_subnets(
            "DatabaseSubnet", self.config.network.database_subnet_ids, self.network.add_database_subnets
        )
        return SlurmAccountingDatabase(
            self,
            "SlurmAccounting",
            vpc=self.network.vpc,
            subnets=subnets,
            clients=self.network,
            instance_class=self.config.orchestrator.accounting_instance_class,
        )

    def _fleet(self, group: InstanceGroupConfig, *, key_pair_name: str | None = None) -> Fleet:
        bootstrap = NodeBootstrap()
        if self.file_system is not None:
            self.file_system.mount_on(bootstrap)
        capacity = group.capacity
        return Fleet(
            self,
            f"{pascal(group.name)}Fleet",
            cluster_name=self.config.name,
            group_name=group.name,
            vpc=self.network.vpc,
            subnet=self.network.compute_subnet,
            security_group=self.network.security_group,
            instance_type=group.instance_type,
            count=group.count,
            spares=group.spares,
            efa=group.efa_enabled,
            capacity=FleetCapacity(type=capacity.type, reservation_id=capacity.reservation_id),
            create_placement_group=group.creates_placement_group,
            placement_group_name=group.placement_group_name,
            os=group.os,
            machine_image=ec2.MachineImage.generic_linux({self.config.region: group.image_id})
            if group.image_id
            else self.eks.machine_image(group.instance_type)
            if self.eks is not None
            else None,
            root_volume_size_gib=group.root_volume_gib,
            bootstrap=bootstrap,
            lifecycle_script=group.lifecycle_script,
            notification_topic=self.events_topic,
            key_pair_name=key_pair_name,
        )

    def _observability(self) -> Observability | None:
        settings = self.config.observability
        if not settings.prometheus:
            return None
        observability = Observability(
            self,
            "Observability",
            topic=self.events_topic,
            topic_key=self.events_key,
            cluster_name=self.config.name,
            file_system_id=self.file_system.file_system_id if self.file_system else None,
            options=ObservabilityOptions(grafana=settings.grafana, grafana_auth=settings.grafana_auth),
        )
        if self.fleets:
            observability.add_nodes(
                fleets=list(self.fleets.values()), scrape_interval_seconds=settings.scrape_interval_seconds
            )
        return observability

    def _subscribe(self) -> None:
        """E-mail addresses from the config (the repair notifications and the alerts share the topic)."""
        addresses = {self.config.auto_repair.notification_email, self.config.observability.alert_email}
        for address in sorted(a for a in addresses if a):
            self.events_topic.add_subscription(subscriptions.EmailSubscription(address))

    def _auto_repair(self) -> AutoRepair | None:
        repair = self.config.auto_repair
        if not repair.enabled or not self.fleets:  # HyperPod repairs its own nodes
            return None
        policy = {k: v for k, v in repair.policy.model_dump().items() if v}
        return AutoRepair(
            self,
            "AutoRepair",
            fleets=list(self.fleets.values()),
            topic=self.events_topic,
            lustre_mount_path=self.file_system.mount_path if self.file_system else None,
            # On EKS the control plane drains through the Kubernetes API, whose endpoint is private.
            vpc=self.network.vpc if self.eks is not None else None,
            vpc_subnets=[self.network.compute_subnet] if self.eks is not None else (),
            options=AutoRepairOptions(
                dry_run=repair.dry_run,
                max_parallel_replacements=repair.max_parallel_replacements,
                unhealthy_threshold_percent=repair.unhealthy_threshold_percent,
                max_unhealthy_per_group=repair.max_unhealthy_per_group,
                max_unhealthy_in_cluster=repair.max_unhealthy_in_cluster,
                reboot_before_replace=repair.reboot_before_replace,
                check_interval_seconds=repair.check_interval_seconds,
                deep_checks=repair.deep_checks,
                policy=policy,
            ),
        )

    def _dashboard(self) -> cloudwatch.Dashboard:
        """A CloudWatch dashboard of the fleets and the file system (auto-repair has its own)."""
        dashboard = cloudwatch.Dashboard(self, "Dashboard", dashboard_name=f"{self.config.name}-cluster")
        fleets = list(self.fleets.values())
        if fleets:
            in_service: list[cloudwatch.IMetric] = [fleet.metric_in_service_instances() for fleet in fleets]
            dashboard.add_widgets(cloudwatch.GraphWidget(title="Nodes in service", left=in_service, width=24))
        if self.hyperpod_ledger is not None:  # HyperPod's nodes: what its health agent found, as the ledger counts
            ledger = self.hyperpod_ledger
            found: list[cloudwatch.IMetric] = [ledger.metric_incidents(g.name) for g in ledger.cluster.groups]
            dashboard.add_widgets(
                cloudwatch.GraphWidget(title="Nodes HyperPod found unhealthy (per 5 min)", left=found, width=24)
            )
        if self.auto_repair is not None:  # the health agent reports
            healthy = [fleet.metric_healthy_nodes() for fleet in fleets]
            dashboard.add_widgets(
                cloudwatch.GraphWidget(title="Nodes the health agent finds healthy", left=healthy, width=24)
            )
        if self.file_system is not None:
            fs = self.file_system
            dashboard.add_widgets(
                cloudwatch.GraphWidget(
                    title="FSx throughput (bytes per 5 min)",
                    left=[fs.metric_data_read_bytes(), fs.metric_data_write_bytes()],
                    width=8,
                ),
                cloudwatch.GraphWidget(
                    title="FSx metadata operations", left=[fs.metric_metadata_operations()], width=8
                ),
                cloudwatch.GraphWidget(
                    title="FSx free capacity", left=[fs.metric_free_data_storage_capacity()], width=8
                ),
            )
        return dashboard

    def _outputs(self) -> None:
        CfnOutput(self, "VpcId", value=self.network.vpc.vpc_id)
        CfnOutput(self, "ComputeSubnetId", value=self.network.compute_subnet.subnet_id)
        CfnOutput(self, "NodeSecurityGroupId", value=self.network.security_group.security_group_id)
        CfnOutput(self, "EventsTopicArn", value=self.events_topic.topic_arn)
        if self.file_system is not None:
            CfnOutput(self, "FileSystemId", value=self.file_system.file_system_id)
            CfnOutput(self, "FileSystemDnsName", value=self.file_system.dns_name)
            CfnOutput(self, "FileSystemMountName", value=self.file_system.mount_name)
        if self.auto_repair is not None:
            CfnOutput(self, "RepairFunctionName", value=self.auto_repair.function.function_name)
            CfnOutput(self, "RepairLedgerTableName", value=self.auto_repair.table.table_name)
            CfnOutput(self, "EvidenceBucketName", value=self.auto_repair.evidence_bucket.bucket_name)
        if self.slurm is not None:
            CfnOutput(self, "SlurmMungeKeySecretArn", value=self.slurm.munge_key.secret_arn)
            CfnOutput(
                self,
                "SlurmControllerAddressParameter",
                value=self.slurm.controller_address.parameter_name,
                description="The controller's private address, written by the controller at boot",
            )
        if self.observability is not None:
            CfnOutput(self, "PrometheusRemoteWriteUrl", value=self.observability.remote_write_url)
            if self.observability.grafana is not None:
                CfnOutput(self, "GrafanaUrl", value=f"https://{self.observability.grafana.attr_endpoint}")
        if self.hyperpod_ledger is not None:
            CfnOutput(self, "RepairLedgerTableName", value=self.hyperpod_ledger.table.table_name)
        if self.hyperpod is not None:
            CfnOutput(self, "HyperPodClusterName", value=self.config.name)
            CfnOutput(self, "HyperPodClusterArn", value=self.hyperpod.cluster_arn)
            CfnOutput(
                self,
                "HyperPodLifecycleScripts",
                value=f"s3://{self.hyperpod.bucket.bucket_name}/{self.hyperpod.lifecycle_prefix}",
                description="What HyperPod runs on every new node (LifeCycleConfig.SourceS3Uri)",
            )
        if self.eks is not None:
            CfnOutput(self, "EksClusterName", value=self.eks.cluster.cluster_name)
            CfnOutput(self, "EksClusterArn", value=self.eks.cluster.cluster_arn)
            if self.eks.claim_name is not None:
                CfnOutput(
                    self,
                    "FileSystemClaimName",
                    value=self.eks.claim_name,
                    description="Pods mount the file system through this claim, in namespace training",
                )
            CfnOutput(
                self,
                "UpdateKubeconfigCommand",
                value=self.eks.update_kubeconfig_command,
                description="Run as one of orchestrator.admin_role_arns to reach the cluster with kubectl",
            )
        for name, fleet in self.fleets.items():
            CfnOutput(
                self,
                f"{pascal(name)}AutoScalingGroupName",
                value=fleet.auto_scaling_group.auto_scaling_group_name,
                description=f"Auto Scaling group of instance group {name}",
            )
