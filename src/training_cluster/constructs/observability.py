"""Observability: Amazon Managed Prometheus with alert rules, Managed Grafana, and the alert route."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from typing import Literal

from aws_cdk import Aws, RemovalPolicy, Stack
from aws_cdk import aws_aps as aps
from aws_cdk import aws_grafana as grafana
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from constructs import Construct

from .._nag import acknowledge

ALERT_RULES = "alert_rules.yaml"


def alert_rules() -> str:
    """The alert rule groups (YAML) the workspace evaluates."""
    return files("training_cluster.observability").joinpath(ALERT_RULES).read_text(encoding="utf-8")


def alert_manager_config(topic_arn: str, region: str, cluster_name: str) -> str:
    """The alert manager configuration: every alert to the SNS topic, grouped per cluster and group."""
    return f"""route:
  receiver: sns
  group_by: [alertname, cluster, instance_group]
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 4h
receivers:
  - name: sns
    sns_configs:
      - topic_arn: {topic_arn}
        sigv4:
          region: {region}
        subject: '[{cluster_name}] {{{{ .CommonLabels.alertname }}}}'
        attributes:
          cluster: {cluster_name}
"""


@dataclass(frozen=True, kw_only=True)
class ObservabilityOptions:
    """Defaults as in the config's ``observability`` section."""

    grafana: bool = True
    grafana_auth: Literal["AWS_SSO", "SAML"] = "AWS_SSO"


class Observability(Construct):
    """An Amazon Managed Prometheus workspace (KMS-encrypted, logging to CloudWatch Logs) with the
    cluster's alert rules and an alert manager that sends every alert to ``topic``; and, unless
    switched off, an Amazon Managed Grafana workspace that reads it (and CloudWatch) with a role of
    its own. Nodes write to the workspace with SigV4 ``remote_write``: see :meth:`grant_remote_write`.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster_name: str,
        topic: sns.ITopic,
        topic_key: kms.IKey | None = None,
        options: ObservabilityOptions | None = None,
    ) -> None:
        """
        :param topic: where alerts go. Amazon Managed Prometheus is allowed to publish to it.
        :param topic_key: the topic's KMS key, when it has one: the service may use it to publish.
        """
        super().__init__(scope, construct_id)
        options = options or ObservabilityOptions()
        region = Stack.of(self).region
        self.key = kms.Key(
            self,
            "Key",
            description=f"Encrypts the metrics of cluster {cluster_name}",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.log_group = logs.LogGroup(
            self, "WorkspaceLogs", retention=logs.RetentionDays.ONE_MONTH, removal_policy=RemovalPolicy.DESTROY
        )
        # No L2 for Amazon Managed Prometheus: L1 resources.
        self.workspace = aps.CfnWorkspace(
            self,
            "Workspace",
            alias=f"{cluster_name}-metrics",
            kms_key_arn=self.key.key_arn,
            logging_configuration=aps.CfnWorkspace.LoggingConfigurationProperty(
                log_group_arn=f"{self.log_group.log_group_arn}"
            ),
            alert_manager_definition="alertmanager_config: |\n"
            + "".join(
                f"  {line}\n" for line in alert_manager_config(topic.topic_arn, region, cluster_name).splitlines()
            ),
        )
        self.rules = aps.CfnRuleGroupsNamespace(
            self, "AlertRules", workspace=self.workspace.attr_arn, name=f"{cluster_name}-alerts", data=alert_rules()
        )
        service = iam.ServicePrincipal("aps.amazonaws.com")
        topic.add_to_resource_policy(
            iam.PolicyStatement(
                actions=["sns:Publish", "sns:GetTopicAttributes"],
                principals=[service],
                resources=[topic.topic_arn],
                conditions={
                    "ArnEquals": {"aws:SourceArn": self.workspace.attr_arn},
                    "StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID},
                },
            )
        )
        if topic_key is not None:
            topic_key.grant(service, "kms:GenerateDataKey*", "kms:Decrypt")
        self.grafana: grafana.CfnWorkspace | None = None
        if options.grafana:
            self.grafana = self._grafana(cluster_name, options.grafana_auth)

    @property
    def remote_write_url(self) -> str:
        return f"{self.workspace.attr_prometheus_endpoint}api/v1/remote_write"

    def grant_remote_write(self, grantee: iam.IGrantable) -> iam.Grant:
        """Let ``grantee`` (the nodes' role) write metrics to the workspace."""
        return iam.Grant.add_to_principal(
            grantee=grantee, actions=["aps:RemoteWrite"], resource_arns=[self.workspace.attr_arn]
        )

    def _grafana(self, cluster_name: str, auth: str) -> grafana.CfnWorkspace:
        role = iam.Role(
            self,
            "GrafanaRole",
            assumed_by=iam.ServicePrincipal("grafana.amazonaws.com"),
            description=f"Managed Grafana of cluster {cluster_name}: reads its metrics",
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["aps:QueryMetrics", "aps:GetSeries", "aps:GetLabels", "aps:GetMetricMetadata"],
                resources=[self.workspace.attr_arn],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["aps:ListWorkspaces", "aps:DescribeWorkspace", "cloudwatch:DescribeAlarms",
                         "cloudwatch:GetMetricData", "cloudwatch:ListMetrics", "cloudwatch:GetMetricStatistics"],
                resources=["*"],
            )
        )  # fmt: skip
        self.key.grant_decrypt(role)
        acknowledge(
            role,
            "IAM5[Resource::*]",
            "listing workspaces and reading CloudWatch metrics take no resource ARN; all of it is read-only",
        )
        # No L2 for Amazon Managed Grafana: an L1 resource.
        return grafana.CfnWorkspace(
            self,
            "Grafana",
            name=f"{cluster_name}-grafana",
            description=f"Dashboards of training cluster {cluster_name}",
            account_access_type="CURRENT_ACCOUNT",
            authentication_providers=[auth],
            permission_type="CUSTOMER_MANAGED",
            role_arn=role.role_arn,
            data_sources=["PROMETHEUS", "CLOUDWATCH"],
        )
