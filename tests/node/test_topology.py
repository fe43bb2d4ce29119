"""The network topology on the Slurm controller (node/slurm/slurm_topology.py): EC2's
DescribeInstanceTopology (not in moto, so botocore's Stubber with responses shaped as the API
reference documents them), topology.conf checked by the real slurmctld, and the network-node
features on real dynamic nodes steering a job."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

import slurm_config
from slurm_harness import munged, scratch_paths, wait_for
from slurm_topology import Placement, Scontrol, describe, feature_counts, label, refresh, render_topology_conf
from test_real_slurm import NODE_A, NODE_B, Slurm, slurm  # noqa: F401 (the fixture)


def instance(instance_id: str, *nodes: str) -> dict[str, Any]:
    """One instance as DescribeInstanceTopology returns it (network nodes top layer first)."""
    return {
        "InstanceId": instance_id,
        "InstanceType": "p5.48xlarge",
        "GroupName": "demo-gpu",
        "NetworkNodes": list(nodes),
        "AvailabilityZone": "us-east-1a",
        "ZoneId": "use1-az6",
    }


def ids(n: int) -> list[str]:
    return [f"i-{k:017x}" for k in range(1, n + 1)]


@pytest.fixture
def ec2() -> Iterator[tuple[Any, Stubber]]:
    client = boto3.client("ec2", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def layout_of(n: int) -> list[tuple[str, ...]]:
    """A thousand-node layout: 64 instances under each lowest network node, four of those under
    each middle one, two spines on top."""
    return [(f"nn-top{k // 512}", f"nn-mid{k // 256}", f"nn-leaf{k // 64:02d}") for k in range(n)]


def test_a_hundred_ids_a_request_and_every_page_of_each(ec2: tuple[Any, Stubber]) -> None:
    client, stubber = ec2
    names, places = ids(150), layout_of(150)
    first, second = names[:100], names[100:]
    # The first hundred come back in two pages; one instance has no topology (a type without it).
    stubber.add_response(
        "describe_instance_topology",
        {"Instances": [instance(i, *places[k]) for k, i in enumerate(first[:60])], "NextToken": "page-2"},
        {"InstanceIds": first},
    )
    stubber.add_response(
        "describe_instance_topology",
        {"Instances": [instance(i, *places[60 + k]) for k, i in enumerate(first[60:99])]},
        {"InstanceIds": first, "NextToken": "page-2"},
    )
    stubber.add_response(
        "describe_instance_topology",
        {"Instances": [instance(i, *places[100 + k]) for k, i in enumerate(second)]},
        {"InstanceIds": second},
    )
    found = describe(client, names)
    assert len(found) == 149 and names[99] not in {p.instance_id for p in found}
    assert found[0] == Placement(names[0], ("nn-top0", "nn-mid0", "nn-leaf00"))


def test_topology_conf_is_a_tree_under_one_root() -> None:
    names = ids(1024)
    placements = [Placement(i, p) for i, p in zip(names, layout_of(1024), strict=True)]
    conf = render_topology_conf(reversed(placements))  # order in, same file out
    assert conf == render_topology_conf(placements)
    lines = conf.splitlines()[1:]
    leaves = [line for line in lines if " Nodes=" in line]
    assert len(leaves) == 16 and all(line.count(",") == 63 for line in leaves)
    assert "SwitchName=nn-mid0 Switches=nn-leaf00,nn-leaf01,nn-leaf02,nn-leaf03" in lines
    assert lines[-1] == "SwitchName=root Switches=nn-top0,nn-top1"
    counts = feature_counts(placements)
    assert counts["nn-leaf00"] == 64 and counts["nn-mid3"] == 256 and counts["nn-top1"] == 512


def test_an_unexpected_network_node_id_is_refused() -> None:
    with pytest.raises(ValueError, match="unexpected network node id"):
        render_topology_conf([Placement("i-1", ("nn-1", "nn-2 Nodes=ALL"))])


def test_the_real_slurmctld_takes_the_rendered_tree(tmp_path: Path) -> None:
    """slurmctld (topology/tree) reads the file: every switch and node as rendered, no warning.
    Static FUTURE nodes stand in for the instances: Slurm 22.05 cannot put dynamic nodes in a tree."""
    names = ids(256)
    placements = [Placement(i, p) for i, p in zip(names, layout_of(256), strict=True)]
    paths = scratch_paths(tmp_path, str(tmp_path / "spool"))
    layout = slurm_config.Layout.from_json('{"cluster": "demo", "groups": [{"name": "gpu"}]}')
    conf = slurm_config.render(layout, controller="localhost(127.0.0.1)", paths=paths, cgroups=False)["slurm.conf"]
    conf = conf.replace("SlurmUser=slurm", "SlurmUser=root").replace("SlurmctldPort=6817", "SlurmctldPort=16827")
    # No room for dynamic nodes: the tree cannot reach nodes that do not exist yet (and warns so).
    conf = re.sub(r"MaxNodeCount=\d+\n", "", conf) + "TopologyPlugin=topology/tree\n"
    conf += "".join(f"NodeName={n} CPUs=1 Feature=gpu State=FUTURE\n" for n in names)
    (tmp_path / "etc" / "slurm.conf").write_text(conf)
    (tmp_path / "etc" / "topology.conf").write_text(render_topology_conf(placements))
    env = {**os.environ, "SLURM_CONF": str(tmp_path / "etc" / "slurm.conf")}
    with munged(tmp_path):
        daemon = subprocess.Popen(["slurmctld", "-D", "-f", env["SLURM_CONF"]], env=env, stderr=subprocess.DEVNULL)
        try:
            wait_for("slurmctld", lambda: "UP" in run(env, "scontrol", "ping"), timeout=30)
            shown = run(env, "scontrol", "show", "topology")
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=15)
    switches = dict(re.findall(r"SwitchName=(\S+) Level=(\d)", shown))
    assert switches["nn-leaf00"] == "0" and switches["nn-mid0"] == "1" and switches["nn-top0"] == "2"
    assert switches["root"] == "3" and len(switches) == 4 + 1 + 1 + 1  # 4 leaves of 64, a middle, a top, root
    log = (tmp_path / "log" / "slurmctld.log").read_text()
    assert "TOPOLOGY" not in log and "Invalid hostnames" not in log and "lack access" not in log, log[-2000:]


def test_network_node_features_keep_a_job_under_one_network_node(
    slurm: Slurm,  # noqa: F811 (the fixture, imported)
    ec2: tuple[Any, Stubber],
) -> None:
    """A and B hang from different lowest network nodes under one middle node: a two-node job
    asked to stay under one lowest node cannot run; under one middle node it runs on both."""
    client, stubber = ec2
    stubber.add_response(
        "describe_instance_topology",
        {"Instances": [instance(NODE_A, "nn-t", "nn-m", "nn-la"), instance(NODE_B, "nn-t", "nn-m", "nn-lb")]},
        {"InstanceIds": [NODE_A, NODE_B]},
    )
    out = Path(tempfile.mkdtemp(prefix="tc-topology-"))
    try:
        refresh(client, Scontrol(slurm.env), out)
        assert (out / "topology-features").read_text() == "nn-la 1\nnn-lb 1\nnn-m 2\nnn-t 2\n"
        assert "SwitchName=nn-m Switches=nn-la,nn-lb" in (out / "topology.conf").read_text()
    finally:
        shutil.rmtree(out)
    assert re.search(r"AvailableFeatures=gpu,nn-t,nn-m,nn-la\s", slurm.node(NODE_A))
    assert "Partitions=train" in slurm.node(NODE_A)  # the group's node set still holds it
    # The same placements again change nothing.
    assert label(Scontrol(slurm.env), [Placement(NODE_A, ("nn-t", "nn-m", "nn-la"))]) == []
    leaf = slurm.run(
        "sbatch", "-N", "2", "-p", "train", "--constraint=[nn-la|nn-lb]", "-o", "/dev/null", "--wrap", "true"
    )
    assert leaf.returncode != 0 and "Requested node configuration is not available" in leaf.stderr
    middle = slurm.run(
        "sbatch", "--parsable", "-N", "2", "-p", "train", "--constraint=[nn-m]", "-o", "/dev/null", "--wrap", "true"
    )
    assert middle.returncode == 0, middle.stderr
    job = middle.stdout.strip()
    wait_for("the job to complete", lambda: "JobState=COMPLETED" in slurm.job(job))
    assert f" NodeList={NODE_A},{NODE_B}\n" in slurm.job(job)


def run(env: dict[str, str], *command: str) -> str:
    return subprocess.run(list(command), env=env, capture_output=True, text=True, timeout=30).stdout
