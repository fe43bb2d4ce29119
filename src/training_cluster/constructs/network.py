"""The cluster network: a VPC ready for EFA, or the user's own VPC and subnet."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import jsii
from aws_cdk import RemovalPolicy, Stack, Token
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct

from .._nag import acknowledge
from ..rules.network import DATABASE_SUBNET_PREFIX_LENGTH, PUBLIC_SUBNET_PREFIX_LENGTH, network_findings
from ._props import check_props

FLOW_LOG_RETENTION = logs.RetentionDays.THREE_MONTHS


def node_security_group(scope: Construct, construct_id: str, *, vpc: ec2.IVpc, description: str) -> ec2.SecurityGroup:
    """A security group for cluster nodes: all traffic to and from itself, as EFA requires, and
    HTTPS and HTTP out for packages and AWS APIs; nothing comes in from outside the group."""
    group = ec2.SecurityGroup(scope, construct_id, vpc=vpc, description=description, allow_all_outbound=False)
    group.add_ingress_rule(group, ec2.Port.all_traffic(), "EFA and cluster traffic")
    group.add_egress_rule(group, ec2.Port.all_traffic(), "EFA and cluster traffic")
    group.add_egress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(443), "AWS APIs and package repositories")
    group.add_egress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(80), "package repositories")
    return group


@jsii.implements(ec2.IConnectable)
class ClusterNetwork(Construct):
    """Where the cluster's nodes and file system live, and the security group they share.

    Either creates a VPC (a public subnet with one NAT gateway for egress, and one large private
    compute subnet in ``availability_zone``, an S3 gateway endpoint, interface endpoints for SSM
    and CloudWatch, and flow logs), or uses ``vpc`` and ``compute_subnet`` as they are.

    The node security group allows all traffic to and from itself, as EFA requires, and HTTPS
    and HTTP out for packages and AWS APIs; nothing comes in from outside the group.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        availability_zone: str,
        vpc: ec2.IVpc | None = None,
        compute_subnet: ec2.ISubnet | None = None,
        vpc_cidr: str = "10.0.0.0/16",
        compute_subnet_prefix_length: int = 17,
        interface_endpoints: bool = True,
        flow_logs: bool = True,
    ) -> None:
        """
        :param availability_zone: the zone of the compute subnet, where the capacity is.
        :param vpc: an existing VPC; default: create one. Give ``compute_subnet`` with it.
        :param compute_subnet: the existing subnet nodes and file system go into, in ``availability_zone``.
        :param vpc_cidr: CIDR of the new VPC.
        :param compute_subnet_prefix_length: size of the new VPC's compute subnet; default /17
            (32,763 usable addresses). It never follows the fleet size, so growing a fleet never
            replaces the subnet.
        :param interface_endpoints: create interface endpoints for SSM and CloudWatch in a new VPC.
        :param flow_logs: record all traffic of a new VPC in CloudWatch Logs (three months).
        """
        super().__init__(scope, construct_id)
        if (vpc is None) != (compute_subnet is None):
            raise ValueError("give both vpc and compute_subnet to use your own network, or neither")
        own_vpc = vpc is not None
        region = Stack.of(self).region
        findings = network_findings(
            vpc_cidr=None if own_vpc else vpc_cidr,
            availability_zone=availability_zone,
            region=None if Token.is_unresolved(region) else region,  # an environment-agnostic stack
        )
        check_props(self, findings, values={"vpc_cidr": vpc_cidr, "availability_zone": availability_zone})
        self.availability_zone = availability_zone
        self._vpc_cidr = None if vpc is not None else vpc_cidr
        self._isolated: list[ec2.ISubnet] = []
        self.endpoint_security_group: ec2.SecurityGroup | None = None
        """The interface endpoints' group (a new VPC with ``interface_endpoints``), else ``None``."""
        if vpc is not None and compute_subnet is not None:
            self.vpc: ec2.IVpc = vpc
            self.compute_subnet: ec2.ISubnet = compute_subnet
        else:
            self.vpc, self.compute_subnet = self._create_vpc(vpc_cidr, compute_subnet_prefix_length, flow_logs)
        self.security_group = node_security_group(
            self,
            "NodeSecurityGroup",
            vpc=self.vpc,
            description="Cluster nodes: all traffic within the group (EFA), HTTPS and HTTP out",
        )
        if interface_endpoints and vpc is None:
            self._add_interface_endpoints()

        self._connections = ec2.Connections(security_groups=[self.security_group])

    @property
    def connections(self) -> ec2.Connections:
        """The security group every node (or server) has: allow traffic to and from it here."""
        return self._connections

    def allow_endpoints_from(self, peer: ec2.IConnectable, description: str) -> None:
        """Let ``peer`` (a function placed in the VPC) reach the interface endpoints: their private
        DNS names answer for SSM and CloudWatch everywhere in the VPC, so without this its calls to
        those services would wait for a timeout. Nothing to do without endpoints."""
        if self.endpoint_security_group is not None:
            self.endpoint_security_group.connections.allow_from(peer, ec2.Port.tcp(443), description)

    @property
    def compute_subnets(self) -> ec2.SubnetSelection:
        return ec2.SubnetSelection(subnets=[self.compute_subnet])

    def add_database_subnets(
        self, availability_zones: Sequence[str], *, prefix_length: int = DATABASE_SUBNET_PREFIX_LENGTH
    ) -> list[ec2.ISubnet]:
        """Small isolated subnets in a new VPC, one per zone, for a database (RDS wants a subnet
        group in two zones). Their blocks are the first free ones of the VPC's range, next to
        the subnets the VPC has: the same config always gives the same blocks."""
        return self._isolated_subnets("DatabaseSubnet", "database", availability_zones, prefix_length)

    def add_control_plane_subnets(
        self, availability_zones: Sequence[str], *, prefix_length: int = DATABASE_SUBNET_PREFIX_LENGTH
    ) -> list[ec2.ISubnet]:
        """Small isolated subnets in a new VPC, one per zone, for the EKS control plane's network
        interfaces (EKS wants two zones; nodes reach the interfaces within the VPC). Laid out as
        :meth:`add_database_subnets` lays out its own, after any made before."""
        return self._isolated_subnets("ControlPlaneSubnet", "control plane", availability_zones, prefix_length)

    def _isolated_subnets(
        self, id_prefix: str, what: str, availability_zones: Sequence[str], prefix_length: int
    ) -> list[ec2.ISubnet]:
        if self._vpc_cidr is None:
            raise ValueError(f"{what} subnets are created in a new VPC only; pass your own subnets instead")
        taken = [ipaddress.IPv4Network(s.ipv4_cidr_block) for s in self.vpc.public_subnets + self.vpc.private_subnets]
        taken += [ipaddress.IPv4Network(s.ipv4_cidr_block) for s in self._isolated]
        free = (
            block
            for block in ipaddress.IPv4Network(self._vpc_cidr).subnets(new_prefix=prefix_length)
            if not any(block.overlaps(t) for t in taken)
        )
        subnets: list[ec2.ISubnet] = []
        made = sum(1 for subnet in self._isolated if subnet.node.id.startswith(id_prefix))
        for index, zone in enumerate(availability_zones, start=made + 1):
            block = next(free, None)
            if block is None:
                raise ValueError(f"no free /{prefix_length} left in {self._vpc_cidr} for the {what} subnets")
            subnets.append(
                ec2.Subnet(
                    self,
                    f"{id_prefix}{index}",
                    vpc_id=self.vpc.vpc_id,
                    availability_zone=zone,
                    cidr_block=str(block),
                    map_public_ip_on_launch=False,
                )
            )
        self._isolated += subnets
        return subnets

    def _create_vpc(self, cidr: str, prefix_length: int, flow_logs: bool) -> tuple[ec2.IVpc, ec2.ISubnet]:
        vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(cidr),
            availability_zones=[self.availability_zone],
            nat_gateways=1,
            subnet_configuration=[
                ec2.SubnetConfiguration(
                    name="Public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=PUBLIC_SUBNET_PREFIX_LENGTH
                ),
                ec2.SubnetConfiguration(
                    name="Compute", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=prefix_length
                ),
            ],
            gateway_endpoints={"S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3)},
        )
        if not flow_logs:
            acknowledge(vpc, "VPC7", "flow logs are switched off by the user (ClusterNetwork flow_logs=False)")
        else:
            log_group = logs.LogGroup(
                self, "FlowLogGroup", retention=FLOW_LOG_RETENTION, removal_policy=RemovalPolicy.RETAIN
            )
            vpc.add_flow_log(
                "FlowLog",
                destination=ec2.FlowLogDestination.to_cloud_watch_logs(log_group),
                traffic_type=ec2.FlowLogTrafficType.ALL,
                max_aggregation_interval=ec2.FlowLogMaxAggregationInterval.ONE_MINUTE,
            )
        return vpc, vpc.private_subnets[0]

    def _add_interface_endpoints(self) -> None:
        """SSM and CloudWatch endpoints in the compute subnet, reachable from the nodes only."""
        endpoint_group = ec2.SecurityGroup(
            self,
            "EndpointSecurityGroup",
            vpc=self.vpc,
            description="Interface endpoints: HTTPS from cluster nodes",
            allow_all_outbound=False,
        )
        endpoint_group.add_ingress_rule(self.security_group, ec2.Port.tcp(443), "HTTPS from cluster nodes")
        self.endpoint_security_group = endpoint_group
        assert isinstance(self.vpc, ec2.Vpc)
        for name, service in (
            ("Ssm", ec2.InterfaceVpcEndpointAwsService.SSM),
            ("SsmMessages", ec2.InterfaceVpcEndpointAwsService.SSM_MESSAGES),
            ("Ec2Messages", ec2.InterfaceVpcEndpointAwsService.EC2_MESSAGES),
            ("Logs", ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS),
            ("Monitoring", ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_MONITORING),
        ):
            self.vpc.add_interface_endpoint(
                f"{name}Endpoint",
                service=service,
                subnets=self.compute_subnets,
                security_groups=[endpoint_group],
                open=False,
            )


__all__ = ["ClusterNetwork", "node_security_group"]
