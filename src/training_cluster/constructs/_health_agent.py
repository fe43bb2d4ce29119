"""The health agent on every node: its asset stage, and what a node's role may do for it.

A node speaks only for itself. Its role may write the health tag (``HEALTH_TAG``, and no other
key) on its own instance only: ``aws:ARN``, the instance tagged, must equal
``${ec2:SourceInstanceARN}``, the instance the credentials were issued to. AWS's tag-change event
for that write is what tells the control plane which node spoke. The role may put only the
agent's events (``events:source`` and ``events:detail-type``), whose content names an instance
but proves nothing, and write evidence only under its own instance's ARN.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping

from aws_cdk import Aws, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_assets as s3_assets
from constructs import Construct

from .. import contract
from .._assets import asset_path, grant_read
from .._nag import acknowledge
from .._staging import folder_asset
from ..node_bootstrap import asset_stage
from .fleet import Fleet

AGENT_DIR = posixpath.dirname(contract.HEALTH_AGENT_PATH)
AGENT_STAGE = asset_stage(
    "The health agent", uri_setting="HEALTH_AGENT_S3_URI", directory=AGENT_DIR, script="install.sh"
)


def agent_asset(scope: Construct, construct_id: str) -> s3_assets.Asset:
    """``node/health`` (the agent and its install script) with the contract the agent imports."""
    return folder_asset(scope, construct_id, asset_path("node", "health"), ["contract"])


def install_health_agent(
    scope: Construct,
    fleet: Fleet,
    *,
    agent: s3_assets.Asset,
    evidence_bucket: s3.IBucket,
    settings: Mapping[str, object],
) -> None:
    """Run ``agent`` (see :func:`agent_asset`) with ``settings`` on every node of ``fleet`` (a
    bootstrap stage), and let the nodes' role report their own health and write their own
    evidence, and no more."""
    grant_read(agent, fleet.role)
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
            conditions={
                "StringEquals": {
                    "events:source": contract.AGENT_SOURCE,
                    "events:detail-type": contract.AGENT_DETAIL_TYPE,
                }
            },
        )
    )
    fleet.role.add_to_principal_policy(
        iam.PolicyStatement(
            actions=["cloudwatch:PutMetricData"],
            resources=["*"],
            conditions={"StringEquals": {"cloudwatch:namespace": contract.HEALTH_NAMESPACE}},
        )
    )
    # Evidence: SSM Run Command uploads its output with the node's own role, under the node's
    # own instance ARN (the control plane names that prefix): no node writes another's.
    prefix = f"evidence/{fleet.cluster_name}/${{ec2:SourceInstanceARN}}/*"
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
    fleet.bootstrap.set("HEALTH_AGENT_SETTINGS", json.dumps(settings, sort_keys=True, separators=(",", ":")))
    fleet.bootstrap.add_stage("health-agent", AGENT_STAGE)
