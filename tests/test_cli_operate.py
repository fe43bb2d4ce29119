"""The commands that read and act on a deployed cluster, run as the installed ``training-cluster``
script in a subprocess against a cluster deployed offline: the synthesized stack created in moto's
*server* on loopback (``AWS_ENDPOINT_URL``), deployed once for the module. The tests run in order,
each scenario on the state the earlier ones left (a cluster's life).

What is simulated, and why:
- moto never runs Lambda code (it needs Docker). The CLI's ``Invoke`` of the repair function goes
  (``AWS_ENDPOINT_URL_LAMBDA``) to a loopback stand-in for the Lambda Invoke API that runs the real
  handler with the deployed function's environment, its clients talking to the same moto server.
- The health agents: their tags are written here, as the agents write them on their own instances.
- moto reports every EC2 status check as ok: the sweep that finds a failed one is the real handler
  run in-process with ``DescribeInstanceStatus`` answered as impaired for that node; the CLI reads
  moto's (ok) status checks and the ledger the handler wrote.
- moto's SSM Run Command writes no output: the evidence object a node's Run Command would write is
  put under the location the handler recorded.
- moto's CloudFormation leaves FSx out (offline_deploy): the file system's id is a placeholder.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from unittest import mock

import boto3
import pytest
import yaml
from moto.server import ThreadedMotoServer

import handler
from auto_repair.aws import Clients
from auto_repair.repair import Repairer
from auto_repair.settings import Settings
from conftest import cli_against, minimal_config, synthesize
from offline_deploy import deploy
from repair_world import impaired
from training_cluster import ClusterConfig
from training_cluster.contract import HEALTH_TAG

# One synthesis and deployment (about 17 s) and some forty CLI processes (about 1 s each): a minute.
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::UserWarning")]  # moto names each type it skips
SCRIPT = Path(sys.executable).parent / "training-cluster"
REGION = "us-east-1"
STACK = "ops-training-cluster"
SWEEP = {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}
CONFIG = minimal_config(
    name="ops",
    instance_groups=[
        {"name": "gpu", "instance_type": "p5.48xlarge", "count": 4},
        {"name": "cpu", "instance_type": "m7i.4xlarge", "count": 5, "placement_group": False},
    ],
    auto_repair={"max_parallel_replacements": 2, "unhealthy_threshold_percent": 50},
)


@dataclass
class Cluster:
    moto: str  # the moto server's address
    lambda_endpoint: str  # the stand-in for the Lambda Invoke API
    environment: dict[str, str]  # the deployed repair function's
    config: Path
    all_invoked: list[dict[str, Any]]  # what the CLI asked the repair function
    announced: list[dict[str, Any]]  # the repair function's EventBridge events

    @property
    def invoked(self) -> list[dict[str, Any]]:
        """The requests to act (``nodes`` also asks the function, read only, for scheduler states)."""
        return [p for p in self.all_invoked if "scheduler_state" not in p]

    def cli(self, *argv: str, env: dict[str, str] | None = None, stdin: str = "") -> tuple[int, str, str]:
        return cli_against(
            self.moto, *argv, env={"AWS_ENDPOINT_URL_LAMBDA": self.lambda_endpoint, **(env or {})}, stdin=stdin
        )

    def json(self, *argv: str) -> Any:
        code, out, err = self.cli(*argv, "--stack", STACK, "--json")
        assert code == 0, err
        return json.loads(out)

    def client(self, service: str) -> Any:
        return session().client(service, region_name=REGION, endpoint_url=self.moto)

    def repairer(self) -> Repairer:
        clients = Clients(region=REGION, session=EndpointSession(self.moto))
        clients.set("events", self)  # moto's EventBridge cannot match rules CloudFormation made: events kept here
        return Repairer(Settings.from_env(self.environment), clients)

    def put_events(self, **params: Any) -> dict[str, Any]:
        self.announced += params["Entries"]
        return {"FailedEntryCount": 0, "Entries": [{"EventId": str(len(self.announced))}]}

    def instances(self, group: str) -> list[str]:
        asg = next(a for a, g in json.loads(self.environment["AUTO_SCALING_GROUPS"]).items() if g == group)
        found = self.client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[asg])
        return sorted(i["InstanceId"] for i in found["AutoScalingGroups"][0]["Instances"])

    def tag(self, instance_id: str, value: str) -> None:
        """What the node's health agent writes on its own instance."""
        self.client("ec2").create_tags(Resources=[instance_id], Tags=[{"Key": HEALTH_TAG, "Value": value}])


def session() -> boto3.Session:
    return boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)


class EndpointSession:
    """A boto3 session whose clients talk to the moto server (the handler's ``Clients`` take one)."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint, self.session = endpoint, session()

    def client(self, service: str, region_name: str | None = None, config: Any = None) -> Any:
        return self.session.client(service, region_name=region_name, endpoint_url=self.endpoint, config=config)

    def resource(self, service: str, region_name: str | None = None, config: Any = None) -> Any:
        return self.session.resource(service, region_name=region_name, endpoint_url=self.endpoint, config=config)


def lambda_stand_in(cluster_box: list[Cluster]) -> ThreadingHTTPServer:
    """Loopback stand-in for Lambda's Invoke API (``POST /2015-03-31/functions/NAME/invocations``):
    the real repair handler, with the deployed function's environment, answers synchronously."""

    class Invoke(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            world = cluster_box[0]
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
            assert self.path.startswith("/2015-03-31/functions/") and self.path.endswith("/invocations"), self.path
            world.all_invoked.append(body)
            result = handler.handler(body, use=world.repairer())
            payload = json.dumps(result).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    return ThreadingHTTPServer(("127.0.0.1", 0), Invoke)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    folder = tmp_path_factory.mktemp("operate")
    config = ClusterConfig.from_dict(CONFIG)
    synthesized = synthesize(config, folder / "out", stack_id=STACK)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    moto = f"http://{host}:{port}"
    box: list[Cluster] = []
    stand_in = lambda_stand_in(box)
    threading.Thread(target=stand_in.serve_forever, daemon=True).start()
    environment = {"AWS_ENDPOINT_URL": moto, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    try:
        with mock.patch.dict(os.environ, environment):  # offline_deploy uses boto3's default session
            deploy(synthesized.template_json, folder / "out", STACK, REGION, "ami-0123456789abcdef0")
        lambda_ = session().client("lambda", region_name=REGION, endpoint_url=moto)
        outputs = (
            session()
            .client("cloudformation", region_name=REGION, endpoint_url=moto)
            .describe_stacks(StackName=STACK)["Stacks"][0]["Outputs"]
        )
        function = next(o["OutputValue"] for o in outputs if o["OutputKey"] == "RepairFunctionName")
        variables = lambda_.get_function_configuration(FunctionName=function)["Environment"]["Variables"]
        path = folder / "ops.yaml"
        path.write_text(yaml.safe_dump(CONFIG))
        world = Cluster(moto, f"http://127.0.0.1:{stand_in.server_address[1]}", variables, path, [], [])
        box.append(world)
        yield world
    finally:
        stand_in.shutdown()
        server.stop()


def test_a_healthy_cluster(cluster: Cluster) -> None:
    for group in ("gpu", "cpu"):
        for instance in cluster.instances(group):
            cluster.tag(instance, "healthy boot=b1")
    report = cluster.json("status")
    assert [(g["group"], g["desired"], g["in_service"], g["healthy"], g["unhealthy"], g["being_repaired"], g["breaker"])
            for g in report["groups"]] == [("cpu", 5, 5, 5, 0, 0, "closed"), ("gpu", 4, 4, 4, 0, 0, "closed")]  # fmt: skip
    assert report["file_system"]["state"] == "unknown" and report["incidents"] == []
    # the same found by the config file: its name gives the stack, its region the region
    code, out, err = cluster.cli("status", "--config", str(cluster.config), env={"AWS_REGION": ""})
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"{STACK}: {REGION}"
    assert lines[2].split() == [
        "GROUP",
        "DESIRED",
        "IN",
        "SERVICE",
        "HEALTHY",
        "UNHEALTHY",
        "UNKNOWN",
        "REPAIRING",
        "BREAKER",
        "CAPACITY",
    ]
    assert lines[3].split() == ["cpu", "5", "5", "5", "0", "0", "0", "closed", "ok"]
    assert lines[4].split() == ["gpu", "4", "4", "4", "0", "0", "0", "closed", "ok"]
    assert "whole: every node in service, healthy, none being repaired" in lines
    assert "\033[" not in out  # plain when piped
    nodes = cluster.json("nodes")["nodes"]
    assert len(nodes) == 9 and {n["health"] for n in nodes} == {"healthy"}
    assert {(n["group"], n["instance_type"]) for n in nodes} == {("gpu", "p5.48xlarge"), ("cpu", "m7i.4xlarge")}
    assert {(n["zone"], n["state"], n["status_checks"], n["incident"]) for n in nodes} == {
        ("us-east-1a", "running", "ok", None)
    }
    code, out, _ = cluster.cli("nodes", "--stack", STACK)
    rows = [line.split() for line in out.splitlines()[1:]]
    assert code == 0 and len(rows) == 9
    assert sorted(r[0] for r in rows) == sorted(n["instance_id"] for n in nodes)
    # no scheduler in this cluster: the control plane has nothing to say of it
    assert all(r[4:] == ["running", r[5], "ok", "healthy", "-", "-"] for r in rows)
    assert {n["scheduler"] for n in nodes} == {"-"}


def test_a_node_the_agent_reports_unhealthy_then_one_failing_its_status_check(cluster: Cluster) -> None:
    sick = cluster.instances("gpu")[0]
    cluster.tag(sick, "unhealthy boot=b1 xid:79")  # its agent's verdict, before the control plane acts
    (_, gpu) = cluster.json("status")["groups"]
    assert (gpu["in_service"], gpu["healthy"], gpu["unhealthy"]) == (4, 3, 1)
    code, out, _ = cluster.cli("nodes", "--stack", STACK)
    (row,) = [line for line in out.splitlines() if line.startswith(sick)]
    assert "unhealthy xid:79" in row
    cluster.tag(sick, "healthy boot=b1")  # a false alarm: it clears
    # The sweep (the real handler, moto's status checks answered as impaired for this node).
    failing = cluster.instances("gpu")[1]
    repairer = cluster.repairer()
    with mock.patch.object(repairer.clients.ec2, "describe_instance_status", side_effect=impaired([failing])):
        outcomes = handler.handler(SWEEP, use=repairer)["outcomes"]
    assert [(o["instance_id"], o["result"]) for o in outcomes] == [(failing, "replaced")]
    nodes = {n["instance_id"]: n for n in cluster.json("nodes", "--all")["nodes"]}
    node = nodes[failing]
    assert node["state"] in ("shutting-down", "terminated")
    assert node["incident"]["fault"] == "status_check instance: instance status check failed"
    assert (node["incident"]["action"], node["incident"]["status"]) == ("replace", "open")
    (incident,) = cluster.json("incidents")["incidents"]
    assert (incident["instance_id"], incident["source"], incident["action"]) == (failing, "status-sweep", "replace")
    code, out, _ = cluster.cli("incidents", "--stack", STACK)
    assert code == 0 and out.splitlines()[1].split()[0] == incident["incident_id"]
    assert "status-sweep" in out.splitlines()[1] and "status_check instance" in out.splitlines()[1]


def test_an_incident_with_evidence(cluster: Cluster) -> None:
    (incident,) = cluster.json("incidents")["incidents"]
    story = cluster.json("incident", incident["incident_id"])
    assert [s["step"] for s in story["steps"]] == ["signal", "decision", "evidence", "action"]
    (location,) = story["evidence"]
    assert story["evidence"][location] == []  # moto's Run Command writes nothing
    bucket, _, prefix = location.removeprefix("s3://").partition("/")
    assert prefix.startswith(f"evidence/ops/arn:aws:ec2:us-east-1:123456789012:instance/{incident['instance_id']}/")
    # what the node's Run Command writes there
    key = f"{prefix}/cmd-1/{incident['instance_id']}/awsrunShellScript/0.awsrunShellScript/stdout"
    cluster.client("s3").put_object(Bucket=bucket, Key=key, Body=b"NVRM: Xid 79")
    story = cluster.json("incident", incident["incident_id"])
    assert story["evidence"] == {location: [f"s3://{bucket}/{key}"]}
    code, out, _ = cluster.cli("incident", incident["incident_id"], "--stack", STACK)
    lines = out.splitlines()
    assert code == 0 and lines[0] == f"incident {incident['incident_id']}"
    assert [line.split()[2] for line in lines[1:5]] == ["signal", "decision", "evidence", "action"]
    assert f"evidence {location}" in lines and f"  s3://{bucket}/{key}" in lines
    code, _, err = cluster.cli("incident", "0" * 32, "--stack", STACK)
    assert code == 1 and f"error: no incident {'0' * 32} in the ledger of {STACK}" in err


def test_a_manual_replace_goes_through_the_control_plane_and_the_ledger(cluster: Cluster) -> None:
    node = cluster.instances("gpu")[2]
    # not confirmed (no terminal, no --yes): nothing is invoked
    code, _, err = cluster.cli("repair", node, "--replace", "--stack", STACK)
    assert code == 1 and "not confirmed (no terminal to ask on; pass --yes)" in err and cluster.invoked == []
    code, out, err = cluster.cli("repair", node, "--replace", "--yes", "--stack", STACK)
    assert code == 0, err
    assert cluster.invoked == [
        {
            "repair": {
                "instance_id": node,
                "action": "replace",
                "requested_by": cluster.invoked[0]["repair"]["requested_by"],
            }
        }
    ]
    assert cluster.invoked[0]["repair"]["requested_by"].startswith("arn:aws:")  # who asked, from STS
    (line,) = out.splitlines()
    assert line.startswith(f"{node}: replaced: terminated through its Auto Scaling group") and "(incident " in line
    incident_id = line.rsplit("(incident ", 1)[1].rstrip(")")
    story = cluster.json("incident", incident_id)
    assert [s["step"] for s in story["steps"]] == ["signal", "decision", "evidence", "action"]
    assert story["steps"][0]["source"] == "manual" and "requested by arn:aws:" in story["steps"][0]["signal"]
    state = cluster.client("ec2").describe_instances(InstanceIds=[node])["Reservations"][0]["Instances"][0]["State"]
    assert state["Name"] in ("shutting-down", "terminated")
    # a node outside the cluster: refused by the CLI, and the function would refuse it too
    stranger = cluster.client("ec2").run_instances(ImageId="ami-0123456789abcdef0", MinCount=1, MaxCount=1)
    stranger_id = stranger["Instances"][0]["InstanceId"]
    code, out, err = cluster.cli("repair", stranger_id, "--reboot", "--yes", "--stack", STACK, "--json")
    assert code == 1 and json.loads(out) == {
        "error": f"{stranger_id} is not a node of {STACK}'s instance groups in {REGION}"
    }
    assert len(cluster.invoked) == 1


def test_an_open_breaker_and_its_reset(cluster: Cluster) -> None:
    bad = cluster.instances("cpu")[:3]
    for instance in bad:
        cluster.tag(instance, "unhealthy boot=b1 dcgm_health")
    outcomes = handler.handler(SWEEP, use=cluster.repairer())["outcomes"]
    assert sorted((o["instance_id"], o["result"]) for o in outcomes if o["instance_id"] in bad) == [
        (i, "suppressed") for i in bad
    ]
    cpu = cluster.json("status")["groups"][0]
    assert (cpu["breaker"], cpu["held"], cpu["unhealthy"], cpu["being_repaired"]) == ("open", bad, 3, 0)
    assert cpu["breaker_reason"] == "3 of 5 nodes unhealthy at once (limit 50%)"
    code, out, _ = cluster.cli("status", "--stack", STACK)
    row = next(line.split() for line in out.splitlines() if line.startswith("cpu "))
    assert row == ["cpu", "5", "5", "2", "3", "0", "0", "open", "(3", "held)", "ok"]
    assert "breaker open for cpu: 3 of 5 nodes unhealthy at once (limit 50%)" in out and "not whole: see above" in out
    # reset: an unknown group is refused before anything is invoked; then the held nodes are repaired
    code, _, err = cluster.cli("reset-breaker", "gpus", "--yes", "--stack", STACK)
    assert code == 1 and "'gpus' is not an instance group of ops-training-cluster (its groups: cpu, gpu)" in err
    before = len(cluster.invoked)
    code, out, err = cluster.cli("reset-breaker", "cpu", "--yes", "--stack", STACK)
    assert code == 3, err  # done, and one replacement accepted but waiting (deferred): exit 3
    assert cluster.invoked[before:] == [{"reset_circuit_breaker": "cpu"}]
    lines = out.splitlines()
    assert lines[0] == "circuit breaker of cpu reset"
    results = sorted(line.split(": ", 1)[1].split(" (incident")[0].split(":")[0] for line in lines[1:])
    assert results == ["deferred", "replaced", "replaced"]  # two replacements in flight at most
    assert cluster.json("status")["groups"][0]["breaker"] == "closed"


def test_errors_an_operator_can_act_on(cluster: Cluster) -> None:
    code, _, err = cluster.cli("status", "--stack", STACK, env={"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""})
    assert code == 1 and err.startswith("error: no AWS credentials: set AWS_PROFILE")
    code, out, err = cluster.cli("status", "--stack", STACK, "--region", "us-west-2", "--json")
    assert code == 1 and json.loads(out) == {
        "error": f"no stack {STACK} in us-west-2: check --stack and --region (or AWS_REGION)"
    }
    code, _, err = cluster.cli("nodes", "--stack", "nope")
    assert code == 1 and err == f"error: no stack nope in {REGION}: check --stack and --region (or AWS_REGION)\n"
    code, _, err = cluster.cli("status")
    assert code == 1 and "which cluster? pass --stack NAME" in err


def test_what_a_node_writes_reaches_the_terminal_as_text_and_tags_alone_make_no_node(cluster: Cluster) -> None:
    """Review 12: an evidence object's name (a node writes under its own prefix, any number of
    them) is shown without its control sequences, at most fifty; an instance that merely carries
    the cluster's tags (anyone who may tag instances can) is not listed as a node."""
    stories = {
        i["incident_id"]: cluster.json("incident", i["incident_id"]) for i in cluster.json("incidents")["incidents"]
    }
    incident_id, story = next((k, v) for k, v in stories.items() if v["evidence"])
    incident = {"incident_id": incident_id}
    locations = list(story["evidence"])
    bucket, _, prefix = locations[0].removeprefix("s3://").partition("/")
    s3 = cluster.client("s3")
    s3.put_object(Bucket=bucket, Key=f"{prefix}/cmd-2/\x1b[2J\x1b]0;pwned\x07stdout", Body=b"x")
    for n in range(60):
        s3.put_object(Bucket=bucket, Key=f"{prefix}/many/{n:03d}", Body=b"x")
    code, out, _ = cluster.cli("incident", incident["incident_id"], "--stack", STACK)
    assert code == 0 and "\x1b" not in out and "\x07" not in out and "?[2J?]0;pwned?stdout" in out
    listed = [line for line in out.splitlines() if line.startswith("  s3://")]
    assert len(listed) == 50 and f"... and more: aws s3 ls --recursive {locations[0]}" in out
    ec2 = cluster.client("ec2")
    tags = [
        {"Key": "training-cluster:cluster", "Value": "ops"},
        {"Key": "training-cluster:instance-group", "Value": "cpu"},
    ]
    (impostor,) = ec2.run_instances(
        ImageId="ami-0123456789abcdef0",
        MinCount=1,
        MaxCount=1,
        InstanceType="t3.micro",
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
    )["Instances"]
    listed_ids = {n["instance_id"] for n in cluster.json("nodes")["nodes"]}
    assert impostor["InstanceId"] not in listed_ids and len(listed_ids) >= 9
    code, _, err = cluster.cli("connect", impostor["InstanceId"], "--stack", STACK, "--print")
    assert code == 1 and "is not a running node of" in err
