"""The control plane's Kubernetes client (EKS), standard library and boto3 only (no ``kubernetes``).

:mod:`.kube_api` authenticates with the function's IAM role and speaks HTTPS to the API endpoint
(re-exported here); :class:`HealthLabeler`
sets a node's health label, taint and fault, and deletes a replaced node's Node object, and
:class:`KubernetesDrain` is the orchestrator hook (like ``drain.RunCommandDrain``): cordon, then
evict through the Eviction API, honouring PodDisruptionBudgets up to a time bound.

**How a Node is found.** By name, ``GET /api/v1/nodes/<name>``, the name being the instance's
private DNS name as EC2 gives it (:func:`ec2_node_name`); the Node is then used only if its
``spec.providerID`` ends with exactly ``/<instance id>``. Why not a list of every Node searched for
the providerID:

- the name is bound to the instance by AWS: the node role's ``EC2_LINUX`` access entry makes a
  kubelet ``system:node:<its private DNS name>``, and the node authorizer lets it register no
  other Node. The providerID is what a kubelet says of itself: a node could register one naming
  another instance, and a search by providerID would find two (STYLE: trust nothing a node says
  about another node);
- the providerID check refuses the cases a name alone gets wrong: a private IP (so a name) used
  again by a newer instance, or a stale Node left by a terminated one;
- one small request whatever the size of the cluster (a list of a few thousand Nodes is tens of
  megabytes), within the 60 s detection-to-action goal.

The name is looked up once per instance and kept while the function stays warm, so a replaced
instance's Node can be deleted in the same invocation after EC2 stops reporting the name (it may
for a terminated instance): call :meth:`HealthLabeler.delete_node` on the labeler that drained it.
The role needs ``ec2:DescribeInstances`` for the lookup; many names are looked up in one call
(:func:`ec2_node_names`, :meth:`HealthLabeler.learn_names`).

The sweep lists Nodes by label selector (:meth:`HealthLabeler.list_nodes`, 500 a page): this
cluster's Nodes without the protected labels and those not ``Schedulable`` (few, once the cluster
is up), and every Node with the protected labels (all of the cluster's: the one list that grows
with it, a few megabytes a minute at a thousand nodes, bounded by the sweep's time) to find the
ones that need its work. What a list says is a hint, never a proof: the sweep writes only to a Node whose
name is the one EC2 gives the instance its providerID names (see ``node_upkeep``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import boto3
from botocore.exceptions import ClientError

from training_cluster.contract import (
    ANNOTATION_FAULT_REASON,
    HEALTH_TAINT_EFFECT,
    INSTANCE_ID,
    LABEL_FAULT_TYPE,
    LABEL_HEALTH,
    NODE_HEALTH_STATUSES,
    PROTECTED_LABEL_ACCELERATOR,
    PROTECTED_LABEL_GROUP,
    NodeHealthStatus,
    printable,
)

from .aws import Clients, with_retries
from .drain import WAIT_SECONDS, DrainError
from .kube_api import (  # re-exported: the transport is kube_api's
    EksToken,
    KubeApi,
    KubeError,
    NodeMismatch,
)

CONFLICT_ATTEMPTS = 5  # read-modify-write attempts when another writer changed the Node (409)
RETRY_SECONDS = 1.0  # between eviction rounds while a disruption budget refuses
PAGE_LIMIT = 500  # pods (or Nodes) per list request
DESCRIBE_LIMIT = 1000  # instance ids per DescribeInstances call
NOT_FOUND_ROUNDS = 3  # DescribeInstances calls per chunk, each without the ids EC2 said it does not know
LABEL_VALUE_LIMIT = 63
REASON_LIMIT = 1024  # characters of the fault reason annotation
MERGE_PATCH = "application/merge-patch+json"
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
PENDING: dict[str, NodeHealthStatus] = {
    "reboot": "UnschedulablePendingReboot",
    "replace": "UnschedulablePendingReplacement",
}
_NOT_IN_LABEL = re.compile(r"[^A-Za-z0-9._-]+")


# Nodes and their health --------------------------------------------------------------------------


def ec2_node_names(
    clients: Clients, sleep: Callable[[float], None] = time.sleep
) -> Callable[[Sequence[str]], dict[str, str]]:
    """instance ids -> {id: its private DNS name (its Node's name on EKS)} from ``DescribeInstances``,
    :data:`DESCRIBE_LIMIT` ids a call; an id EC2 reports no name for (terminated, or unknown to EC2)
    is left out. EC2 refuses a whole call for an id it does not know: the call is made again
    without the ids its error names, at most :data:`NOT_FOUND_ROUNDS` calls a chunk."""

    def names(instance_ids: Sequence[str]) -> dict[str, str]:
        ids = sorted({i for i in instance_ids if INSTANCE_ID.fullmatch(i)})
        found: dict[str, str] = {}
        for start in range(0, len(ids), DESCRIBE_LIMIT):
            chunk = ids[start : start + DESCRIBE_LIMIT]
            asked = set(chunk)
            for _ in range(NOT_FOUND_ROUNDS):
                try:
                    answer = with_retries(clients.ec2.describe_instances, sleep=sleep, InstanceIds=chunk)
                except ClientError as error:
                    if error.response["Error"]["Code"] != "InvalidInstanceID.NotFound":
                        raise
                    unknown = {m[0] for m in INSTANCE_ID.finditer(str(error.response["Error"].get("Message", "")))}
                    chunk = [i for i in chunk if i not in unknown]
                    if not unknown or not chunk:
                        break
                    continue
                for reservation in answer.get("Reservations", []):
                    for instance in reservation.get("Instances", []):
                        if instance.get("InstanceId") in asked and instance.get("PrivateDnsName"):
                            found[str(instance["InstanceId"])] = str(instance["PrivateDnsName"])
                break
        return found

    return names


def ec2_node_name(clients: Clients, sleep: Callable[[float], None] = time.sleep) -> Callable[[str], str | None]:
    """instance id -> its private DNS name (:func:`ec2_node_names` of one id), None when EC2
    reports none (a terminated instance, or one EC2 does not know)."""
    names = ec2_node_names(clients, sleep)
    return lambda instance_id: names([instance_id]).get(instance_id)


def provider_id_matches(node: dict[str, Any], instance_id: str) -> bool:
    """Whether the Node's ``spec.providerID`` (``aws:///<zone>/<instance id>``) names the instance."""
    provider = (node.get("spec") or {}).get("providerID")
    return (
        bool(INSTANCE_ID.fullmatch(instance_id))
        and isinstance(provider, str)
        and provider.startswith("aws://")
        and provider.endswith(f"/{instance_id}")
    )


def provider_instance(node: dict[str, Any]) -> str | None:
    """The instance id the Node's ``spec.providerID`` (``aws:///<zone>/<instance id>``) names, None
    when it names none. What the kubelet says of itself: a hint, checked against EC2's name."""
    provider = (node.get("spec") or {}).get("providerID")
    if not isinstance(provider, str) or not provider.startswith("aws://"):
        return None
    instance_id = provider.rpartition("/")[2]
    return instance_id if INSTANCE_ID.fullmatch(instance_id) else None


def protected_labels(group: str | None, accelerators: Mapping[str, str]) -> dict[str, str] | None:
    """The protected labels of a Node of instance ``group`` (its accelerator from
    ``accelerators``, ``Settings.group_accelerators``); None for no group, or one not listed."""
    if group is None or group not in accelerators:
        return None
    return {PROTECTED_LABEL_GROUP: group, PROTECTED_LABEL_ACCELERATOR: accelerators[group]}


def label_value(text: str) -> str | None:
    """``text`` as a valid label value: runs of other characters become ``-``, at most 63
    characters, starting and ending alphanumeric; None when nothing is left."""
    value = _NOT_IN_LABEL.sub("-", text)[:LABEL_VALUE_LIMIT].strip("-_.")
    return value or None


def annotation_value(text: str) -> str:
    """Free text for an annotation: one line of printable characters, at most 1,024."""
    return printable(text, REASON_LIMIT, " ")


def health_patch(
    node: dict[str, Any],
    status: NodeHealthStatus,
    *,
    fault_type: str | None = None,
    reason: str | None = None,
    cordon: bool | None = None,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any] | None:
    """The merge patch that gives ``node`` the health ``status`` and ``labels`` (None when it has
    them already):
    the health label; the health taint for every status but ``Schedulable``, which removes it
    (other taints are kept as read, so the patch carries the ``resourceVersion`` it was read at);
    the fault type label and reason annotation (set when given, removed when ``Schedulable``);
    ``spec.unschedulable`` when ``cordon`` is not None."""
    if status not in NODE_HEALTH_STATUSES:
        raise ValueError(f"health status {status!r} is not one of {', '.join(NODE_HEALTH_STATUSES)}")
    metadata, spec = node.get("metadata") or {}, node.get("spec") or {}
    wanted_labels: dict[str, Any] = {**(labels or {}), LABEL_HEALTH: status}
    annotations: dict[str, Any] = {}
    if status == "Schedulable":
        wanted_labels[LABEL_FAULT_TYPE], annotations[ANNOTATION_FAULT_REASON] = None, None
    else:
        if fault_type is not None:
            wanted_labels[LABEL_FAULT_TYPE] = label_value(fault_type)
        if reason is not None:
            annotations[ANNOTATION_FAULT_REASON] = annotation_value(reason)
    changes: dict[str, Any] = {}
    for field, wanted in (("labels", wanted_labels), ("annotations", annotations)):
        had = metadata.get(field) or {}
        changed = {key: value for key, value in wanted.items() if had.get(key) != value}
        if changed:
            changes.setdefault("metadata", {})[field] = changed
    taints = spec.get("taints") or []
    ours = [{k: t.get(k) for k in ("key", "value", "effect")} for t in taints if t.get("key") == LABEL_HEALTH]
    wanted_taints = (
        [] if status == "Schedulable" else [{"key": LABEL_HEALTH, "value": status, "effect": HEALTH_TAINT_EFFECT}]
    )
    if ours != wanted_taints:
        changes.setdefault("spec", {})["taints"] = [t for t in taints if t.get("key") != LABEL_HEALTH] + wanted_taints
    if cordon is not None and bool(spec.get("unschedulable")) != cordon:
        changes.setdefault("spec", {})["unschedulable"] = cordon
    if not changes:
        return None
    changes.setdefault("metadata", {})["resourceVersion"] = metadata.get("resourceVersion")
    return changes


class HealthLabeler:
    """A node's health in Kubernetes, written only after the Node is proven to be the instance's
    (see the module's docstring)."""

    def __init__(
        self,
        api: KubeApi,
        node_name: Callable[[str], str | None],
        *,
        node_names: Callable[[Sequence[str]], dict[str, str]] | None = None,
        attempts: int = CONFLICT_ATTEMPTS,
    ) -> None:
        """``node_name``: an instance's Node name (from EC2); ``node_names``: many at once (one
        call, :func:`ec2_node_names`), default ``node_name`` for each."""
        self.api = api
        self.node_name = node_name
        self.node_names = node_names
        self.attempts = attempts
        self.names: dict[str, str] = {}

    def name(self, instance_id: str) -> str:
        if instance_id not in self.names:
            name = self.node_name(instance_id)
            if not name:
                raise KubeError(f"{instance_id} has no private DNS name: its Node cannot be named")
            self.names[instance_id] = name
        return self.names[instance_id]

    def learn_names(self, instance_ids: Sequence[str]) -> dict[str, str]:
        """{id: Node name} of those of ``instance_ids`` EC2 names, the ones not known yet looked up
        together (kept like :meth:`name`'s)."""
        wanted = list(dict.fromkeys(instance_ids))
        missing = [i for i in wanted if i not in self.names]
        if missing:
            if self.node_names is not None:
                self.names.update(self.node_names(missing))
            else:
                self.names.update({i: n for i in missing if (n := self.node_name(i))})
        return {i: self.names[i] for i in wanted if i in self.names}

    def list_nodes(self, label_selector: str, *, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """The Nodes ``label_selector`` selects, :data:`PAGE_LIMIT` a request, the next page asked
        for only when the caller wants more."""
        query = {"labelSelector": label_selector, "limit": str(PAGE_LIMIT)}
        while True:
            _, page = self.api.call("list", "nodes", "GET", "/api/v1/nodes", query=query, timeout=timeout)
            yield from page.get("items") or []
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return
            query = {**query, "continue": token}

    def node(self, instance_id: str, *, timeout: float | None = None) -> dict[str, Any] | None:
        """The instance's Node, None when there is none; :class:`NodeMismatch` when the Node of
        that name is another instance's."""
        name = self.name(instance_id)
        status, node = self.api.call("get", "nodes", "GET", _node_path(name), ok=(200, 404), timeout=timeout)
        if status == 404:
            return None
        if not provider_id_matches(node, instance_id):
            provider = (node.get("spec") or {}).get("providerID")
            raise NodeMismatch(f"node {name} has providerID {provider!r}, not {instance_id}'s: left alone")
        return node

    def set_health(
        self,
        instance_id: str,
        status: NodeHealthStatus,
        *,
        fault_type: str | None = None,
        reason: str | None = None,
        cordon: bool | None = None,
        labels: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> str | None:
        """Give the instance's Node ``status`` and ``labels`` (see :func:`health_patch`); read, modified and
        written again when another writer changed it meanwhile (409), at most ``attempts``
        times. The Node's name, None when the instance has no Node."""
        for _ in range(self.attempts):
            node = self.node(instance_id, timeout=timeout)
            if node is None:
                return None
            patch = health_patch(node, status, fault_type=fault_type, reason=reason, cordon=cordon, labels=labels)
            if patch is None:
                return self.name(instance_id)
            answer, _ = self.api.call(
                "patch",
                "nodes",
                "PATCH",
                _node_path(self.name(instance_id)),
                body=patch,
                content_type=MERGE_PATCH,
                ok=(200, 409),
                timeout=timeout,
            )
            if answer == 200:
                return self.name(instance_id)
        raise KubeError(f"node {self.name(instance_id)} changed under {self.attempts} writes in a row", 409)

    def write_labels(
        self, node: dict[str, Any], labels: Mapping[str, str | None], *, timeout: float | None = None
    ) -> bool:
        """Merge-patch ``labels`` onto ``node`` as it was read (a None value removes the label), on
        condition of its ``resourceVersion`` (a Node changed or made anew since is not written:
        False, for the caller to read again). Whether they were written."""
        metadata = node.get("metadata") or {}
        patch = {"metadata": {"labels": dict(labels), "resourceVersion": metadata.get("resourceVersion")}}
        status, _ = self.api.call(
            "patch",
            "nodes",
            "PATCH",
            _node_path(str(metadata.get("name", ""))),
            body=patch,
            content_type=MERGE_PATCH,
            ok=(200, 404, 409),
            timeout=timeout,
        )
        return status == 200

    def delete_node(self, instance_id: str) -> bool:
        """Delete the instance's Node object (after a replacement), on condition that it is still
        the object whose providerID was checked (its uid). False when there was none."""
        for _ in range(self.attempts):
            node = self.node(instance_id)
            if node is None:
                return False
            options = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": node["metadata"]["uid"]}}
            status, _ = self.api.call(
                "delete", "nodes", "DELETE", _node_path(self.name(instance_id)), body=options, ok=(200, 202, 404, 409)
            )
            if status != 409:  # 409: a new object of that name since: checked again
                return status != 404
        raise KubeError(f"node {self.name(instance_id)} changed under {self.attempts} deletes in a row", 409)


def _node_path(name: str) -> str:
    return f"/api/v1/nodes/{quote(name, safe='')}"


# The drain -----------------------------------------------------------------------------------------


def evictable(pod: dict[str, Any]) -> bool:
    """Whether a drain evicts the pod: not a mirror pod (the kubelet's static pods), not one a
    DaemonSet controls (it would come back at once: cordoning does not stop DaemonSets), not
    one that has finished."""
    metadata = pod.get("metadata") or {}
    if MIRROR_ANNOTATION in (metadata.get("annotations") or {}):
        return False
    if any(o.get("controller") and o.get("kind") == "DaemonSet" for o in metadata.get("ownerReferences") or []):
        return False
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


class _Eviction:
    """The evictions from one node until ``deadline``: each pod evicted once, a refused one (429)
    tried again; each request's timeout ends near the deadline (a second after it at most)."""

    def __init__(self, api: KubeApi, node: str, deadline: float, clock: Callable[[], float]) -> None:
        self.api, self.node, self.deadline, self.clock = api, node, deadline, clock
        self.evicted: dict[str, str] = {}  # uid -> namespace/name
        self.refused: dict[str, str] = {}
        self.running: dict[str, dict[str, Any]] = {}  # uid -> pod, as last listed

    def timeout(self) -> float:
        return min(self.api.timeout_seconds, max(1.0, self.deadline - self.clock()))

    def pods(self) -> list[dict[str, Any]]:
        query = {"fieldSelector": f"spec.nodeName={self.node}", "limit": str(PAGE_LIMIT)}
        pods: list[dict[str, Any]] = []
        while True:
            _, page = self.api.call("list", "pods", "GET", "/api/v1/pods", query=query, timeout=self.timeout())
            pods += page.get("items") or []
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return pods
            query = {**query, "continue": token}

    def step(self) -> bool:
        """Evict what is left to evict (none once past the deadline); whether no pod to evict is
        left on the node."""
        self.running = {p["metadata"].get("uid", ""): p for p in filter(evictable, self.pods())}
        for uid, pod in self.running.items():
            namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
            if uid in self.evicted:
                continue  # terminating
            if self.clock() >= self.deadline:
                break
            path = f"/api/v1/namespaces/{quote(namespace, safe='')}/pods/{quote(name, safe='')}/eviction"
            body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": namespace}}
            status, _ = self.api.call(
                "create", "pods/eviction", "POST", path, body=body, ok=(200, 201, 404, 429), timeout=self.timeout()
            )
            if status == 429:  # a PodDisruptionBudget refuses, for now
                self.refused[uid] = f"{namespace}/{name}"
            elif status != 404:
                self.evicted[uid] = f"{namespace}/{name}"
                self.refused.pop(uid, None)
        return not self.running

    def report(self, wait_seconds: float) -> str:
        if not self.running:
            count = len(self.evicted)
            return f"evicted {count} pod{'' if count == 1 else 's'} from {self.node}"
        names = sorted(f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in self.running.values())
        refused = sorted(key for uid, key in self.refused.items() if uid in self.running)
        shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        pods = f"{len(names)} pod{'' if len(names) == 1 else 's'}"
        text = f"{pods} still running on {self.node} after {wait_seconds:g} s: {shown}"
        if refused:
            text += f" (a disruption budget refused {', '.join(refused[:10])})"
        return text


class KubernetesDrain:
    """The orchestrator hook on EKS: the node's Node is cordoned and marked pending a reboot or a
    replacement (label, taint, reason), then its pods are evicted through the Eviction API; a
    PodDisruptionBudget's refusal is tried again until ``wait_seconds`` after the call."""

    def __init__(
        self,
        labeler: HealthLabeler,
        *,
        wait_seconds: float = WAIT_SECONDS,
        retry_seconds: float = RETRY_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.labeler = labeler
        self.wait_seconds = wait_seconds
        self.retry_seconds = retry_seconds
        self.sleep = sleep
        self.clock = clock

    def __call__(self, instance_id: str, action: str, reason: str) -> Callable[[], str]:
        """Cordon and start the evictions; the returned function goes on with them and reports,
        at most ``wait_seconds`` after this call, so other work (evidence capture) can overlap."""
        if action not in PENDING:
            raise DrainError(f"no drain for action {action!r}: reboot or replace")
        deadline = self.clock() + self.wait_seconds
        node = self.labeler.set_health(instance_id, PENDING[action], reason=reason, cordon=True)
        if node is None:
            return lambda: f"skipped: {instance_id} has no Node in the cluster"
        eviction = _Eviction(self.labeler.api, node, deadline, self.clock)
        eviction.step()
        return lambda: self._wait(eviction)

    def _wait(self, eviction: _Eviction) -> str:
        while True:  # at least one look, however long the caller took
            if eviction.step():
                return eviction.report(self.wait_seconds)
            now = self.clock()
            if now >= eviction.deadline:
                return eviction.report(self.wait_seconds)
            self.sleep(min(self.retry_seconds, eviction.deadline - now))


def connect(
    clients: Clients,
    *,
    cluster_name: str,
    endpoint: str,
    certificate_authority: str,
    sleep: Callable[[float], None] = time.sleep,
) -> HealthLabeler:
    """The labeler of the cluster named ``cluster_name`` at ``endpoint`` (its CA as
    ``CertificateAuthorityData``), authenticated as the function's role, Node names from EC2."""
    session = clients.session or boto3.Session()
    region = clients.region or session.region_name
    if not region:
        raise ValueError("no AWS region to sign the EKS token for: set the clients' region or AWS_REGION")
    api = KubeApi(endpoint, certificate_authority, EksToken(session, cluster_name, region))
    return HealthLabeler(api, ec2_node_name(clients, sleep), node_names=ec2_node_names(clients, sleep))
