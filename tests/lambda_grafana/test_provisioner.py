"""The Grafana provisioning custom resource against a local HTTP server standing in for Grafana's
API, with botocore's Stubber for the grafana client (moto has none). Requests for the workspace's
real host are routed to the local server; any other host is refused and recorded."""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from conftest import ROOT
from training_cluster.constructs.observability import dashboards

TOKEN = "glsa_short_lived_token"
WORKSPACE = "g-0123456789"
HOST = f"{WORKSPACE}.grafana-workspace.us-east-1.amazonaws.com"


def load_handler() -> ModuleType:
    spec = importlib.util.spec_from_file_location("grafana_handler", ROOT / "lambda" / "grafana" / "handler.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["grafana_handler"] = module
    spec.loader.exec_module(module)
    return module


handler = load_handler()


class FakeGrafana:
    """Records every request; answers like Grafana's HTTP API."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any, str]] = []
        self.sources: set[str] = set()
        self.fail_dashboards = False
        self.responses: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                if self.path == "/cfn-response":
                    outer.responses.append(body)
                    return self._answer(200, {})
                outer.requests.append((self.command, self.path, body, self.headers.get("Authorization", "")))
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self._answer(401, {"message": "unauthorized"})
                if self.command == "GET" and self.path.startswith("/api/datasources/uid/"):
                    uid = self.path.rsplit("/", 1)[-1]
                    return self._answer(200, {"uid": uid}) if uid in outer.sources else self._answer(404, {})
                if self.command == "POST" and self.path == "/api/datasources":
                    outer.sources.add(body["uid"])
                if self.path == "/api/dashboards/db" and outer.fail_dashboards:
                    return self._answer(500, {"message": "database is locked"})
                return self._answer(200, {"status": "success"})

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.hosts: list[str] = []  # every host the provisioner sent a request to
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def opener(self, request: urllib.request.Request, timeout: float) -> Any:
        """Like urlopen, for the workspace's host only: that host is this server."""
        url = urllib.parse.urlsplit(request.full_url)
        self.hosts.append(url.netloc)
        if (url.scheme, url.netloc) != ("https", HOST):
            raise urllib.error.URLError(f"the test refuses {url.scheme}://{url.netloc}")
        request.full_url = f"{self.url}{url.path}"
        return urllib.request.urlopen(request, timeout=timeout)


@pytest.fixture
def grafana_api() -> Iterator[FakeGrafana]:
    fake = FakeGrafana()
    yield fake
    fake.server.shutdown()


def described(endpoint: str = HOST) -> dict[str, Any]:
    """DescribeWorkspace's answer, as the service gives it."""
    return {
        "workspace": {
            "id": WORKSPACE,
            "endpoint": endpoint,
            "status": "ACTIVE",
            "created": "2026-12-01T00:00:00Z",
            "modified": "2026-12-01T00:00:00Z",
            "dataSources": ["PROMETHEUS", "CLOUDWATCH"],
            "grafanaVersion": "10.4",
            "authentication": {"providers": ["AWS_SSO"]},
        }
    }


def stubbed_client(endpoint: str = HOST, *, token: bool = True) -> tuple[Any, Stubber]:
    """The grafana client, expecting the workspace to be described first and then, with ``token``,
    the service account and token made and deleted."""
    client = boto3.client("grafana", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    stubber = Stubber(client)
    stubber.add_response("describe_workspace", described(endpoint), {"workspaceId": WORKSPACE})
    if not token:
        return client, stubber
    stubber.add_response(
        "create_workspace_service_account",
        {"id": "sa-1", "name": "n", "grafanaRole": "ADMIN", "workspaceId": WORKSPACE},
        {"workspaceId": WORKSPACE, "name": stubber_any(), "grafanaRole": "ADMIN"},
    )
    stubber.add_response(
        "create_workspace_service_account_token",
        {
            "serviceAccountToken": {"id": "tok-1", "name": "n", "key": TOKEN},
            "serviceAccountId": "sa-1",
            "workspaceId": WORKSPACE,
        },
        {"workspaceId": WORKSPACE, "serviceAccountId": "sa-1", "name": stubber_any(), "secondsToLive": 600},
    )
    stubber.add_response(
        "delete_workspace_service_account_token",
        {"tokenId": "tok-1", "serviceAccountId": "sa-1", "workspaceId": WORKSPACE},
        {"workspaceId": WORKSPACE, "serviceAccountId": "sa-1", "tokenId": "tok-1"},
    )
    stubber.add_response(
        "delete_workspace_service_account",
        {"serviceAccountId": "sa-1", "workspaceId": WORKSPACE},
        {"workspaceId": WORKSPACE, "serviceAccountId": "sa-1"},
    )
    return client, stubber


def stubber_any() -> Any:
    from botocore.stub import ANY

    return ANY


def event(api: FakeGrafana, request_type: str) -> dict[str, Any]:
    boards = dashboards("demo", "fs-0123456789abcdef0")
    return {
        "RequestType": request_type,
        "ResponseURL": f"{api.url}/cfn-response",
        "StackId": "arn:aws:cloudformation:us-east-1:111122223333:stack/demo/1",
        "RequestId": "r-1",
        "LogicalResourceId": "Provisioning",
        "ResourceProperties": {
            "WorkspaceId": WORKSPACE,
            "PrometheusUrl": "https://aps-workspaces.us-east-1.amazonaws.com/workspaces/ws-1/",
            "Region": "us-east-1",
            "PrometheusDataSourceUid": "training-cluster-prometheus",
            "CloudWatchDataSourceUid": "training-cluster-cloudwatch",
            "Dashboards": json.dumps(boards),
        },
    }


def test_create_provisions_data_sources_and_dashboards_then_deletes_the_token(grafana_api: FakeGrafana) -> None:
    client, stubber = stubbed_client()
    with stubber:
        handler.handler(event(grafana_api, "Create"), client=client, opener=grafana_api.opener)
    stubber.assert_no_pending_responses()  # the token and the service account were deleted
    posted = [(m, p, b) for m, p, b, _ in grafana_api.requests if m == "POST"]
    (prometheus,) = [b for m, p, b in posted if p == "/api/datasources" and b["type"] == "prometheus"]
    assert prometheus["jsonData"] == {
        "httpMethod": "POST",
        "sigV4Auth": True,
        "sigV4AuthType": "ec2_iam_role",
        "sigV4Region": "us-east-1",
    }
    assert prometheus["url"] == "https://aps-workspaces.us-east-1.amazonaws.com/workspaces/ws-1"
    titles = [b["dashboard"]["title"] for m, p, b in posted if p == "/api/dashboards/db"]
    assert titles == [
        "demo / cluster overview",
        "demo / GPUs",
        "demo / EFA and network",
        "demo / FSx for Lustre",
        "demo / auto-repair",
    ]
    assert all(b["overwrite"] for m, p, b in posted if p == "/api/dashboards/db")
    assert [r["Status"] for r in grafana_api.responses] == ["SUCCESS"]


def test_update_replaces_what_exists(grafana_api: FakeGrafana) -> None:
    grafana_api.sources = {"training-cluster-prometheus", "training-cluster-cloudwatch"}
    client, stubber = stubbed_client()
    with stubber:
        handler.handler(event(grafana_api, "Update"), client=client, opener=grafana_api.opener)
    puts = [p for m, p, _, _ in grafana_api.requests if m == "PUT"]
    assert puts == [
        "/api/datasources/uid/training-cluster-prometheus",
        "/api/datasources/uid/training-cluster-cloudwatch",
    ]
    assert [r["Status"] for r in grafana_api.responses] == ["SUCCESS"]


def test_delete_cleans_up(grafana_api: FakeGrafana) -> None:
    client, stubber = stubbed_client()
    with stubber:
        handler.handler(event(grafana_api, "Delete"), client=client, opener=grafana_api.opener)
    deleted = [p for m, p, _, _ in grafana_api.requests if m == "DELETE"]
    assert (
        "/api/dashboards/uid/tc-demo-gpu" in deleted and "/api/datasources/uid/training-cluster-prometheus" in deleted
    )
    assert [r["Status"] for r in grafana_api.responses] == ["SUCCESS"]


def test_a_grafana_error_fails_the_resource_and_still_deletes_the_token(grafana_api: FakeGrafana) -> None:
    grafana_api.fail_dashboards = True
    client, stubber = stubbed_client()
    with stubber:
        handler.handler(event(grafana_api, "Create"), client=client, opener=grafana_api.opener)
    stubber.assert_no_pending_responses()
    (response,) = grafana_api.responses
    assert response["Status"] == "FAILED" and "HTTP 500" in response["Reason"]
    assert all(auth == f"Bearer {TOKEN}" for *_, auth in grafana_api.requests)


def test_the_token_goes_to_the_described_workspace_not_to_the_host_the_event_names(grafana_api: FakeGrafana) -> None:
    """Issue 9: the event names no endpoint the provisioner believes; Managed Grafana says where it is."""
    forged = event(grafana_api, "Create")
    forged["ResourceProperties"]["WorkspaceEndpoint"] = "grafana.attacker.example"
    client, stubber = stubbed_client()
    with stubber:
        handler.handler(forged, client=client, opener=grafana_api.opener)
    stubber.assert_no_pending_responses()
    assert grafana_api.hosts and set(grafana_api.hosts) == {HOST}
    assert [r["Status"] for r in grafana_api.responses] == ["SUCCESS"]


@pytest.mark.parametrize(
    "endpoint",
    [
        "grafana.attacker.example",
        f"{HOST}.attacker.example",
        f"attacker.example/{HOST}",
        "g-9999999999.grafana-workspace.us-east-1.amazonaws.com",  # another workspace
        f"{WORKSPACE}.grafana-workspace.eu-west-1.amazonaws.com",  # another region
        f"{HOST}\n",
    ],
)
def test_an_endpoint_that_is_not_the_workspaces_own_host_gets_no_token(grafana_api: FakeGrafana, endpoint: str) -> None:
    client, stubber = stubbed_client(endpoint, token=False)
    with stubber:
        handler.handler(event(grafana_api, "Create"), client=client, opener=grafana_api.opener)
    stubber.assert_no_pending_responses()  # no service account, no token
    assert grafana_api.hosts == []
    (response,) = grafana_api.responses
    assert response["Status"] == "FAILED" and "no token sent" in response["Reason"]


def test_a_workspace_id_that_is_not_one_is_refused_before_any_call(grafana_api: FakeGrafana) -> None:
    bad = event(grafana_api, "Create")
    bad["ResourceProperties"]["WorkspaceId"] = "../g-0123456789"
    client = boto3.client("grafana", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(client):  # any call would fail the stubber
        handler.handler(bad, client=client, opener=grafana_api.opener)
    (response,) = grafana_api.responses
    assert response["Status"] == "FAILED" and "'../g-0123456789'" in response["Reason"]


def test_delete_succeeds_when_the_workspace_is_gone(grafana_api: FakeGrafana) -> None:
    client = boto3.client("grafana", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    stubber = Stubber(client)
    stubber.add_client_error("describe_workspace", "ResourceNotFoundException", http_status_code=404)
    with stubber:
        handler.handler(event(grafana_api, "Delete"), client=client, opener=grafana_api.opener)
    assert grafana_api.hosts == []
    assert [r["Status"] for r in grafana_api.responses] == ["SUCCESS"]
