"""Observability: Amazon Managed Prometheus with alert rules, Managed Grafana, and the alert route."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any, Literal

import jsii
from aws_cdk import Aws, CustomResource, Duration, IStableStringProducer, Lazy, RemovalPolicy, Stack, Token
from aws_cdk import aws_aps as aps
from aws_cdk import aws_grafana as grafana
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import aws_sns as sns
from constructs import Construct, IValidation

from .._assets import asset_path, grant_read
from .._lambda import python_function
from .._nag import acknowledge
from ..node_bootstrap import asset_stage
from ..rules import got
from ..rules.observability import scrape_interval_problem
from ._props import check_props
from .fleet import Fleet

ALERT_RULES = "alert_rules.yaml"
COLLECTOR_STAGE = asset_stage(
    "Metrics collectors", uri_setting="COLLECTORS_S3_URI", directory="/opt/training-cluster/observability",
    script="collectors.sh",
)  # fmt: skip
DASHBOARDS = ("overview", "gpu", "efa", "fsx", "repair")
PROMETHEUS_UID = "training-cluster-prometheus"
CLOUDWATCH_UID = "training-cluster-cloudwatch"


def alert_rules() -> str:
    """The alert rule groups (YAML) the workspace evaluates."""
    return files("training_cluster.observability").joinpath(ALERT_RULES).read_text(encoding="utf-8")


def dashboards(cluster_name: str, file_system_id: str | None) -> list[dict[str, Any]]:
    """The Grafana dashboards for one cluster (the FSx one only where there is a file system)."""
    folder = files("training_cluster.observability").joinpath("dashboards")
    out = []
    for name in DASHBOARDS:
        if name == "fsx" and file_system_id is None:
            continue
        text = folder.joinpath(f"{name}.json").read_text(encoding="utf-8").replace("__CLUSTER__", cluster_name)
        out.append(json.loads(text.replace("__FILE_SYSTEM_ID__", file_system_id or "")))
    return out


def arn_by_name(topic: sns.ITopic) -> str | None:
    """The topic's ARN without a reference to the topic: imported ones, and ours where the topic
    was given a name. ``None`` for a topic whose name CloudFormation makes up."""
    if not Token.is_unresolved(topic.topic_arn):
        return topic.topic_arn
    resource = topic.node.default_child
    if isinstance(resource, sns.CfnTopic) and resource.topic_name and not Token.is_unresolved(resource.topic_name):
        return Stack.of(topic).format_arn(service="sns", resource=resource.topic_name)
    return None


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
    its own. Nodes write to the workspace with SigV4 ``remote_write``: see :meth:`grant_remote_write`;
    :meth:`add_nodes` runs the metrics collectors on fleets.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        topic: sns.ITopic,
        topic_key: kms.IKey | None = None,
        cluster_name: str | None = None,
        file_system_id: str | None = None,
        options: ObservabilityOptions | None = None,
    ) -> None:
        """
        :param cluster_name: names the workspaces, alert rules and dashboards, and labels the alerts.
            Default: the cluster of the fleets given to :meth:`add_nodes` (synthesis fails when
            there are none); given, it must be theirs.
        :param topic: where alerts go. Amazon Managed Prometheus may publish to it for this
            workspace only.
        :param topic_key: the topic's KMS key, when it has one: the service may use it to publish
            for this workspace and this topic only, if the topic has a name (``topic_name``); for a
            topic CloudFormation names, for this account's workspaces (the alert route then refers
            to the topic, so a key policy naming the workspace would be a dependency cycle).
        :param file_system_id: the FSx file system whose CloudWatch metrics the FSx dashboard shows.
        """
        super().__init__(scope, construct_id)
        options = options or ObservabilityOptions()
        region = Stack.of(self).region
        self._cluster_name = cluster_name
        self._collectors: s3_assets.Asset | None = None
        if cluster_name is None:
            cluster_name = Lazy.string(_ClusterName(self))
            self.node.add_validation(_NeedsClusterName(self))
        # By name where it can be, so that the topic's key policy may name this workspace.
        topic_arn = arn_by_name(topic)
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
                f"  {line}\n"
                for line in alert_manager_config(topic_arn or topic.topic_arn, region, cluster_name).splitlines()
            ),
        )
        self.rules = aps.CfnRuleGroupsNamespace(
            self, "AlertRules", workspace=self.workspace.attr_arn, name=f"{cluster_name}-alerts", data=alert_rules()
        )
        # The service, for this workspace of this account only (confused deputy).
        service = iam.ServicePrincipal("aps.amazonaws.com")
        this_workspace = {
            "ArnEquals": {"aws:SourceArn": self.workspace.attr_arn},
            "StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID},
        }
        topic.add_to_resource_policy(
            iam.PolicyStatement(
                actions=["sns:Publish", "sns:GetTopicAttributes"],
                principals=[service],
                resources=[topic.topic_arn],
                conditions=this_workspace,
            )
        )
        if topic_key is not None:
            key_conditions: dict[str, Any]
            if topic_arn is not None:  # this workspace, for this topic
                key_conditions = {
                    **this_workspace,
                    "StringEquals": {
                        "aws:SourceAccount": Aws.ACCOUNT_ID,
                        "kms:EncryptionContext:aws:sns:topicArn": topic_arn,
                    },
                }
            else:  # the workspace refers to the topic, which refers to the key: this account's workspaces
                key_conditions = {
                    "ArnLike": {"aws:SourceArn": Stack.of(self).format_arn(service="aps", resource="workspace/*")},
                    "StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID},
                }
            topic_key.add_to_resource_policy(
                iam.PolicyStatement(
                    actions=["kms:GenerateDataKey*", "kms:Decrypt"],
                    principals=[service],
                    resources=["*"],
                    conditions=key_conditions,
                )
            )
        self.grafana: grafana.CfnWorkspace | None = None
        if options.grafana:
            self.grafana = self._grafana(cluster_name, options.grafana_auth)
            self._provision(cluster_name, self.grafana, dashboards(cluster_name, file_system_id))

    @property
    def cluster_name(self) -> str | None:
        """The cluster's name: given, or the fleets' once :meth:`add_nodes` has run."""
        return self._cluster_name

    def add_nodes(self, *, fleets: Sequence[Fleet], scrape_interval_seconds: int = 15) -> None:
        """Run the metrics collectors on every node of ``fleets`` (a bootstrap stage): node_exporter,
        the DCGM exporter on GPU nodes, the Neuron monitor on Trainium, and Prometheus in agent mode
        writing here. The collectors' files ship as one asset (``node/observability``). The fleets
        must be of this cluster. ``scrape_interval_seconds``: 5 to 300, as the config allows."""
        check_props(
            self,
            got("scrape_interval_seconds", scrape_interval_problem(scrape_interval_seconds), scrape_interval_seconds),
            values={"scrape_interval_seconds": scrape_interval_seconds},
        )
        clusters = sorted(
            {fleet.cluster_name for fleet in fleets} | ({self._cluster_name} if self._cluster_name else set())
        )
        if len(clusters) > 1:
            given = f"cluster_name {self._cluster_name!r}, " if self._cluster_name is not None else ""
            named = ", ".join(f"{fleet.group_name} of {fleet.cluster_name!r}" for fleet in fleets)
            raise ValueError(
                f"observability covers one cluster: fleets must be of the same cluster, got {given}{named}"
            )
        if clusters:
            self._cluster_name = clusters[0]
        if self._collectors is None:
            self._collectors = s3_assets.Asset(
                self, "Collectors", path=str(asset_path("node", "observability")), exclude=["__pycache__", "*.pyc"]
            )
        collectors = self._collectors
        region = Stack.of(self).region
        for fleet in fleets:
            self.grant_remote_write(fleet.role)
            grant_read(collectors, fleet.role)
            settings = {
                "COLLECTORS_S3_URI": collectors.s3_object_url,
                "PROMETHEUS_REMOTE_WRITE_URL": self.remote_write_url,
                "AWS_REGION_NAME": region,
                "SCRAPE_INTERVAL_SECONDS": str(scrape_interval_seconds),
                "EXPECTED_GPUS": str(fleet.instance_type.gpus),
                "EXPECTED_NEURON_DEVICES": str(fleet.instance_type.neuron_devices),
            }
            for key, value in settings.items():
                fleet.bootstrap.set(key, value)
            fleet.bootstrap.add_stage("metrics", COLLECTOR_STAGE)

    @property
    def remote_write_url(self) -> str:
        return f"{self.workspace.attr_prometheus_endpoint}api/v1/remote_write"

    def grant_remote_write(self, grantee: iam.IGrantable) -> iam.Grant:
        """Let ``grantee`` (the nodes' role) write metrics to the workspace."""
        return iam.Grant.add_to_principal(
            grantee=grantee, actions=["aps:RemoteWrite"], resource_arns=[self.workspace.attr_arn]
        )

    def _provision(self, cluster_name: str, workspace: grafana.CfnWorkspace, boards: list[dict[str, Any]]) -> None:
        """Data sources and dashboards through the Grafana HTTP API: a custom resource."""
        stack = Stack.of(self)
        function = python_function(
            self,
            "Provisioner",
            code="grafana",
            role_id="ProvisionerRole",
            logs_id="ProvisionerLogs",
            log_retention=logs.RetentionDays.ONE_MONTH,
            timeout=Duration.minutes(5),
            description=f"Provisions the Grafana data sources and dashboards of cluster {cluster_name}",
        )
        role = function.role
        assert role is not None
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=[
                    "grafana:DescribeWorkspace",  # its endpoint: where the token may go
                    "grafana:CreateWorkspaceServiceAccount",
                    "grafana:CreateWorkspaceServiceAccountToken",
                    "grafana:DeleteWorkspaceServiceAccountToken",
                    "grafana:DeleteWorkspaceServiceAccount",
                ],
                resources=[
                    f"arn:{Aws.PARTITION}:grafana:{Aws.REGION}:{Aws.ACCOUNT_ID}:/workspaces/{workspace.attr_id}"
                ],
            )
        )
        self.provisioning = CustomResource(
            self,
            "Provisioning",
            service_token=function.function_arn,
            resource_type="Custom::GrafanaProvisioning",
            properties={
                "WorkspaceId": workspace.attr_id,  # the endpoint comes from Managed Grafana, never from here
                "PrometheusUrl": self.workspace.attr_prometheus_endpoint,
                "Region": stack.region,
                "PrometheusDataSourceUid": PROMETHEUS_UID,
                "CloudWatchDataSourceUid": CLOUDWATCH_UID,
                "Dashboards": stack.to_json_string(boards),
            },
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


@jsii.implements(IStableStringProducer)
class _ClusterName:
    """The cluster's name when the template is written: the fleets' (see :meth:`Observability.add_nodes`)."""

    def __init__(self, observability: Observability) -> None:
        self._observability = observability

    def produce(self) -> str:
        name = self._observability.cluster_name
        if name is None:
            raise ValueError(f"{self._observability.node.path}: {_NO_NAME}")
        return name


@jsii.implements(IValidation)
class _NeedsClusterName:
    def __init__(self, observability: Observability) -> None:
        self._observability = observability

    def validate(self) -> list[str]:
        return [_NO_NAME] if self._observability.cluster_name is None else []


_NO_NAME = "observability needs cluster_name, or fleets (add_nodes) to take the cluster's name from; got neither"
