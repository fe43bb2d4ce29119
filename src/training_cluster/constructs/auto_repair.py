"""Auto-repair: a health agent on every node and a Lambda control plane that reboots or replaces."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from aws_cdk import Aws, Duration, RemovalPolicy, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from .. import contract
from .._lambda import python_function
from .._nag import acknowledge
from ..errors import Finding
from ..repair_policy import Policy
from ..rules import PropsError
from ..rules.auto_repair import (
    DEFAULT_MAX_UNHEALTHY_IN_CLUSTER,
    DEFAULT_MAX_UNHEALTHY_PER_GROUP,
    RepairFleet,
    auto_repair_findings,
)
from ._health_agent import agent_asset, install_health_agent
from ._props import check_props
from ._repair_control import repair_permissions, repair_rules
from ._repair_dashboard import breaker_alarms, repair_dashboard
from ._report_intake import report_intake
from ._tag_check import FleetsCarryTheClusterTag
from .eks import EksCluster
from .fleet import Fleet

SHIPPED_MODULES = ("contract", "kube_access", "patterns", "repair_policy")
"""The package's modules the repair function imports (``training_cluster.<module>`` in its asset)."""


def ledger_table(scope: Construct, construct_id: str) -> dynamodb.Table:
    """The repair ledger: one table, string keys ``pk`` and ``sk`` (the layout is
    ``lambda/repair/auto_repair/ledger.py``'s), kept when the stack goes, recoverable to a point in time."""
    return dynamodb.Table(
        scope,
        construct_id,
        partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING),
        sort_key=dynamodb.Attribute(name="sk", type=dynamodb.AttributeType.STRING),
        billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
        encryption=dynamodb.TableEncryption.AWS_MANAGED,
        point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
            point_in_time_recovery_enabled=True
        ),
        removal_policy=RemovalPolicy.RETAIN,
    )


@dataclass(frozen=True, kw_only=True)
class AutoRepairOptions:
    """How the control plane acts. Defaults as in the config's ``auto_repair`` section."""

    dry_run: bool = False
    """Decide and record, but reboot or replace nothing."""
    max_parallel_replacements: int = 1
    """Replacements in flight at once in one group (1 to 25)."""
    unhealthy_threshold_percent: int = 20
    """Above this share of a group unhealthy at once (and more than one node), stop and notify."""
    max_unhealthy_per_group: int = DEFAULT_MAX_UNHEALTHY_PER_GROUP
    """Above this many nodes of one group unhealthy at once, whatever its size, stop and notify (1 to 1,000)."""
    max_unhealthy_in_cluster: int = DEFAULT_MAX_UNHEALTHY_IN_CLUSTER
    """Above this many nodes of the cluster unhealthy at once, stop each group that acts, and notify (1 to 1,000)."""
    reboot_before_replace: bool = True
    """Reboot for faults a reboot can clear; replace only if the fault comes back within an hour."""
    check_interval_seconds: int = 30
    """How often the agent checks each node (10 to 3600)."""
    deep_checks: bool = False
    """On first boot, ``dcgmi diag -r 2`` and an EFA provider check before the node takes work."""
    policy: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """Overrides of the default policy: ``{"xid": {"79": "observe"}, "checks": {"lustre": "observe"}}``."""


class AutoRepair(Construct):
    """Watches every node of ``fleets`` (one cluster's) and repairs the failed ones.

    On each node: the health agent (``node/health``) as a systemd service (a bootstrap stage),
    reporting state changes in a health tag on its own instance and as EventBridge events, and a
    Healthy metric. The control plane: a Lambda function (reserved concurrency 1, a dead-letter
    queue) fed by AWS's tag-change events for the health tag, EC2 state changes, AWS Health
    scheduled events, Auto Scaling launch failures, a one-minute sweep of EC2 status checks and
    health tags, and the agent's reports that the report intake (``intake``, a function of its
    own) confirmed; a DynamoDB ledger; an S3 bucket for evidence; notifications on ``topic``; a
    CloudWatch dashboard and an alarm per group while its circuit breaker is open. Every mutating
    permission is limited to instances carrying the fleets' cluster tag (which each :class:`Fleet`
    puts on what it launches) and to the fleets' Auto Scaling groups (by name).

    The cluster's name and each group's come from the fleets (``cluster_name``, ``group_name``).

    A node speaks only for itself: its role may tag only its own instance, with the health tag
    only, and AWS's tag-change event says which instance that was; the agent's own event names
    an instance in its content, which anyone with a node's credentials can write, so the control
    plane believes it only as far as that instance's tag confirms it (see ``_health_agent``), and
    those events go to the intake, never straight to the repair function (see ``_report_intake``).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        fleets: Sequence[Fleet],
        topic: sns.ITopic,
        options: AutoRepairOptions | None = None,
        lustre_mount_path: str | None = None,
        vpc: ec2.IVpc | None = None,
        vpc_subnets: Sequence[ec2.ISubnet] = (),
    ) -> None:
        """
        :param fleets: the fleets to watch and repair, all of one cluster, each group once.
        :param topic: where notifications go (actions, circuit breaker, no capacity).
        :param options: default: :class:`AutoRepairOptions` as it is.
        :param lustre_mount_path: the file system the agent checks is mounted and answers;
            default: none checked.
        :param vpc: run the repair function in this VPC, in ``vpc_subnets`` (private, with a route
            to AWS's APIs): needed to reach a private Kubernetes API endpoint (:meth:`use_kubernetes`).
        """
        super().__init__(scope, construct_id)
        options = options or AutoRepairOptions()
        check_props(
            self,
            auto_repair_findings(
                fleets=[RepairFleet(cluster_name=f.cluster_name, group_name=f.group_name) for f in fleets],
                max_parallel_replacements=options.max_parallel_replacements,
                unhealthy_threshold_percent=options.unhealthy_threshold_percent,
                max_unhealthy_per_group=options.max_unhealthy_per_group,
                max_unhealthy_in_cluster=options.max_unhealthy_in_cluster,
                check_interval_seconds=options.check_interval_seconds,
                policy=options.policy,
                lustre_mount_path=lustre_mount_path,
            ),
            values={"lustre_mount_path": lustre_mount_path},
        )
        elsewhere = [f.group_name for f in fleets if Stack.of(f) is not Stack.of(self)]
        if elsewhere:
            raise PropsError(
                f"AutoRepair {self.node.path!r}",
                [
                    Finding(
                        path="fleets",
                        message=f"{', '.join(elsewhere)}: in another stack; the control plane and the fleets it "
                        "repairs refer to each other, so they must be in one stack",
                    )
                ],
            )
        self.fleets: tuple[Fleet, ...] = tuple(fleets)
        self.cluster_name: str = fleets[0].cluster_name
        self.node.add_validation(FleetsCarryTheClusterTag(self))
        policy = Policy.with_overrides(options.policy)

        self.table = ledger_table(self, "Ledger")
        self.evidence_bucket = s3.Bucket(
            self,
            "Evidence",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(90))],
            removal_policy=RemovalPolicy.RETAIN,
        )
        acknowledge(
            self.evidence_bucket,
            "S1",
            "only the cluster's own nodes write here, through SSM Run Command output, and each write is "
            "recorded in the repair ledger with its incident",
        )
        self.dead_letters = sqs.Queue(
            self, "DeadLetters", encryption=sqs.QueueEncryption.SQS_MANAGED, enforce_ssl=True,
            retention_period=Duration.days(14),
        )  # fmt: skip
        acknowledge(self.dead_letters, "SQS3", "this queue is itself the dead-letter queue of the repair function")

        if (vpc is None) != (not vpc_subnets):
            raise ValueError("AutoRepair: give vpc and vpc_subnets together, or neither")
        self.function = self._function(topic, options, vpc, vpc_subnets)
        self.intake = report_intake(
            self,
            cluster_name=self.cluster_name,
            table=self.table,
            repair_function=self.function,
            asg_names=self._asg_names(),
            modules=SHIPPED_MODULES,
        )
        repair_permissions(self, topic)
        repair_rules(self)
        agent = agent_asset(self, "Agent")
        for fleet in self.fleets:
            settings = {
                "cluster": fleet.cluster_name,
                "instance_group": fleet.group_name,
                "expected_gpus": fleet.instance_type.gpus,
                "expected_efa_devices": fleet.efa_interface_count,
                "expected_neuron_devices": fleet.instance_type.neuron_devices,
                "lustre_mount_path": lustre_mount_path,
                "interval_seconds": options.check_interval_seconds,
                "deep_checks": options.deep_checks,
                "transient_xids": policy.transient_xids(),
            }
            install_health_agent(self, fleet, agent=agent, evidence_bucket=self.evidence_bucket, settings=settings)
        self.dashboard = repair_dashboard(self)
        self.breaker_alarms = breaker_alarms(self, topic)

    def set_drain_command(self, controller: Fleet, command: str) -> None:
        """The orchestrator hook: before a reboot or replacement, run ``command NODE ACTION REASON``
        through SSM Run Command on ``controller``'s node (Slurm: ``slurm-drain.sh``). The
        function may send commands to cluster instances already."""
        self.function.add_environment("DRAIN_GROUP", controller.auto_scaling_group.auto_scaling_group_name)
        self.function.add_environment("DRAIN_COMMAND", command)

    def use_kubernetes(self, cluster: EksCluster) -> None:
        """The EKS hooks: before a reboot or replacement the node is cordoned, marked pending and
        its pods evicted through the Kubernetes API (bounded; PodDisruptionBudgets honoured up to
        the bound); a verified fault the control plane holds or defers marks the node
        ``Unschedulable`` (label and taint), a verified healthy node ``Schedulable``; a replaced
        node's Node object is deleted. The function authenticates with IAM: an access entry for
        its role in the group :data:`~training_cluster.kube_access.REPAIR_GROUP`, bound to a
        ClusterRole with exactly the verbs the client uses. The function must run in the
        cluster's VPC (``vpc``) to reach a private endpoint; where the VPC has interface endpoints
        with private DNS (``ClusterNetwork``'s), admit it: ``network.allow_endpoints_from(function, ...)``."""
        if not self.function.is_bound_to_vpc:
            raise ValueError(
                "use_kubernetes: the repair function reaches the cluster's private API endpoint from the VPC: "
                "create AutoRepair with vpc and vpc_subnets"
            )
        role = self.function.role
        assert role is not None
        self.function.add_environment("EKS_CLUSTER_NAME", cluster.cluster.cluster_name)
        self.function.add_environment("EKS_ENDPOINT", cluster.cluster.cluster_endpoint)
        self.function.add_environment("EKS_CERTIFICATE_AUTHORITY", cluster.cluster.cluster_certificate_authority_data)
        # The sweep labels each Node (node-restriction.kubernetes.io/...) with its group and accelerator,
        # from the Auto Scaling group it is in: what a node cannot claim for itself.
        self.function.add_environment(
            "GROUP_ACCELERATORS",
            json.dumps({fleet.group_name: fleet.instance_type.accelerator for fleet in self.fleets}, sort_keys=True),
        )
        cluster.allow_api_from(self.function)
        cluster.grant_repair(role)
        # A node's name in Kubernetes is its private DNS name, read from EC2.
        role.add_to_principal_policy(iam.PolicyStatement(actions=["ec2:DescribeInstances"], resources=["*"]))
        acknowledge(
            role,
            "IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole]",
            "a function in a VPC needs exactly the network-interface permissions AWS keeps in this managed policy",
        )

    def metric(
        self,
        metric_name: contract.RepairMetric,
        group_name: str,
        *,
        statistic: str = "Sum",
        period: Duration | None = None,
        label: str | None = None,
    ) -> cloudwatch.Metric:
        """A metric the control plane sends for one group (``TrainingCluster/Repair``, dimensions
        ``Cluster`` and ``InstanceGroup``). Default: its sum over 5 minutes, labelled with the group."""
        groups = [fleet.group_name for fleet in self.fleets]
        if group_name not in groups:
            raise ValueError(f"group_name must be one of the groups watched: {', '.join(groups)} (got {group_name!r})")
        return cloudwatch.Metric(
            namespace=contract.REPAIR_NAMESPACE,
            metric_name=metric_name,
            dimensions_map={contract.DIMENSION_CLUSTER: self.cluster_name, contract.DIMENSION_GROUP: group_name},
            statistic=statistic,
            period=period or Duration.minutes(5),
            label=label or group_name,
        )

    def metric_incidents(
        self, group_name: str, *, statistic: str = "Sum", period: Duration | None = None, label: str | None = None
    ) -> cloudwatch.Metric:
        """Signals of a group that opened an incident (default: the sum over 5 minutes)."""
        return self.metric("Incidents", group_name, statistic=statistic, period=period, label=label)

    def metric_reboots(
        self, group_name: str, *, statistic: str = "Sum", period: Duration | None = None, label: str | None = None
    ) -> cloudwatch.Metric:
        """Nodes of a group the control plane rebooted (default: the sum over 5 minutes)."""
        return self.metric("Reboots", group_name, statistic=statistic, period=period, label=label)

    def metric_replacements(
        self, group_name: str, *, statistic: str = "Sum", period: Duration | None = None, label: str | None = None
    ) -> cloudwatch.Metric:
        """Nodes of a group the control plane replaced (default: the sum over 5 minutes)."""
        return self.metric("Replacements", group_name, statistic=statistic, period=period, label=label)

    def metric_seconds_to_repair(
        self, group_name: str, *, statistic: str = "Maximum", period: Duration | None = None, label: str | None = None
    ) -> cloudwatch.Metric:
        """Seconds from an incident's first signal to its end, the node healthy again or replaced
        (default: the maximum over 5 minutes)."""
        return self.metric("SecondsToRepair", group_name, statistic=statistic, period=period, label=label)

    def metric_circuit_breaker_opened(
        self, group_name: str, *, statistic: str = "Sum", period: Duration | None = None, label: str | None = None
    ) -> cloudwatch.Metric:
        """Times a group's circuit breaker opened, too much of it unhealthy at once (default: the
        sum over 5 minutes)."""
        return self.metric("CircuitBreakerOpened", group_name, statistic=statistic, period=period, label=label)

    def _asg_names(self) -> dict[str, str]:
        """Auto Scaling group name (a token) -> instance group name, by group name: reordering the
        config's groups changes nothing of the function."""
        fleets = sorted(self.fleets, key=lambda fleet: fleet.group_name)
        return {fleet.auto_scaling_group.auto_scaling_group_name: fleet.group_name for fleet in fleets}

    def _function(
        self, topic: sns.ITopic, options: AutoRepairOptions, vpc: ec2.IVpc | None, subnets: Sequence[ec2.ISubnet]
    ) -> lambda_.Function:
        stack = Stack.of(self)
        environment = {
            "CLUSTER_NAME": self.cluster_name,
            "LEDGER_TABLE": self.table.table_name,
            "TOPIC_ARN": topic.topic_arn,
            "EVENT_BUS": "default",
            # Evidence of instance i-... goes under evidence/<cluster>/<this prefix>i-.../, the
            # instance's ARN: the only prefix that instance's role may write.
            "INSTANCE_ARN_PREFIX": f"arn:{Aws.PARTITION}:ec2:{Aws.REGION}:{Aws.ACCOUNT_ID}:instance/",
            "EVIDENCE_BUCKET": self.evidence_bucket.bucket_name,
            "AUTO_SCALING_GROUPS": stack.to_json_string(self._asg_names()),
            "POLICY": json.dumps(options.policy, sort_keys=True),
            "DRY_RUN": str(options.dry_run).lower(),
            "MAX_PARALLEL_REPLACEMENTS": str(options.max_parallel_replacements),
            "UNHEALTHY_THRESHOLD_PERCENT": str(options.unhealthy_threshold_percent),
            "MAX_UNHEALTHY_PER_GROUP": str(options.max_unhealthy_per_group),
            "MAX_UNHEALTHY_IN_CLUSTER": str(options.max_unhealthy_in_cluster),
            "REBOOT_BEFORE_REPLACE": str(options.reboot_before_replace).lower(),
        }
        return python_function(
            self,
            "Function",
            code="repair",
            modules=SHIPPED_MODULES,
            role_id="Role",
            logs_id="Logs",
            log_retention=logs.RetentionDays.THREE_MONTHS,
            timeout=Duration.minutes(5),
            memory_size=256,
            reserved_concurrent_executions=1,  # one decision at a time: the safety limits count correctly
            dead_letter_queue=self.dead_letters,
            # Not Lambda's six hours: an event hours late speaks of a tag that has moved on; the
            # one-minute sweep reads the tags as they are.
            max_event_age=Duration.minutes(10),
            environment=environment,
            description=f"Auto-repair control plane of cluster {self.cluster_name}",
            vpc=vpc,
            vpc_subnets=ec2.SubnetSelection(subnets=list(subnets)) if vpc is not None else None,
            allow_public_subnet=False,
        )
