"""Slurm on the cluster's fleets: a controller, optional login nodes and dynamic compute nodes."""

from __future__ import annotations

import json
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import jsii
from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_rds as rds
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from .. import contract
from .._assets import asset_path, grant_read
from .._nag import acknowledge
from ..errors import Finding
from ..node_bootstrap import asset_stage
from ..rules.slurm import SlurmFleet, default_partitions, slurm_findings
from ._props import check_props
from .fleet import Fleet

SLURM_DIR = contract.SLURM_NODE_DIR
DRAIN_COMMAND = f"{SLURM_DIR}/slurm-drain.sh"
MUNGE_KEY_LENGTH = 1024
STAGE = asset_stage(
    "Slurm for this node's role", uri_setting="SLURM_S3_URI", directory=SLURM_DIR, script="slurm-node.sh"
)


@dataclass(frozen=True, kw_only=True)
class SlurmOptions:
    """How Slurm runs. Defaults as in the config's ``orchestrator`` section."""

    accounting: bool = True
    """slurmdbd and MariaDB on the controller, the database on the file system."""
    partitions: Mapping[str, Sequence[str]] | None = None
    """Partition name -> compute fleet names; the first is the default. Default: one per fleet."""
    users: Mapping[str, int] = field(default_factory=dict)
    """User name -> uid, created on every node with a home under ``<mount>/home``."""
    containers: bool = False
    """enroot and pyxis on the compute nodes."""
    users_can_use_node_role: bool = False
    """Off: on every Slurm node only root reaches the instance metadata service (the role can read
    the munge key); on: users' jobs can use the nodes' role too."""


# MariaDB 10.11 (long-term support), the newest this CDK version knows; minor upgrades are automatic.
ENGINE = rds.DatabaseInstanceEngine.maria_db(version=rds.MariaDbEngineVersion.VER_10_11_16)


@jsii.implements(ec2.IConnectable)
class SlurmAccountingDatabase(Construct):
    """Amazon RDS for MariaDB for slurmdbd: encrypted, backed up for a week, snapshotted when
    deleted, reachable on its port from ``clients`` only. The credentials are generated into
    Secrets Manager (letters and digits: ``slurmdbd.conf`` has no quoting)."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc: ec2.IVpc,
        subnets: Sequence[ec2.ISubnet],
        clients: ec2.IConnectable,
        instance_class: str = "db.t4g.medium",
    ) -> None:
        super().__init__(scope, construct_id)
        parameters = rds.ParameterGroup(
            self,
            "Parameters",
            engine=ENGINE,
            description="Slurm accounting: long lock waits for large purges, as SchedMD recommends",
            parameters={"innodb_lock_wait_timeout": "900"},
        )
        self.instance = rds.DatabaseInstance(
            self,
            "Instance",
            engine=ENGINE,
            instance_type=ec2.InstanceType(instance_class.removeprefix("db.")),
            vpc=vpc,
            vpc_subnets=ec2.SubnetSelection(subnets=list(subnets)),
            credentials=rds.Credentials.from_generated_secret("slurm", exclude_characters=string.punctuation),
            parameter_group=parameters,
            allocated_storage=20,
            max_allocated_storage=200,
            storage_type=rds.StorageType.GP3,
            storage_encrypted=True,
            multi_az=False,
            backup_retention=Duration.days(7),
            deletion_protection=True,
            removal_policy=RemovalPolicy.SNAPSHOT,
            cloudwatch_logs_exports=["error"],
            auto_minor_version_upgrade=True,
        )
        self.instance.connections.allow_default_port_from(clients, "slurmdbd on the controller")
        secret = self.instance.secret
        assert secret is not None  # from_generated_secret
        self.secret = secret
        for rule, reason in (
            ("RDS3", "job accounting tolerates a short outage: slurmctld keeps records until slurmdbd is back"),
            ("RDS11", "the standard port, reachable from the cluster's nodes only"),
            ("SMG4", "slurmdbd reads the password once at start: rotation would cut it off until restarted"),
        ):
            acknowledge(self, rule, reason)

    @property
    def connections(self) -> ec2.Connections:
        """The database's security group: allow more clients here."""
        return self.instance.connections


class Slurm(Construct):
    """Slurm on fleets that exist already: ``controller`` (one node), ``login`` and ``compute``.

    - The munge key is generated at deploy time into Secrets Manager; every Slurm node reads it,
      and on the nodes only root reaches the role's credentials (unless
      ``users_can_use_node_role``).
    - The controller publishes its address in an SSM parameter; compute nodes read it when slurmd
      starts, so a replaced controller is found again. Its state and accounting database live on
      the file system, so a reboot or replacement keeps every job.
    - Compute nodes are dynamic and configless: they register at boot under their instance id,
      with their group as a feature and their GPUs and memory from the catalog.
    - Login nodes read the controller's ``slurm.conf`` from the file system.

    Its bootstrap stage is in the ``scheduler`` phase: it runs after the node software (health
    agent, metrics) whichever construct was added first, so Slurm's health check finds the agent.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        controller: Fleet,
        compute: Sequence[Fleet],
        login: Fleet | None = None,
        file_system_mount_path: str,
        accounting_database: SlurmAccountingDatabase | None = None,
        options: SlurmOptions = SlurmOptions(),
    ) -> None:
        """
        The cluster's name (``SlurmClusterName``, the controller address parameter's path) is the
        fleets' ``cluster_name``; a compute fleet's ``group_name`` is its node feature and its
        partition's name by default.

        :param controller: a fleet of one CPU node on Ubuntu 24.04.
        :param compute: the compute fleets (Ubuntu 24.04), each a group of its own.
        :param login: login nodes (Ubuntu 24.04), if any.
        :param file_system_mount_path: where the file system is mounted on every node (its
            bootstrap mounts it before the Slurm stage runs).
        :param accounting_database: with ``options.accounting``, the database slurmdbd uses;
            default: MariaDB on the controller, its files on the file system.
        """
        super().__init__(scope, construct_id)
        findings = slurm_findings(
            controller=_rules_view(controller),
            login=_rules_view(login) if login is not None else None,
            compute=[_rules_view(fleet) for fleet in compute],
            partitions=options.partitions,
            users=options.users,
            file_system_mount_path=file_system_mount_path,
        )
        roles: list[tuple[str, Fleet]] = [("controller", controller)]
        roles += [("login", login)] if login is not None else []
        roles += [("compute", fleet) for fleet in compute]
        check_props(
            self,
            [*findings, *_one_cluster(controller, login, compute), *_mounted_elsewhere(roles, file_system_mount_path)],
            values={"file_system_mount_path": file_system_mount_path},
        )
        cluster_name = controller.cluster_name
        by_name = {fleet.group_name: fleet for fleet in compute}
        partitions = dict(options.partitions) if options.partitions else default_partitions(list(by_name))
        self.cluster_name = cluster_name
        """The fleets' cluster: Slurm's cluster name."""
        self.controller = controller
        self.login = login
        self.compute = by_name
        """The compute fleets by group name."""
        self.layout = {
            "cluster": cluster_name,
            "accounting": options.accounting,
            "groups": [
                {
                    "name": name,
                    "gpus": fleet.instance_type.gpus,
                    "memory_mib": fleet.instance_type.memory_mib,
                    "vcpus": fleet.instance_type.vcpus,
                    # the controller keeps `spares` of the group's nodes out of the partitions
                    **({"count": fleet.count, "spares": fleet.spares} if fleet.spares else {}),
                }
                for name, fleet in by_name.items()
            ],
            "partitions": partitions,
        }

        self.munge_key = secretsmanager.Secret(
            self,
            "MungeKey",
            description=f"Munge key of the Slurm cluster {cluster_name}: every Slurm node authenticates with it",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=MUNGE_KEY_LENGTH, exclude_punctuation=True
            ),
        )
        acknowledge(
            self.munge_key,
            "SMG4",
            "a munge key cannot rotate under a running cluster: every daemon must restart with the new key at once",
        )
        self.controller_address = ssm.StringParameter(
            self,
            "ControllerAddress",
            parameter_name=f"/training-cluster/{cluster_name}/slurm/controller-address",
            string_value="pending",
            description="The Slurm controller's private address; the controller writes it at boot",
        )
        scripts = s3_assets.Asset(
            self, "Scripts", path=str(asset_path("node", "slurm")), exclude=["__pycache__", "*.pyc"]
        )
        users = " ".join(f"{name}:{uid}" for name, uid in sorted(options.users.items()))
        settings = {
            "SLURM_S3_URI": scripts.s3_object_url,
            "SLURM_LAYOUT": json.dumps(self.layout, sort_keys=True, separators=(",", ":")),
            "SLURM_CONTROLLER_PARAMETER": self.controller_address.parameter_name,
            "SLURM_MUNGE_SECRET_ARN": self.munge_key.secret_arn,
            "SLURM_ACCOUNTING": str(options.accounting).lower(),
            "SLURM_CONTAINERS": str(options.containers).lower(),
            "SLURM_USERS": users,
            "SLURM_USERS_USE_NODE_ROLE": str(options.users_can_use_node_role).lower(),
            "FSX_MOUNT_PATH": file_system_mount_path,
        }
        if accounting_database is not None and not options.accounting:
            raise ValueError("an accounting database is given but options.accounting is off")
        self.accounting_database = accounting_database
        for role, fleet in roles:
            for key, value in settings.items():
                fleet.bootstrap.set(key, value)
            fleet.bootstrap.set("SLURM_ROLE", role)
            fleet.bootstrap.set("SLURM_GPUS", str(fleet.instance_type.gpus))
            fleet.bootstrap.add_stage("slurm", STAGE, phase="scheduler")
            self.munge_key.grant_read(fleet.role)
            grant_read(scripts, fleet.role)
            if role == "compute":
                self.controller_address.grant_read(fleet.role)
        if accounting_database is not None:  # only the controller (slurmdbd) reads its password
            accounting_database.secret.grant_read(controller.role)
            controller.bootstrap.set("SLURM_DATABASE_SECRET_ARN", accounting_database.secret.secret_arn)
        self.controller_address.grant_write(controller.role)
        # The reaper asks EC2 which nodes' instances are gone, the topology task where they sit in
        # the network; neither read-only action takes a resource.
        controller.role.add_to_principal_policy(
            iam.PolicyStatement(actions=["ec2:DescribeInstances", "ec2:DescribeInstanceTopology"], resources=["*"])
        )
        acknowledge(
            controller.role,
            "IAM5[Resource::*]",
            "ec2:DescribeInstances and ec2:DescribeInstanceTopology (read only) do not support resource-level "
            "permissions",
        )
        # Every Slurm node talks to every other (slurmctld 6817, slurmd 6818, slurmdbd 6819, srun's
        # ports): they share the cluster's security group, which allows all traffic within itself.

    @property
    def drain_command(self) -> str:
        """What auto-repair runs on the controller before a reboot or replacement."""
        return DRAIN_COMMAND


def _rules_view(fleet: Fleet) -> SlurmFleet:
    return SlurmFleet(
        group_name=fleet.group_name,
        instance_type=fleet.instance_type.name,
        count=fleet.count,
        os=fleet.os,
        spares=fleet.spares,
    )


def _mounted_elsewhere(roles: Sequence[tuple[str, Fleet]], mount_path: str) -> list[Finding]:
    """Fleets whose bootstrap mounts the file system at another path (``LustreFileSystem.mount_on``):
    Slurm must not move it, or the nodes' checks would look where nothing is mounted."""
    elsewhere: dict[str, list[str]] = {}
    for _, fleet in roles:
        current = fleet.bootstrap.environment.get("FSX_MOUNT_PATH")
        if current is not None and current != mount_path:
            elsewhere.setdefault(current, []).append(fleet.group_name)
    return [
        Finding(
            path="file_system_mount_path",
            message=f"the file system is mounted at {current!r} on {', '.join(groups)} already, not at "
            f"{mount_path!r}: give the path the file system was mounted at (its mount_path)",
        )
        for current, groups in elsewhere.items()
    ]


def _one_cluster(controller: Fleet, login: Fleet | None, compute: Sequence[Fleet]) -> list[Finding]:
    """The fleets must be of one cluster (the config's always are: only a direct user can mix them)."""
    fleets = [("controller", controller), *([("login", login)] if login is not None else [])]
    fleets += [(f"compute[{i}]", fleet) for i, fleet in enumerate(compute)]
    if len({fleet.cluster_name for _, fleet in fleets}) == 1:
        return []
    named = ", ".join(f"{prop} {fleet.cluster_name!r}" for prop, fleet in fleets)
    return [Finding(path="compute", message=f"the fleets must be of one cluster (their cluster_name); got {named}")]
