"""A fleet: one instance group of identical nodes, with every EFA card configured."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsii
from aws_cdk import Duration, IStableStringProducer, Lazy, Stack, Tags
from aws_cdk import aws_autoscaling as autoscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import aws_sns as sns
from constructs import Construct

from .. import catalog, contract
from .._assets import grant_read
from .._nag import SSM_MANAGED_POLICY, acknowledge
from ..node_bootstrap import NodeBootstrap
from ..rules.fleet import creates_placement_group, fleet_findings, lifecycle_script_findings
from ..types import CapacityType, OperatingSystem
from ._props import SynthesisCheck, check_props
from .network import node_security_group

DEFAULT_HEALTH_CHECK_GRACE_PERIOD = Duration.minutes(15)
ROOT_DEVICE = {"ubuntu-22.04": "/dev/sda1", "ubuntu-24.04": "/dev/sda1", "amazon-linux-2023": "/dev/xvda"}
CPU_IMAGE_PARAMETER = {
    "ubuntu-22.04": "/aws/service/canonical/ubuntu/server/22.04/stable/current/amd64/hvm/ebs-gp2/ami-id",
    "ubuntu-24.04": "/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id",
    "amazon-linux-2023": "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64",
}


def default_image_parameter(instance_type: str, os: OperatingSystem) -> str:
    """The SSM public parameter of the default AMI: the Deep Learning Base AMI with the OSS Nvidia
    driver, the Deep Learning Base Neuron AMI on Trainium and Inferentia, or the distribution's
    own image on CPU types (controller, login)."""
    info = catalog.get(instance_type)
    if info is not None and info.accelerator == "neuron":
        return f"/aws/service/neuron/dlami/base/{os}/latest/image_id"
    if info is not None and info.accelerator == "none":
        return CPU_IMAGE_PARAMETER[os]
    return f"/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-{os}/latest/ami-id"


@dataclass(frozen=True, kw_only=True)
class FleetCapacity:
    """Which capacity a fleet launches into. The fleet checks it with its other props
    (:func:`training_cluster.rules.fleet.capacity_findings`): a reservation id goes with
    ``reservation`` and ``capacity-block`` only."""

    type: CapacityType = "on-demand"
    reservation_id: str | None = None

    @classmethod
    def on_demand(cls) -> FleetCapacity:
        return cls()

    @classmethod
    def reservation(cls, reservation_id: str) -> FleetCapacity:
        """A targeted On-Demand Capacity Reservation."""
        return cls(type="reservation", reservation_id=reservation_id)

    @classmethod
    def capacity_block(cls, reservation_id: str) -> FleetCapacity:
        """An EC2 Capacity Block for ML (its id is a capacity reservation id)."""
        return cls(type="capacity-block", reservation_id=reservation_id)


@jsii.implements(IStableStringProducer)
class _UserDataText:
    """Renders the bootstrap when the template is written, so stages added late are included."""

    def __init__(self, bootstrap: NodeBootstrap) -> None:
        self._bootstrap = bootstrap

    def produce(self) -> str:
        return self._bootstrap.render()


@jsii.implements(ec2.IConnectable)
class Fleet(Construct):
    """One instance group of a cluster: a launch template with the full EFA layout and an Auto
    Scaling group that keeps exactly ``count`` nodes in the compute subnet.

    The launch template gives every EFA network card an interface, as the EC2 User Guide lays
    out for full bandwidth (card 0 device 0 the primary ENA interface; ``efa-only`` on card 0
    device 1 where card 0 has EFA and on device 0 of every further EFA card); IMDSv2 only; an
    encrypted gp3 root volume; an instance profile with SSM access; a cluster placement group
    for on-demand capacity. The Auto Scaling group has min = max = desired = ``count``: a fixed
    training fleet that replaces a node that fails its EC2 health check, in the same subnet,
    placement group and capacity. It has no update policy, so a new launch template version
    never replaces a running node; only new launches use it.

    The fleet tags itself, so every instance, volume and group it launches carries them, whoever
    composed it: ``training-cluster:cluster`` (``cluster_name``), ``training-cluster:instance-group``
    (``group_name``) and ``Name`` (``<cluster_name>-<group_name>``). ``AutoRepair``'s permissions,
    ``Slurm`` and ``Observability`` read the cluster and group from the fleet.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster_name: str,
        group_name: str,
        vpc: ec2.IVpc,
        subnet: ec2.ISubnet,
        instance_type: str,
        count: int,
        spares: int = 0,
        security_group: ec2.ISecurityGroup | None = None,
        efa: bool | None = None,
        capacity: FleetCapacity = FleetCapacity(),
        create_placement_group: bool | None = None,
        placement_group_name: str | None = None,
        os: OperatingSystem = "ubuntu-22.04",
        machine_image: ec2.IMachineImage | None = None,
        root_volume_size_gib: int = 500,
        bootstrap: NodeBootstrap | None = None,
        lifecycle_script: str | Path | None = None,
        role: iam.IRole | None = None,
        notification_topic: sns.ITopic | None = None,
        health_check_grace_period: Duration | None = None,
        key_pair_name: str | None = None,
        instance_metadata_tags: bool = False,
    ) -> None:
        """
        :param cluster_name: the cluster this group belongs to (lower case letters, digits and
            hyphens, up to 32 characters): the nodes' ``training-cluster:cluster`` tag and their
            ``CLUSTER_NAME`` setting.
        :param group_name: the instance group's name in the cluster (the same rules, up to 24
            characters): the nodes' ``training-cluster:instance-group`` tag and ``INSTANCE_GROUP`` setting.
        :param subnet: the compute subnet every node of the group launches into.
        :param spares: hot spares beside ``count`` (0 to 64): the group runs ``count + spares``
            instances; an orchestrator that holds them out of work (``SlurmCluster``) must take the
            fleet, or they simply join it. Default none.
        :param security_group: put on every network interface; default: a new group that allows all
            traffic to and from itself (EFA requires it) and HTTPS and HTTP out. Other fleets and
            servers are allowed through :attr:`connections`.
        :param efa: default: on where the instance type supports it; ``True`` fails where it does not.
        :param capacity: default on-demand.
        :param create_placement_group: create a cluster placement group for the group. Default: one
            for on-demand capacity; none for a Capacity Block (EC2 places its instances, and a
            placement group can fail its launches) or a targeted reservation (it launches into its
            own placement group, if any: name it in ``placement_group_name``), or when
            ``placement_group_name`` is given.
        :param placement_group_name: launch into this existing placement group instead.
        :param os: the AMI's operating system: picks the default AMI and the root device name.
        :param machine_image: default: the Deep Learning Base AMI for ``os`` (Nvidia driver, or
            Neuron on Trainium/Inferentia), resolved at deploy time from its SSM public parameter.
        :param bootstrap: what runs at boot; default: the bootstrap with no file system. The fleet
            sets its ``CLUSTER_NAME``, ``INSTANCE_GROUP`` and ``NODE_OS``.
        :param lifecycle_script: a script of yours that every node runs as root at the end of its
            boot: shipped as an asset that only this fleet's role can read; default none.
        :param role: the nodes' role; default: a new role with SSM Session Manager and Run Command access.
        :param notification_topic: receives the group's launch and terminate events (and launch errors).
        :param health_check_grace_period: how long a new node may boot before EC2 health checks
            count; default 15 minutes (the bootstrap installs the Lustre client and mounts it).
        :param key_pair_name: an EC2 key pair for SSH; default none (Session Manager).
        :param instance_metadata_tags: let nodes read their tags from the instance metadata
            service. Default off: nothing on the nodes reads them, and with them on EC2 refuses to
            launch an instance with a tag key that has a ``/`` (such as EKS's
            ``kubernetes.io/cluster/<name>``).
        """
        super().__init__(scope, construct_id)
        script_findings = (
            [] if lifecycle_script is None else lifecycle_script_findings("lifecycle_script", lifecycle_script)
        )
        check_props(
            self,
            [
                *fleet_findings(
                    cluster_name=cluster_name,
                    group_name=group_name,
                    instance_type=instance_type,
                    count=count,
                    spares=spares,
                    efa=efa,
                    capacity_type=capacity.type,
                    reservation_id=capacity.reservation_id,
                    create_placement_group=create_placement_group,
                    placement_group_name=placement_group_name,
                    os=os,
                    root_volume_size_gib=root_volume_size_gib,
                    key_pair_name=key_pair_name,
                ),
                *script_findings,
            ],
            values={
                "root_volume_size_gib": root_volume_size_gib,
                "cluster_name": cluster_name,
                "group_name": group_name,
                "count": count,
                "spares": spares,
                "capacity.reservation_id": capacity.reservation_id,
                "placement_group_name": placement_group_name,
                "key_pair_name": key_pair_name,
            },
        )
        info = catalog.get(instance_type)
        assert info is not None  # the rules refuse a type the catalog does not know
        self.cluster_name = cluster_name
        self.group_name = group_name
        self.instance_type = info
        self.count = count
        self.spares = spares
        """Hot spares beside ``count``: the Auto Scaling group keeps ``count + spares`` instances and
        the orchestrator holds ``spares`` of them out of work (Slurm: a reservation)."""
        self.os: OperatingSystem = os
        self.efa_enabled = info.efa_supported if efa is None else efa
        self.interfaces = info.efa_layout() if self.efa_enabled else info.efa_layout()[:1]
        if security_group is None:
            security_group = node_security_group(
                self,
                "SecurityGroup",
                vpc=vpc,
                description=f"Nodes of {cluster_name}-{group_name}: all traffic within the group (EFA), HTTPS and "
                "HTTP out",
            )
        self.security_group = security_group
        self._connections = ec2.Connections(security_groups=[security_group])
        self.bootstrap = bootstrap or NodeBootstrap()
        for key, value in (("CLUSTER_NAME", cluster_name), ("INSTANCE_GROUP", group_name), ("NODE_OS", os)):
            current = self.bootstrap.environment.get(key)
            if current is not None and current != value:
                raise ValueError(
                    f"bootstrap: its {key} is {current!r} already, not this fleet's {value!r}; give each fleet a "
                    "bootstrap of its own"
                )
            self.bootstrap.set(key, value)
        # On everything the fleet creates, and through the launch template and the Auto Scaling
        # group on every instance and volume it launches. Name above the tag the launch template and
        # Auto Scaling group set from their paths.
        Tags.of(self).add(contract.TAG_CLUSTER, cluster_name)
        Tags.of(self).add(contract.TAG_GROUP, group_name)
        Tags.of(self).add("Name", f"{cluster_name}-{group_name}", priority=200)

        if role is None:
            role = iam.Role(
                self,
                "Role",
                assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
                description=f"Cluster nodes ({instance_type})",
                managed_policies=[iam.ManagedPolicy.from_aws_managed_policy_name("AmazonSSMManagedInstanceCore")],
            )
            acknowledge(
                role,
                f"IAM4[{SSM_MANAGED_POLICY}]",
                "Session Manager and Run Command need exactly the agent permissions AWS keeps current in this "
                "managed policy; it grants no access to data",
            )
        self.role: iam.IRole = role
        if lifecycle_script is not None:
            script = s3_assets.Asset(self, "LifecycleScript", path=str(lifecycle_script))
            grant_read(script, self.role)
            self.bootstrap.set("LIFECYCLE_SCRIPT_S3_URI", script.s3_object_url)

        if create_placement_group is None:
            create_placement_group = creates_placement_group(None, placement_group_name, capacity.type)
        self.placement_group: ec2.IPlacementGroup | None = None
        if placement_group_name is not None:
            self.placement_group = ec2.PlacementGroup.from_placement_group_name(
                self, "PlacementGroup", placement_group_name
            )
        elif create_placement_group:
            self.placement_group = ec2.PlacementGroup(
                self, "PlacementGroup", strategy=ec2.PlacementGroupStrategy.CLUSTER
            )

        self.default_image = machine_image is None
        """Whether the fleet runs its default image (the Deep Learning AMI, or the distribution's)."""
        self.orchestrator: str | None = None
        """What runs the fleet's nodes, once one has taken them (an EKS cluster's name), else ``None``."""
        self.launch_template = ec2.LaunchTemplate(
            self,
            "LaunchTemplate",
            instance_type=ec2.InstanceType(instance_type),
            machine_image=machine_image
            or ec2.MachineImage.from_ssm_parameter(default_image_parameter(instance_type, os)),
            role=self.role,
            user_data=ec2.UserData.custom(Lazy.string(_UserDataText(self.bootstrap))),
            require_imdsv2=True,
            key_pair=ec2.KeyPair.from_key_pair_name(self, "KeyPair", key_pair_name) if key_pair_name else None,
            instance_metadata_tags=instance_metadata_tags,
            placement_group=self.placement_group,
            block_devices=[
                ec2.BlockDevice(
                    device_name=ROOT_DEVICE[os],
                    volume=ec2.BlockDeviceVolume.ebs(
                        root_volume_size_gib,
                        volume_type=ec2.EbsDeviceVolumeType.GP3,
                        encrypted=True,
                        delete_on_termination=True,
                    ),
                )
            ],
        )
        # The L2 launch template models neither network interfaces nor capacity reservations
        # and Capacity Blocks.
        cfn_template = self.launch_template.node.default_child
        assert isinstance(cfn_template, ec2.CfnLaunchTemplate)
        self._primary_groups: list[str] = [security_group.security_group_id]
        self._set_interfaces()
        if capacity.reservation_id is not None:
            cfn_template.add_property_override(
                "LaunchTemplateData.CapacityReservationSpecification",
                {"CapacityReservationTarget": {"CapacityReservationId": capacity.reservation_id}},
            )
        if capacity.type == "capacity-block":
            cfn_template.add_property_override(
                "LaunchTemplateData.InstanceMarketOptions", {"MarketType": "capacity-block"}
            )

        self.auto_scaling_group = autoscaling.AutoScalingGroup(
            self,
            "AutoScalingGroup",
            vpc=vpc,
            vpc_subnets=ec2.SubnetSelection(subnets=[subnet]),
            launch_template=self.launch_template,
            min_capacity=count + spares,
            max_capacity=count + spares,
            health_checks=autoscaling.HealthChecks.ec2(
                grace_period=health_check_grace_period or DEFAULT_HEALTH_CHECK_GRACE_PERIOD
            ),
            group_metrics=[autoscaling.GroupMetrics.all()],
            notifications=[autoscaling.NotificationConfiguration(topic=notification_topic)]
            if notification_topic
            else None,
        )
        if instance_metadata_tags:
            self.node.add_validation(SynthesisCheck(self._metadata_tag_problems))

    def _metadata_tag_problems(self) -> list[str]:
        """With metadata tags on, EC2 refuses to launch an instance with a tag key that has a ``/``
        (the instance metadata service shows keys as paths): such a fleet would never launch."""
        cfn_group = self.auto_scaling_group.node.default_child
        assert isinstance(cfn_group, autoscaling.CfnAutoScalingGroup)
        tags = Stack.of(self).resolve(cfn_group.tags.render_tags()) or []
        keys = sorted(t["key"] for t in tags if t.get("propagateAtLaunch") and "/" in str(t["key"]))
        if not keys:
            return []
        return [
            f"instance_metadata_tags: EC2 refuses to launch instances whose tag keys have a '/' while metadata tags "
            f"are on, and these tags go on every instance: {', '.join(keys)}; turn metadata tags off or remove the tags"
        ]

    @property
    def connections(self) -> ec2.Connections:
        """The security group every node (or server) has: allow traffic to and from it here."""
        return self._connections

    def add_primary_security_group(self, security_group: ec2.ISecurityGroup) -> None:
        """Put ``security_group`` on the primary interface (card 0, device 0) beside the fleet's own
        group, which every interface has: for traffic that is not EFA's, such as an EKS cluster's
        control plane to the kubelet. New launches get it; running nodes keep what they have."""
        self._primary_groups.append(security_group.security_group_id)
        self._set_interfaces()

    def _set_interfaces(self) -> None:
        cfn_template = self.launch_template.node.default_child
        assert isinstance(cfn_template, ec2.CfnLaunchTemplate)
        own = self._primary_groups[0]
        interfaces = [
            _interface(slot, self._primary_groups if (slot.network_card_index, slot.device_index) == (0, 0) else [own])
            for slot in self.interfaces
        ]
        cfn_template.add_property_override("LaunchTemplateData.NetworkInterfaces", interfaces)

    @property
    def efa_interface_count(self) -> int:
        return catalog.efa_interfaces(self.interfaces)

    def metric_in_service_instances(
        self, *, statistic: str = "Minimum", period: Duration | None = None, label: str | None = None
    ) -> cloudwatch.Metric:
        """Nodes in service in the group's Auto Scaling group, as EC2 Auto Scaling sees them
        (``AWS/AutoScaling`` ``GroupInServiceInstances``; the fleet turns group metrics on).
        Default: the minimum over 5 minutes, labelled with the group's name."""
        return cloudwatch.Metric(
            namespace="AWS/AutoScaling",
            metric_name="GroupInServiceInstances",
            dimensions_map={"AutoScalingGroupName": self.auto_scaling_group.auto_scaling_group_name},
            statistic=statistic,
            period=period,
            label=label or self.group_name,
        )

    def metric_healthy_nodes(self, *, period: Duration | None = None, label: str | None = None) -> cloudwatch.IMetric:
        """Nodes of the group whose health agent (``AutoRepair`` installs it) reported healthy at
        every check of the period.

        The agent sends ``Healthy`` (1 or 0) every check interval, per instance (namespace
        ``TrainingCluster/Health``, dimensions ``Cluster``, ``InstanceGroup`` and ``InstanceId``).
        This takes each instance's ``Minimum`` over the period and adds them up: a node that failed
        a check in the period, or sent nothing (no agent, stopped, gone), does not count. The
        instances are only known at run time, so it is a search expression: for dashboards
        (CloudWatch alarms do not evaluate searches). Default period one minute: keep it at least
        the agent's check interval. Default label: the group's name.
        """
        seconds = int((period or Duration.minutes(1)).to_seconds())
        query = (
            f"{{{contract.HEALTH_NAMESPACE},Cluster,InstanceGroup,InstanceId}} "
            f'MetricName="Healthy" Cluster="{self.cluster_name}" InstanceGroup="{self.group_name}"'
        )
        search = f"SEARCH('{query}', 'Minimum', {seconds})"
        return cloudwatch.MathExpression(
            expression=f"SUM({search})", label=label or self.group_name, period=Duration.seconds(seconds)
        )


def _interface(slot: catalog.NetworkInterfaceSlot, security_group_ids: list[str]) -> dict[str, Any]:
    # With network interfaces in a launch template, security groups go on each interface. The
    # Auto Scaling group supplies the subnet.
    return {
        "NetworkCardIndex": slot.network_card_index,
        "DeviceIndex": slot.device_index,
        "InterfaceType": slot.interface_type,
        "Groups": list(security_group_ids),
        "DeleteOnTermination": True,
    }
