"""Provisions Amazon Managed Grafana without the console: a CloudFormation custom resource.

Create and Update: a service account with a token that lives ten minutes, then through the
Grafana HTTP API of the workspace (its address from Managed Grafana itself, never from the event:
the token goes there) the Prometheus (SigV4) and CloudWatch data sources and every dashboard; the
token and the service account are deleted afterwards, whatever happened. Delete: the same
account removes the dashboards and data sources (nothing to do when the workspace is gone).
Python standard library and boto3 only.
"""

from __future__ import annotations

import json
import logging
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import boto3

log = logging.getLogger("training-cluster.grafana")
log.setLevel(logging.INFO)
TOKEN_SECONDS = 600
WORKSPACE_ID = re.compile(r"g-[0-9a-f]{10}")  # the service's pattern for workspace ids
Opener = Callable[..., Any]  # urllib.request.urlopen's shape: (request, timeout=...) -> response


class Grafana:
    """The Grafana HTTP API of one workspace, with a bearer token."""

    def __init__(self, base_url: str, token: str, timeout: float = 30, opener: Opener | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.opener = opener or urllib.request.urlopen

    def call(self, method: str, path: str, body: Any = None, missing_ok: bool = False) -> Any:
        request = urllib.request.Request(
            f"{self.base_url}{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with self.opener(request, timeout=self.timeout) as response:
                text = response.read().decode() or "{}"
        except urllib.error.HTTPError as error:
            if missing_ok and error.code == 404:
                return None
            raise RuntimeError(f"Grafana {method} {path}: HTTP {error.code} {error.read().decode()[:300]}") from None
        return json.loads(text)

    def put_data_source(self, source: Mapping[str, Any]) -> None:
        if self.call("GET", f"/api/datasources/uid/{source['uid']}", missing_ok=True) is None:
            self.call("POST", "/api/datasources", source)
        else:
            self.call("PUT", f"/api/datasources/uid/{source['uid']}", source)

    def put_dashboard(self, dashboard: Mapping[str, Any]) -> None:
        self.call("POST", "/api/dashboards/db", {"dashboard": {**dashboard, "id": None}, "overwrite": True})

    def delete_dashboard(self, uid: str) -> None:
        self.call("DELETE", f"/api/dashboards/uid/{uid}", missing_ok=True)

    def delete_data_source(self, uid: str) -> None:
        self.call("DELETE", f"/api/datasources/uid/{uid}", missing_ok=True)


def workspace_endpoint(client: Any, workspace_id: str) -> str:
    """The workspace's host as Managed Grafana describes it, checked to be that workspace's own
    ``<id>.grafana-workspace.<region>.amazonaws.com`` before any token is made for it."""
    if not WORKSPACE_ID.fullmatch(workspace_id):
        raise ValueError(
            f"WorkspaceId must be a Managed Grafana workspace id (g-, 10 hex digits), not {workspace_id!r}"
        )
    endpoint = client.describe_workspace(workspaceId=workspace_id)["workspace"]["endpoint"]
    expected = f"{workspace_id}.grafana-workspace.{client.meta.region_name}.amazonaws.com"
    if endpoint != expected:
        raise ValueError(f"workspace {workspace_id} gives its endpoint as {endpoint!r}, not {expected}: no token sent")
    return str(endpoint)


@contextmanager
def service_account_token(client: Any, workspace_id: str, name: str) -> Iterator[str]:
    """A short-lived admin token; the token and its account are deleted on the way out."""
    account = client.create_workspace_service_account(workspaceId=workspace_id, name=name, grafanaRole="ADMIN")
    token = None
    try:
        token = client.create_workspace_service_account_token(
            workspaceId=workspace_id, serviceAccountId=account["id"], name=name, secondsToLive=TOKEN_SECONDS
        )["serviceAccountToken"]
        yield str(token["key"])
    finally:
        if token is not None:
            client.delete_workspace_service_account_token(
                workspaceId=workspace_id, serviceAccountId=account["id"], tokenId=token["id"]
            )
        client.delete_workspace_service_account(workspaceId=workspace_id, serviceAccountId=account["id"])


def data_sources(props: Mapping[str, Any]) -> list[dict[str, Any]]:
    region = props["Region"]
    return [
        {
            "uid": props["PrometheusDataSourceUid"],
            "name": "Amazon Managed Prometheus",
            "type": "prometheus",
            "access": "proxy",
            "url": props["PrometheusUrl"].rstrip("/"),
            "isDefault": True,
            "jsonData": {
                "httpMethod": "POST",
                "sigV4Auth": True,
                "sigV4AuthType": "ec2_iam_role",
                "sigV4Region": region,
            },
        },
        {
            "uid": props["CloudWatchDataSourceUid"],
            "name": "Amazon CloudWatch",
            "type": "cloudwatch",
            "access": "proxy",
            "jsonData": {"authType": "ec2_iam_role", "defaultRegion": region},
        },
    ]


def provision(client: Any, props: Mapping[str, Any], request_type: str, opener: Opener | None = None) -> None:
    workspace = props["WorkspaceId"]
    endpoint = workspace_endpoint(client, workspace)
    dashboards = json.loads(props["Dashboards"])
    name = f"cfn-provisioner-{int(time.time())}"
    with service_account_token(client, workspace, name) as token:
        api = Grafana(f"https://{endpoint}", token, opener=opener)
        if request_type == "Delete":
            for dashboard in dashboards:
                api.delete_dashboard(dashboard["uid"])
            for source in data_sources(props):
                api.delete_data_source(source["uid"])
            return
        for source in data_sources(props):
            api.put_data_source(source)
        for dashboard in dashboards:
            api.put_dashboard(dashboard)


def respond(event: Mapping[str, Any], status: str, reason: str, physical_id: str) -> None:
    body = json.dumps(
        {
            "Status": status,
            "Reason": reason[:500],
            "PhysicalResourceId": physical_id,
            "StackId": event["StackId"],
            "RequestId": event["RequestId"],
            "LogicalResourceId": event["LogicalResourceId"],
            "Data": {},
        }
    ).encode()
    request = urllib.request.Request(event["ResponseURL"], data=body, method="PUT", headers={"Content-Type": ""})
    urllib.request.urlopen(request, timeout=30).close()


def handler(event: dict[str, Any], context: Any = None, *, client: Any = None, opener: Opener | None = None) -> None:
    props = event["ResourceProperties"]
    physical_id = event.get("PhysicalResourceId") or f"grafana-{props['WorkspaceId']}"
    grafana = client or boto3.client("grafana", region_name=props["Region"])
    try:
        provision(grafana, props, event["RequestType"], opener)
    except Exception as error:  # CloudFormation must always hear back, or the stack hangs for an hour
        log.exception("provisioning failed")
        if event["RequestType"] == "Delete" and "ResourceNotFoundException" in repr(error):
            respond(event, "SUCCESS", "the workspace is gone already", physical_id)
            return
        respond(event, "FAILED", f"{type(error).__name__}: {error}", physical_id)
        return
    respond(event, "SUCCESS", "provisioned", physical_id)
