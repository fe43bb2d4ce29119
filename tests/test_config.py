"""The cluster config: parsing, defaults, and a failing path for every validation rule."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from conftest import EXAMPLES, ROOT, errors_of, minimal_config
from training_cluster import ClusterConfig, ConfigError


def group(**overrides: Any) -> dict[str, Any]:
    return {"name": "gpu", "instance_type": "p5.48xlarge", "count": 2, **overrides}


def with_group(**overrides: Any) -> dict[str, Any]:
    return minimal_config(instance_groups=[group(**overrides)])


def with_lustre(**overrides: Any) -> dict[str, Any]:
    return minimal_config(storage={"lustre": overrides})


def with_network(**overrides: Any) -> dict[str, Any]:
    return minimal_config(network=overrides)


def with_slurm(orchestrator: dict[str, Any], **group_overrides: Any) -> dict[str, Any]:
    return minimal_config(
        instance_groups=[group(**group_overrides)],
        storage={"lustre": {}},
        orchestrator=orchestrator,
    )


EXISTING = {"vpc_id": "vpc-0123456789abcdef0", "subnet_id": "subnet-0123456789abcdef0"}

# (config, field path, words the message must hold)
RULES: dict[str, tuple[dict[str, Any], str, str]] = {
    "name pattern": (minimal_config(name="Demo_1"), "name", "lower case letters, digits and single hyphens"),
    "name length": (minimal_config(name="a" * 33), "name", "at most 32 characters"),
    "name missing": (
        {k: v for k, v in minimal_config().items() if k != "name"},
        "name",
        "required, but missing",
    ),
    "region pattern": (minimal_config(region="useast1"), "region", "AWS region name such as us-east-1"),
    "unknown top-level key": (
        minimal_config(nmae="x"),
        "nmae",
        "unknown key; allowed keys here: name, region",
    ),
    "unknown nested key": (with_network(cidr="10.0.0.0/16"), "network.cidr", "allowed keys here: vpc_cidr"),
    "no instance groups": (minimal_config(instance_groups=[]), "instance_groups", "at least 1 item"),
    "count below one": (
        with_group(count=0),
        "instance_groups[0].count",
        "must be between 1 and 2000 instances (got 0)",
    ),
    "efa word": (with_group(efa="yes"), "instance_groups[0].efa", "'auto', 'on' or 'off' (got 'yes')"),
    "capacity type": (
        with_group(capacity={"type": "spot"}),
        "instance_groups[0].capacity.type",
        "'on-demand', 'reservation' or 'capacity-block'",
    ),
    "root volume": (
        with_group(root_volume_gib=8),
        "instance_groups[0].root_volume_gib",
        "must be between 40 and 16384 GiB (got 8)",
    ),
    "image id": (with_group(image_id="ubuntu"), "instance_groups[0].image_id", "AMI id such as ami-"),
    "os": (with_group(os="centos-7"), "instance_groups[0].os", "'ubuntu-22.04', 'ubuntu-24.04' or 'amazon-linux-2023'"),
    "group name": (with_group(name="GPU"), "instance_groups[0].name", "lower case letters"),
    "vpc cidr": (with_network(vpc_cidr="10.0.0.0/33"), "network.vpc_cidr", "not an IPv4 CIDR block"),
    "vpc cidr size": (with_network(vpc_cidr="10.0.0.0/8"), "network.vpc_cidr", "between /16 and /28"),
    "vpc id": (
        with_network(vpc_id="vpc-1", subnet_id="subnet-0123456789abcdef0"),
        "network.vpc_id",
        "VPC id such as vpc-",
    ),
    "subnet id": (
        with_network(vpc_id="vpc-0123456789abcdef0", subnet_id="sn-1"),
        "network.subnet_id",
        "subnet id such as subnet-",
    ),
    "deployment type": (
        with_lustre(deployment_type="SCRATCH_3"),
        "storage.lustre.deployment_type",
        "'SCRATCH_1', 'SCRATCH_2', 'PERSISTENT_1' or 'PERSISTENT_2'",
    ),
    "mount path": (with_lustre(mount_path="fsx"), "storage.lustre.mount_path", "absolute path such as /fsx"),
    "s3 path": (
        with_lustre(s3_import_path="bucket/prefix"),
        "storage.lustre.s3_import_path",
        "S3 URI such as s3://",
    ),
    "kms arn": (
        with_lustre(kms_key_arn="alias/mine"),
        "storage.lustre.kms_key_arn",
        "KMS key ARN such as arn:aws:kms:",
    ),
    "compression": (with_lustre(compression="GZIP"), "storage.lustre.compression", "'NONE' or 'LZ4'"),
    "repair email": (
        minimal_config(auto_repair={"notification_email": "ops"}),
        "auto_repair.notification_email",
        "e-mail address such as ops@example.com (got 'ops')",
    ),
    "repair xid key": (
        minimal_config(auto_repair={"policy": {"xid": {"x79": "replace"}}}),
        "auto_repair.policy.xid",
        "key 'x79' must be an XID number such as 79",
    ),
    "repair action": (
        minimal_config(auto_repair={"policy": {"xid": {"79": "nuke"}}}),
        "auto_repair.policy.xid.79",
        "'observe', 'reboot' or 'replace' (got 'nuke')",
    ),
    "repair check": (
        minimal_config(auto_repair={"policy": {"checks": {"gpu": "reboot"}}}),
        "auto_repair.policy.checks",
        "key 'gpu' input should be 'gpu_count', 'efa_count'",
    ),
    "repair parallel": (
        minimal_config(auto_repair={"max_parallel_replacements": 0}),
        "auto_repair.max_parallel_replacements",
        "greater than or equal to 1",
    ),
    "repair threshold": (
        minimal_config(auto_repair={"unhealthy_threshold_percent": 101}),
        "auto_repair.unhealthy_threshold_percent",
        "less than or equal to 100",
    ),
    "repair interval": (
        minimal_config(auto_repair={"check_interval_seconds": 5}),
        "auto_repair.check_interval_seconds",
        "greater than or equal to 10",
    ),
    "repair unknown key": (
        minimal_config(auto_repair={"dryrun": True}),
        "auto_repair.dryrun",
        "allowed keys here: enabled, dry_run",
    ),
    "alert email": (
        minimal_config(observability={"alert_email": "alerts"}),
        "observability.alert_email",
        "e-mail address",
    ),
    "grafana auth": (
        minimal_config(observability={"grafana_auth": "OIDC"}),
        "observability.grafana_auth",
        "'AWS_SSO' or 'SAML' (got 'OIDC')",
    ),
    "scrape interval": (
        minimal_config(observability={"scrape_interval_seconds": 1}),
        "observability.scrape_interval_seconds",
        "must be between 5 and 300 seconds (got 1)",
    ),
    "grafana without prometheus": (
        minimal_config(observability={"prometheus": False}),
        "observability.grafana",
        "Grafana reads the Prometheus workspace",
    ),
    # cross-field rules
    "zone outside region": (
        minimal_config(availability_zone="us-west-2a"),
        "availability_zone",
        "'us-west-2a' is not in region 'us-east-1'",
    ),
    "zone unknown": (
        minimal_config(availability_zone="us-east-1z"),
        "availability_zone",
        "allowed: us-east-1a, us-east-1b",
    ),
    "duplicate names": (
        minimal_config(instance_groups=[group(), group()]),
        "instance_groups",
        "'gpu' is used 2 times",
    ),
    "names equal without hyphens": (
        minimal_config(instance_groups=[group(name="gpu-a"), group(name="gpua")]),
        "instance_groups",
        "'gpu-a' and 'gpua' differ only in hyphens",
    ),
    "unknown type": (
        with_group(instance_type="p5.48xlarg"),
        "instance_groups[0].instance_type",
        "did you mean p5.48xlarge",
    ),
    "efa on without support": (
        with_group(instance_type="m7i.4xlarge", efa="on"),
        "instance_groups[0].efa",
        "m7i.4xlarge does not support EFA",
    ),
    "reservation id on demand": (
        with_group(capacity={"reservation_id": "cr-0123456789abcdef0"}),
        "instance_groups[0].capacity.reservation_id",
        "only used with capacity type reservation or capacity-block",
    ),
    "reservation id missing": (
        with_group(capacity={"type": "reservation"}),
        "instance_groups[0].capacity.reservation_id",
        "required for capacity type reservation",
    ),
    "reservation id format": (
        with_group(capacity={"type": "capacity-block", "reservation_id": "cr-123"}),
        "instance_groups[0].capacity.reservation_id",
        "'cr-' and 17 hex digits",
    ),
    "capacity block type": (
        with_group(
            instance_type="g6e.24xlarge",
            capacity={"type": "capacity-block", "reservation_id": "cr-0123456789abcdef0"},
        ),
        "instance_groups[0].capacity.type",
        "not sold as Capacity Blocks",
    ),
    "placement group both ways": (
        with_group(placement_group=True, placement_group_name="pg"),
        "instance_groups[0].placement_group",
        "choose one",
    ),
    "placement group for reservation": (
        with_group(placement_group=True, capacity={"type": "reservation", "reservation_id": "cr-0123456789abcdef0"}),
        "instance_groups[0].placement_group",
        "the placement group it was created in",
    ),
    "placement group for capacity block": (
        with_group(
            placement_group=True,
            capacity={"type": "capacity-block", "reservation_id": "cr-0123456789abcdef0"},
        ),
        "instance_groups[0].placement_group",
        "Capacity Block already places its instances close together",
    ),
    "named placement group for capacity block": (
        with_group(
            placement_group_name="pg",
            capacity={"type": "capacity-block", "reservation_id": "cr-0123456789abcdef0"},
        ),
        "instance_groups[0].placement_group_name",
        "Capacity Block already places",
    ),
    "lifecycle script missing": (
        with_group(lifecycle_script="/nonexistent/on_create.sh"),
        "instance_groups[0].lifecycle_script",
        "no such file",
    ),
    "vpc without subnet": (
        with_network(vpc_id="vpc-0123456789abcdef0"),
        "network.subnet_id",
        "give both vpc_id and subnet_id",
    ),
    "subnet without vpc": (
        with_network(subnet_id="subnet-0123456789abcdef0"),
        "network.vpc_id",
        "give both vpc_id and subnet_id",
    ),
    "new-vpc keys with own vpc": (
        with_network(vpc_cidr="10.1.0.0/16", **EXISTING),
        "network.vpc_cidr",
        "applies to a new VPC only",
    ),
    "subnet cidr with new vpc": (
        with_network(subnet_cidr="10.0.0.0/20"),
        "network.subnet_cidr",
        "applies to your own subnet only",
    ),
    "compute subnet larger than vpc": (
        with_network(vpc_cidr="10.0.0.0/20", compute_subnet_prefix_length=20),
        "network.compute_subnet_prefix_length",
        "allowed: /21 to /26",
    ),
    "lustre capacity": (
        with_lustre(storage_capacity_gib=1000),
        "storage.lustre.storage_capacity_gib",
        "1200, 2400 or a multiple of 2400 GiB (got 1000)",
    ),
    "lustre throughput on scratch": (
        with_lustre(deployment_type="SCRATCH_2", throughput_mbps_per_tib=200),
        "storage.lustre.throughput_mbps_per_tib",
        "SCRATCH_2 has no throughput setting",
    ),
    "lustre throughput value": (
        with_lustre(throughput_mbps_per_tib=200),
        "storage.lustre.throughput_mbps_per_tib",
        "PERSISTENT_2 allows 125, 250, 500, 1000 MB/s/TiB (got 200)",
    ),
    "lustre persistent 1 throughput": (
        with_lustre(deployment_type="PERSISTENT_1", throughput_mbps_per_tib=125),
        "storage.lustre.throughput_mbps_per_tib",
        "PERSISTENT_1 allows 50, 100, 200",
    ),
    "metadata on persistent 1": (
        with_lustre(deployment_type="PERSISTENT_1", metadata_iops=1500),
        "storage.lustre.metadata_iops",
        "only PERSISTENT_2 has a metadata configuration",
    ),
    "metadata iops value": (
        with_lustre(metadata_iops=2000),
        "storage.lustre.metadata_iops",
        "multiples of 12000 up to 192000 (got 2000)",
    ),
    "kms on scratch": (
        with_lustre(
            deployment_type="SCRATCH_2",
            kms_key_arn="arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        ),
        "storage.lustre.kms_key_arn",
        "use a PERSISTENT type",
    ),
    "system mount path": (with_lustre(mount_path="/home"), "storage.lustre.mount_path", "system folder"),
    "own subnet too small": (
        minimal_config(network={**EXISTING, "subnet_cidr": "10.0.0.0/28"}, instance_groups=[group(count=20)]),
        "network.subnet_cidr",
        "has 16 addresses but the cluster needs",
    ),
    "new subnet too small": (
        minimal_config(network={"compute_subnet_prefix_length": 26}, instance_groups=[group(count=60)]),
        "network.compute_subnet_prefix_length",
        "needs 87 (fleet with 25% headroom for replacements, file system, endpoints, 5 AWS reserves); use /25 or larger",
    ),
    "slurm os": (
        with_slurm({}, os="ubuntu-22.04"),
        "instance_groups[0].os",
        "allowed: ubuntu-24.04 (got 'ubuntu-22.04')",
    ),
    "slurm group name": (
        with_slurm({}, name="login"),
        "instance_groups[0].name",
        "'login' is the name of the Slurm login group; every Slurm group needs a name of its own",
    ),
    "slurm partition group": (
        with_slurm({"partitions": {"train": ["gpu", "big"]}}),
        "orchestrator.partitions.train",
        "no instance group named 'big'; instance groups: gpu",
    ),
    "slurm partition name": (
        with_slurm({"partitions": {"Train!": ["gpu"]}}),
        "orchestrator.partitions",
        "key 'Train!' must be a Slurm partition name of up to 32 lower case letters, digits, _ and -",
    ),
    "slurm controller type": (
        with_slurm({"controller_instance_type": "p5.48xlarge"}),
        "orchestrator.controller_instance_type",
        "must be an x86_64 CPU instance type from the catalog, such as m7i.4xlarge (got 'p5.48xlarge')",
    ),
    "slurm controller typo": (
        with_slurm({"controller_instance_type": "m7i.4xlarg"}),
        "orchestrator.controller_instance_type",
        "did you mean m7i.4xlarge",
    ),
    "slurm without file system": (
        minimal_config(orchestrator={}, storage={}),
        "orchestrator.type",
        "add storage.lustre, or set orchestrator.type: none",
    ),
    "slurm accounting word": (
        with_slurm({"accounting": "yes"}),
        "orchestrator.accounting",
        "'local', 'rds' or 'off' (got 'yes')",
    ),
    "slurm user uid": (
        with_slurm({"users": {"alice": 1000}}),
        "orchestrator.users.alice",
        "must be between 2000 and 59999 (got 1000)",
    ),
    "slurm shared uid": (
        with_slurm({"users": {"alice": 2001, "bob": 2001}}),
        "orchestrator.users.bob",
        "uid 2001 is given to more than one user",
    ),
    "slurm type": (
        with_slurm({"type": "kubernetes"}),
        "orchestrator.type",
        "'slurm', 'eks' or 'none' (got 'kubernetes')",
    ),
    "slurm default partition": (
        with_slurm({"partitions": {"default": ["gpu"]}}),
        "orchestrator.partitions",
        "'default' is the name of Slurm's defaults line",
    ),
    "slurm system user": (
        with_slurm({"users": {"ubuntu": 2001}}),
        "orchestrator.users.ubuntu",
        "a user or group the node images have already",
    ),
    "rds in your own vpc": (
        {**with_slurm({"accounting": "rds"}), "network": EXISTING},
        "network.database_subnet_ids",
        "required with orchestrator.accounting: rds in your own VPC",
    ),
    "database subnets without rds": (
        {**with_slurm({}), "network": {**EXISTING, "database_subnet_ids": ["subnet-0aaaaaaaaaaaaaaa1"] * 2}},
        "network.database_subnet_ids",
        "only used by the Slurm accounting database: set orchestrator.accounting: rds, or remove it",
    ),
    "database subnets count": (
        {
            **with_slurm({"accounting": "rds"}),
            "network": {**EXISTING, "database_subnet_ids": ["subnet-0aaaaaaaaaaaaaaa1"]},
        },
        "network.database_subnet_ids",
        "at least 2 items",
    ),
    "rds without a second zone": (
        {**with_slurm({"accounting": "rds"}), "region": "ap-future-9", "availability_zone": "ap-future-9a"},
        "orchestrator.accounting",
        "rds needs a second availability zone and the catalog knows none for ap-future-9; use local or off",
    ),
    "spares": (with_group(spares=65), "instance_groups[0].spares", "less than or equal to 64"),
    "spares over the group limit": (
        with_slurm({}, count=1990, spares=20),
        "instance_groups[0].spares",
        "count + spares must be at most 2000 instances; count is 1990 (got 20)",
    ),
    "slurm node records": (
        {
            **with_slurm({}),
            "instance_groups": [group(name=f"g{i}", count=1000, spares=8) for i in range(3)],
        },
        "instance_groups",
        "Slurm takes at most 2048 compute instances (counts and spares) in a cluster, got 3024",
    ),
    "spares without slurm": (
        with_group(spares=1),
        "instance_groups[0].spares",
        "hot spares need orchestrator.type: slurm, which keeps them out of jobs; remove it",
    ),
    "spares on eks": (
        {**with_group(spares=1), "orchestrator": {"type": "eks"}},
        "instance_groups[0].spares",
        "EKS clusters cannot have them yet",
    ),
    "rds instance class": (
        with_slurm({"accounting": "rds", "accounting_instance_class": "t4g.medium"}),
        "orchestrator.accounting_instance_class",
        "must be an RDS instance class such as db.t4g.medium (got 't4g.medium')",
    ),
}


@pytest.mark.parametrize("rule", sorted(RULES))
def test_each_rule_names_the_field_and_what_is_allowed(rule: str) -> None:
    data, path, words = RULES[rule]
    messages = errors_of(copy.deepcopy(data))
    assert any(m.startswith(f"{path}: ") and words in m for m in messages), messages


def test_all_problems_are_reported_at_once() -> None:
    data = minimal_config(
        name="Bad",
        availability_zone="us-west-2a",
        instance_groups=[group(count=0), group(instance_type="nope.large")],
        storage={"lustre": {"storage_capacity_gib": 1000}},
    )
    # Field errors come first (all of them); cross-field rules run once the fields parse.
    assert len(errors_of(data)) == 2
    data["name"] = "good"
    data["instance_groups"][0]["count"] = 1
    messages = errors_of(data)
    assert [m.split(":")[0] for m in messages] == [
        "availability_zone",
        "instance_groups",
        "instance_groups[1].instance_type",
        "storage.lustre.storage_capacity_gib",
    ]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_is_valid(path: Path) -> None:
    config = ClusterConfig.from_yaml(path)
    assert config.instance_groups


def test_defaults() -> None:
    config = ClusterConfig.from_dict(minimal_config())
    gpu = config.instance_groups[0]
    assert (gpu.efa, gpu.efa_enabled, gpu.creates_placement_group, gpu.root_volume_gib) == (
        "auto",
        True,
        True,
        500,
    )
    assert gpu.os == "ubuntu-22.04" and gpu.capacity.type == "on-demand"
    lustre = config.storage.lustre
    assert lustre is not None
    assert (lustre.deployment_type, lustre.storage_capacity_gib, lustre.throughput, lustre.compression) == (
        "PERSISTENT_2",
        1200,
        250,
        "LZ4",
    )
    assert lustre.retain_on_delete and lustre.mount_path == "/fsx"
    assert config.network.vpc_cidr == "10.0.0.0/16" and config.network.compute_subnet_prefix_length == 17
    assert ClusterConfig.from_dict(minimal_config(storage={})).storage.lustre is None


def test_placement_group_default_follows_capacity() -> None:
    reservation = {"type": "reservation", "reservation_id": "cr-0123456789abcdef0"}
    block = {"type": "capacity-block", "reservation_id": "cr-0123456789abcdef0"}
    assert not ClusterConfig.from_dict(with_group(capacity=reservation)).instance_groups[0].creates_placement_group
    assert not ClusterConfig.from_dict(with_group(capacity=block)).instance_groups[0].creates_placement_group
    named = ClusterConfig.from_dict(with_group(placement_group_name="mine")).instance_groups[0]
    assert not named.creates_placement_group


def test_efa_auto_is_off_for_types_without_efa() -> None:
    config = ClusterConfig.from_dict(with_group(instance_type="m7i.4xlarge"))
    assert not config.instance_groups[0].efa_enabled


def test_yaml_on_and_off_mean_the_words(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "name: t\nregion: us-east-1\navailability_zone: us-east-1a\n"
        "instance_groups:\n  - {name: a, instance_type: p5.48xlarge, count: 1, efa: on}\n"
        "  - {name: b, instance_type: p5.48xlarge, count: 1, efa: off}\n"
    )
    config = ClusterConfig.from_yaml(path)
    assert [g.efa for g in config.instance_groups] == ["on", "off"]
    assert [g.efa_enabled for g in config.instance_groups] == [True, False]


def test_lifecycle_script_is_relative_to_the_config_file() -> None:
    config = ClusterConfig.from_yaml(ROOT / "examples" / "existing-vpc.yaml")
    assert config.instance_groups[0].lifecycle_script == ROOT / "examples" / "scripts" / "on_create.sh"


@pytest.mark.parametrize(
    ("text", "words"),
    [("name: [unclosed", "not valid YAML"), ("- a\n- b\n", "a config is a mapping of keys")],
)
def test_unreadable_files_say_why(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=words) as info:
        ClusterConfig.from_yaml(path)
    assert str(path) in str(info.value)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="cannot read the file"):
        ClusterConfig.from_yaml("/nonexistent/cluster.yaml")


@pytest.mark.parametrize(
    ("data", "path", "words"),
    [
        (
            minimal_config(instance_groups=[group(instance_type="trn2.48xlarge")]),
            "instance_groups[0].instance_type",
            "not offered in us-east-1a",
        ),
        (
            with_group(placement_group=False),
            "instance_groups[0].placement_group",
            "EFA without a cluster placement group",
        ),
        (
            minimal_config(region="xx-nowhere-1", availability_zone="xx-nowhere-1a"),
            "region",
            "not in the instance-type catalog",
        ),
    ],
)
def test_warnings_do_not_stop_synthesis(data: dict[str, Any], path: str, words: str) -> None:
    warnings = [str(w) for w in ClusterConfig.from_dict(data).warnings()]
    assert any(w.startswith(f"{path}: ") and words in w for w in warnings), warnings


def test_valid_config_has_no_warnings() -> None:
    assert ClusterConfig.from_dict(minimal_config()).warnings() == []


def test_the_repair_caps_reach_the_function_and_a_cluster_cap_below_a_group_cap_warns() -> None:
    config = ClusterConfig.from_dict(
        minimal_config(auto_repair={"max_unhealthy_per_group": 20, "max_unhealthy_in_cluster": 10})
    )
    assert [(w.path, w.level) for w in config.warnings()] == [("auto_repair.max_unhealthy_in_cluster", "warning")]
    assert "the cluster's limit is the one that holds" in str(config.warnings()[0])
    assert errors_of(minimal_config(auto_repair={"max_unhealthy_per_group": 0})) == [
        "auto_repair.max_unhealthy_per_group: input should be greater than or equal to 1 (got 0)"
    ]
