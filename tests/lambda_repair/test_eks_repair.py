"""The repair control plane end to end with the EKS hooks: the cluster in moto (``repair_world``),
the Kubernetes API a loopback HTTPS stand-in (``kube_stub``) holding a Node for each of the
world's instances, named by its private DNS name as EC2 (moto) gives it, with its providerID and
(as the sweep leaves them) the protected labels of its group. Each scenario checks the exact
requests the API got (method, path, body) and the ledger's story; clocks and sleeps are the
world's (no real waiting)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from unittest import mock

import boto3
import pytest
from kube_stub import ACCESS_KEY, CLUSTER, REGION, SECRET_KEY, KubeStub, Pki, Running, label_selector, node, pod

import handler
from auto_repair.aws import Clients
from auto_repair.kube_api import EksToken, KubeApi
from auto_repair.kubernetes import HealthLabeler, KubernetesDrain, ec2_node_name, ec2_node_names
from auto_repair.node_hooks import KubernetesNodes
from auto_repair.node_upkeep import LABELLED, NOT_SCHEDULABLE, UNLABELLED, NodeUpkeep
from auto_repair.repair import Repairer
from auto_repair.settings import Settings
from auto_repair.signals import from_event
from repair_world import World, agent_event, aws, calls, health_tag, make_world, story, tag_event, xid
from training_cluster import kube_manifests as km
from training_cluster.contract import (
    ANNOTATION_FAULT_REASON,
    LABEL_ACCELERATOR,
    LABEL_CLUSTER,
    LABEL_FAULT_TYPE,
    LABEL_GROUP,
    LABEL_HEALTH,
    PROTECTED_LABEL_ACCELERATOR,
    PROTECTED_LABEL_GROUP,
)
from training_cluster.kube_access import granted

__all__ = ["aws", "calls"]  # fixtures
PROTECTED = {PROTECTED_LABEL_GROUP: "gpu", PROTECTED_LABEL_ACCELERATOR: "nvidia"}
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
MERGE = "application/merge-patch+json"
JSON = "application/json"
XID_79 = f"xid 79: {xid(79)['message']}"  # the reasons of a confirmed report of XID 79
XID_64 = f"xid 64: {xid(64)['message']}"

Sent = tuple[str, str, Any]
"""method, path (and query), body"""


@dataclass
class Cluster:
    """The world in moto and its Kubernetes API."""

    world: World
    served: Running
    pki: Pki
    names: dict[str, str]  # instance id -> its Node's name (private DNS name)
    apis: list[KubeApi]

    @property
    def stub(self) -> KubeStub:
        return self.served.stub

    def repairer(self, *, max_writes: int = 100, **overrides: Any) -> Repairer:
        """The control plane with the EKS hooks and the sweep's Node upkeep (as
        ``handler.make_repairer`` wires them, on the world's clock), Node names read from EC2;
        the group ``gpu``'s accelerator is ``nvidia``."""
        repairer = self.world.repairer(**{"group_accelerators": {"gpu": "nvidia"}, **overrides})
        clock = self.world.clock
        api = KubeApi(self.served.url, self.pki.ca.data, EksToken(fake_credentials(), CLUSTER, REGION, clock=clock))
        self.apis.append(api)
        names = ec2_node_names(self.world.clients, clock.sleep)
        labeler = HealthLabeler(api, ec2_node_name(self.world.clients, clock.sleep), node_names=names)
        repairer.drain_hook = KubernetesDrain(labeler, sleep=clock.sleep, clock=clock)
        accelerators = repairer.settings.group_accelerators
        repairer.node_hook = KubernetesNodes(labeler, accelerators)
        repairer.node_upkeep = NodeUpkeep(
            labeler, repairer.ledger, accelerators, cluster=CLUSTER, max_writes=max_writes, clock=clock
        )
        return repairer

    def path(self, instance_id: str) -> str:
        return f"/api/v1/nodes/{self.names[instance_id]}"

    def sent(self) -> list[Sent]:
        out: list[Sent] = []
        for r in self.stub.requests:
            query = "&".join(f"{k}={v}" for k, values in r.query.items() for v in values)
            out.append((r.method, r.path + (f"?{query}" if query else ""), r.body))
        return out

    @property
    def upkeep(self) -> list[Sent]:
        """The sweep's three lists of Nodes when none needs its work."""
        return [self.labelled, self.unlabelled, self.not_schedulable]

    labelled = ("GET", f"/api/v1/nodes?labelSelector={LABELLED}&limit=500", None)
    """The list of every Node with the protected labels (checked again each sweep)."""
    unlabelled = ("GET", f"/api/v1/nodes?labelSelector={LABEL_CLUSTER}={CLUSTER},{UNLABELLED}&limit=500", None)
    """The list of this cluster's Nodes without them."""
    not_schedulable = (
        "GET",
        f"/api/v1/nodes?labelSelector={LABEL_CLUSTER}={CLUSTER},{NOT_SCHEDULABLE}&limit=500",
        None,
    )
    """The list of this cluster's Nodes not Schedulable."""

    def list_pods(self, instance_id: str) -> Sent:
        return ("GET", f"/api/v1/pods?fieldSelector=spec.nodeName={self.names[instance_id]}&limit=500", None)

    def node(self, instance_id: str) -> dict[str, Any]:
        return self.stub.nodes[self.names[instance_id]]


def fake_credentials() -> Any:
    """The stand-in's fake key: it checks each token's signature with it."""
    return boto3.Session(ACCESS_KEY, SECRET_KEY, region_name=REGION).get_credentials()


def private_dns_names(world: World, instance_ids: list[str]) -> dict[str, str]:
    found = world.clients.ec2.describe_instances(InstanceIds=instance_ids)["Reservations"]
    return {i["InstanceId"]: i["PrivateDnsName"] for r in found for i in r["Instances"]}


@pytest.fixture
def cluster(aws: None, pki: Pki) -> Iterator[Cluster]:
    world = make_world({"gpu": 8})
    names = private_dns_names(world, world.instances())
    served = Running(KubeStub(rbac=set()), pki.chain, pki.key)
    for instance_id, name in names.items():
        registered = node(name, instance_id, taints=[dict(GPU_TAINT)])
        registered["metadata"]["labels"].update({LABEL_HEALTH: "Schedulable", **PROTECTED})
        served.stub.add(registered)
    made = Cluster(world, served, pki, names, [])
    yield made
    for api in made.apis:
        api.close()
    served.stop()


def ours(status: str) -> dict[str, str]:
    return {"key": LABEL_HEALTH, "value": status, "effect": "NoSchedule"}


def pending_patch(status: str, reason: str) -> dict[str, Any]:
    """The drain's merge patch of a GPU node: cordoned, ``status`` as label and taint, the reason."""
    return {
        "metadata": {
            "labels": {LABEL_HEALTH: status},
            "annotations": {ANNOTATION_FAULT_REASON: reason},
            "resourceVersion": "100",
        },
        "spec": {"taints": [GPU_TAINT, ours(status)], "unschedulable": True},
    }


def eviction(namespace: str, name: str) -> Sent:
    body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": namespace}}
    return ("POST", f"/api/v1/namespaces/{namespace}/pods/{name}/eviction", body)


def add_pods(cluster: Cluster, instance_id: str) -> None:
    """A job's two workers, a DaemonSet's pod and a static (mirror) pod on the node; a pod elsewhere."""
    on = cluster.names[instance_id]
    elsewhere = next(n for n in cluster.names.values() if n != on)
    cluster.stub.add(
        pod("worker-0", on, ownerReferences=[{"kind": "PyTorchJob", "name": "job", "controller": True}]),
        pod("worker-1", on, ownerReferences=[{"kind": "PyTorchJob", "name": "job", "controller": True}]),
        pod("efa-plugin-x", on, namespace="kube-system", ownerReferences=[{"kind": "DaemonSet", "controller": True}]),
        pod("kube-proxy-static", on, namespace="kube-system", annotations={"kubernetes.io/config.mirror": "abc"}),
        pod("worker-2", elsewhere),
    )


def steps(world: World, incident_id: str | None, step: str) -> list[dict[str, Any]]:
    assert incident_id is not None
    return [s for s in world.repairer().ledger.story(incident_id) if s["step"] == step]


def counting(client: Any, operation: str, stub: KubeStub, marks: list[int]) -> Any:
    """``client.operation`` patched to note how many requests the API had got when it was called."""
    real = getattr(client, operation)

    def call(**params: Any) -> Any:
        marks.append(len(stub.requests))
        return real(**params)

    return mock.patch.object(client, operation, side_effect=call)


# A replacement ------------------------------------------------------------------------------------


def test_a_verified_fatal_xid_drains_through_kubernetes_then_terminates_then_deletes_the_node(
    cluster: Cluster,
) -> None:
    world, stub = cluster.world, cluster.stub
    bad = world.instances()[0]
    add_pods(cluster, bad)
    stub.scripted[eviction("training", "worker-0")[:2]] = [429]  # a PodDisruptionBudget refuses once
    uid = cluster.node(bad)["metadata"]["uid"]
    terminated_at: list[int] = []
    with counting(world.clients.autoscaling, "terminate_instance_in_auto_scaling_group", stub, terminated_at):
        (outcome,) = cluster.repairer().handle(from_event(world.agent(bad, xid(79))))
    assert (outcome.result, outcome.action) == ("replaced", "replace")
    assert world.state(bad) in ("shutting-down", "terminated")
    cordon = pending_patch("UnschedulablePendingReplacement", f"replace: {XID_79}")
    drain = [
        ("GET", cluster.path(bad), None),
        ("PATCH", cluster.path(bad), cordon),
        cluster.list_pods(bad),
        eviction("training", "worker-0"),  # 429
        eviction("training", "worker-1"),
        # the evidence capture; then the wait: the refused pod is tried again, a second later it is gone
        cluster.list_pods(bad),
        eviction("training", "worker-0"),
        cluster.list_pods(bad),
    ]
    options = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid}}
    delete = [("GET", cluster.path(bad), None), ("DELETE", cluster.path(bad), options)]
    assert cluster.sent() == drain + delete
    assert terminated_at == [len(drain)]  # terminated after the drain, the Node deleted after that
    assert world.clock.slept == [1.0]  # the one retry of the refused eviction, on the world's clock
    assert [r.content_type for r in stub.requests if r.method in ("PATCH", "DELETE")] == [MERGE, JSON]
    assert cluster.names[bad] not in stub.nodes and len(stub.nodes) == 7
    left = sorted(p["metadata"]["name"] for p in stub.pods)
    assert left == ["efa-plugin-x", "kube-proxy-static", "worker-2"]  # DaemonSet and static pods stay
    # the scenario used every verb granted to the repair role but the sweep's list, and nothing else
    assert stub.rbac == granted() - {("", "nodes", "list")}
    assert story(world, outcome.incident_id) == ["signal", "decision", "evidence", "drain", "action", "node"]
    (drained,) = steps(world, outcome.incident_id, "drain")
    assert drained["result"] == f"evicted 2 pods from {cluster.names[bad]}"
    (deleted,) = steps(world, outcome.incident_id, "node")
    assert deleted["result"] == "node deleted"


def test_a_drain_the_disruption_budget_refuses_is_bounded_and_the_replacement_goes_on(cluster: Cluster) -> None:
    world, stub = cluster.world, cluster.stub
    bad = world.instances()[1]
    add_pods(cluster, bad)
    stub.scripted[eviction("training", "worker-0")[:2]] = [429] * 100
    in_progress = {"Status": "InProgress"}  # the evidence capture waits its whole bound (10 s here)
    with mock.patch.object(world.clients.ssm, "get_command_invocation", return_value=in_progress):
        (outcome,) = cluster.repairer().handle(from_event(world.agent(bad, xid(79))))
    assert outcome.result == "replaced" and world.state(bad) in ("shutting-down", "terminated")
    # the evidence capture's 10 s overlap the drain's 15 s bound: 5 s of eviction retries are left
    assert world.clock.slept == [2.0] * 5 + [1.0] * 5
    # tried when the drain started, then at 10, 11, ..., 14 s; at 15 s only listed: never past the bound
    assert cluster.sent().count(eviction("training", "worker-0")) == 6
    (drained,) = steps(world, outcome.incident_id, "drain")
    assert drained["result"] == (
        f"1 pod still running on {cluster.names[bad]} after 15 s: training/worker-0 "
        "(a disruption budget refused training/worker-0)"
    )
    assert cluster.sent()[-2][0] == "GET" and cluster.sent()[-1][0] == "DELETE"  # the Node still goes


# A reboot and the node's return ---------------------------------------------------------------------


def test_a_rebootable_fault_marks_pending_reboot_and_a_new_boot_makes_the_node_schedulable(cluster: Cluster) -> None:
    world, stub = cluster.world, cluster.stub
    bad = world.instances()[2]
    add_pods(cluster, bad)
    repairer = cluster.repairer()
    rebooted_at: list[int] = []
    with counting(world.clients.ec2, "reboot_instances", stub, rebooted_at):
        (outcome,) = repairer.handle(from_event(world.agent(bad, xid(64))))
    assert (outcome.result, outcome.action) == ("rebooted", "reboot")
    pending = pending_patch("UnschedulablePendingReboot", f"reboot: {XID_64}")
    assert cluster.sent() == [
        ("GET", cluster.path(bad), None),
        ("PATCH", cluster.path(bad), pending),
        cluster.list_pods(bad),
        eviction("training", "worker-0"),
        eviction("training", "worker-1"),
        cluster.list_pods(bad),
    ]
    assert rebooted_at == [6]  # rebooted once the drain was done
    assert story(world, outcome.incident_id) == ["signal", "decision", "drain", "action"]
    assert repairer.ledger.instance(bad)["cordoned_by"] == outcome.incident_id  # the cordon is ours to lift

    # A healthy report from the boot that was rebooted: the reboot has not happened yet.
    stub.requests.clear()
    assert repairer.handle(from_event(world.agent(bad, state="healthy", boot="boot-1")))[0].result == "ignored"
    assert stub.requests == [] and cluster.node(bad)["spec"]["unschedulable"] is True

    # Back from a new boot: the incident closes and the node takes work again.
    world.clock.now += 600
    (closed,) = repairer.handle(from_event(world.agent(bad, state="healthy", boot="boot-2")))
    assert (closed.result, closed.incident_id) == ("closed", outcome.incident_id)
    schedulable = {
        "metadata": {
            "labels": {LABEL_HEALTH: "Schedulable"},
            "annotations": {ANNOTATION_FAULT_REASON: None},
            "resourceVersion": "101",
        },
        "spec": {"taints": [GPU_TAINT], "unschedulable": False},
    }
    assert cluster.sent() == [("GET", cluster.path(bad), None), ("PATCH", cluster.path(bad), schedulable)]
    assert "cordoned_by" not in repairer.ledger.instance(bad)  # lifted: nothing left for the sweep
    stored = cluster.node(bad)
    assert stored["spec"] == {"providerID": f"aws:///us-east-1a/{bad}", "taints": [GPU_TAINT], "unschedulable": False}
    assert stored["metadata"]["labels"][LABEL_HEALTH] == "Schedulable"
    assert ANNOTATION_FAULT_REASON not in stored["metadata"].get("annotations", {})
    assert story(world, outcome.incident_id) == ["signal", "decision", "drain", "action", "node", "closed"]
    (told,) = steps(world, outcome.incident_id, "node")
    assert told["result"] == f"{cluster.names[bad]}: Schedulable"


# Faults held, deferred or only reported -------------------------------------------------------------


def test_with_the_breaker_open_the_held_nodes_are_labelled_unschedulable_with_their_fault_and_not_drained(
    cluster: Cluster,
) -> None:
    world, stub = cluster.world, cluster.stub
    bad = world.instances()[:3]
    for instance_id in bad:
        add_pods(cluster, instance_id)
    faults = {
        bad[0]: ({"check": "xid", "code": "79"}, "xid", "xid 79"),
        bad[1]: ({"check": "xid", "code": "48"}, "xid", "xid 48"),
    }
    faults[bad[2]] = ({"check": "gpu_count"}, "gpu_count", "gpu_count")
    for instance_id, (failure, _, _) in faults.items():
        world.tag(instance_id, health_tag(failure))  # the agents' tags; their events were lost
    with (
        mock.patch.object(world.clients.ec2, "reboot_instances") as reboot,
        mock.patch.object(world.clients.autoscaling, "terminate_instance_in_auto_scaling_group") as terminate,
    ):
        outcomes = cluster.repairer().sweep()
    assert sorted(o.result for o in outcomes) == ["suppressed"] * 3
    reboot.assert_not_called()
    terminate.assert_not_called()
    expected: list[Sent] = []
    for instance_id in bad:
        _, fault_type, reason = faults[instance_id]
        body = {
            "metadata": {
                "labels": {LABEL_HEALTH: "Unschedulable", LABEL_FAULT_TYPE: fault_type},
                "annotations": {ANNOTATION_FAULT_REASON: reason},
                "resourceVersion": "100",
            },
            "spec": {"taints": [GPU_TAINT, ours("Unschedulable")]},  # tainted, not cordoned
        }
        expected += [("GET", cluster.path(instance_id), None), ("PATCH", cluster.path(instance_id), body)]
    # then the Node upkeep's lists: the held nodes are not Schedulable, but their incidents are open
    expected += cluster.upkeep
    by_node = sorted(cluster.sent(), key=lambda s: (s[1], s[0]))
    assert by_node == sorted(expected, key=lambda s: (s[1], s[0]))  # no pod listed, none evicted
    assert len(stub.pods) == 3 * 5
    for outcome in outcomes:
        assert story(world, outcome.incident_id) == ["signal", "decision", "held", "node"]
        (told,) = steps(world, outcome.incident_id, "node")
        assert told["result"] == f"{cluster.names[outcome.instance_id]}: Unschedulable"
        assert "unschedulable" not in cluster.node(outcome.instance_id)["spec"]


def test_a_deferred_replacement_and_a_dry_run_label_the_node_unschedulable_without_a_drain(
    cluster: Cluster,
) -> None:
    world, stub = cluster.world, cluster.stub
    first, second, dry = world.instances()[:3]
    repairer = cluster.repairer(unhealthy_threshold_percent=50)
    (replaced,) = repairer.handle(from_event(world.agent(first, xid(79))))
    stub.requests.clear()
    (deferred,) = repairer.handle(from_event(world.agent(second, xid(79))))  # one replacement in flight
    assert (replaced.result, deferred.result) == ("replaced", "deferred") and world.state(second) == "running"
    marked = {
        "metadata": {
            "labels": {LABEL_HEALTH: "Unschedulable", LABEL_FAULT_TYPE: "xid"},
            "annotations": {ANNOTATION_FAULT_REASON: XID_79},
            "resourceVersion": "100",
        },
        "spec": {"taints": [GPU_TAINT, ours("Unschedulable")]},
    }
    assert cluster.sent() == [("GET", cluster.path(second), None), ("PATCH", cluster.path(second), marked)]
    assert story(world, deferred.incident_id) == ["signal", "decision", "deferred", "node"]

    stub.requests.clear()
    dry_run = cluster.repairer(dry_run=True, unhealthy_threshold_percent=50)
    (outcome,) = dry_run.handle(from_event(world.agent(dry, xid(79))))
    assert outcome.result == "dry-run" and world.state(dry) == "running"
    assert cluster.sent() == [("GET", cluster.path(dry), None), ("PATCH", cluster.path(dry), marked)]
    assert story(world, outcome.incident_id) == ["signal", "decision", "dry-run", "node"]


def test_a_first_boot_healthy_report_with_no_incident_makes_the_node_schedulable(cluster: Cluster) -> None:
    """Deep checks on first boot: the node registered tainted ``Unschedulable`` (its kubelet's
    flags); the agent's first healthy report, confirmed by its tag, lifts the taint. A cordon
    someone else set stays: only a cordon of the control plane's own is undone."""
    world, stub = cluster.world, cluster.stub
    new = world.instances()[3]
    registered = cluster.node(new)
    registered["metadata"]["labels"][LABEL_HEALTH] = "Unschedulable"
    registered["spec"]["taints"].append(ours("Unschedulable"))
    registered["spec"]["unschedulable"] = True  # an administrator's cordon
    repairer = cluster.repairer()
    (outcome,) = repairer.handle(from_event(world.agent(new, state="healthy", boot="boot-1")))
    assert (outcome.result, outcome.incident_id) == ("ignored", None)
    body = {
        "metadata": {"labels": {LABEL_HEALTH: "Schedulable"}, "resourceVersion": "100"},
        "spec": {"taints": [GPU_TAINT]},
    }
    assert cluster.sent() == [("GET", cluster.path(new), None), ("PATCH", cluster.path(new), body)]
    stored = cluster.node(new)
    assert stored["spec"]["taints"] == [GPU_TAINT] and stored["spec"]["unschedulable"] is True
    assert stored["metadata"]["labels"][LABEL_HEALTH] == "Schedulable"
    # AWS's tag-change event for the same tag, later: read, nothing left to write
    stub.requests.clear()
    assert repairer.handle(from_event(tag_event(new, health_tag(state="healthy"))))[0].result == "ignored"
    assert cluster.sent() == [("GET", cluster.path(new), None)]


# What must not reach the API -----------------------------------------------------------------------


def other_cluster_instance(world: World) -> str:
    """An instance of another cluster's Auto Scaling group, in the same account and subnet."""
    subnet = world.clients.ec2.describe_subnets(Filters=[{"Name": "cidr-block", "Values": ["10.0.128.0/17"]}])
    world.clients.autoscaling.create_auto_scaling_group(
        AutoScalingGroupName="other-gpu-asg",
        LaunchTemplate={"LaunchTemplateName": "lt-gpu", "Version": "$Latest"},
        MinSize=1,
        MaxSize=1,
        DesiredCapacity=1,
        VPCZoneIdentifier=subnet["Subnets"][0]["SubnetId"],
    )
    (found,) = world.clients.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["other-gpu-asg"])[
        "AutoScalingGroups"
    ]
    return str(found["Instances"][0]["InstanceId"])


def test_forged_reports_and_reports_about_another_clusters_instance_send_no_request(cluster: Cluster) -> None:
    world, stub = cluster.world, cluster.stub
    victim, sick = world.instances()[4:6]
    world.tag(victim, health_tag(state="healthy"))
    world.tag(sick, health_tag(xid(79)))  # the tag says unhealthy: a healthy claim is forged
    stranger = other_cluster_instance(world)
    name = private_dns_names(world, [stranger])[stranger]
    stub.add(node(name, stranger))  # even with a Node of that name in this cluster
    world.tag(stranger, health_tag(xid(79)))
    events = [
        agent_event(victim, xid(79)),  # a neighbour's claim about a healthy node
        agent_event(victim, xid(79), boot="boot-0"),  # ... from another boot
        agent_event(sick, state="healthy"),  # a claim that a sick node is well
        agent_event(stranger, xid(79)),  # honest, but not this cluster's
        tag_event(stranger, health_tag(xid(79))),
    ]
    with (
        mock.patch.object(world.clients.ec2, "reboot_instances") as reboot,
        mock.patch.object(world.clients.autoscaling, "terminate_instance_in_auto_scaling_group") as terminate,
    ):
        outcomes = cluster.repairer().handle([s for e in events for s in from_event(e)])
    assert [o.result for o in outcomes] == ["unconfirmed", "unconfirmed", "unconfirmed", "ignored", "ignored"]
    assert stub.requests == []  # not even a GET
    reboot.assert_not_called()
    terminate.assert_not_called()


# The API down --------------------------------------------------------------------------------------


@pytest.mark.parametrize("failure", ["stopped", "500"])
def test_with_the_api_down_the_repair_still_happens_and_the_ledger_says_what_failed(
    cluster: Cluster, failure: str
) -> None:
    world, stub = cluster.world, cluster.stub
    replace, reboot, held = world.instances()[:3]
    if failure == "stopped":
        cluster.served.stop()
        error = "Connection refused"
    else:
        for instance_id in (replace, reboot, held):
            stub.scripted[("GET", cluster.path(instance_id))] = [500] * 3
        error = "500 scripted 500"
    repairer = cluster.repairer(unhealthy_threshold_percent=50)
    (replaced,) = repairer.handle(from_event(world.agent(replace, xid(79))))
    assert replaced.result == "replaced" and world.state(replace) in ("shutting-down", "terminated")
    assert story(world, replaced.incident_id) == ["signal", "decision", "drain", "evidence", "action", "node"]
    (rebooted,) = repairer.handle(from_event(world.agent(reboot, xid(64))))
    assert rebooted.result == "rebooted" and world.state(reboot) == "running"
    assert story(world, rebooted.incident_id) == ["signal", "decision", "drain", "action"]
    (deferred,) = repairer.handle(from_event(world.agent(held, xid(79))))  # one replacement in flight
    assert deferred.result == "deferred"
    assert story(world, deferred.incident_id) == ["signal", "decision", "deferred", "node"]
    for incident, step in ((replaced, "drain"), (replaced, "node"), (rebooted, "drain"), (deferred, "node")):
        (recorded,) = steps(world, incident.incident_id, step)
        assert recorded["result"] == "failed" and error in recorded["error"], recorded
    assert world.clock.slept == []  # nothing waited on a dead API
    if failure == "500":
        assert {s[:2] for s in cluster.sent()} == {("GET", cluster.path(i)) for i in (replace, reboot, held)}
        assert len(stub.requests) == 4  # one read each, and one more for the replaced node's deletion


# The wiring ----------------------------------------------------------------------------------------


def test_make_repairer_wires_both_eks_hooks_from_the_settings_and_neither_without_them(cluster: Cluster) -> None:
    world, stub = cluster.world, cluster.stub
    # the function's credentials: the stand-in checks the EKS token's signature with this key
    clients = Clients(region=REGION, session=boto3.Session(ACCESS_KEY, SECRET_KEY, region_name=REGION))
    eks = {"eks_cluster": CLUSTER, "eks_endpoint": cluster.served.url, "eks_certificate_authority": cluster.pki.ca.data}
    repairer = handler.make_repairer(world.settings(**eks, group_accelerators={"gpu": "nvidia"}), clients)
    drain, nodes, upkeep = repairer.drain_hook, repairer.node_hook, repairer.node_upkeep
    assert isinstance(drain, KubernetesDrain) and isinstance(nodes, KubernetesNodes)
    assert drain.labeler is nodes.labeler  # one client: a Node's name found for the drain serves its deletion
    assert isinstance(upkeep, NodeUpkeep) and upkeep.labeler is drain.labeler and upkeep.ledger is repairer.ledger
    assert upkeep.accelerators == {"gpu": "nvidia"} and nodes.accelerators == {"gpu": "nvidia"}
    assert upkeep.unlabelled == f"{LABEL_CLUSTER}={CLUSTER},{UNLABELLED}"  # this cluster's Nodes only
    repairer.clock, repairer.sleep = world.clock, world.clock.sleep
    drain.clock, drain.sleep = world.clock, world.clock.sleep
    bad = world.instances()[6]
    add_pods(cluster, bad)
    try:
        outcome = handler.handler(world.agent(bad, xid(79)), use=repairer)["outcomes"][0]
    finally:
        drain.labeler.api.close()
    assert outcome["result"] == "replaced"
    methods = [s[0] for s in cluster.sent()]
    assert methods == ["GET", "PATCH", "GET", "POST", "POST", "GET", "GET", "DELETE"]
    assert cluster.names[bad] not in stub.nodes
    assert story(world, outcome["incident_id"]) == ["signal", "decision", "evidence", "drain", "action", "node"]
    for missing in ("eks_cluster", "eks_endpoint", "eks_certificate_authority"):
        partial = handler.make_repairer(world.settings(**{**eks, missing: None}), clients)
        assert (partial.drain_hook, partial.node_hook, partial.node_upkeep) == (None, None, None), missing
    plain = handler.make_repairer(world.settings(), clients)
    assert (plain.drain_hook, plain.node_hook, plain.node_upkeep) == (None, None, None)


# Across invocations: a retry by the sweep, a breaker reset


def test_a_deferred_replacement_retried_by_a_later_sweep_keeps_the_nodes_fault(cluster: Cluster) -> None:
    world = cluster.world
    bad = world.instances()[0]
    repairer = cluster.repairer()
    no_capacity = "We currently do not have sufficient p5.48xlarge capacity. InsufficientInstanceCapacity"
    assert repairer.launch_failed("demo-gpu-asg", no_capacity) is not None
    (deferred,) = repairer.handle(from_event(world.agent(bad, xid(79))))
    assert deferred.result == "deferred"
    assert cluster.node(bad)["metadata"]["labels"][LABEL_FAULT_TYPE] == "xid"
    world.clock.now += 60  # the next sweep, in a new invocation; still backing off
    later = cluster.repairer()
    later.new_invocation()
    assert [o.result for o in later.sweep()] == ["deferred"]
    metadata = cluster.node(bad)["metadata"]
    assert (metadata["labels"][LABEL_FAULT_TYPE], metadata["annotations"][ANNOTATION_FAULT_REASON]) == ("xid", XID_79)


def test_a_held_node_that_recovered_is_schedulable_again_when_the_breaker_is_reset(cluster: Cluster) -> None:
    world = cluster.world
    held = world.instances()[:3]
    for instance_id in held:
        world.tag(instance_id, health_tag({"check": "lustre"}))
    repairer = cluster.repairer()
    assert [o.result for o in repairer.sweep()] == ["suppressed"] * 3
    # the file system answers again on the first node: its agent reports healthy, same boot
    assert repairer.handle(from_event(world.agent(held[0], state="healthy")))[0].result == "ignored"
    later = cluster.repairer()  # a person resets the breaker: a new invocation
    later.new_invocation()
    results = {o.instance_id: o.result for o in later.reset_breaker("gpu")}
    assert results[held[0]] == "closed"
    stored = cluster.node(held[0])
    assert stored["metadata"]["labels"][LABEL_HEALTH] == "Schedulable"
    assert ours("Unschedulable") not in stored["spec"]["taints"]


# The sweep keeps the Nodes in step: protected labels from AWS's word, stuck nodes made Schedulable ----


def unlabel(cluster: Cluster, *instance_ids: str) -> None:
    """The Nodes as kubelet registers them: without the labels only the control plane may set."""
    for instance_id in instance_ids:
        for key in PROTECTED:
            cluster.node(instance_id)["metadata"]["labels"].pop(key)


def protect(group: str = "gpu", accelerator: str = "nvidia", version: str = "100") -> dict[str, Any]:
    """The sweep's merge patch of a Node's protected labels."""
    labels = {PROTECTED_LABEL_GROUP: group, PROTECTED_LABEL_ACCELERATOR: accelerator}
    return {"metadata": {"labels": labels, "resourceVersion": version}}


def neuron_plugin_nodes(stub: KubeStub) -> list[str]:
    """The Nodes the Neuron device plugin's DaemonSet runs on (it holds a token with power over
    every pod), by its own node selector."""
    (daemonset,) = [o for o in km.neuron_device_plugin() if o["kind"] == "DaemonSet"]
    wanted = daemonset["spec"]["template"]["spec"]["nodeSelector"]
    selects = label_selector(",".join(f"{k}={v}" for k, v in wanted.items()))
    return sorted(name for name, n in stub.nodes.items() if selects(n["metadata"]["labels"]))


def test_the_sweep_labels_nodes_from_aws_and_never_from_what_a_node_says(cluster: Cluster, calls: Counter[str]) -> None:
    """Root on a GPU node relabels its Node (``training-cluster/*``, which kubelet may set) as a
    Neuron node of group ``trn``, to draw the Neuron plugin and its token; another claims, by its
    providerID, to be the Neuron instance. The sweep labels each Node with what AWS says of the
    instance EC2 names it after; the liars get their own group's labels, or none."""
    world, stub = cluster.world, cluster.stub
    gpu = world.instances()
    trn = add_group(world, "trn")
    trn_name = private_dns_names(world, [trn])[trn]
    trn_node = node(trn_name, trn)
    trn_node["metadata"]["labels"].update({LABEL_GROUP: "trn", LABEL_HEALTH: "Schedulable"})
    stub.add(trn_node)
    unlabel(cluster, *gpu)
    relabelled, impostor = gpu[0], gpu[1]
    cluster.node(relabelled)["metadata"]["labels"].update({LABEL_ACCELERATOR: "neuron", LABEL_GROUP: "trn"})
    cluster.node(impostor)["spec"]["providerID"] = f"aws:///us-east-1a/{trn}"
    assert neuron_plugin_nodes(stub) == []  # a self-set label draws nothing
    repairer = cluster.repairer(
        groups={**world.groups, "demo-trn-asg": "trn"}, group_accelerators={"gpu": "nvidia", "trn": "neuron"}
    )
    calls.clear()
    assert repairer.sweep() == []
    names = {**cluster.names, trn: trn_name}
    patched = sorted(i for i in [*gpu, trn] if i != impostor)
    patches = [
        ("PATCH", f"/api/v1/nodes/{names[i]}", protect("trn", "neuron") if i == trn else protect())
        for i in sorted(patched, key=names.__getitem__)  # in the list's order: by name
    ]
    assert cluster.sent() == [cluster.labelled, cluster.unlabelled, *patches, cluster.not_schedulable]
    assert calls["DescribeInstances"] == 1  # every name at once
    assert repairer.upkept is not None
    assert sorted(repairer.upkept.labelled) == patched
    assert repairer.upkept.mismatched == [cluster.names[impostor]] and repairer.upkept.foreign == []
    labels = cluster.node(relabelled)["metadata"]["labels"]
    assert (labels[PROTECTED_LABEL_GROUP], labels[PROTECTED_LABEL_ACCELERATOR]) == ("gpu", "nvidia")
    assert PROTECTED_LABEL_GROUP not in cluster.node(impostor)["metadata"]["labels"]
    assert neuron_plugin_nodes(stub) == [trn_name]  # the Neuron instance, as AWS says, and no other
    # the next sweep: the impostor is listed again and again left alone; the labels stand
    stub.requests.clear()
    cluster.repairer(
        groups={**world.groups, "demo-trn-asg": "trn"}, group_accelerators={"gpu": "nvidia", "trn": "neuron"}
    ).sweep()
    assert cluster.sent() == cluster.upkeep


def test_a_node_of_another_clusters_instance_is_never_labelled_nor_made_schedulable(cluster: Cluster) -> None:
    world, stub = cluster.world, cluster.stub
    stranger = other_cluster_instance(world)
    name = private_dns_names(world, [stranger])[stranger]
    joined = node(name, stranger, taints=[ours("Unschedulable")])  # it joined this cluster somehow
    joined["metadata"]["labels"][LABEL_HEALTH] = "Unschedulable"
    stub.add(joined)
    world.tag(stranger, health_tag(state="healthy"))
    repairer = cluster.repairer()
    assert repairer.sweep() == []
    assert cluster.sent() == cluster.upkeep  # listed twice, written never
    assert repairer.upkept is not None and repairer.upkept.foreign == [name]
    assert stub.nodes[name] == joined and neuron_plugin_nodes(stub) == []


def test_a_users_node_without_this_clusters_label_is_not_even_listed(cluster: Cluster) -> None:
    """A node group of the user's in the same EKS cluster: its Nodes carry no cluster label of
    ours, so the sweep's lists (by label selector) leave them out: no work, nothing logged."""
    world, stub = cluster.world, cluster.stub
    stranger = other_cluster_instance(world)
    name = private_dns_names(world, [stranger])[stranger]
    theirs = node(name, stranger)
    del theirs["metadata"]["labels"][LABEL_CLUSTER]
    stub.add(theirs)
    repairer = cluster.repairer()
    assert repairer.sweep() == []
    assert cluster.sent() == cluster.upkeep
    assert repairer.upkept is not None and repairer.upkept.foreign == [] and stub.nodes[name] == theirs


def unprotect(version: str = "100") -> dict[str, Any]:
    """The sweep's merge patch that removes a Node's protected labels."""
    labels = {PROTECTED_LABEL_GROUP: None, PROTECTED_LABEL_ACCELERATOR: None}
    return {"metadata": {"labels": labels, "resourceVersion": version}}


def test_protected_labels_that_went_stale_are_removed_and_the_right_ones_given_again(cluster: Cluster) -> None:
    """Labels are written once but checked each sweep: a Node whose instance left the cluster
    outside the repair path (terminated by hand, its Node kept, its name free for a newer
    instance), a Node labelled with another group's labels (an administrator, or an older
    config), and a Node whose name is not EC2's name of the instance its providerID names. The
    stale labels go; a Node that is its instance's gets its group's labels again at once."""
    world, stub = cluster.world, cluster.stub
    ids = world.instances()
    gone, regrouped, renamed = ids[0], ids[1], ids[2]
    world.clients.autoscaling.detach_instances(
        InstanceIds=[gone], AutoScalingGroupName="demo-gpu-asg", ShouldDecrementDesiredCapacity=True
    )
    world.clients.ec2.terminate_instances(InstanceIds=[gone])
    cluster.node(regrouped)["metadata"]["labels"].update(
        {PROTECTED_LABEL_GROUP: "trn", PROTECTED_LABEL_ACCELERATOR: "neuron"}
    )
    # a Node named after another instance of the cluster, claiming (by providerID) to be ``renamed``
    impostor = node("ip-10-0-200-1.ec2.internal", renamed)
    impostor["metadata"]["labels"].update(PROTECTED)
    stub.add(impostor)
    repairer = cluster.repairer()
    assert repairer.sweep() == []
    by_name = {cluster.names[gone]: gone, cluster.names[regrouped]: regrouped}
    removed = sorted([*by_name, "ip-10-0-200-1.ec2.internal"])
    assert cluster.sent() == [
        cluster.labelled,
        *[("PATCH", f"/api/v1/nodes/{name}", unprotect()) for name in removed],
        cluster.unlabelled,
        ("PATCH", cluster.path(regrouped), protect(version="101")),  # its own group's, from AWS
        cluster.not_schedulable,
    ]
    assert repairer.upkept is not None and sorted(repairer.upkept.unprotected) == removed
    assert repairer.upkept.labelled == [regrouped] and repairer.upkept.mismatched == ["ip-10-0-200-1.ec2.internal"]
    assert repairer.upkept.foreign == [cluster.names[gone]]
    for name in removed:
        assert PROTECTED_LABEL_GROUP not in stub.nodes[name]["metadata"]["labels"] or name == cluster.names[regrouped]
    assert cluster.node(regrouped)["metadata"]["labels"][PROTECTED_LABEL_GROUP] == "gpu"
    assert neuron_plugin_nodes(stub) == []
    # the next sweep finds every label true: lists only
    stub.requests.clear()
    cluster.repairer().sweep()
    assert cluster.sent() == cluster.upkeep


def test_removing_stale_labels_is_bounded_and_conditional(cluster: Cluster) -> None:
    """At most ``max_writes`` removals a sweep; a Node changed since the list is not written."""
    world, stub = cluster.world, cluster.stub
    ids = sorted(world.instances(), key=cluster.names.__getitem__)
    for instance_id in ids:
        cluster.node(instance_id)["metadata"]["labels"][PROTECTED_LABEL_ACCELERATOR] = "neuron"
    changed = cluster.names[ids[0]]

    def bump(seen: Any) -> None:  # another writer changes the first Node between the list and the write
        if seen.method == "PATCH" and seen.path == f"/api/v1/nodes/{changed}":
            stub.nodes[changed]["metadata"]["resourceVersion"] = "150"

    stub.each_request = bump
    repairer = cluster.repairer(max_writes=3)
    repairer.sweep()
    assert repairer.upkept is not None
    assert repairer.upkept.retry == [changed] and len(repairer.upkept.unprotected) == 2
    assert repairer.upkept.left == len(ids) - 3
    assert [s[1] for s in cluster.sent() if s[0] == "PATCH"][:3] == [cluster.path(i) for i in ids[:3]]
    assert stub.nodes[changed]["metadata"]["labels"][PROTECTED_LABEL_ACCELERATOR] == "neuron"  # not written


def test_a_node_verified_healthy_gets_its_protected_labels_at_once(cluster: Cluster) -> None:
    """A new node need not wait for the sweep: its first healthy report, confirmed by its tag,
    gives its Node the protected labels of the group AWS says it is in, in the same patch that
    makes it Schedulable. A group without an accelerator in the settings gets none."""
    world = cluster.world
    new, other = world.instances()[3], world.instances()[4]
    unlabel(cluster, new, other)
    cluster.node(new)["metadata"]["labels"][LABEL_ACCELERATOR] = "neuron"  # what the node says counts for nothing
    repairer = cluster.repairer()
    repairer.handle(from_event(world.agent(new, state="healthy", boot="boot-1")))
    patch = {"metadata": {"labels": {**PROTECTED}, "resourceVersion": "100"}}
    assert cluster.sent() == [("GET", cluster.path(new), None), ("PATCH", cluster.path(new), patch)]
    assert neuron_plugin_nodes(cluster.stub) == []
    cluster.stub.requests.clear()
    cluster.repairer(group_accelerators={"cpu": "none"}).handle(
        from_event(world.agent(other, state="healthy", boot="boot-1"))
    )
    assert cluster.sent() == [("GET", cluster.path(other), None)]  # nothing to write: Schedulable already


def test_a_node_ec2_gives_no_name_for_keeps_its_labels_and_gets_none(cluster: Cluster) -> None:
    """An odd EC2 answer (no name for the instances asked about) is not a wrong name: no label is
    removed (the Neuron plugin's pods would leave every Trainium node) and none is written."""
    world = cluster.world
    ids = world.instances()
    unlabel(cluster, ids[0])
    repairer = cluster.repairer()
    assert repairer.node_upkeep is not None
    repairer.node_upkeep.labeler.node_names = lambda instance_ids: {}
    repairer.sweep()
    assert not [s for s in cluster.sent() if s[0] == "PATCH"]
    assert repairer.upkept is not None and repairer.upkept.unprotected == []
    assert sorted(repairer.upkept.unnamed) == sorted(cluster.names[i] for i in ids)
    assert all(PROTECTED_LABEL_GROUP in cluster.node(i)["metadata"]["labels"] for i in ids[1:])


def test_a_healthy_instance_outside_its_auto_scaling_group_gets_no_protected_labels(cluster: Cluster) -> None:
    """Detached by hand (the ledger still knows its group): its healthy report makes its Node
    Schedulable, but only membership of the group's Auto Scaling group now gives the labels;
    otherwise root on it could earn them back at will by rewriting its own health tag."""
    world = cluster.world
    gone = world.instances()[2]
    repairer = cluster.repairer()
    repairer.ledger.set_instance(gone, instance_group="gpu")
    world.clients.autoscaling.detach_instances(
        InstanceIds=[gone], AutoScalingGroupName="demo-gpu-asg", ShouldDecrementDesiredCapacity=True
    )
    unlabel(cluster, gone)
    cluster.node(gone)["metadata"]["labels"][LABEL_HEALTH] = "Unschedulable"
    cluster.node(gone)["spec"]["taints"].append(ours("Unschedulable"))
    repairer.handle(from_event(world.agent(gone, state="healthy", boot="boot-1")))
    patches = [s[2] for s in cluster.sent() if s[0] == "PATCH"]
    assert patches == [
        {
            "metadata": {"labels": {LABEL_HEALTH: "Schedulable"}, "resourceVersion": "100"},
            "spec": {"taints": [GPU_TAINT]},
        }
    ]
    assert PROTECTED_LABEL_GROUP not in cluster.node(gone)["metadata"]["labels"]


def test_impostor_nodes_cost_no_labelling_writes(cluster: Cluster) -> None:
    """Nodes that claim (by providerID) member instances under names that are not theirs, listed
    before the real ones: each is refused, and the sweep's writes still go to real Nodes."""
    world, stub = cluster.world, cluster.stub
    ids = sorted(world.instances(), key=cluster.names.__getitem__)
    unlabel(cluster, *ids)
    for n, instance_id in enumerate(ids):
        stub.add(node(f"aaa-{n}.ec2.internal", instance_id))  # sorted first
    repairer = cluster.repairer(max_writes=3)
    repairer.sweep()
    assert repairer.upkept is not None
    assert sorted(repairer.upkept.mismatched) == [f"aaa-{n}.ec2.internal" for n in range(len(ids))]
    assert repairer.upkept.labelled == ids[:3]


def test_the_sweep_writes_at_most_so_many_nodes_and_stops_at_its_time_bound(cluster: Cluster) -> None:
    """Many new nodes (eight here, three writes a sweep) must not hold up the sweep (and the
    repairs after it): the rest wait."""
    world, stub = cluster.world, cluster.stub
    ids = sorted(world.instances(), key=cluster.names.__getitem__)
    unlabel(cluster, *ids)
    done: list[int] = []
    for _ in range(4):
        stub.requests.clear()
        repairer = cluster.repairer(max_writes=3)
        repairer.sweep()
        assert repairer.upkept is not None
        done.append(len(repairer.upkept.labelled))
        if done == [3]:
            first = [("PATCH", cluster.path(i), protect()) for i in ids[:3]]
            assert cluster.sent() == [cluster.labelled, cluster.unlabelled, *first, cluster.not_schedulable]
            assert repairer.upkept.more  # the list was read only as far as this sweep could write
    assert done == [3, 3, 2, 0]
    assert all(cluster.node(i)["metadata"]["labels"][PROTECTED_LABEL_GROUP] == "gpu" for i in ids)

    # Time: each write takes 12 s here; after 20 s no request starts (the sweep's other list too).
    unlabel(cluster, *ids)
    stub.requests.clear()
    stub.each_request = lambda seen: (
        setattr(world.clock, "now", world.clock.now + 12) if seen.method == "PATCH" else None
    )
    repairer = cluster.repairer()
    repairer.sweep()
    written = [("PATCH", cluster.path(i), protect(version="101")) for i in ids[:2]]  # labelled once before
    assert cluster.sent() == [cluster.labelled, cluster.unlabelled, *written]
    assert repairer.upkept is not None and repairer.upkept.left == 6


@pytest.mark.parametrize("labelled", [False, True], ids=["unlabelled", "labelled"])
def test_a_slow_list_of_many_nodes_stops_at_the_time_bound_between_pages(cluster: Cluster, labelled: bool) -> None:
    """1,200 Nodes that claim this cluster but name no instance of it, each page of the list
    taking 12 s: no page is asked for once the 20 s are up (found by the re-review). Either list:
    those without the protected labels, or those with them (stale, so each would be written)."""
    world, stub = cluster.world, cluster.stub
    for i in range(1200):
        stranger = node(f"ip-10-9-{i // 250}-{i % 250}.ec2.internal", f"i-0{i:016x}")
        if labelled:
            stranger["metadata"]["labels"].update(PROTECTED)
        stub.add(stranger)
    slow = (cluster.labelled if labelled else cluster.unlabelled)[1]

    def each_request(seen: Any) -> None:
        query = "&".join(f"{k}={v}" for k, values in seen.query.items() for v in values if k != "continue")
        if f"{seen.path}?{query}" == slow:
            world.clock.now += 12

    stub.each_request = each_request
    repairer = cluster.repairer()
    stub.requests.clear()
    start = world.clock.now
    repairer.sweep()
    pages = [s for s in cluster.sent() if s[0] == "GET" and s[1].startswith(slow)]
    # unlabelled: two pages (the time ran out during the second's request), no third; labelled:
    # the first page's stale labels removed with the sweep's 100 writes, and no page after them
    assert len(pages) == (1 if labelled else 2) and pages[0][1] == slow
    assert labelled or pages[1][1].startswith(slow + "&continue=")
    writes = [s for s in cluster.sent() if s[0] != "GET"]
    assert len(writes) == (100 if labelled else 0)
    first_page = {f"ip-10-9-{i // 250}-{i % 250}.ec2.internal" for i in range(500)}
    assert {w[1].removeprefix("/api/v1/nodes/") for w in writes} <= first_page
    assert repairer.upkept is not None and repairer.upkept.more
    assert world.clock.now - start <= 20 + 12  # one request may end after the bound, none starts after it


def test_a_node_that_registered_after_its_first_healthy_report_is_schedulable_at_the_next_sweep(
    cluster: Cluster,
) -> None:
    """Deep checks passed before kubelet registered: the one Schedulable call found no Node."""
    world, stub = cluster.world, cluster.stub
    new = world.instances()[3]
    registered = stub.nodes.pop(cluster.names[new])
    repairer = cluster.repairer()
    (outcome,) = repairer.handle(from_event(world.agent(new, state="healthy", boot="boot-1")))
    assert outcome.result == "ignored" and cluster.sent() == [("GET", cluster.path(new), None)]  # 404: no write
    # kubelet registers, with its flags: Unschedulable and tainted, no protected label (it may set none)
    registered["metadata"]["labels"][LABEL_HEALTH] = "Unschedulable"
    registered["spec"]["taints"].append(ours("Unschedulable"))
    for key in PROTECTED:
        registered["metadata"]["labels"].pop(key)
    stub.add(registered)
    stub.requests.clear()
    world.clock.now += 60
    later = cluster.repairer()
    later.new_invocation()
    assert later.sweep() == []
    schedulable = {
        "metadata": {"labels": {LABEL_HEALTH: "Schedulable"}, "resourceVersion": "101"},
        "spec": {"taints": [GPU_TAINT]},
    }
    assert cluster.sent() == [
        cluster.labelled,
        cluster.unlabelled,
        ("PATCH", cluster.path(new), protect()),
        cluster.not_schedulable,
        ("GET", cluster.path(new), None),
        ("PATCH", cluster.path(new), schedulable),
    ]
    stored = cluster.node(new)
    assert stored["metadata"]["labels"][LABEL_HEALTH] == "Schedulable" and stored["spec"]["taints"] == [GPU_TAINT]
    assert "unschedulable" not in stored["spec"]  # it was never cordoned
    assert later.upkept is not None and (later.upkept.labelled, later.upkept.schedulable) == ([new], [new])


def test_a_failed_uncordon_after_a_reboot_is_retried_by_the_sweep(cluster: Cluster) -> None:
    world, stub = cluster.world, cluster.stub
    bad = world.instances()[2]
    repairer = cluster.repairer()
    (outcome,) = repairer.handle(from_event(world.agent(bad, xid(64))))
    assert outcome.result == "rebooted" and cluster.node(bad)["spec"]["unschedulable"] is True
    world.clock.now += 600
    stub.scripted[("PATCH", cluster.path(bad))] = [500]  # the API fails the one uncordon
    (closed,) = repairer.handle(from_event(world.agent(bad, state="healthy", boot="boot-2")))
    assert closed.result == "closed"
    (told,) = steps(world, outcome.incident_id, "node")
    assert told["result"] == "failed" and "500" in told["error"]
    assert cluster.node(bad)["metadata"]["labels"][LABEL_HEALTH] == "UnschedulablePendingReboot"
    assert repairer.ledger.instance(bad)["cordoned_by"] == outcome.incident_id
    stub.requests.clear()
    world.clock.now += 60
    later = cluster.repairer()
    later.new_invocation()
    assert later.sweep() == []
    schedulable = {
        "metadata": {
            "labels": {LABEL_HEALTH: "Schedulable"},
            "annotations": {ANNOTATION_FAULT_REASON: None},
            "resourceVersion": "101",
        },
        "spec": {"taints": [GPU_TAINT], "unschedulable": False},  # the control plane's cordon, lifted
    }
    assert cluster.sent() == [
        *cluster.upkeep,
        ("GET", cluster.path(bad), None),
        ("PATCH", cluster.path(bad), schedulable),
    ]
    assert "cordoned_by" not in later.ledger.instance(bad)
    assert later.upkept is not None and later.upkept.uncordoned == [bad]
    stub.requests.clear()
    cluster.repairer().sweep()
    assert cluster.sent() == cluster.upkeep  # done: nothing left


def test_the_sweep_leaves_another_cordon_and_a_node_with_an_open_incident_as_they_are(cluster: Cluster) -> None:
    world, stub = cluster.world, cluster.stub
    cordoned, dry = world.instances()[4:6]
    # an administrator cordoned a node that deep checks held (its healthy report was lost)
    held = cluster.node(cordoned)
    held["metadata"]["labels"][LABEL_HEALTH] = "Unschedulable"
    held["spec"].update(taints=[GPU_TAINT, ours("Unschedulable")], unschedulable=True)
    world.tag(cordoned, health_tag(state="healthy"))
    # a dry run's incident stays open; the node's tag says healthy again, from the same boot
    dry_run = cluster.repairer(dry_run=True)
    assert dry_run.handle(from_event(world.agent(dry, xid(79))))[0].result == "dry-run"
    assert dry_run.handle(from_event(world.agent(dry, state="healthy")))[0].result == "ignored"
    stub.requests.clear()
    dry_run.sweep()
    body = {
        "metadata": {"labels": {LABEL_HEALTH: "Schedulable"}, "resourceVersion": "100"},
        "spec": {"taints": [GPU_TAINT]},  # no uncordon: the ledger has no cordon of ours
    }
    assert cluster.sent() == [
        *cluster.upkeep,
        ("GET", cluster.path(cordoned), None),
        ("PATCH", cluster.path(cordoned), body),
    ]  # the dry run's node: listed, not read, not written
    assert cluster.node(cordoned)["spec"]["unschedulable"] is True
    assert cluster.node(dry)["metadata"]["labels"][LABEL_HEALTH] == "Unschedulable"


def add_group(world: World, group: str) -> str:
    """An Auto Scaling group ``demo-<group>-asg`` of one instance beside the world's: its instance."""
    subnet = world.clients.ec2.describe_subnets(Filters=[{"Name": "cidr-block", "Values": ["10.0.128.0/17"]}])
    world.clients.autoscaling.create_auto_scaling_group(
        AutoScalingGroupName=f"demo-{group}-asg",
        LaunchTemplate={"LaunchTemplateName": "lt-gpu", "Version": "$Latest"},
        MinSize=1,
        MaxSize=1,
        DesiredCapacity=1,
        VPCZoneIdentifier=subnet["Subnets"][0]["SubnetId"],
    )
    (found,) = world.clients.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[f"demo-{group}-asg"])[
        "AutoScalingGroups"
    ]
    return str(found["Instances"][0]["InstanceId"])


def test_the_groups_accelerators_come_from_the_functions_environment() -> None:
    env = {
        "CLUSTER_NAME": "demo",
        "LEDGER_TABLE": "ledger",
        "TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:events",
        "EVIDENCE_BUCKET": "evidence",
        "AUTO_SCALING_GROUPS": json.dumps({"demo-gpu-asg": "gpu", "demo-system-asg": "system"}),
        "INSTANCE_ARN_PREFIX": "arn:aws:ec2:us-east-1:123456789012:instance/",
    }
    accelerators = {"gpu": "nvidia", "system": "none"}
    assert Settings.from_env({**env, "GROUP_ACCELERATORS": json.dumps(accelerators)}).group_accelerators == accelerators
    assert Settings.from_env(env).group_accelerators == {}  # no Node gets the protected labels then
    for wrong in ({"gpu": "amd"}, ["gpu"]):
        with pytest.raises(ValueError, match="group_accelerators must map instance groups to nvidia, neuron, none"):
            Settings.from_env({**env, "GROUP_ACCELERATORS": json.dumps(wrong)})


def test_without_the_groups_accelerators_no_node_is_labelled_and_the_sweep_says_so(cluster: Cluster) -> None:
    unlabel(cluster, *cluster.world.instances())
    repairer = cluster.repairer(group_accelerators={})
    assert repairer.sweep() == []
    assert cluster.sent() == [cluster.not_schedulable]  # not even listed
    assert repairer.upkept is not None
    assert repairer.upkept.errors == ["protect: no group accelerators (GROUP_ACCELERATORS): no Node labelled"]


def test_with_the_api_down_the_sweep_still_repairs_and_its_upkeep_only_logs(cluster: Cluster) -> None:
    world = cluster.world
    bad = world.instances()[0]
    world.tag(bad, health_tag(xid(79)))  # its event was lost: the sweep finds the tag
    cluster.served.stop()
    repairer = cluster.repairer()
    (outcome,) = repairer.sweep()
    assert outcome.result == "replaced" and world.state(bad) in ("shutting-down", "terminated")
    assert repairer.upkept is not None
    assert [e.split(":")[0] for e in repairer.upkept.errors] == ["revalidate", "protect", "unstick"]
    assert all("Connection refused" in e or "did not answer a moment ago" in e for e in repairer.upkept.errors)


def test_no_list_request_starts_after_the_deadline_once_revalidation_writes_used_the_time(cluster: Cluster) -> None:
    """Re-review N1: the stale-label step writes between pages; once those writes use up the
    sweep's 20 s, no next page is asked for."""
    world, stub = cluster.world, cluster.stub
    for i in range(1200):  # stale labels: Nodes of no member instance (each a removal write)
        stranger = node(f"ip-10-9-{i // 250}-{i % 250}.ec2.internal", f"i-0{i:016x}")
        stranger["metadata"]["labels"].update(PROTECTED)
        stub.add(stranger)
    seen: list[tuple[float, str]] = []

    def each_request(request: Any) -> None:
        seen.append((world.clock.now, request.method))
        if request.method == "PATCH":
            world.clock.now += 0.3  # a slow API server: 100 writes would take 30 s

    stub.each_request = each_request
    repairer = cluster.repairer()
    start = world.clock.now
    repairer.sweep()
    assert [(round(t - start, 1), m) for t, m in seen if t >= start + 20.0] == []
    assert repairer.upkept is not None and repairer.upkept.more


def test_an_instance_being_terminated_gets_no_protected_labels_from_a_healthy_report(cluster: Cluster) -> None:
    """Re-review N2: an instance in Terminating:* is leaving its group: Schedulable, not labelled."""
    world = cluster.world
    going = world.instances()[2]
    repairer = cluster.repairer()
    unlabel(cluster, going)
    cluster.node(going)["metadata"]["labels"][LABEL_HEALTH] = "Unschedulable"
    cluster.node(going)["spec"]["taints"] = [dict(GPU_TAINT), ours("Unschedulable")]
    real = world.clients.autoscaling.describe_auto_scaling_instances

    def terminating(**params: Any) -> Any:
        answer = real(**params)
        for item in answer["AutoScalingInstances"]:
            if item["InstanceId"] == going:
                item["LifecycleState"] = "Terminating:Wait"
        return answer

    with mock.patch.object(world.clients.autoscaling, "describe_auto_scaling_instances", side_effect=terminating):
        repairer.handle(from_event(world.agent(going, state="healthy", boot="boot-1")))
    labels = cluster.node(going)["metadata"]["labels"]
    assert PROTECTED_LABEL_GROUP not in labels and labels[LABEL_HEALTH] == "Schedulable"
