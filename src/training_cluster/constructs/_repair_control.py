"""What feeds the repair function and what it may do: its EventBridge rules and its permissions.

Every mutating permission names the fleets' resources: reboot and Run Command on instances whose
``training-cluster:cluster`` tag is this cluster's (every :class:`Fleet` tags what it launches),
termination through each fleet's own Auto Scaling group (by name).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_cdk import Aws, Duration, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sns as sns

from .. import contract
from .._nag import acknowledge
from ._report_intake import MAX_REPORT_AGE

if TYPE_CHECKING:
    from .auto_repair import AutoRepair


def repair_permissions(repair: AutoRepair, topic: sns.ITopic) -> None:
    """The repair function's role: read the ledger and write it, publish to ``topic``, reboot and
    run commands on this cluster's instances (by tag), terminate through the fleets' groups."""
    role = repair.function.role
    assert role is not None
    arn = f"arn:{Aws.PARTITION}"
    instances = f"{arn}:ec2:{Aws.REGION}:{Aws.ACCOUNT_ID}:instance/*"
    tagged = {"StringEquals": {f"aws:ResourceTag/{contract.TAG_CLUSTER}": repair.cluster_name}}
    repair.table.grant_read_write_data(role)
    topic.grant_publish(role)
    statements = [
        iam.PolicyStatement(actions=["ec2:RebootInstances"], resources=[instances], conditions=tagged),
        iam.PolicyStatement(
            actions=["autoscaling:TerminateInstanceInAutoScalingGroup"],
            resources=[
                f"{arn}:autoscaling:{Aws.REGION}:{Aws.ACCOUNT_ID}:autoScalingGroup:*:autoScalingGroupName/"
                f"{fleet.auto_scaling_group.auto_scaling_group_name}"
                for fleet in repair.fleets
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
            conditions={"StringEquals": {"cloudwatch:namespace": contract.REPAIR_NAMESPACE}},
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
    stack = Stack.of(repair)
    for fleet in repair.fleets:
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


def repair_rules(repair: AutoRepair) -> None:
    """The rules that feed the repair function (AWS's events, the sweep) and the intake (the
    agent's events)."""
    target = targets.LambdaFunction(
        repair.function,
        dead_letter_queue=repair.dead_letters,
        retry_attempts=4,
        max_event_age=Duration.hours(1),
    )
    patterns = {
        # AWS's own event for a change of a node's health tag: the proof of which node spoke.
        "HealthTagChanges": events.EventPattern(
            source=["aws.tag"],
            detail_type=["Tag Change on Resource"],
            detail={
                "service": ["ec2"],
                "resource-type": ["instance"],
                "changed-tag-keys": [contract.HEALTH_TAG],
                "tags": {contract.TAG_CLUSTER: [repair.cluster_name]},
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
            detail={"AutoScalingGroupName": [f.auto_scaling_group.auto_scaling_group_name for f in repair.fleets]},
        ),
    }
    for name, pattern in patterns.items():
        events.Rule(repair, name, event_pattern=pattern, targets=[target])
    events.Rule(repair, "Sweep", schedule=events.Schedule.rate(Duration.minutes(1)), targets=[target])
    # The agent's own event: a claim (it names its instance in its content), which anyone who
    # may put events on the bus can forge. It goes to the intake, never to the repair function:
    # no dead-letter queue (forged reports must not fill the repair function's), and reports
    # older than the intake's limit are dropped (the tag-change event and the sweep cover them).
    events.Rule(
        repair,
        "AgentEvents",
        event_pattern=events.EventPattern(
            source=[contract.AGENT_SOURCE],
            detail_type=[contract.AGENT_DETAIL_TYPE],
            detail={"cluster": [repair.cluster_name]},
        ),
        targets=[targets.LambdaFunction(repair.intake, retry_attempts=2, max_event_age=MAX_REPORT_AGE)],
    )
