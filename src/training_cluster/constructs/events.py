"""The cluster's events topic: fleet launch and terminate events, repair notifications, alerts."""

from __future__ import annotations

from aws_cdk import ArnFormat, Aws, RemovalPolicy, Stack, Token
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from constructs import Construct

from ..rules import got
from ..rules.settings import MAX_CLUSTER_NAME_LENGTH, name_problem
from ._props import check_props

AUTOSCALING_SERVICE_ROLE = "role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling"


class ClusterEvents(Construct):
    """An SNS topic encrypted with a KMS key of its own, which the cluster's publishers may use:

    - EC2 Auto Scaling (a fleet's ``notification_topic``), which publishes with its service-linked
      role: that role may use the key through SNS, for this topic only;
    - CloudWatch alarms of this account and region (the repair circuit breaker's): they may
      publish to the topic and use the key, for this topic only.

    Other publishers get their own grants (``Observability`` adds Amazon Managed Prometheus's).
    Subscribe with ``topic.add_subscription``.

    The topic is the main child (``Default``), so its logical ids (topic, policy, subscriptions)
    are those of an ``sns.Topic`` with this construct's id and scope; the key is ``Key``.
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, cluster_name: str, topic_name: str | None = None
    ) -> None:
        """
        :param cluster_name: the cluster whose events these are (lower case letters, digits and
            hyphens): names the topic by default and describes the key.
        :param topic_name: default ``<cluster_name>-events``. The topic has a name so that the key
            policy can name the topic's ARN without referring to it (the topic refers to the key:
            a reference back would be a dependency cycle); it must be unique in the account and region.
        """
        super().__init__(scope, construct_id)
        problem = None if Token.is_unresolved(cluster_name) else name_problem(cluster_name, MAX_CLUSTER_NAME_LENGTH)
        check_props(self, got("cluster_name", problem, cluster_name), values={"cluster_name": cluster_name})
        stack = Stack.of(self)
        topic_name = topic_name or f"{cluster_name}-events"
        self.key = kms.Key(
            self,
            "Key",
            description=f"Encrypts the cluster {cluster_name} events topic",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.DESTROY,
        )
        this_topic = {"kms:EncryptionContext:aws:sns:topicArn": stack.format_arn(service="sns", resource=topic_name)}
        # Auto Scaling publishes notifications with its service-linked role. A role is no service
        # principal: its requests carry no aws:SourceAccount or aws:SourceArn, and conditions on
        # them would silently stop the notifications. It may use the key through SNS, for this topic.
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                actions=["kms:GenerateDataKey*", "kms:Decrypt"],
                principals=[iam.ArnPrincipal(f"arn:{Aws.PARTITION}:iam::{Aws.ACCOUNT_ID}:{AUTOSCALING_SERVICE_ROLE}")],
                resources=["*"],
                conditions={"StringEquals": {"kms:ViaService": f"sns.{stack.region}.{stack.url_suffix}", **this_topic}},
            )
        )
        # CloudWatch alarms publish as the CloudWatch service: only for alarms of this account and
        # region (confused deputy), only to this topic.
        cloudwatch = iam.ServicePrincipal("cloudwatch.amazonaws.com")
        alarms = {
            "ArnLike": {
                "aws:SourceArn": stack.format_arn(
                    service="cloudwatch", resource="alarm", resource_name="*", arn_format=ArnFormat.COLON_RESOURCE_NAME
                )
            },
            "StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID},
        }
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                actions=["kms:GenerateDataKey*", "kms:Decrypt"],
                principals=[cloudwatch],
                resources=["*"],
                conditions={**alarms, "StringEquals": {**alarms["StringEquals"], **this_topic}},
            )
        )
        topic = sns.Topic(self, "Default", topic_name=topic_name, master_key=self.key, enforce_ssl=True)
        # The topic policy replaces SNS's default one, which let the account's alarms publish.
        topic.add_to_resource_policy(
            iam.PolicyStatement(
                actions=["sns:Publish"], principals=[cloudwatch], resources=[topic.topic_arn], conditions=alarms
            )
        )
        self.topic: sns.ITopic = topic
