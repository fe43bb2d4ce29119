"""Read a deployed cluster, and ask its control plane to act: what ``training-cluster status``,
``nodes``, ``incidents``, ``incident``, ``repair`` and ``reset-breaker`` use.

The cluster is found through its stack's CloudFormation outputs (the Auto Scaling groups, the
repair function, the ledger table, the file system; with ``backend: hyperpod``, the HyperPod
cluster: :mod:`.operate_hyperpod`). Reads only, with one exception: the repair
function is invoked with a payload it understands, so a person's repair goes through the same
control plane as an automatic one (breaker, limits, drain, evidence, ledger); nothing here calls
EC2 to reboot or terminate. boto3 is imported by this module alone, and only the commands that
talk to AWS import it. Standard AWS configuration applies (``AWS_PROFILE``, ``AWS_REGION``,
``AWS_ENDPOINT_URL``, ...), as boto3 reads it.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    ReadTimeoutError,
)

from . import operate_hyperpod
from .contract import HEALTH_TAG, TAG_CLUSTER, TAG_GROUP, parse_health_tag
from .ledger_view import LedgerView

ACT_SECONDS = 330.0
"""How long an Invoke that acts waits for its answer: the repair function's timeout (5 min) and more."""
STATE_WAIT_SECONDS = 40.0
"""How long the scheduler-state query waits (the function bounds it at 20 s)."""
BUSY_SECONDS, BUSY_PAUSE_SECONDS = 60.0, 5.0
"""How long, and how often, an Invoke that acts is sent again while the function is busy (429)."""
STATE_BUSY_SECONDS = 10.0
"""The same for the scheduler query (``nodes`` shows ``unknown (busy...)`` after it)."""
ASG_OUTPUT_SUFFIX = "AutoScalingGroupName"
"""The stack's output for each instance group's Auto Scaling group: ``<Group>AutoScalingGroupName``."""
GROUP_OUTPUT = re.compile(r"Auto Scaling group of instance group (\S+)")


class OperateError(Exception):
    """The cluster cannot be read or acted on, in words for the operator."""


class FunctionBusy(OperateError):
    """The repair function stayed busy (a sweep, another request) for as long as it was asked."""


@dataclass(frozen=True)
class GroupStatus:
    group: str
    auto_scaling_group: str
    desired: int
    in_service: int
    healthy: int
    unhealthy: int
    unknown: int  # in service with no health report yet, or an unreadable one
    being_repaired: int
    breaker: str  # open | closed
    breaker_reason: str
    held: list[str]
    capacity_backoff_until: float | None  # repairs of this group wait for capacity until then


@dataclass(frozen=True)
class Node:
    instance_id: str
    group: str
    instance_type: str
    zone: str
    state: str
    launched_at: float | None
    uptime_seconds: int | None
    health: str  # healthy | unhealthy | no report | unreadable
    failures: list[str]  # from the health tag: check[:code]
    boot_id: str
    status_checks: str  # ok | impaired | initializing | ... (EC2's instance and system checks)
    incident: dict[str, Any] | None  # the node's open or last incident, from the ledger
    scheduler: str = "-"  # what Slurm or Kubernetes says of it, through the control plane


@dataclass
class Cluster:
    """A deployed cluster, as its stack's outputs describe it."""

    stack: str
    region: str
    outputs: dict[str, str]
    groups: dict[str, str]  # Auto Scaling group name -> instance group name
    session: Any = field(repr=False)
    _clients: dict[str, Any] = field(default_factory=dict, repr=False)
    hyperpod: str | None = None
    """``backend: hyperpod``: the HyperPod cluster's name (its nodes are SageMaker's to list and repair)."""

    def client(self, service: str, *, once: float | None = None) -> Any:
        """A client of ``service``; ``once``: sent once, waiting that many seconds for the answer
        (an Invoke that acts must not be sent again because its answer was slow)."""
        key = f"{service}:{once}"
        if key not in self._clients:
            config = (
                Config(retries={"mode": "standard"}, connect_timeout=10, read_timeout=90)
                if once is None
                else Config(retries={"total_max_attempts": 1}, connect_timeout=10, read_timeout=once)
            )
            self._clients[key] = self.session.client(service, region_name=self.region, config=config)
        return self._clients[key]

    def output(self, name: str) -> str:
        value = self.outputs.get(name)
        if value is None:
            raise OperateError(f"stack {self.stack} has no output {name}: is auto-repair off in its config?")
        return value

    # status ------------------------------------------------------------------------------------

    def status(self, nodes: list[Node] | None = None) -> list[GroupStatus]:
        nodes = self.nodes() if nodes is None else nodes
        if self.hyperpod is not None:
            return operate_hyperpod.status(self, nodes)
        groups = [f"group#{g}" for g in self.groups.values()]
        ledger = self.ledger.states(groups) if "RepairLedgerTableName" in self.outputs else {}
        asgs = self._auto_scaling_groups()
        result = []
        now = time.time()
        for asg_name, group in self.groups.items():
            asg = asgs.get(asg_name, {})
            members = {m["InstanceId"]: m for m in asg.get("Instances", [])}
            in_service = [
                n for n in nodes if n.instance_id in members and members[n.instance_id]["LifecycleState"] == "InService"
            ]
            state = ledger.get(f"group#{group}", {})
            marked = set(state.get("unhealthy", []))  # what the control plane holds unhealthy
            unhealthy = [n for n in in_service if _unhealthy(n, members[n.instance_id]) or n.instance_id in marked]
            unknown = [n for n in in_service if n not in unhealthy and n.health in ("no report", "unreadable")]
            repairing = [n for n in nodes if n.group == group and n.incident and n.incident.get("status") == "open"]
            backoff = float(state.get("capacity_backoff_until", 0) or 0)
            result.append(
                GroupStatus(
                    group=group,
                    auto_scaling_group=asg_name,
                    desired=int(asg.get("DesiredCapacity", 0)),
                    in_service=len(in_service),
                    healthy=len(in_service) - len(unhealthy) - len(unknown),
                    unhealthy=len(unhealthy),
                    unknown=len(unknown),
                    # open incidents and replacements in flight, less the nodes the breaker holds
                    being_repaired=len(
                        ({n.instance_id for n in repairing} | set(state.get("replacing", [])))
                        - set(state.get("held", []))
                    ),
                    breaker="open" if state.get("breaker") == "open" else "closed",
                    breaker_reason=str(state.get("breaker_reason", "")) if state.get("breaker") == "open" else "",
                    held=sorted(state.get("held", [])),
                    capacity_backoff_until=backoff if backoff > now else None,
                )
            )
        return result

    def file_system(self) -> dict[str, Any] | None:
        """The file system's id and lifecycle state (``AVAILABLE``, ...), or None without one."""
        fs_id = self.outputs.get("FileSystemId")
        if fs_id is None:
            return None
        try:
            found = self.client("fsx").describe_file_systems(FileSystemIds=[fs_id])["FileSystems"]
        except ClientError as error:
            return {"id": fs_id, "state": "unknown", "error": _code(error)}
        if not found:
            return {"id": fs_id, "state": "unknown", "error": "FileSystemNotFound"}
        fs = found[0]
        return {
            "id": fs_id,
            "state": fs.get("Lifecycle", "unknown"),
            "storage_capacity_gib": fs.get("StorageCapacity"),
            "deployment_type": fs.get("LustreConfiguration", {}).get("DeploymentType"),
        }

    # nodes -------------------------------------------------------------------------------------

    def nodes(self, *, include_terminated: bool = False) -> list[Node]:
        """The instances of the cluster's Auto Scaling groups (and those that have just left them);
        with HyperPod, the nodes it lists."""
        if self.hyperpod is not None:
            return operate_hyperpod.nodes(self)
        states = ["pending", "running", "stopping", "stopped", "shutting-down"] + (
            ["terminated"] if include_terminated else []
        )
        members = self._instances([{"Name": "tag:aws:autoscaling:groupName", "Values": list(self.groups)}], states)
        # and those that have left their group (a replaced node), by the tags the fleet gave them
        names = sorted({t["Value"] for i in members for t in i.get("Tags", []) if t["Key"] == TAG_CLUSTER})
        others = (
            self._instances(
                [
                    {"Name": f"tag:{TAG_CLUSTER}", "Values": names},
                    {"Name": f"tag:{TAG_GROUP}", "Values": sorted(set(self.groups.values()))},
                ],
                states,
            )
            if names
            else []
        )
        # an instance that only carries the tags (anyone who may tag instances can) is not a
        # node: those outside the groups are shown only while they go (a replaced node)
        others = [i for i in others if i["State"]["Name"] in ("shutting-down", "terminated")]
        instances = list({i["InstanceId"]: i for i in [*others, *members]}.values())
        ids = [i["InstanceId"] for i in instances]
        checks = self._status_checks(ids)
        ledger = self._instance_states(ids)
        now = time.time()
        nodes = []
        for i in sorted(instances, key=lambda i: (self._group(i), i["InstanceId"])):
            tags = {t["Key"]: t["Value"] for t in i.get("Tags", [])}
            health, boot_id, failures = _health(tags.get(HEALTH_TAG))
            launched = i.get("LaunchTime")
            launched_at = launched.timestamp() if launched is not None else None
            running = i["State"]["Name"] == "running"
            nodes.append(
                Node(
                    instance_id=i["InstanceId"],
                    group=self._group(i),
                    instance_type=i.get("InstanceType", ""),
                    zone=i.get("Placement", {}).get("AvailabilityZone", ""),
                    state=i["State"]["Name"],
                    launched_at=launched_at,
                    uptime_seconds=int(now - launched_at) if launched_at is not None and running else None,
                    health=health,
                    failures=failures,
                    boot_id=boot_id,
                    status_checks=checks.get(i["InstanceId"], "-"),
                    incident=ledger.get(i["InstanceId"]),
                )
            )
        return nodes

    def _instances(self, filters: list[dict[str, Any]], states: list[str]) -> list[dict[str, Any]]:
        filters = [*filters, {"Name": "instance-state-name", "Values": states}]
        pages = self.client("ec2").get_paginator("describe_instances").paginate(Filters=filters)
        return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]

    def _group(self, instance: dict[str, Any]) -> str:
        tags = {str(t["Key"]): str(t["Value"]) for t in instance.get("Tags", [])}
        return self.groups.get(tags.get("aws:autoscaling:groupName", ""), tags.get(TAG_GROUP, "?"))

    def _status_checks(self, ids: list[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        ec2 = self.client("ec2")
        for start in range(0, len(ids), 100):
            chunk = ids[start : start + 100]
            for status in ec2.describe_instance_status(InstanceIds=chunk, IncludeAllInstances=True)["InstanceStatuses"]:
                values = {status.get(k, {}).get("Status", "") for k in ("InstanceStatus", "SystemStatus")}
                found[status["InstanceId"]] = next(
                    (v for v in ("impaired", "insufficient-data", "initializing", "not-applicable") if v in values),
                    "ok",
                )
        return found

    def _instance_states(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        return self.ledger.instance_states(ids) if "RepairLedgerTableName" in self.outputs else {}

    @property
    def ledger(self) -> LedgerView:
        dynamodb = self.session.resource("dynamodb", region_name=self.region)
        return LedgerView(dynamodb, self.output("RepairLedgerTableName"), self.client("s3"))

    # acting through the control plane ----------------------------------------------------------

    def invoke(self, payload: dict[str, Any], said: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
        """Invoke the repair function and wait for what it did (its outcomes); ``said`` hears
        when it is busy and asked again."""
        outcomes: list[dict[str, Any]] = self._answer(payload, said=said).get("outcomes", [])
        return outcomes

    def _answer(
        self,
        payload: dict[str, Any],
        *,
        wait: float = ACT_SECONDS,
        busy_seconds: float = BUSY_SECONDS,
        said: Callable[[str], None] | None = None,
    ) -> dict[str, Any]:
        """The repair function's answer to ``payload`` (a synchronous invoke, sent once: botocore
        would send it again after a slow answer, and a repair must not be asked for twice). The
        function runs one invocation at a time: while it is busy (a sweep), asked again for up to
        ``busy_seconds``, telling ``said`` once."""
        function = self.output("RepairFunctionName")
        give_up = time.monotonic() + busy_seconds
        while True:
            try:
                response = self.client("lambda", once=wait).invoke(
                    FunctionName=function, InvocationType="RequestResponse", Payload=json.dumps(payload).encode()
                )
                break
            except ClientError as error:
                if _code(error) != "TooManyRequestsException":
                    raise
                if time.monotonic() + BUSY_PAUSE_SECONDS > give_up:
                    raise FunctionBusy(
                        f"the repair function stayed busy for {busy_seconds:.0f} s (a sweep, or another request): "
                        "nothing was done; try again"
                    ) from None
                if said is not None:
                    said(
                        f"the repair function is busy (a sweep is running): asking again for up to {busy_seconds:.0f} s"
                    )
                    said = None
                time.sleep(BUSY_PAUSE_SECONDS)
            except ReadTimeoutError:
                raise OperateError(
                    f"the repair function gave no answer within {wait:.0f} s: the request may have been carried "
                    "out; see `training-cluster incidents`"
                ) from None
        body = response["Payload"].read()
        if response.get("FunctionError"):
            raise OperateError(
                f"the repair function failed (part of the request may have been carried out; see `training-cluster "
                f"incidents`): {body.decode(errors='replace')[:1000]}"
            )
        try:
            answer = json.loads(body or b"{}")
        except ValueError:
            raise OperateError(
                "the repair function's answer is not JSON (the request may have been carried out; see "
                "`training-cluster incidents`)"
            ) from None
        return answer if isinstance(answer, dict) else {}

    def scheduler_states(self, instance_ids: list[str]) -> dict[str, str]:
        """What the scheduler says of each node (Slurm's ``sinfo``; Kubernetes' Ready condition,
        cordon and health label), asked of the control plane, which reaches the scheduler when
        this machine may not (a private API endpoint). Empty when it cannot say."""
        if "RepairFunctionName" not in self.outputs or not instance_ids:
            return {}
        try:
            states = self._answer(
                {"scheduler_state": instance_ids}, wait=STATE_WAIT_SECONDS, busy_seconds=STATE_BUSY_SECONDS
            ).get("scheduler", {})
        except ClientError as error:  # what ``nodes`` shows in the column, not a failure of the command
            why = "not allowed to ask the repair function" if "AccessDenied" in _code(error) else _code(error)
            return dict.fromkeys(instance_ids, f"unknown ({why})")
        except FunctionBusy:
            return dict.fromkeys(instance_ids, "unknown (busy: the repair function is running a sweep)")
        except OperateError:
            return dict.fromkeys(instance_ids, "unknown (no answer)")
        except (BotoCoreError, ValueError) as error:
            return dict.fromkeys(instance_ids, f"unknown ({type(error).__name__})")
        return {str(k): str(v) for k, v in states.items()} if isinstance(states, dict) else {}

    def caller(self) -> str:
        try:
            return str(self.client("sts").get_caller_identity()["Arn"])
        except (ClientError, BotoCoreError):
            return "unknown"

    def _auto_scaling_groups(self, names: list[str] | None = None) -> dict[str, dict[str, Any]]:
        autoscaling = self.client("autoscaling")
        names = list(self.groups) if names is None else names
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(names), 50):
            for asg in autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=names[start : start + 50])[
                "AutoScalingGroups"
            ]:
                found[asg["AutoScalingGroupName"]] = asg
        return found


def find(stack: str, region: str | None, profile: str | None = None) -> Cluster:
    """The cluster deployed as ``stack``; an ``OperateError`` saying what is wrong when it cannot be read."""
    # AWS_REGION as the other AWS SDKs and the AWS CLI v2 read it (botocore reads AWS_DEFAULT_REGION)
    region = region or os.environ.get("AWS_REGION") or None
    try:
        session = boto3.Session(profile_name=profile, region_name=region)
    except BotoCoreError as error:  # an unknown profile
        raise OperateError(str(error)) from None
    region = session.region_name
    if not region:
        raise OperateError("no region: pass --region, or set AWS_REGION or a region in your AWS profile")
    cluster = Cluster(stack=stack, region=region, outputs={}, groups={}, session=session)
    with aws_errors(region):
        try:
            stacks = cluster.client("cloudformation").describe_stacks(StackName=stack)["Stacks"]
        except ClientError as error:
            if _code(error) == "ValidationError" and "does not exist" in str(error):
                raise OperateError(
                    f"no stack {stack} in {region}: check --stack and --region (or AWS_REGION)"
                ) from None
            raise
        outputs = stacks[0].get("Outputs", [])
        cluster.outputs = {o["OutputKey"]: o.get("OutputValue", "") for o in outputs}
        if cluster.outputs.get("HyperPodClusterName"):
            cluster.hyperpod = cluster.outputs["HyperPodClusterName"]
            return cluster
        # each group's Auto Scaling group: the output's description names the group (the stack's own words)
        named = {
            o.get("OutputValue", ""): (found.group(1) if found else "")
            for o in outputs
            if o["OutputKey"].endswith(ASG_OUTPUT_SUFFIX)
            for found in [GROUP_OUTPUT.fullmatch(o.get("Description", ""))]
        }
        if not named:
            raise OperateError(
                f"stack {stack} in {region} has no Auto Scaling group outputs: is it a training cluster?"
            )
        tagged = {
            name: {t["Key"]: t["Value"] for t in asg.get("Tags", [])}.get(TAG_GROUP, "")
            for name, asg in cluster._auto_scaling_groups(list(named)).items()
        }
        groups = {asg: named[asg] or tagged.get(asg) or asg for asg in named}
        cluster.groups = dict(sorted(groups.items(), key=lambda item: item[1]))
    return cluster


class aws_errors:
    """Turns the AWS SDK's errors into ``OperateError``s an operator can act on."""

    def __init__(self, region: str) -> None:
        self.region = region

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: Any) -> None:
        if error is None or isinstance(error, OperateError):
            return
        if isinstance(error, NoCredentialsError):
            raise OperateError(
                "no AWS credentials: set AWS_PROFILE (or run `aws configure` / `aws sso login`), "
                "or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            ) from None
        if isinstance(error, NoRegionError):
            raise OperateError("no region: pass --region, or set AWS_REGION") from None
        if isinstance(error, EndpointConnectionError):
            raise OperateError(
                f"cannot reach AWS in region {self.region!r}: is it a region, and are the network and any "
                f"AWS_ENDPOINT_URL right? ({error})"
            ) from None
        if isinstance(error, ClientError):
            code = _code(error)
            if code in ("UnrecognizedClientException", "InvalidClientTokenId", "ExpiredToken", "ExpiredTokenException"):
                raise OperateError(f"AWS did not accept the credentials ({code}): {error}") from None
            if code in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation"):
                raise OperateError(f"not allowed: {error}") from None
            raise OperateError(str(error)) from None
        if isinstance(error, BotoCoreError):
            raise OperateError(str(error)) from None


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _health(tag: str | None) -> tuple[str, str, list[str]]:
    if tag is None:
        return "no report", "", []
    try:
        healthy, boot_id, failures = parse_health_tag(tag)
    except ValueError:
        return "unreadable", "", []
    return ("healthy" if healthy else "unhealthy"), boot_id, [f"{c}:{code}" if code else c for c, code in failures]


def _unhealthy(node: Node, member: dict[str, Any]) -> bool:
    return node.health == "unhealthy" or node.status_checks == "impaired" or member.get("HealthStatus") == "Unhealthy"
