"""The control plane's Kubernetes client against a loopback stand-in of the API server (HTTPS, a
CA made here): the exact requests it sends, what it refuses to send, the EKS token, TLS, and the
RBAC it needs (every verb the stand-in saw in this module is granted, and every grant is used)."""

from __future__ import annotations

import base64
import re
import socket
from collections.abc import Iterator
from typing import Any
from unittest import mock
from urllib.parse import parse_qs, urlsplit

import boto3
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from hypothesis import given
from hypothesis import strategies as st
from kube_stub import (
    ACCESS_KEY,
    CLUSTER,
    REGION,
    SECRET_KEY,
    Authority,
    KubeStub,
    Pki,
    Running,
    Seen,
    decoded_token,
    node,
    pod,
    signature_checks,
)

from auto_repair import kube_api
from auto_repair.aws import Clients
from auto_repair.drain import DrainError
from auto_repair.kube_api import EksToken, KubeApi, KubeError, NodeMismatch, eks_token
from auto_repair.kubernetes import (
    HealthLabeler,
    KubernetesDrain,
    connect,
    ec2_node_name,
    ec2_node_names,
    label_value,
    provider_instance,
)
from auto_repair.node_upkeep import UNLABELLED
from repair_world import Clock
from training_cluster.contract import (
    ANNOTATION_FAULT_REASON,
    LABEL_FAULT_TYPE,
    LABEL_HEALTH,
    PROTECTED_LABEL_ACCELERATOR,
    PROTECTED_LABEL_GROUP,
)
from training_cluster.kube_access import REPAIR_GROUP, REPAIR_RULES, cluster_role, cluster_role_binding, granted

SEEN: set[tuple[str, str, str]] = set()
"""(API group, resource, verb) of every request any stand-in got in this module."""
CREDENTIALS = Credentials(ACCESS_KEY, SECRET_KEY)
I1, I2, I3 = "i-0123456789abcdef0", "i-0fedcba9876543210", "i-00000000000000003"
NAMES = {I1: "ip-10-0-0-1.ec2.internal", I2: "ip-10-0-0-2.ec2.internal", I3: "ip-10-0-0-3.ec2.internal"}
N1 = f"/api/v1/nodes/{NAMES[I1]}"
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
MERGE = "application/merge-patch+json"
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")  # Kubernetes' rule


@pytest.fixture
def served(pki: Pki) -> Iterator[Running]:
    running = Running(KubeStub(rbac=SEEN), pki.chain, pki.key)
    running.stub.add(node(NAMES[I1], I1, taints=[dict(GPU_TAINT)]))
    running.stub.nodes[NAMES[I1]]["metadata"]["labels"]["team"] = "vision"
    yield running
    running.stop()


@pytest.fixture
def stub(served: Running) -> KubeStub:
    return served.stub


@pytest.fixture
def clock() -> Clock:
    return Clock(now=1000.0)


@pytest.fixture
def api(served: Running, pki: Pki, clock: Clock) -> Iterator[KubeApi]:
    client = KubeApi(served.url, pki.ca.data, EksToken(CREDENTIALS, CLUSTER, REGION, clock=clock), timeout_seconds=5)
    yield client
    client.close()


@pytest.fixture
def labeler(api: KubeApi) -> HealthLabeler:
    return HealthLabeler(api, NAMES.get)


def drain(labeler: HealthLabeler, clock: Clock) -> KubernetesDrain:
    return KubernetesDrain(labeler, sleep=clock.sleep, clock=clock)


Sent = tuple[str, str, dict[str, list[str]], str | None, Any]
"""method, path, query, content type, body"""


def sent(requests: list[Seen]) -> list[Sent]:
    return [(r.method, r.path, r.query, r.content_type, r.body) for r in requests]


def ours(status: str) -> dict[str, str]:
    return {"key": LABEL_HEALTH, "value": status, "effect": "NoSchedule"}


def eviction(namespace: str, name: str) -> Sent:
    body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": namespace}}
    return ("POST", f"/api/v1/namespaces/{namespace}/pods/{name}/eviction", {}, "application/json", body)


PODS_QUERY = {"fieldSelector": [f"spec.nodeName={NAMES[I1]}"], "limit": ["500"]}
LIST_PODS: Sent = ("GET", "/api/v1/pods", PODS_QUERY, None, None)
GET_N1: Sent = ("GET", N1, {}, None, None)


# The token ---------------------------------------------------------------------------------------


def test_the_token_is_a_presigned_get_caller_identity_with_the_cluster_header_signed() -> None:
    token = eks_token(Credentials(ACCESS_KEY, SECRET_KEY, "session-token"), CLUSTER, REGION)
    assert token.startswith("k8s-aws-v1.") and "=" not in token
    url = decoded_token(f"Bearer {token}")
    assert url is not None
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "sts.us-east-1.amazonaws.com", "/")
    assert query["Action"] == "GetCallerIdentity" and query["Version"] == "2011-06-15"
    assert query["X-Amz-Expires"] == "60" and query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert query["X-Amz-SignedHeaders"] == "host;x-k8s-aws-id"
    assert re.fullmatch(rf"{ACCESS_KEY}/\d{{8}}/us-east-1/sts/aws4_request", query["X-Amz-Credential"])
    assert query["X-Amz-Security-Token"] == "session-token"
    # the signature covers the cluster's name: right for it, wrong for another
    assert signature_checks(url) and not signature_checks(url, cluster="other")
    assert not signature_checks(url, secret_key="another-secret")


def test_a_boto3_session_signs_the_same_way_and_no_credentials_is_an_error() -> None:
    session = boto3.Session(aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name=REGION)
    url = decoded_token(f"Bearer {eks_token(session, CLUSTER, REGION)}")
    assert url is not None and signature_checks(url) and "X-Amz-Security-Token" not in url
    no_credentials = mock.Mock(spec=["get_credentials"], get_credentials=lambda: None)
    with pytest.raises(KubeError, match="no AWS credentials"):
        eks_token(no_credentials, CLUSTER, REGION)


def test_the_token_is_signed_again_after_14_minutes(clock: Clock) -> None:
    source = EksToken(CREDENTIALS, CLUSTER, REGION, clock=clock)
    with mock.patch.object(kube_api, "eks_token", wraps=kube_api.eks_token) as sign:
        first = source()
        clock.now += 14 * 60 - 1
        assert source() == first and sign.call_count == 1
        clock.now += 1
        source()
        assert sign.call_count == 2


def test_a_refused_token_is_signed_again_once(labeler: HealthLabeler, stub: KubeStub) -> None:
    stub.scripted[("GET", N1)] = [401]
    with mock.patch.object(kube_api, "eks_token", wraps=kube_api.eks_token) as sign:
        assert labeler.set_health(I1, "Schedulable") == NAMES[I1]
        assert sign.call_count == 2  # the first token, then a new one after the 401
    stub.scripted[("GET", N1)] = [401, 401]
    with pytest.raises(KubeError, match="401") as raised:
        labeler.node(I1)
    assert raised.value.status == 401


def test_every_request_carries_a_bearer_token_for_the_cluster(labeler: HealthLabeler, stub: KubeStub) -> None:
    labeler.set_health(I1, "Unschedulable", fault_type="gpu_count")
    assert len(stub.requests) == 2
    for request in stub.requests:
        url = decoded_token(request.authorization)
        assert url is not None and signature_checks(url), request.authorization


# TLS and the transport ---------------------------------------------------------------------------


def test_a_server_with_a_certificate_of_another_ca_is_refused(pki: Pki, clock: Clock) -> None:
    rogue = Running(KubeStub(rbac=SEEN), *Authority.make("rogue").issue(pki.folder / "rogue"))
    try:
        client = KubeApi(rogue.url, pki.ca.data, EksToken(CREDENTIALS, CLUSTER, REGION, clock=clock))
        with pytest.raises(KubeError, match="CERTIFICATE_VERIFY_FAILED"):
            HealthLabeler(client, NAMES.get).node(I1)
        assert rogue.stub.requests == []  # not a byte of the request, nor the token, was sent
    finally:
        rogue.stop()


def test_a_certificate_of_the_cluster_ca_for_another_host_is_refused(pki: Pki, clock: Clock) -> None:
    other = Running(KubeStub(rbac=SEEN), *pki.ca.issue(pki.folder / "other", ip="127.0.0.2", dns="other.example"))
    try:
        client = KubeApi(other.url, pki.ca.data, EksToken(CREDENTIALS, CLUSTER, REGION, clock=clock))
        with pytest.raises(KubeError, match="mismatch"):
            HealthLabeler(client, NAMES.get).node(I1)
        assert other.stub.requests == []
    finally:
        other.stop()


def test_a_server_that_never_answers_times_out(pki: Pki, clock: Clock) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts connections, never speaks TLS
        url = f"https://127.0.0.1:{silent.getsockname()[1]}"
        client = KubeApi(url, pki.ca.data, EksToken(CREDENTIALS, CLUSTER, REGION, clock=clock), timeout_seconds=0.2)
        with pytest.raises(KubeError, match="timed out"):
            client.call("get", "nodes", "GET", N1)


def test_after_an_unanswered_request_the_next_ones_fail_at_once_for_a_while(pki: Pki, clock: Clock) -> None:
    """Each unanswered request costs a timeout, and they stand between a fault and its repair."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        url = f"https://127.0.0.1:{silent.getsockname()[1]}"
        client = KubeApi(
            url, pki.ca.data, EksToken(CREDENTIALS, CLUSTER, REGION, clock=clock), timeout_seconds=0.2, clock=clock
        )
        with pytest.raises(KubeError, match="timed out"):
            client.call("get", "nodes", "GET", N1)
        silent.close()
        with mock.patch.object(client, "_send", side_effect=AssertionError("sent")):
            with pytest.raises(KubeError, match="not sent, the API did not answer a moment ago"):
                client.call("patch", "nodes", "PATCH", N1, body={})
            clock.now += kube_api.UNREACHABLE_SECONDS
            with pytest.raises(AssertionError, match="sent"):  # tried again once the while is over
                client.call("get", "nodes", "GET", N1)


@pytest.mark.parametrize(
    ("endpoint", "ca", "error"),
    [
        ("http://127.0.0.1:1", "ok", "is not an https://host"),
        ("https://example.com/api", "ok", "is not an https://host"),
        ("https://example.com", "not base64!", "is not base64 of a PEM"),
        (
            "https://example.com",
            base64.b64encode(b"-----BEGIN CERTIFICATE-----\nAAAA\n").decode(),
            "not base64 of a PEM",
        ),
    ],
)
def test_the_endpoint_and_ca_are_checked(pki: Pki, endpoint: str, ca: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        KubeApi(endpoint, pki.ca.data if ca == "ok" else ca, EksToken(CREDENTIALS, CLUSTER, REGION))


def test_a_request_the_rules_do_not_grant_is_not_sent(api: KubeApi, stub: KubeStub) -> None:
    with pytest.raises(KubeError, match=r"delete pods is not granted by kube_access\.REPAIR_RULES: not sent"):
        api.call("delete", "pods", "DELETE", "/api/v1/namespaces/training/pods/worker-0")
    with pytest.raises(KubeError, match=r"update nodes is not granted"):
        api.call("update", "nodes", "PUT", N1, body={})
    assert stub.requests == []


def test_the_connection_is_kept_alive_and_opened_again_when_the_server_closed_it(api: KubeApi, served: Running) -> None:
    api.call("get", "nodes", "GET", N1)
    first = api._connection
    api.call("get", "nodes", "GET", N1)
    assert api._connection is first is not None
    first.sock.close()  # as a server's idle timeout would
    assert api.call("get", "nodes", "GET", N1)[0] == 200
    assert len(served.stub.requests) == 3


# Finding the node --------------------------------------------------------------------------------

MISMATCHES = {
    "another instance's (a private IP used again)": f"aws:///us-east-1a/{I2}",
    "a longer id ending with the id": "aws:///us-east-1a/i-00123456789abcdef0",
    "the id not after a slash": f"aws:///us-east-1a/x{I1}",
    "something after the id": f"aws:///us-east-1a/{I1}/x",
    "another scheme": f"gce:///us-east-1a/{I1}",
    "none": None,
}


@pytest.mark.parametrize("provider_id", MISMATCHES.values(), ids=MISMATCHES.keys())
def test_a_node_whose_provider_id_is_not_the_instance_is_refused_with_no_write(
    labeler: HealthLabeler, stub: KubeStub, clock: Clock, provider_id: str | None
) -> None:
    stub.nodes[NAMES[I1]]["spec"]["providerID"] = provider_id
    with pytest.raises(NodeMismatch, match=f"node {NAMES[I1]} has providerID .*, not {I1}'s: left alone"):
        labeler.set_health(I1, "Unschedulable")
    with pytest.raises(NodeMismatch):
        drain(labeler, clock)(I1, "replace", "replace: xid 79")
    with pytest.raises(NodeMismatch):
        labeler.delete_node(I1)
    assert stub.writes() == [] and {r.path for r in stub.requests} == {N1}


def test_the_node_name_comes_from_ec2_once_per_instance(stub: KubeStub, api: KubeApi) -> None:
    clients = Clients(region=REGION, session=boto3.Session(ACCESS_KEY, SECRET_KEY, region_name=REGION))
    described = {"Reservations": [{"Instances": [{"InstanceId": I1, "PrivateDnsName": NAMES[I1]}]}]}
    with Stubber(clients.ec2) as ec2:
        ec2.add_response("describe_instances", described, {"InstanceIds": [I1]})
        ec2.add_response(
            "describe_instances", {"Reservations": [{"Instances": [{"InstanceId": I2}]}]}, {"InstanceIds": [I2]}
        )
        labeler = HealthLabeler(api, ec2_node_name(clients))
        assert labeler.node(I1) is not None
        labeler.set_health(I1, "Unschedulable")  # the name is kept: EC2 is not asked again
        with pytest.raises(KubeError, match=f"{I2} has no private DNS name"):
            labeler.node(I2)  # terminated: EC2 reports no name
        ec2.assert_no_pending_responses()


def test_connect_builds_the_labeler_from_the_clients(served: Running, pki: Pki) -> None:
    clients = Clients(region=REGION, session=boto3.Session(ACCESS_KEY, SECRET_KEY, region_name=REGION))
    labeler = connect(clients, cluster_name=CLUSTER, endpoint=served.url, certificate_authority=pki.ca.data)
    with Stubber(clients.ec2) as ec2:
        described = {"Reservations": [{"Instances": [{"InstanceId": I1, "PrivateDnsName": NAMES[I1]}]}]}
        ec2.add_response("describe_instances", described, {"InstanceIds": [I1]})
        assert labeler.set_health(I1, "Unschedulable", fault_type="xid") == NAMES[I1]
    assert served.stub.nodes[NAMES[I1]]["metadata"]["labels"][LABEL_HEALTH] == "Unschedulable"
    labeler.api.close()


# Health: labels, taint, fault --------------------------------------------------------------------


def test_an_unhealthy_status_sets_the_label_taint_and_fault_and_keeps_the_rest(
    labeler: HealthLabeler, stub: KubeStub
) -> None:
    assert labeler.set_health(I1, "Unschedulable", fault_type="gpu_count", reason="7 GPUs of 8") == NAMES[I1]
    body = {
        "metadata": {
            "labels": {LABEL_HEALTH: "Unschedulable", LABEL_FAULT_TYPE: "gpu_count"},
            "annotations": {ANNOTATION_FAULT_REASON: "7 GPUs of 8"},
            "resourceVersion": "100",
        },
        "spec": {"taints": [GPU_TAINT, ours("Unschedulable")]},
    }
    assert sent(stub.requests) == [GET_N1, ("PATCH", N1, {}, MERGE, body)]
    stored = stub.nodes[NAMES[I1]]
    assert stored["metadata"]["labels"]["team"] == "vision" and "unschedulable" not in stored["spec"]


def test_schedulable_clears_only_our_taint_and_the_fault(labeler: HealthLabeler, stub: KubeStub) -> None:
    labeler.set_health(I1, "UnschedulablePendingReboot", fault_type="xid", reason="xid 79", cordon=True)
    stub.requests.clear()
    assert labeler.set_health(I1, "Schedulable", cordon=False) == NAMES[I1]
    body = {
        "metadata": {
            "labels": {LABEL_HEALTH: "Schedulable", LABEL_FAULT_TYPE: None},
            "annotations": {ANNOTATION_FAULT_REASON: None},
            "resourceVersion": "101",
        },
        "spec": {"taints": [GPU_TAINT], "unschedulable": False},
    }
    assert sent(stub.requests) == [GET_N1, ("PATCH", N1, {}, MERGE, body)]
    metadata = stub.nodes[NAMES[I1]]["metadata"]
    assert metadata["labels"]["team"] == "vision" and LABEL_FAULT_TYPE not in metadata["labels"]
    assert ANNOTATION_FAULT_REASON not in metadata.get("annotations", {})


def test_a_status_the_node_has_already_is_not_written_again(labeler: HealthLabeler, stub: KubeStub) -> None:
    labeler.set_health(I1, "Unschedulable", fault_type="gpu_count")
    stub.requests.clear()
    labeler.set_health(I1, "Unschedulable", fault_type="gpu_count")
    assert sent(stub.requests) == [GET_N1]
    with pytest.raises(ValueError, match="health status 'Sick' is not one of Schedulable, Unschedulable"):
        labeler.set_health(I1, "Sick")  # type: ignore[arg-type]


def test_a_conflict_is_read_again_and_keeps_the_other_writers_change(labeler: HealthLabeler, stub: KubeStub) -> None:
    other = {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}

    def another_writer(current: dict[str, Any]) -> None:  # the node lifecycle controller, say
        current["spec"]["taints"].append(other)
        current["metadata"]["resourceVersion"] = "107"

    stub.before_patch.append(another_writer)
    labeler.set_health(I1, "Unschedulable")
    patches = [r.body for r in stub.requests if r.method == "PATCH"]
    assert [p["metadata"]["resourceVersion"] for p in patches] == ["100", "107"]
    assert patches[1]["spec"]["taints"] == [GPU_TAINT, other, ours("Unschedulable")]
    assert [r.method for r in stub.requests] == ["GET", "PATCH", "GET", "PATCH"]
    assert stub.nodes[NAMES[I1]]["spec"]["taints"] == [GPU_TAINT, other, ours("Unschedulable")]


def test_conflicts_are_retried_a_bounded_number_of_times(labeler: HealthLabeler, stub: KubeStub) -> None:
    stub.scripted[("PATCH", N1)] = [409] * 10
    with pytest.raises(KubeError, match=f"node {NAMES[I1]} changed under 5 writes in a row") as raised:
        labeler.set_health(I1, "Unschedulable")
    assert raised.value.status == 409 and isinstance(raised.value, DrainError)
    assert [r.method for r in stub.requests] == ["GET", "PATCH"] * 5


def test_a_forged_fault_becomes_a_valid_label_and_a_one_line_annotation(labeler: HealthLabeler, stub: KubeStub) -> None:
    fault = "../../x; rm -rf /\n<script>" + "é" * 80
    reason = "line one\nline two\x00\x1b[31m red" + "x" * 2000
    labeler.set_health(I1, "Unschedulable", fault_type=fault, reason=reason)
    metadata = stub.nodes[NAMES[I1]]["metadata"]  # as the stand-in stored it
    label, note = metadata["labels"][LABEL_FAULT_TYPE], metadata["annotations"][ANNOTATION_FAULT_REASON]
    assert label == "x-rm--rf-script" and LABEL_VALUE.fullmatch(label)
    assert note.startswith("line one line two  [31m redxxx") and len(note) == 1024 and note.isprintable()
    labeler.set_health(I1, "Unschedulable", fault_type="///")  # nothing valid left: the label goes
    assert LABEL_FAULT_TYPE not in stub.nodes[NAMES[I1]]["metadata"]["labels"]


@given(st.text())
def test_every_label_value_is_valid(text: str) -> None:
    value = label_value(text)
    assert value is None or (len(value) <= 63 and LABEL_VALUE.fullmatch(value))
    assert value == label_value(value or "")  # already valid values are kept as they are


# The drain ---------------------------------------------------------------------------------------


def add_pods(stub: KubeStub) -> None:
    on = NAMES[I1]
    stub.add(
        pod("worker-0", on, ownerReferences=[{"kind": "PyTorchJob", "name": "job", "controller": True}]),
        pod("worker-1", on),
        pod("aws-node-x", on, namespace="kube-system", ownerReferences=[{"kind": "DaemonSet", "controller": True}]),
        pod("kube-proxy-static", on, namespace="kube-system", annotations={"kubernetes.io/config.mirror": "abc"}),
        pod("finished", on, phase="Succeeded"),
        pod("elsewhere", NAMES[I2]),
    )


def test_the_drain_cordons_marks_and_evicts_all_but_daemonset_and_mirror_pods(
    labeler: HealthLabeler, stub: KubeStub, clock: Clock
) -> None:
    add_pods(stub)
    wait = drain(labeler, clock)(I1, "replace", "replace: xid 79: fell off the bus")
    body = {
        "metadata": {
            "labels": {LABEL_HEALTH: "UnschedulablePendingReplacement"},
            "annotations": {ANNOTATION_FAULT_REASON: "replace: xid 79: fell off the bus"},
            "resourceVersion": "100",
        },
        "spec": {"taints": [GPU_TAINT, ours("UnschedulablePendingReplacement")], "unschedulable": True},
    }
    started = [GET_N1, ("PATCH", N1, {}, MERGE, body), LIST_PODS, eviction("training", "worker-0")]
    assert sent(stub.requests) == [*started, eviction("training", "worker-1")]  # at once, before the wait
    assert wait() == f"evicted 2 pods from {NAMES[I1]}"
    assert sent(stub.requests[5:]) == [LIST_PODS] and clock.slept == []
    left = {p["metadata"]["name"] for p in stub.pods}
    assert left == {"aws-node-x", "kube-proxy-static", "finished", "elsewhere"}


def test_a_disruption_budget_that_refuses_then_allows(labeler: HealthLabeler, stub: KubeStub, clock: Clock) -> None:
    add_pods(stub)
    stub.scripted[eviction("training", "worker-0")[:2]] = [429, 429]
    wait = drain(labeler, clock)(I1, "reboot", "reboot: xid 79")
    assert wait() == f"evicted 2 pods from {NAMES[I1]}"
    posts = [r.path.split("/")[-2] for r in stub.requests if r.method == "POST"]
    assert posts == ["worker-0", "worker-1", "worker-0", "worker-0"]
    assert clock.slept == [1.0, 1.0]
    assert stub.nodes[NAMES[I1]]["metadata"]["labels"][LABEL_HEALTH] == "UnschedulablePendingReboot"


def test_a_disruption_budget_that_refuses_until_the_bound(labeler: HealthLabeler, stub: KubeStub, clock: Clock) -> None:
    add_pods(stub)
    stub.scripted[eviction("training", "worker-0")[:2]] = [429] * 100
    start = clock.now
    wait = drain(labeler, clock)(I1, "replace", "x")
    expected = (
        f"1 pod still running on {NAMES[I1]} after 15 s: training/worker-0 "
        "(a disruption budget refused training/worker-0)"
    )
    assert wait() == expected
    assert clock.now == start + 15 and sum(clock.slept) == 15  # never past the bound
    # tried at the call and at 0, 1, ..., 14 s; at 15 s the pods are listed, no eviction is started
    assert len([r for r in stub.requests if r.path.endswith("worker-0/eviction")]) == 16
    assert sent(stub.requests[-1:]) == [LIST_PODS]


def test_pods_that_take_long_to_stop_are_reported_and_evicted_once(
    labeler: HealthLabeler, stub: KubeStub, clock: Clock
) -> None:
    add_pods(stub)
    stub.evictions_linger = True
    wait = drain(labeler, clock)(I1, "replace", "x")
    clock.now += 20  # the evidence capture took longer than the bound: one look, no waiting
    assert wait() == f"2 pods still running on {NAMES[I1]} after 15 s: training/worker-0, training/worker-1"
    assert clock.slept == [] and len([r for r in stub.requests if r.method == "POST"]) == 2
    assert sent(stub.requests[-1:]) == [LIST_PODS]


def test_a_pod_gone_before_its_eviction_is_not_counted(labeler: HealthLabeler, stub: KubeStub, clock: Clock) -> None:
    add_pods(stub)
    stub.scripted[eviction("training", "worker-1")[:2]] = [404]  # its job deleted it meanwhile
    wait = drain(labeler, clock)(I1, "replace", "x")
    stub.pods = [p for p in stub.pods if p["metadata"]["name"] != "worker-1"]
    assert wait() == f"evicted 1 pod from {NAMES[I1]}"


def test_pods_are_listed_page_by_page(labeler: HealthLabeler, stub: KubeStub, clock: Clock) -> None:
    add_pods(stub)
    stub.page_size = 2
    wait = drain(labeler, clock)(I1, "replace", "x")
    lists = [r.query for r in stub.requests if r.path == "/api/v1/pods"]
    assert lists == [PODS_QUERY, {**PODS_QUERY, "continue": ["2"]}, {**PODS_QUERY, "continue": ["4"]}]
    assert wait() == f"evicted 2 pods from {NAMES[I1]}"


def test_a_node_that_never_joined_is_skipped(labeler: HealthLabeler, stub: KubeStub, clock: Clock) -> None:
    assert drain(labeler, clock)(I3, "reboot", "x")() == f"skipped: {I3} has no Node in the cluster"
    assert sent(stub.requests) == [("GET", f"/api/v1/nodes/{NAMES[I3]}", {}, None, None)]


def test_drain_errors_are_drain_errors(labeler: HealthLabeler, stub: KubeStub, clock: Clock) -> None:
    with pytest.raises(DrainError, match="no drain for action 'observe'"):
        drain(labeler, clock)(I1, "observe", "x")
    add_pods(stub)
    stub.scripted[eviction("training", "worker-1")[:2]] = [403]
    with pytest.raises(DrainError, match=r"POST /api/v1/namespaces/training/pods/worker-1/eviction: 403 scripted"):
        drain(labeler, clock)(I1, "reboot", "x")


# After a replacement -----------------------------------------------------------------------------


def test_the_replaced_node_is_deleted_on_condition_of_its_uid(labeler: HealthLabeler, stub: KubeStub) -> None:
    uid = stub.nodes[NAMES[I1]]["metadata"]["uid"]
    assert labeler.delete_node(I1) is True
    options = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid}}
    assert sent(stub.requests) == [GET_N1, ("DELETE", N1, {}, "application/json", options)]
    assert NAMES[I1] not in stub.nodes
    stub.requests.clear()
    assert labeler.delete_node(I1) is False  # gone already: nothing to delete
    assert sent(stub.requests) == [GET_N1]


def test_a_node_gone_or_replaced_between_the_check_and_the_delete(labeler: HealthLabeler, stub: KubeStub) -> None:
    stub.scripted[("DELETE", N1)] = [404]
    assert labeler.delete_node(I1) is False
    stub.scripted[("DELETE", N1)] = [409]  # a new object of that name: checked again, then deleted
    assert labeler.delete_node(I1) is True
    assert [r.method for r in stub.requests] == ["GET", "DELETE", "GET", "DELETE", "GET", "DELETE"]


# Many nodes: names from EC2 in one call, Nodes listed by label, labels added -------------------------


def described(*ids: str) -> dict[str, Any]:
    """DescribeInstances' answer naming ``ids`` (by ``NAMES``)."""
    return {"Reservations": [{"Instances": [{"InstanceId": i, "PrivateDnsName": NAMES[i]} for i in ids]}]}


def test_names_are_looked_up_in_one_call_and_kept(api: KubeApi) -> None:
    clients = Clients(region=REGION, session=boto3.Session(ACCESS_KEY, SECRET_KEY, region_name=REGION))
    with Stubber(clients.ec2) as ec2:
        ec2.add_response("describe_instances", described(I1, I3), {"InstanceIds": sorted([I1, I2, I3])})
        labeler = HealthLabeler(api, ec2_node_name(clients), node_names=ec2_node_names(clients))
        assert labeler.learn_names([I3, I1, I2, I1]) == {I3: NAMES[I3], I1: NAMES[I1]}  # I2: no name
        assert labeler.learn_names([I1, I3]) == {I1: NAMES[I1], I3: NAMES[I3]}  # kept: EC2 not asked again
        assert labeler.name(I1) == NAMES[I1]
        ec2.assert_no_pending_responses()


def test_without_a_batch_lookup_names_are_asked_one_by_one(api: KubeApi) -> None:
    asked: list[str] = []
    labeler = HealthLabeler(api, lambda i: asked.append(i) or NAMES.get(i))  # type: ignore[func-returns-value]
    assert labeler.learn_names([I2, I1, I2]) == {I2: NAMES[I2], I1: NAMES[I1]} and asked == [I2, I1]


def test_ids_ec2_does_not_know_are_left_out_and_the_rest_asked_again() -> None:
    clients = Clients(region=REGION, session=boto3.Session(ACCESS_KEY, SECRET_KEY, region_name=REGION))
    unknown = "i-00000000000000009"
    with Stubber(clients.ec2) as ec2:
        ec2.add_client_error(
            "describe_instances",
            "InvalidInstanceID.NotFound",
            f"The instance IDs '{unknown}, {I3}' do not exist",  # as EC2 names them, all at once
            expected_params={"InstanceIds": sorted([I1, I2, I3, unknown])},
        )
        ec2.add_response("describe_instances", described(I1, I2), {"InstanceIds": sorted([I1, I2])})
        assert ec2_node_names(clients)([I1, I2, I3, unknown, "not-an-id"]) == {I1: NAMES[I1], I2: NAMES[I2]}
        # an error that names no id: nothing more is asked
        ec2.add_client_error("describe_instances", "InvalidInstanceID.NotFound", "does not exist")
        assert ec2_node_names(clients)([I1]) == {}
        # at most three calls a chunk, however many ids EC2 names one by one
        for i in range(3):
            missing = f"The instance ID 'i-0000000{i}' does not exist"
            ec2.add_client_error("describe_instances", "InvalidInstanceID.NotFound", missing)
        assert ec2_node_names(clients)([f"i-0000000{i}" for i in range(5)]) == {}
        ec2.assert_no_pending_responses()
        ec2.add_client_error("describe_instances", "UnauthorizedOperation", "no")
        with pytest.raises(ClientError, match="UnauthorizedOperation"):
            ec2_node_names(clients)([I1])


def test_names_are_asked_for_a_thousand_ids_a_call() -> None:
    ids = [f"i-{n:017x}" for n in range(1, 2501)]
    calls: list[list[str]] = []

    def describe_instances(**params: Any) -> dict[str, Any]:
        calls.append(params["InstanceIds"])
        found = [{"InstanceId": i, "PrivateDnsName": f"ip-{i}.ec2.internal"} for i in params["InstanceIds"]]
        return {"Reservations": [{"Instances": found}]}

    clients = Clients(region=REGION)
    clients.set("ec2", mock.Mock(describe_instances=describe_instances))
    names = ec2_node_names(clients)(ids + ids[:10])
    assert [len(c) for c in calls] == [1000, 1000, 500] and sorted(i for c in calls for i in c) == ids
    assert len(names) == 2500 and names[ids[0]] == f"ip-{ids[0]}.ec2.internal"


@pytest.mark.parametrize(
    ("provider_id", "instance_id"),
    [
        (f"aws:///us-east-1a/{I1}", I1),
        ("aws:///us-east-1a/i-0123abcd", "i-0123abcd"),
        ("aws:///us-east-1a/i-00123456789abcdef0", None),  # 18 digits: no instance id
        (f"aws:///us-east-1a/x{I1}", None),
        (f"aws:///us-east-1a/{I1}/x", None),
        (f"gce:///us-east-1a/{I1}", None),
        (None, None),
        (7, None),
    ],
)
def test_the_provider_id_names_an_instance_or_none(provider_id: object, instance_id: str | None) -> None:
    assert provider_instance({"spec": {"providerID": provider_id}}) == instance_id


def test_nodes_are_listed_by_label_selector_page_by_page_and_only_as_far_as_read(
    labeler: HealthLabeler, stub: KubeStub
) -> None:
    stub.nodes[NAMES[I1]]["metadata"]["labels"][PROTECTED_LABEL_GROUP] = "gpu"
    stub.add(node(NAMES[I2], I2), node(NAMES[I3], I3))
    stub.page_size = 1
    query = {"labelSelector": [UNLABELLED], "limit": ["500"]}
    assert [n["metadata"]["name"] for n in labeler.list_nodes(UNLABELLED)] == [NAMES[I2], NAMES[I3]]
    assert sent(stub.requests) == [
        ("GET", "/api/v1/nodes", query, None, None),
        ("GET", "/api/v1/nodes", {**query, "continue": ["1"]}, None, None),
    ]
    stub.requests.clear()
    first = next(labeler.list_nodes(f"{LABEL_HEALTH}!=Schedulable"))  # no Node has the label: all are
    assert first["metadata"]["name"] == NAMES[I1] and len(stub.requests) == 1  # one page, as far as read


def test_labels_are_added_on_condition_of_the_version_read(labeler: HealthLabeler, stub: KubeStub) -> None:
    labels = {PROTECTED_LABEL_GROUP: "gpu", PROTECTED_LABEL_ACCELERATOR: "nvidia"}
    (listed,) = labeler.list_nodes(UNLABELLED)
    stub.requests.clear()
    assert labeler.write_labels(listed, labels) is True
    body = {"metadata": {"labels": labels, "resourceVersion": "100"}}
    assert sent(stub.requests) == [("PATCH", N1, {}, MERGE, body)]
    stored = stub.nodes[NAMES[I1]]["metadata"]["labels"]
    assert stored["team"] == "vision" and stored[PROTECTED_LABEL_GROUP] == "gpu"  # the rest kept
    # changed since it was listed (another writer, or a Node made anew): not written, not retried
    assert labeler.write_labels(listed, {PROTECTED_LABEL_GROUP: "other"}) is False
    assert stub.nodes[NAMES[I1]]["metadata"]["labels"][PROTECTED_LABEL_GROUP] == "gpu"
    del stub.nodes[NAMES[I1]]
    assert labeler.write_labels(listed, labels) is False and len(stub.requests) == 3


# RBAC: what is granted is what is used -------------------------------------------------------------


def test_the_verbs_used_are_exactly_the_ones_granted(labeler: HealthLabeler, stub: KubeStub, clock: Clock) -> None:
    """Runs every operation once (so the test stands alone), then compares everything that every
    stand-in of this module saw (run last, it holds every test's requests) with the grant."""
    add_pods(stub)
    drain(labeler, clock)(I1, "replace", "x")()
    labeler.set_health(I1, "Schedulable", cordon=False)
    (listed,) = labeler.list_nodes(UNLABELLED)
    labeler.write_labels(listed, {PROTECTED_LABEL_GROUP: "gpu"})
    labeler.delete_node(I1)
    assert granted() == {
        ("", "nodes", "get"),
        ("", "nodes", "list"),
        ("", "nodes", "patch"),
        ("", "nodes", "delete"),
        ("", "pods", "list"),
        ("", "pods/eviction", "create"),
    }
    assert granted() == SEEN


def test_the_cluster_role_grants_the_rules_to_the_repair_group() -> None:
    role = cluster_role("training-cluster-repair")
    binding = cluster_role_binding("training-cluster-repair", "training-cluster-repair", REPAIR_GROUP)
    for manifest in (role, binding):
        kubernetes_validate.validate(manifest, "1.35", strict=True)
    assert {
        (g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]
    } == granted()
    assert len(role["rules"]) == len(REPAIR_RULES)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "training-cluster-repair",
    }
    assert binding["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "training-cluster:repair"}
    ]
