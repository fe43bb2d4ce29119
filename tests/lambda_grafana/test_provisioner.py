"""The Grafana provisioning custom resource against a local HTTP server standing in for Grafana's
API, with botocore's Stubber for the grafana client (moto has none)."""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
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
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def grafana_api() -> Iterator[FakeGrafana]:
    fake = FakeGrafana()
    yield fake
    fake.server.shutdown()


def stubbed_client() -> tuple[Any, Stubber]:
    client = boto3.client("grafana", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    stubber = Stubber(client)
    stubber.add_response(
        "create_workspace_service_account",
        {"id": "sa-1", "name": "n", "grafanaRole": "ADMIN", "workspaceId": "g-123"},
        {"workspaceId": "g-123", "name": stubber_any(), "grafanaRole": "ADMIN"},
    )
    stubber.add_response(
        "create_workspace_service_account_token",
        {
            "serviceAccountToken": {"id": "tok-1", "name": "n", "key": TOKEN},
            "serviceAccountId": "sa-1",
            "workspaceId": "g-123",
        },
        {"workspaceId": "g-123", "serviceAccountId": "sa-1", "name": stubber_any(), "secondsToLive": 600},
    )
    stubber.add_response(
        "delete_workspace_service_account_token",
        {"tokenId": "tok-1", "serviceAccountId": "sa-1", "workspaceId": "g-123"},
        {"workspaceId": "g-123", "serviceAccountId": "sa-1", "tokenId": "tok-1"},
    )
    stubber.add_response(
        "delete_workspace_service_account",
        {"serviceAccountId": "sa-1", "workspaceId": "g-123"},
        {"workspaceId": "g-123", "serviceAccountId": "sa-1"},
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
            "WorkspaceId": "g-123",
            "WorkspaceEndpoint": "g-123.grafana-workspace.us-east-1.amazonaws.com",
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
        handler.handler(event(grafana_api, "Create"), client=client, base_url=grafana_api.url)
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
        handler.handler(event(grafana_api, "Update"), client=client, base_url=grafana_api.url)
    puts = [p for m, p, _, _ in grafana_api.requests if m == "PUT"]
    assert puts == [
        "/api/datasources/uid/training-cluster-prometheus",
        "/api/datasources/uid/training-cluster-cloudwatch",
    ]
    assert [r["Status"] for r in grafana_api.responses] == ["SUCCESS"]


def test_delete_cleans_up(grafana_api: FakeGrafana) -> None:
    client, stubber = stubbed_client()
    with stubber:
        handler.handler(event(grafana_api, "Delete"), client=client, base_url=grafana_api.url)
    deleted = [p for m, p, _, _ in grafana_api.requests if m == "DELETE"]
    assert (
        "/api/dashboards/uid/tc-demo-gpu" in deleted and "/api/datasources/uid/training-cluster-prometheus" in deleted
    )
    assert [r["Status"] for r in grafana_api.responses] == ["SUCCESS"]


def test_a_grafana_error_fails_the_resource_and_still_deletes_the_token(grafana_api: FakeGrafana) -> None:
    grafana_api.fail_dashboards = True
    client, stubber = stubbed_client()
    with stubber:
        handler.handler(event(grafana_api, "Create"), client=client, base_url=grafana_api.url)
    stubber.assert_no_pending_responses()
    (response,) = grafana_api.responses
    assert response["Status"] == "FAILED" and "HTTP 500" in response["Reason"]
    assert all(auth == f"Bearer {TOKEN}" for *_, auth in grafana_api.requests)
