"""FSx for Lustre: the cluster's shared file system, optionally linked to S3."""

from __future__ import annotations

from typing import Literal

import jsii
from aws_cdk import Duration, RemovalPolicy, Stack, Token
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_fsx as fsx
from aws_cdk import aws_kms as kms
from constructs import Construct

from ..node_bootstrap import NodeBootstrap
from ..rules.lustre import default_throughput, lustre_findings
from ..types import LustreDeploymentType
from ._props import check_props

LUSTRE_PORTS = (ec2.Port.tcp(988), ec2.Port.tcp_range(1018, 1023))

_DEPLOYMENT_TYPES = {
    "SCRATCH_1": fsx.LustreDeploymentType.SCRATCH_1,
    "SCRATCH_2": fsx.LustreDeploymentType.SCRATCH_2,
    "PERSISTENT_1": fsx.LustreDeploymentType.PERSISTENT_1,
    "PERSISTENT_2": fsx.LustreDeploymentType.PERSISTENT_2,
}


@jsii.implements(ec2.IConnectable)
class LustreFileSystem(Construct):
    """An FSx for Lustre file system in the compute subnet, for the cluster's nodes.

    Defaults: PERSISTENT_2, 1200 GiB, 250 MB/s/TiB, LZ4 compression, Lustre 2.15 with an
    automatic metadata configuration, encrypted with the AWS managed key for FSx, and retained
    (with its data) when the stack is deleted or the resource would be replaced. Every deployment
    type composes alone: the throughput default follows the type, and the props are checked
    against the type's rules (:mod:`training_cluster.rules.lustre`) before anything is created,
    with one error listing every problem.
    Use :meth:`allow_clients` to let nodes mount it (TCP 988 and 1018-1023 both ways).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc: ec2.IVpc,
        subnet: ec2.ISubnet,
        storage_capacity_gib: int = 1200,
        deployment_type: LustreDeploymentType = "PERSISTENT_2",
        throughput_mbps_per_tib: int | None = None,
        compression: Literal["NONE", "LZ4"] = "LZ4",
        metadata_iops: int | None = None,
        kms_key: kms.IKey | None = None,
        s3_import_path: str | None = None,
        mount_path: str = "/fsx",
        security_group: ec2.ISecurityGroup | None = None,
        removal_policy: RemovalPolicy = RemovalPolicy.RETAIN,
    ) -> None:
        """
        :param storage_capacity_gib: 1200, 2400 or a multiple of 2400 (of 3600 on SCRATCH_1).
        :param deployment_type: default PERSISTENT_2; SCRATCH_1 and SCRATCH_2 keep no second copy
            of the data, PERSISTENT_1 and PERSISTENT_2 do.
        :param throughput_mbps_per_tib: per TiB of storage. Default: 250 on PERSISTENT_2, 200 on
            PERSISTENT_1; scratch types have no setting (give none).
        :param metadata_iops: PERSISTENT_2 only; default: the AUTOMATIC metadata mode.
        :param kms_key: a customer managed key (persistent types); default: the AWS managed key.
        :param s3_import_path: an S3 location linked to the whole file system: on PERSISTENT_2 a
            data repository association that imports and exports new, changed and deleted
            objects; on the other types the file system's import and export paths (with
            automatic import of new, changed and deleted objects except on SCRATCH_1).
        :param mount_path: where nodes mount the file system (used by the node bootstrap).
        :param security_group: the file servers' security group; default: a new one with no
            outbound rules (:meth:`allow_clients` opens the Lustre ports).
        :param removal_policy: default RETAIN: deleting the stack keeps the file system.
        """
        super().__init__(scope, construct_id)
        key_arn, region = (kms_key.key_arn if kms_key is not None else None), Stack.of(self).region
        check_props(
            self,
            lustre_findings(
                deployment_type=deployment_type,
                storage_capacity_gib=storage_capacity_gib,
                throughput_mbps_per_tib=throughput_mbps_per_tib,
                metadata_iops=metadata_iops,
                compression=compression,
                kms_key=kms_key is not None,
                s3_import_path=s3_import_path,
                mount_path=mount_path,
                kms_key_arn=key_arn if key_arn is not None and not Token.is_unresolved(key_arn) else None,
                region=None if Token.is_unresolved(region) else region,
            ),
            values={
                "storage_capacity_gib": storage_capacity_gib,
                "throughput_mbps_per_tib": throughput_mbps_per_tib,
                "metadata_iops": metadata_iops,
                "s3_import_path": s3_import_path,
                "mount_path": mount_path,
            },
        )
        self.deployment_type: LustreDeploymentType = deployment_type
        self.mount_path = mount_path
        self.throughput_mbps_per_tib = (
            default_throughput(deployment_type) if throughput_mbps_per_tib is None else throughput_mbps_per_tib
        )
        """Throughput per TiB of storage, as given or by default; ``None`` on scratch types."""
        persistent_2 = deployment_type == "PERSISTENT_2"
        link_at_file_system = s3_import_path is not None and not persistent_2

        self.security_group: ec2.ISecurityGroup = security_group or ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=vpc,
            description="FSx for Lustre servers: Lustre ports from the servers and their clients",
            allow_all_outbound=False,
        )
        self.storage_capacity_gib = storage_capacity_gib
        self.resource = fsx.LustreFileSystem(
            self,
            "Resource",
            vpc=vpc,
            vpc_subnet=subnet,
            security_group=self.security_group,
            storage_capacity_gib=storage_capacity_gib,
            kms_key=kms_key,
            removal_policy=removal_policy,
            file_system_type_version=fsx.FileSystemTypeVersion.V_2_15,
            lustre_configuration=fsx.LustreConfiguration(
                deployment_type=_DEPLOYMENT_TYPES[deployment_type],
                per_unit_storage_throughput=self.throughput_mbps_per_tib,
                data_compression_type=fsx.LustreDataCompressionType[compression],
                import_path=s3_import_path if link_at_file_system else None,
                export_path=s3_import_path if link_at_file_system else None,
                auto_import_policy=fsx.LustreAutoImportPolicy.NEW_CHANGED_DELETED
                if link_at_file_system and deployment_type != "SCRATCH_1"
                else None,
            ),
        )
        # The L2 already opens TCP 988-1023 between the file servers.
        self._connections = self.resource.connections
        cfn = self.resource.node.default_child
        assert isinstance(cfn, fsx.CfnFileSystem)
        if kms_key is not None:
            # The L2 passes the bare key id, which names a key in this account only.
            cfn.add_property_override("KmsKeyId", kms_key.key_arn)

        if persistent_2:
            # The L2 does not model the metadata configuration (PERSISTENT_2 only).
            metadata = (
                {"Mode": "AUTOMATIC"} if metadata_iops is None else {"Mode": "USER_PROVISIONED", "Iops": metadata_iops}
            )
            cfn.add_property_override("LustreConfiguration.MetadataConfiguration", metadata)

        self.data_repository_association: fsx.CfnDataRepositoryAssociation | None = None
        if s3_import_path is not None and persistent_2:
            events = ["NEW", "CHANGED", "DELETED"]
            self.data_repository_association = fsx.CfnDataRepositoryAssociation(
                self,
                "S3Link",
                file_system_id=self.resource.file_system_id,
                file_system_path="/",
                data_repository_path=s3_import_path,
                batch_import_meta_data_on_create=True,
                s3=fsx.CfnDataRepositoryAssociation.S3Property(
                    auto_import_policy=fsx.CfnDataRepositoryAssociation.AutoImportPolicyProperty(events=events),
                    auto_export_policy=fsx.CfnDataRepositoryAssociation.AutoExportPolicyProperty(events=events),
                ),
            )

    @property
    def connections(self) -> ec2.Connections:
        """The security group every node (or server) has: allow traffic to and from it here."""
        return self._connections

    @property
    def file_system_id(self) -> str:
        return self.resource.file_system_id

    @property
    def dns_name(self) -> str:
        return self.resource.dns_name

    @property
    def mount_name(self) -> str:
        return self.resource.mount_name

    def metric(self, metric_name: str, *, statistic: str = "Sum", period: Duration | None = None) -> cloudwatch.Metric:
        """A CloudWatch metric of this file system (namespace ``AWS/FSx``), five-minute periods by default."""
        return cloudwatch.Metric(
            namespace="AWS/FSx",
            metric_name=metric_name,
            dimensions_map={"FileSystemId": self.file_system_id},
            statistic=statistic,
            period=period or Duration.minutes(5),
        )

    def metric_data_read_bytes(self) -> cloudwatch.Metric:
        return self.metric("DataReadBytes")

    def metric_data_write_bytes(self) -> cloudwatch.Metric:
        return self.metric("DataWriteBytes")

    def metric_metadata_operations(self) -> cloudwatch.Metric:
        return self.metric("MetadataOperations")

    def metric_free_data_storage_capacity(self) -> cloudwatch.Metric:
        return self.metric("FreeDataStorageCapacity", statistic="Minimum")

    def allow_clients(self, clients: ec2.IConnectable) -> None:
        """Let ``clients`` mount the file system: Lustre ports in both directions."""
        for port in LUSTRE_PORTS:
            self.connections.allow_from(clients, port, "Lustre clients")
            clients.connections.allow_from(self.resource, port, "Lustre servers")

    def mount_on(self, bootstrap: NodeBootstrap) -> None:
        """Mount the file system at ``mount_path`` on the nodes that run ``bootstrap`` (a fleet's
        ``bootstrap``): its first stages install the client and mount it before node software."""
        bootstrap.set("FSX_DNS_NAME", self.dns_name)
        bootstrap.set("FSX_MOUNT_NAME", self.mount_name)
        bootstrap.set("FSX_MOUNT_PATH", self.mount_path)
