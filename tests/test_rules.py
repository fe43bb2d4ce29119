"""Each rule is written once, with the construct it protects (issue 10): a direct user's bad props
and a config user's bad fields get the same message, only the path differs (the prop's name, or
the config field's path). And the config, its checks and the rules load without aws-cdk-lib."""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Callable
from typing import Any, cast

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_kms as kms

from conftest import ROOT, minimal_config
from training_cluster import ClusterConfig, ConfigError
from training_cluster.constructs import (
    ClusterEvents,
    ClusterNetwork,
    Fleet,
    FleetCapacity,
    LustreFileSystem,
    Observability,
    ObservabilityOptions,
    Slurm,
    SlurmOptions,
)
from training_cluster.errors import Finding
from training_cluster.rules import PropsError, relocate
from training_cluster.rules.fleet import creates_placement_group
from training_cluster.types import CapacityType

RID = "cr-0123456789abcdef0"
KEY_ARN = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
WEST_KEY_ARN = KEY_ARN.replace("us-east-1", "us-west-2")

Build = Callable[[Stack], object]
"""Composes one construct by hand in ``stack``, with one bad prop."""


def _network(stack: Stack) -> tuple[ec2.IVpc, ec2.ISubnet]:
    """An imported VPC and subnet, once per stack."""
    if stack.node.try_find_child("Vpc") is not None:
        return cast(ec2.IVpc, stack.node.find_child("Vpc")), cast(ec2.ISubnet, stack.node.find_child("Subnet"))
    vpc = ec2.Vpc.from_vpc_attributes(stack, "Vpc", vpc_id="vpc-0123456789abcdef0", availability_zones=["us-east-1a"])
    subnet = ec2.Subnet.from_subnet_attributes(
        stack, "Subnet", subnet_id="subnet-0123456789abcdef0", availability_zone="us-east-1a"
    )
    return vpc, subnet


def fleet(construct_id: str = "Gpu", **overrides: Any) -> Callable[[Stack], Fleet]:
    def build(stack: Stack) -> Fleet:
        vpc, subnet = _network(stack)
        props: dict[str, Any] = {
            "cluster_name": "t",
            "group_name": "gpu",
            "instance_type": "p5.48xlarge",
            "count": 2,
            **overrides,
        }
        return Fleet(stack, construct_id, vpc=vpc, subnet=subnet, **props)

    return build


def lustre(**overrides: Any) -> Build:
    def build(stack: Stack) -> LustreFileSystem:
        vpc, subnet = _network(stack)
        customer_key = overrides.pop("customer_key", False)
        if customer_key:
            overrides["kms_key"] = kms.Key.from_key_arn(stack, "Key", KEY_ARN if customer_key is True else customer_key)
        return LustreFileSystem(stack, "Lustre", vpc=vpc, subnet=subnet, **overrides)

    return build


def network(**overrides: Any) -> Build:
    return lambda stack: ClusterNetwork(stack, "Network", availability_zone="us-east-1a", **overrides)


def observability(scrape_interval_seconds: int) -> Build:
    def build(stack: Stack) -> None:
        events = ClusterEvents(stack, "Events", cluster_name="t")
        nodes = Observability(stack, "Observability", topic=events.topic, options=ObservabilityOptions(grafana=False))
        nodes.add_nodes(fleets=[fleet()(stack)], scrape_interval_seconds=scrape_interval_seconds)

    return build


def slurm(
    *,
    compute: dict[str, Any] | None = None,
    controller: dict[str, Any] | None = None,
    options: SlurmOptions | None = None,
    file_system_mount_path: str = "/fsx",
) -> Build:
    def build(stack: Stack) -> Slurm:
        server = {"instance_type": "m7i.4xlarge", "os": "ubuntu-24.04"}
        return Slurm(
            stack,
            "Slurm",
            controller=fleet("Controller", **{"group_name": "controller", "count": 1, **server, **(controller or {})})(
                stack
            ),
            login=fleet("Login", **{"group_name": "login", "count": 1, **server})(stack),
            compute=[fleet("Gpu", **{"os": "ubuntu-24.04", **(compute or {})})(stack)],
            file_system_mount_path=file_system_mount_path,
            options=options or SlurmOptions(),
        )

    return build


def with_group(**overrides: Any) -> dict[str, Any]:
    return minimal_config(instance_groups=[{"name": "gpu", "instance_type": "p5.48xlarge", "count": 2, **overrides}])


def with_lustre(**overrides: Any) -> dict[str, Any]:
    return minimal_config(storage={"lustre": overrides})


def with_slurm(orchestrator: dict[str, Any] | None = None, **group: Any) -> dict[str, Any]:
    return {**with_group(**group), "orchestrator": orchestrator or {}}


# rule -> (the construct composed by hand, the config, the prop, the config's path)
ERRORS: dict[str, tuple[Build, dict[str, Any], str, str]] = {
    # Fleet
    "cluster name": (fleet(cluster_name="Demo_1"), minimal_config(name="Demo_1"), "cluster_name", "name"),
    "cluster name length": (fleet(cluster_name="a" * 33), minimal_config(name="a" * 33), "cluster_name", "name"),
    "group name": (fleet(group_name="GPU"), with_group(name="GPU"), "group_name", "instance_groups[0].name"),
    "group name with a trailing newline": (
        fleet(group_name="gpu\n"),
        with_group(name="gpu\n"),
        "group_name",
        "instance_groups[0].name",
    ),
    "count below one": (fleet(count=0), with_group(count=0), "count", "instance_groups[0].count"),
    "count above the bound": (fleet(count=2001), with_group(count=2001), "count", "instance_groups[0].count"),
    "root volume": (
        fleet(root_volume_size_gib=20),
        with_group(root_volume_gib=20),
        "root_volume_size_gib",
        "instance_groups[0].root_volume_gib",
    ),
    "unknown instance type": (
        fleet(instance_type="p5.48xlarg"),
        with_group(instance_type="p5.48xlarg"),
        "instance_type",
        "instance_groups[0].instance_type",
    ),
    "efa on a type without it": (
        fleet(instance_type="m7i.4xlarge", efa=True),
        with_group(instance_type="m7i.4xlarge", efa="on"),
        "efa",
        "instance_groups[0].efa",
    ),
    "reservation id with on-demand": (
        fleet(capacity=FleetCapacity(reservation_id=RID)),
        with_group(capacity={"reservation_id": RID}),
        "capacity.reservation_id",
        "instance_groups[0].capacity.reservation_id",
    ),
    "reservation id missing": (
        fleet(capacity=FleetCapacity(type="reservation")),
        with_group(capacity={"type": "reservation"}),
        "capacity.reservation_id",
        "instance_groups[0].capacity.reservation_id",
    ),
    "reservation id format": (
        fleet(capacity=FleetCapacity.capacity_block("cr-123")),
        with_group(capacity={"type": "capacity-block", "reservation_id": "cr-123"}),
        "capacity.reservation_id",
        "instance_groups[0].capacity.reservation_id",
    ),
    "capacity block on a type not sold so": (
        fleet(instance_type="g6e.24xlarge", capacity=FleetCapacity.capacity_block(RID)),
        with_group(instance_type="g6e.24xlarge", capacity={"type": "capacity-block", "reservation_id": RID}),
        "capacity.type",
        "instance_groups[0].capacity.type",
    ),
    "placement group both ways": (
        fleet(create_placement_group=True, placement_group_name="pg"),
        with_group(placement_group=True, placement_group_name="pg"),
        "create_placement_group",
        "instance_groups[0].placement_group",
    ),
    "placement group for a reservation": (
        fleet(create_placement_group=True, capacity=FleetCapacity.reservation(RID)),
        with_group(placement_group=True, capacity={"type": "reservation", "reservation_id": RID}),
        "create_placement_group",
        "instance_groups[0].placement_group",
    ),
    "placement group for a capacity block": (
        fleet(create_placement_group=True, capacity=FleetCapacity.capacity_block(RID)),
        with_group(placement_group=True, capacity={"type": "capacity-block", "reservation_id": RID}),
        "create_placement_group",
        "instance_groups[0].placement_group",
    ),
    "named placement group for a capacity block": (
        fleet(placement_group_name="pg", capacity=FleetCapacity.capacity_block(RID)),
        with_group(placement_group_name="pg", capacity={"type": "capacity-block", "reservation_id": RID}),
        "placement_group_name",
        "instance_groups[0].placement_group_name",
    ),
    "placement group name with a trailing newline": (
        fleet(placement_group_name="pg\n", create_placement_group=False),
        with_group(placement_group_name="pg\n", placement_group=False),
        "placement_group_name",
        "instance_groups[0].placement_group_name",
    ),
    "key pair name": (
        fleet(key_pair_name="k'; reboot; '"),
        with_slurm({"ssh_key_name": "k'; reboot; '"}),
        "key_pair_name",
        "orchestrator.ssh_key_name",
    ),
    "key pair name with a trailing newline": (
        fleet(key_pair_name="k\n"),
        with_slurm({"ssh_key_name": "k\n"}),
        "key_pair_name",
        "orchestrator.ssh_key_name",
    ),
    "lifecycle script missing": (
        fleet(lifecycle_script="/nonexistent/setup.sh"),
        with_group(lifecycle_script="/nonexistent/setup.sh"),
        "lifecycle_script",
        "instance_groups[0].lifecycle_script",
    ),
    "lifecycle script under /proc": (
        fleet(lifecycle_script="/proc/self/status"),
        with_group(lifecycle_script="/proc/self/status"),
        "lifecycle_script",
        "instance_groups[0].lifecycle_script",
    ),
    "lifecycle script written under /proc, leading elsewhere": (
        fleet(lifecycle_script="/proc/self/root/etc/hostname"),
        with_group(lifecycle_script="/proc/self/root/etc/hostname"),
        "lifecycle_script",
        "instance_groups[0].lifecycle_script",
    ),
    "lifecycle script a folder": (
        fleet(lifecycle_script="/tmp"),
        with_group(lifecycle_script="/tmp"),
        "lifecycle_script",
        "instance_groups[0].lifecycle_script",
    ),
    # LustreFileSystem
    "lustre capacity": (
        lustre(storage_capacity_gib=1000),
        with_lustre(storage_capacity_gib=1000),
        "storage_capacity_gib",
        "storage.lustre.storage_capacity_gib",
    ),
    "lustre capacity above what a subnet serves": (
        lustre(storage_capacity_gib=157_274_400),
        with_lustre(storage_capacity_gib=157_274_400),
        "storage_capacity_gib",
        "storage.lustre.storage_capacity_gib",
    ),
    "lustre scratch 1 capacity": (
        lustre(deployment_type="SCRATCH_1", storage_capacity_gib=4800),
        with_lustre(deployment_type="SCRATCH_1", storage_capacity_gib=4800),
        "storage_capacity_gib",
        "storage.lustre.storage_capacity_gib",
    ),
    "lustre throughput on scratch": (
        lustre(deployment_type="SCRATCH_2", throughput_mbps_per_tib=200),
        with_lustre(deployment_type="SCRATCH_2", throughput_mbps_per_tib=200),
        "throughput_mbps_per_tib",
        "storage.lustre.throughput_mbps_per_tib",
    ),
    "lustre throughput of persistent 2": (
        lustre(throughput_mbps_per_tib=200),
        with_lustre(throughput_mbps_per_tib=200),
        "throughput_mbps_per_tib",
        "storage.lustre.throughput_mbps_per_tib",
    ),
    "lustre throughput of persistent 1": (
        lustre(deployment_type="PERSISTENT_1", throughput_mbps_per_tib=125),
        with_lustre(deployment_type="PERSISTENT_1", throughput_mbps_per_tib=125),
        "throughput_mbps_per_tib",
        "storage.lustre.throughput_mbps_per_tib",
    ),
    "lustre metadata on persistent 1": (
        lustre(deployment_type="PERSISTENT_1", metadata_iops=1500),
        with_lustre(deployment_type="PERSISTENT_1", metadata_iops=1500),
        "metadata_iops",
        "storage.lustre.metadata_iops",
    ),
    "lustre metadata iops": (
        lustre(metadata_iops=2000),
        with_lustre(metadata_iops=2000),
        "metadata_iops",
        "storage.lustre.metadata_iops",
    ),
    "lustre customer key on scratch": (
        lustre(deployment_type="SCRATCH_2", customer_key=True),
        with_lustre(deployment_type="SCRATCH_2", kms_key_arn=KEY_ARN),
        "kms_key",
        "storage.lustre.kms_key_arn",
    ),
    "lustre customer key of another region": (
        lustre(customer_key=WEST_KEY_ARN),
        with_lustre(kms_key_arn=WEST_KEY_ARN),
        "kms_key",
        "storage.lustre.kms_key_arn",
    ),
    "lustre s3 path": (
        lustre(s3_import_path="bucket/prefix"),
        with_lustre(s3_import_path="bucket/prefix"),
        "s3_import_path",
        "storage.lustre.s3_import_path",
    ),
    "lustre mount path shape": (
        lustre(mount_path="fsx"),
        with_lustre(mount_path="fsx"),
        "mount_path",
        "storage.lustre.mount_path",
    ),
    "lustre mount path not normalized": (
        lustre(mount_path="/fsx/../data"),
        with_lustre(mount_path="/fsx/../data"),
        "mount_path",
        "storage.lustre.mount_path",
    ),
    "lustre mount path on the system": (
        lustre(mount_path="/home"),
        with_lustre(mount_path="/home"),
        "mount_path",
        "storage.lustre.mount_path",
    ),
    # ClusterNetwork
    "vpc cidr size": (
        network(vpc_cidr="10.0.0.0/8"),
        minimal_config(network={"vpc_cidr": "10.0.0.0/8"}),
        "vpc_cidr",
        "network.vpc_cidr",
    ),
    "vpc cidr range": (
        network(vpc_cidr="127.0.0.0/16"),
        minimal_config(network={"vpc_cidr": "127.0.0.0/16"}),
        "vpc_cidr",
        "network.vpc_cidr",
    ),
    "availability zone of another region": (
        lambda stack: ClusterNetwork(stack, "Network", availability_zone="us-west-2a"),
        minimal_config(availability_zone="us-west-2a"),
        "availability_zone",
        "availability_zone",
    ),
    # Observability
    "scrape interval": (
        observability(0),
        minimal_config(observability={"scrape_interval_seconds": 0}),
        "scrape_interval_seconds",
        "observability.scrape_interval_seconds",
    ),
    # Slurm
    "slurm mount path on the system": (
        slurm(file_system_mount_path="/etc"),
        {**with_slurm(), "storage": {"lustre": {"mount_path": "/etc"}}},
        "file_system_mount_path",
        "storage.lustre.mount_path",
    ),
    "slurm user name": (
        slurm(options=SlurmOptions(users={"Bad User": 2001})),
        with_slurm({"users": {"Bad User": 2001}}),
        "options.users",
        "orchestrator.users",
    ),
    "slurm uid below the range": (
        slurm(options=SlurmOptions(users={"alice": 1000})),
        with_slurm({"users": {"alice": 1000}}),
        "options.users.alice",
        "orchestrator.users.alice",
    ),
    "slurm uid above the range": (
        slurm(options=SlurmOptions(users={"alice": 60000})),
        with_slurm({"users": {"alice": 60000}}),
        "options.users.alice",
        "orchestrator.users.alice",
    ),
    "slurm partition name": (
        slurm(options=SlurmOptions(partitions={"Bad Name=x": ["gpu"]})),
        with_slurm({"partitions": {"Bad Name=x": ["gpu"]}}),
        "options.partitions",
        "orchestrator.partitions",
    ),
    "slurm node os": (
        slurm(compute={"os": "ubuntu-22.04"}),
        with_slurm(os="ubuntu-22.04"),
        "compute[0].os",
        "instance_groups[0].os",
    ),
    "slurm group named like the login group": (
        slurm(compute={"group_name": "login"}),
        with_slurm(name="login"),
        "compute[0].group_name",
        "instance_groups[0].name",
    ),
    "slurm controller type": (
        slurm(controller={"instance_type": "p5.48xlarge", "efa": False}),
        with_slurm({"controller_instance_type": "p5.48xlarge"}),
        "controller.instance_type",
        "orchestrator.controller_instance_type",
    ),
    "slurm partition member": (
        slurm(options=SlurmOptions(partitions={"train": ["gpu", "big"]})),
        with_slurm({"partitions": {"train": ["gpu", "big"]}}),
        "options.partitions.train",
        "orchestrator.partitions.train",
    ),
    "slurm default partition": (
        slurm(options=SlurmOptions(partitions={"default": ["gpu"]})),
        with_slurm({"partitions": {"default": ["gpu"]}}),
        "options.partitions",
        "orchestrator.partitions",
    ),
    "slurm system user": (
        slurm(options=SlurmOptions(users={"ubuntu": 2001})),
        with_slurm({"users": {"ubuntu": 2001}}),
        "options.users.ubuntu",
        "orchestrator.users.ubuntu",
    ),
    "slurm shared uid": (
        slurm(options=SlurmOptions(users={"alice": 2001, "bob": 2001})),
        with_slurm({"users": {"alice": 2001, "bob": 2001}}),
        "options.users.bob",
        "orchestrator.users.bob",
    ),
}

# rule -> (the construct composed by hand, the config, the prop, the config's path)
WARNINGS: dict[str, tuple[Build, dict[str, Any], str, str]] = {
    "efa without a placement group": (
        fleet(create_placement_group=False),
        with_group(placement_group=False),
        "create_placement_group",
        "instance_groups[0].placement_group",
    ),
    "lustre above the default quota": (
        lustre(storage_capacity_gib=240000),
        with_lustre(storage_capacity_gib=240000),
        "storage_capacity_gib",
        "storage.lustre.storage_capacity_gib",
    ),
    "publicly routable vpc": (
        network(vpc_cidr="8.8.0.0/16"),
        minimal_config(network={"vpc_cidr": "8.8.0.0/16"}),
        "vpc_cidr",
        "network.vpc_cidr",
    ),
}


def stack() -> Stack:
    return Stack(App(), "Pieces", env={"account": "111122223333", "region": "us-east-1"})


def messages(findings: tuple[Finding, ...] | list[Finding], path: str) -> list[str]:
    return [f.message for f in findings if f.path == path]


@pytest.mark.parametrize("rule", sorted(ERRORS))
def test_a_direct_user_and_a_config_user_read_the_same_error(rule: str) -> None:
    build, data, prop, path = ERRORS[rule]
    with pytest.raises(PropsError) as direct:
        build(stack())
    with pytest.raises(ConfigError) as config:
        ClusterConfig.from_dict(copy.deepcopy(data))
    direct_messages = messages(direct.value.findings, prop)
    assert direct_messages, str(direct.value)
    assert direct_messages == messages(config.value.findings, path), (str(direct.value), str(config.value))
    # One error for the construct, naming it, its prop and every problem.
    assert str(direct.value).startswith(f"{len(direct.value.findings)} problem")
    assert f"  - {prop}: {direct_messages[0]}" in str(direct.value)


def _construct_warnings(scope: Stack) -> list[str]:
    return [
        str(entry.data)
        for construct in scope.node.find_all()
        for entry in construct.node.metadata
        if entry.type == "aws:cdk:warning"
    ]


@pytest.mark.parametrize("rule", sorted(WARNINGS))
def test_a_direct_user_and_a_config_user_read_the_same_warning(rule: str) -> None:
    build, data, prop, path = WARNINGS[rule]
    scope = stack()
    build(scope)
    (expected,) = messages(ClusterConfig.from_dict(copy.deepcopy(data)).warnings(), path)
    assert any(w.startswith(f"{prop}: {expected}") for w in _construct_warnings(scope)), _construct_warnings(scope)


def test_a_construct_lists_every_problem_at_once() -> None:
    with pytest.raises(PropsError) as info:
        fleet(count=0, instance_type="m7i.4xlarge", efa=True, capacity=FleetCapacity(type="reservation"))(stack())
    assert [f.path for f in info.value.findings] == ["count", "efa", "capacity.reservation_id"]
    assert str(info.value).startswith("3 problems with the props of Fleet 'Pieces/Gpu':")


def test_findings_move_to_the_longest_matching_path() -> None:
    findings = [
        Finding(path="compute", message="a"),
        Finding(path="compute[0].os", message="b"),
        Finding(path="computer", message="c"),
        Finding(path="options.partitions.train", message="d", level="warning"),
    ]
    moved = relocate(
        findings,
        {"compute": "instance_groups", "compute[0].os": "instance_groups[0].os", "options.partitions": "partitions"},
    )
    assert [(f.path, f.level) for f in moved] == [
        ("instance_groups", "error"),
        ("instance_groups[0].os", "error"),
        ("computer", "error"),
        ("partitions.train", "warning"),
    ]


CDK_FREE = """
import sys
{imports}
config = ClusterConfig.from_yaml("examples/default.yaml")
assert not [f for f in check(config) if f.level == "error"]
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("aws_cdk", "jsii", "constructs"))
assert not loaded, loaded
"""


@pytest.mark.parametrize(
    "imports",
    [
        # The config first, then its checks; and the other way round: no import cycle either way.
        "import training_cluster.config\nfrom training_cluster import ClusterConfig\n"
        "from training_cluster.validation import check",
        "from training_cluster.validation import check\nfrom training_cluster.config import ClusterConfig",
        "import training_cluster.rules.fleet, training_cluster.rules.lustre, training_cluster.rules.network\n"
        "import training_cluster.rules.settings, training_cluster.rules.slurm, training_cluster.types\n"
        "from training_cluster import ClusterConfig\nfrom training_cluster.validation import check",
    ],
    ids=["config-first", "validation-first", "rules"],
)
def test_the_config_and_the_rules_load_without_aws_cdk(imports: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", CDK_FREE.format(imports=imports)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_the_stack_and_the_bootstrap_load_when_named() -> None:
    import training_cluster

    assert training_cluster.TrainingClusterStack.__name__ == "TrainingClusterStack"
    assert training_cluster.NodeBootstrap.__name__ == "NodeBootstrap"
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        training_cluster.Nope  # noqa: B018


@pytest.mark.parametrize(
    ("create", "name", "capacity", "creates"),
    [
        (None, None, "on-demand", True),
        (None, None, "reservation", False),  # it launches into its own group, if any
        (None, None, "capacity-block", False),  # EC2 places a block's instances already
        (None, "pg", "on-demand", False),  # an existing group instead
        (True, None, "on-demand", True),
        (False, None, "on-demand", False),
    ],
)
def test_the_placement_group_default_follows_the_capacity(
    create: bool | None, name: str | None, capacity: CapacityType, creates: bool
) -> None:
    assert creates_placement_group(create, name, capacity) is creates
