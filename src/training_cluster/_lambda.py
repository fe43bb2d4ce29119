"""The project's Lambda functions: one runtime, code from ``lambda/<name>/``, logs of their own."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aws_cdk import RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from ._assets import asset_path
from ._staging import lambda_code

RUNTIME = lambda_.Runtime.PYTHON_3_14


def python_function(
    scope: Construct,
    construct_id: str,
    *,
    code: str,
    role_id: str,
    logs_id: str,
    log_retention: logs.RetentionDays,
    handler: str = "handler.handler",
    modules: Sequence[str] = (),
    **props: Any,
) -> lambda_.Function:
    """A function running ``lambda/<code>/handler.py`` (caches left out of the asset, so its hash
    stays put), with a log group and a role that may write to that log group and nowhere else yet.
    ``handler`` picks another entry point of the same asset; ``modules`` are the package's
    standard-library-only modules it imports, shipped in it (``training_cluster.<module>``, see
    ``_staging``). Other props go to ``lambda_.Function``."""
    log_group = logs.LogGroup(scope, logs_id, retention=log_retention, removal_policy=RemovalPolicy.DESTROY)
    role = iam.Role(scope, role_id, assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
    log_group.grant_write(role)
    return lambda_.Function(
        scope,
        construct_id,
        runtime=RUNTIME,
        handler=handler,
        code=lambda_code(asset_path("lambda", code), modules)
        if modules
        else lambda_.Code.from_asset(str(asset_path("lambda", code)), exclude=["__pycache__", "*.pyc"]),
        role=role,
        log_group=log_group,
        **props,
    )
