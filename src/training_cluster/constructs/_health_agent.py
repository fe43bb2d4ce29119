"""The health agent on every node: its install stage, and what a node's role may do for it.

A node speaks only for itself. Its role may write the health tag (``HEALTH_TAG``, and no other
key) on its own instance only: ``aws:ARN``, the instance tagged, must equal
``${ec2:SourceInstanceARN}``, the instance the credentials were issued to. AWS's tag-change event
for that write is what tells the control plane which node spoke. The role may put only the
agent's events (``events:source`` and ``events:detail-type``), whose content names an instance
but proves nothing, and write evidence only under its own instance's ARN.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from types import ModuleType

from aws_cdk import Aws, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_assets as s3_assets
from constructs import Construct

from .._assets import asset_path
from .._nag import acknowledge
from .fleet import Fleet

AGENT_PATH = "/opt/training-cluster/health_agent.py"
AGENT_CONFIG = "/etc/training-cluster/health-agent.json"


def load_module(name: str, path: Path) -> ModuleType:
    """A module of an asset (Lambda or node code), loaded from its file for what synthesis shares with it."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


@cache
def health_agent() -> ModuleType:
    """The node agent's module: the one source of its event source and detail-type (``SOURCE``,
    ``DETAIL_TYPE``), its health tag's key (``HEALTH_TAG``) and its metric namespace (``NAMESPACE``)."""
    return load_module("training_cluster._health_agent", asset_path("node", "health_agent.py"))


def install_health_agent(
    scope: Construct,
    fleet: Fleet,
    *,
    agent: s3_assets.Asset,
    evidence_bucket: s3.Bucket,
    cluster_name: str,
    settings: Mapping[str, object],
) -> None:
    """Run ``agent`` (``node/health_agent.py``) with ``settings`` on every node of ``fleet``, and
    let the nodes' role report their own health and write their own evidence, and no more."""
    fleet.role.add_to_principal_policy(
        iam.PolicyStatement(actions=["s3:GetObject"], resources=[agent.bucket.arn_for_objects(agent.s3_object_key)])
    )
    contract = health_agent()
    # Who speaks comes from the node's credentials: it may write its health tag, and no other
    # key, on its own instance only. ForAllValues holds for an empty key list: hence the Null.
    fleet.role.add_to_principal_policy(
        iam.PolicyStatement(
            actions=["ec2:CreateTags"],
            resources=[f"arn:{Aws.PARTITION}:ec2:{Aws.REGION}:{Aws.ACCOUNT_ID}:instance/*"],
            conditions={
                "StringEquals": {"aws:ARN": "${ec2:SourceInstanceARN}"},
                "ForAllValues:StringEquals": {"aws:TagKeys": [contract.HEALTH_TAG]},
                "Null": {"aws:TagKeys": "false"},
            },
        )
    )
    fleet.role.add_to_principal_policy(
        iam.PolicyStatement(
            actions=["events:PutEvents"],
            resources=[f"arn:{Aws.PARTITION}:events:{Aws.REGION}:{Aws.ACCOUNT_ID}:event-bus/default"],
            conditions={"StringEquals": {"events:source": contract.SOURCE, "events:detail-type": contract.DETAIL_TYPE}},
        )
    )
    fleet.role.add_to_principal_policy(
        iam.PolicyStatement(
            actions=["cloudwatch:PutMetricData"],
            resources=["*"],
            conditions={"StringEquals": {"cloudwatch:namespace": contract.NAMESPACE}},
        )
    )
    # Evidence: SSM Run Command uploads its output with the node's own role, under the node's
    # own instance ARN (the control plane names that prefix): no node writes another's.
    prefix = f"evidence/{cluster_name}/${{ec2:SourceInstanceARN}}/*"
    fleet.role.add_to_principal_policy(
        iam.PolicyStatement(actions=["s3:PutObject"], resources=[evidence_bucket.arn_for_objects(prefix)])
    )
    bucket_id = Stack.of(scope).resolve(evidence_bucket.node.default_child.logical_id)  # type: ignore[union-attr]
    acknowledge(
        fleet.role,
        "IAM5[Resource::*]",
        "PutMetricData takes no resource ARN; the condition limits it to the health namespace",
    )
    acknowledge(
        fleet.role,
        f"IAM5[Resource::<{bucket_id}.Arn>/{prefix.replace('${', '<').replace('}', '>')}]",  # as cdk-nag shows it
        "Run Command writes one object per command under this node's own evidence prefix (its instance ARN, "
        "from its credentials); names are made then",
    )
    acknowledge(
        fleet.role,
        "IAM5[Resource::arn:<AWS::Partition>:ec2:<AWS::Region>:<AWS::AccountId>:instance/*]",
        "CreateTags is limited by condition to the node's own instance (aws:ARN equals ec2:SourceInstanceARN) "
        "and to its health tag key",
    )
    fleet.bootstrap.set("HEALTH_AGENT_S3_URI", agent.s3_object_url)
    fleet.bootstrap.add_stage("health-agent", _agent_stage(json.dumps(settings, sort_keys=True)))


def _agent_stage(settings_json: str) -> str:
    return f"""set -euo pipefail
# Install the health agent and run it as a systemd service (safe to run again).
aws s3 cp --only-show-errors "$HEALTH_AGENT_S3_URI" {AGENT_PATH}
chmod 0755 {AGENT_PATH}
cat > {AGENT_CONFIG} <<'JSON'
{settings_json}
JSON
cat > /etc/systemd/system/training-cluster-health.service <<'UNIT'
[Unit]
Description=cdk-training-cluster node health agent
After=network-online.target
Wants=network-online.target

[Service]
ExecStart=/usr/bin/python3 {AGENT_PATH} --config {AGENT_CONFIG}
Restart=always
RestartSec=10
StandardOutput=append:/var/log/training-cluster/health-agent.log
StandardError=append:/var/log/training-cluster/health-agent.log

[Install]
WantedBy=multi-user.target
UNIT
systemctl daemon-reload
systemctl enable --now training-cluster-health.service
systemctl restart training-cluster-health.service
"""
