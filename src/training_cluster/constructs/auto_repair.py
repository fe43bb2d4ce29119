"""Auto-repair: a health agent on every node and a Lambda control plane that reboots or replaces."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from types import ModuleType

from aws_cdk import Aws, Duration, RemovalPolicy, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from .._assets import asset_path
from .._lambda import python_function
from .._nag import acknowledge
from ._health_agent import health_agent, install_health_agent, load_module
from ._report_intake import MAX_REPORT_AGE, report_intake
from .fleet import Fleet

REPAIR_NAMESPACE = "TrainingCluster/Repair"
TAG_CLUSTER = "training-cluster:cluster"


@cache
def repair_policy() -> ModuleType:
    """The control plane's policy module: the one source of the default XID and check actions."""
    return load_module("training_cluster._repair_policy", asset_path("lambda", "repair", "auto_repair", "policy.py"))


@dataclass(frozen=True, kw_only=True)
class AutoRepairOptions:
    """How the control plane acts. Defaults as in the config's ``auto_repair`` section."""

    dry_run: bool = False
    max_parallel_replacements: int = 1
    unhealthy_threshold_percent: int = 20
    reboot_before_replace: bool = True
    check_interval_seconds: int = 30
    deep_checks: bool = False
    policy: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


class AutoRepair(Construct):
    """Watches every node of ``fleets`` and repairs the failed ones.

    On each node: ``node/health_agent.py`` as a systemd service (a bootstrap stage), reporting
    state changes in a health tag on its own instance and as EventBridge events, and a Healthy
    metric. The control plane: a Lambda function (reserved concurrency 1, a dead-letter queue) fed
    by AWS's tag-change events for the health tag, EC2 state changes, AWS Health scheduled
    events, Auto Scaling launch failures, a one-minute sweep of EC2 status checks and health
    tags, and the agent's reports that the report intake (``intake``, a function of its own)
    confirmed; a DynamoDB ledger; an S3 bucket for evidence; notifications on ``topic``; a
    CloudWatch dashboard. Every mutating permission is limited to this cluster's instances (by
    tag) and Auto Scaling groups (by name).

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
        cluster_name: str,
        fleets: Mapping[str, Fleet],
        topic: sns.ITopic,
        options: AutoRepairOptions | None = None,
        lustre_mount_path: str | None = None,
    ) -> None:
        """
        :param cluster_name: the value of the ``training-cluster:cluster`` tag on the nodes.
        :param fleets: instance group name -> fleet to watch and repair.
        :param topic: where notifications go (actions, circuit breaker, no capacity).
        :param lustre_mount_path: checked by the agent when given.
        """
        super().__init__(scope, construct_id)
        options = options or AutoRepairOptions()
        policy = repair_policy()
        policy.Policy.with_overrides(options.policy)  # fail at synthesis, not at the first repair

        self.table = dynamodb.Table(
            self,
            "Ledger",
            partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="sk", type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=dynamodb.TableEncryption.AWS_MANAGED,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            removal_policy=RemovalPolicy.RETAIN,
        )
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

        asg_names = {fleet.auto_scaling_group.auto_scaling_group_name: name for name, fleet in fleets.items()}
        self.function = self._function(cluster_name, asg_names, topic, options)
        self.intake = report_intake(
            self, cluster_name=cluster_name, table=self.table, repair_function=self.function, asg_names=asg_names
        )
        self._permissions(cluster_name, fleets, topic)
        self._rules(cluster_name, [f.auto_scaling_group.auto_scaling_group_name for f in fleets.values()])
        transient = sorted(
            code for code, action in {**policy.XID, **options.policy.get("xid", {})}.items() if action == "observe"
        )
        agent = s3_assets.Asset(self, "Agent", path=str(asset_path("node", "health_agent.py")))
        for name, fleet in fleets.items():
            self._install_agent(cluster_name, name, fleet, agent, options, transient, lustre_mount_path)
        self.dashboard = self._dashboard(cluster_name, list(fleets))
        # A group of one node cannot trip the breaker (it needs more than one unhealthy node).
        self.breaker_alarms = self._breaker_alarms(
            cluster_name, [name for name, fleet in fleets.items() if fleet.count > 1], topic
        )

    def set_drain_command(self, controller: Fleet, command: str) -> None:
        """The orchestrator hook: before a reboot or replacement, run ``command NODE ACTION REASON``
        through SSM Run Command on ``controller``'s node (Slurm: ``slurm-drain.sh``). The
        function may send commands to cluster instances already."""
        self.function.add_environment("DRAIN_GROUP", controller.auto_scaling_group.auto_scaling_group_name)
        self.function.add_environment("DRAIN_COMMAND", command)

    def _function(
        self, cluster_name: str, asg_names: Mapping[str, str], topic: sns.ITopic, options: AutoRepairOptions
    ) -> lambda_.Function:
        environment = {
            "CLUSTER_NAME": cluster_name,
            "LEDGER_TABLE": self.table.table_name,
            "TOPIC_ARN": topic.topic_arn,
            "EVENT_BUS": "default",
            # Evidence of instance i-... goes under evidence/<cluster>/<this prefix>i-.../, the
            # instance's ARN: the only prefix that instance's role may write.
            "INSTANCE_ARN_PREFIX": f"arn:{Aws.PARTITION}:ec2:{Aws.REGION}:{Aws.ACCOUNT_ID}:instance/",
            "EVIDENCE_BUCKET": self.evidence_bucket.bucket_name,
            "AUTO_SCALING_GROUPS": Stack.of(self).to_json_string(dict(asg_names)),
            "POLICY": json.dumps(options.policy, sort_keys=True),
            "DRY_RUN": str(options.dry_run).lower(),
            "MAX_PARALLEL_REPLACEMENTS": str(options.max_parallel_replacements),
            "UNHEALTHY_THRESHOLD_PERCENT": str(options.unhealthy_threshold_percent),
            "REBOOT_BEFORE_REPLACE": str(options.reboot_before_replace).lower(),
        }
        return python_function(
            self,
            "Function",
            code="repair",
            role_id="Role",
            logs_id="Logs",
            log_retention=logs.RetentionDays.THREE_MONTHS,
            timeout=Duration.minutes(5),
            memory_size=256,
            reserved_concurrent_executions=1,  # one decision at a time: the safety limits count correctly
            dead_letter_queue=self.dead_letters,
            environment=environment,
            description=f"Auto-repair control plane of cluster {cluster_name}",
        )

    def _permissions(self, cluster_name: str, fleets: Mapping[str, Fleet], topic: sns.ITopic) -> None:
        role = self.function.role
        assert role is not None
        arn = f"arn:{Aws.PARTITION}"
        instances = f"{arn}:ec2:{Aws.REGION}:{Aws.ACCOUNT_ID}:instance/*"
        tagged = {"StringEquals": {f"aws:ResourceTag/{TAG_CLUSTER}": cluster_name}}
        self.table.grant_read_write_data(role)
        topic.grant_publish(role)
        statements = [
            iam.PolicyStatement(actions=["ec2:RebootInstances"], resources=[instances], conditions=tagged),
            iam.PolicyStatement(
                actions=["autoscaling:TerminateInstanceInAutoScalingGroup"],
                resources=[
                    f"{arn}:autoscaling:{Aws.REGION}:{Aws.ACCOUNT_ID}:autoScalingGroup:*:autoScalingGroupName/"
                    f"{fleet.auto_scaling_group.auto_scaling_group_name}"
                    for fleet in fleets.values()
                ],
            ),
            iam.PolicyStatement(
                actions=["ssm:SendCommand"], resources=[f"{arn}:ssm:{Aws.REGION}::document/AWS-RunShellScript"]
            ),
            iam.PolicyStatement(actions=["ssm:SendCommand"], resources=[instances], conditions=tagged),
            iam.PolicyStatement(
                actions=["events:PutEvents"],
                resources=[f"{arn}:events:{Aws.REGION}:{Aws.ACCOUNT_ID}:event-bus/default"],
            ),
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringEquals": {"cloudwatch:namespace": REPAIR_NAMESPACE}},
            ),
            iam.PolicyStatement(
                actions=[
                    "ec2:DescribeInstanceStatus",
                    "ec2:DescribeTags",
                    "autoscaling:DescribeAutoScalingGroups",
                    "autoscaling:DescribeAutoScalingInstances",
                    "ssm:GetCommandInvocation",
                ],
                resources=["*"],
            ),
        ]
        for statement in statements:
            role.add_to_principal_policy(statement)
        stack = Stack.of(self)
        for fleet in fleets.values():
            asg_id = stack.resolve(fleet.auto_scaling_group.node.default_child.logical_id)  # type: ignore[union-attr]
            acknowledge(
                role,
                "IAM5[Resource::arn:<AWS::Partition>:autoscaling:<AWS::Region>:<AWS::AccountId>:autoScalingGroup:*:"
                f"autoScalingGroupName/<{asg_id}>]",
                "an Auto Scaling group ARN holds a generated id; the group name in it is exact",
            )
        for finding, reason in (
            ("Action::kms:GenerateDataKey*", "SNS needs data keys of the events topic's own key to publish; "
             "the grant names that key only"),
            ("Resource::*", "read-only Describe and GetCommandInvocation calls, which take no resource ARN; "
             "PutMetricData is limited to the repair namespace by condition"),
            ("Resource::arn:<AWS::Partition>:ec2:<AWS::Region>:<AWS::AccountId>:instance/*",
             "reboot and Run Command are limited to instances tagged with this cluster's name by condition"),
        ):  # fmt: skip
            acknowledge(role, f"IAM5[{finding}]", reason)

    def _rules(self, cluster_name: str, asg_names: Sequence[str]) -> None:
        target = targets.LambdaFunction(
            self.function,
            dead_letter_queue=self.dead_letters,
            retry_attempts=4,
            max_event_age=Duration.hours(1),
        )
        agent = health_agent()
        patterns = {
            # AWS's own event for a change of a node's health tag: the proof of which node spoke.
            "HealthTagChanges": events.EventPattern(
                source=["aws.tag"],
                detail_type=["Tag Change on Resource"],
                detail={
                    "service": ["ec2"],
                    "resource-type": ["instance"],
                    "changed-tag-keys": [agent.HEALTH_TAG],
                    "tags": {TAG_CLUSTER: [cluster_name]},
                },
            ),
            "InstanceStateChanges": events.EventPattern(
                source=["aws.ec2"],
                detail_type=["EC2 Instance State-change Notification"],
                detail={"state": ["stopping", "stopped", "shutting-down", "terminated"]},
            ),
            "ScheduledMaintenance": events.EventPattern(
                source=["aws.health"],
                detail_type=["AWS Health Event"],
                detail={"service": ["EC2"], "eventTypeCategory": ["scheduledChange"]},
            ),
            "LaunchFailures": events.EventPattern(
                source=["aws.autoscaling"],
                detail_type=["EC2 Instance Launch Unsuccessful"],
                detail={"AutoScalingGroupName": list(asg_names)},
            ),
        }
        for name, pattern in patterns.items():
            events.Rule(self, name, event_pattern=pattern, targets=[target])
        events.Rule(self, "Sweep", schedule=events.Schedule.rate(Duration.minutes(1)), targets=[target])
        # The agent's own event: a claim (it names its instance in its content), which anyone who
        # may put events on the bus can forge. It goes to the intake, never to the repair function:
        # no dead-letter queue (forged reports must not fill the repair function's), and reports
        # older than the intake's limit are dropped (the tag-change event and the sweep cover them).
        events.Rule(
            self,
            "AgentEvents",
            event_pattern=events.EventPattern(
                source=[agent.SOURCE], detail_type=[agent.DETAIL_TYPE], detail={"cluster": [cluster_name]}
            ),
            targets=[targets.LambdaFunction(self.intake, retry_attempts=2, max_event_age=MAX_REPORT_AGE)],
        )

    def _install_agent(
        self,
        cluster_name: str,
        group: str,
        fleet: Fleet,
        agent: s3_assets.Asset,
        options: AutoRepairOptions,
        transient_xids: list[str],
        lustre_mount_path: str | None,
    ) -> None:
        info = fleet.instance_type
        settings = {
            "cluster": cluster_name,
            "instance_group": group,
            "expected_gpus": info.gpus,
            "expected_efa_devices": fleet.efa_interface_count,
            "expected_neuron_devices": info.neuron_devices,
            "lustre_mount_path": lustre_mount_path,
            "interval_seconds": options.check_interval_seconds,
            "deep_checks": options.deep_checks,
            "transient_xids": transient_xids,
        }
        install_health_agent(
            self, fleet, agent=agent, evidence_bucket=self.evidence_bucket, cluster_name=cluster_name, settings=settings
        )

    def _breaker_alarms(self, cluster_name: str, groups: Sequence[str], topic: sns.ITopic) -> list[cloudwatch.Alarm]:
        """An alarm per group while its circuit breaker has opened (the metric lives in CloudWatch,
        so the alert does too), notifying ``topic``."""
        alarms = []
        for group in groups:
            alarm = cloudwatch.Alarm(
                self,
                f"BreakerOpen{''.join(p.capitalize() for p in group.split('-'))}",
                alarm_description=f"Auto-repair stopped for instance group {group}: reset the breaker when safe",
                metric=cloudwatch.Metric(
                    namespace=REPAIR_NAMESPACE,
                    metric_name="CircuitBreakerOpened",
                    dimensions_map={"Cluster": cluster_name, "InstanceGroup": group},
                    statistic="Sum",
                    period=Duration.minutes(1),
                ),
                threshold=1,
                evaluation_periods=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )
            alarm.add_alarm_action(cloudwatch_actions.SnsAction(topic))
            alarms.append(alarm)
        return alarms

    def _dashboard(self, cluster_name: str, groups: Sequence[str]) -> cloudwatch.Dashboard:
        def repair(metric: str, statistic: str = "Sum") -> list[cloudwatch.IMetric]:
            return [
                cloudwatch.Metric(
                    namespace=REPAIR_NAMESPACE,
                    metric_name=metric,
                    dimensions_map={"Cluster": cluster_name, "InstanceGroup": group},
                    statistic=statistic,
                    period=Duration.minutes(5),
                    label=group,
                )
                for group in groups
            ]

        namespace = health_agent().NAMESPACE
        healthy = cloudwatch.MathExpression(
            expression=f'SEARCH(\'{{{namespace},Cluster,InstanceGroup,InstanceId}} MetricName="Healthy" '
            f"Cluster=\"{cluster_name}\"', 'Minimum', 60)",
            label="Healthy",
            period=Duration.minutes(1),
        )
        dashboard = cloudwatch.Dashboard(self, "Dashboard", dashboard_name=f"{cluster_name}-auto-repair")
        dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Nodes reporting healthy (1) or not (0)", left=[healthy], width=24),
            cloudwatch.GraphWidget(title="Incidents", left=repair("Incidents"), width=8),
            cloudwatch.GraphWidget(title="Reboots", left=repair("Reboots"), width=8),
            cloudwatch.GraphWidget(title="Replacements", left=repair("Replacements"), width=8),
            cloudwatch.GraphWidget(
                title="Seconds from signal to action", left=repair("SecondsToAction", "Maximum"), width=12
            ),
            cloudwatch.GraphWidget(
                title="Seconds from signal to repaired", left=repair("SecondsToRepair", "Maximum"), width=12
            ),
            cloudwatch.GraphWidget(title="Circuit breaker opened", left=repair("CircuitBreakerOpened"), width=12),
            cloudwatch.GraphWidget(
                title="Reports their node's health tag did not confirm", left=repair("UnconfirmedReports"), width=12
            ),
        )
        return dashboard
