"""Hostile configs: each ends in a field error (the field's path, the value, what is allowed), never a
traceback and never a template built from a wrong value (issue 9, section 1)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT, errors_of, minimal_config
from training_cluster import ClusterConfig, ConfigError, NodeBootstrap
from training_cluster.errors import show
from training_cluster.validation import check

SCRIPT = ROOT / "examples" / "scripts" / "on_create.sh"


def file_errors(tmp_path: Path, content: str | bytes) -> list[str]:
    path = tmp_path / "cluster.yaml"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    with pytest.raises(ConfigError) as info:
        ClusterConfig.from_yaml(path)
    return [str(f) for f in info.value.findings]


def group(**overrides: Any) -> dict[str, Any]:
    return {"name": "gpu", "instance_type": "p5.48xlarge", "count": 2, **overrides}


def with_group(**overrides: Any) -> dict[str, Any]:
    return minimal_config(instance_groups=[group(**overrides)])


def slurm(**orchestrator: Any) -> dict[str, Any]:
    return minimal_config(orchestrator=orchestrator)


def assert_error(messages: list[str], path: str, *words: str) -> None:
    assert any(m.startswith(f"{path}: ") and all(w in m for w in words) for m in messages), messages


MINIMAL_YAML = """\
name: t
region: us-east-1
availability_zone: us-east-1a
instance_groups:
  - name: gpu
    instance_type: p5.48xlarge
    count: 2
"""

# --- tracebacks that must be field errors ---------------------------------------------------


def test_a_file_that_is_not_utf8_is_a_problem_not_a_traceback(tmp_path: Path) -> None:
    (message,) = file_errors(tmp_path, MINIMAL_YAML.encode() + b"# caf\xe9\n")
    assert "not UTF-8 text: byte 0xe9 at offset" in message


@pytest.mark.parametrize(
    "text",
    [
        "[" * 5000 + "]" * 5000,
        "{a: " * 3000 + "1" + "}" * 3000,
        "\n" + "".join(" " * i + "b:\n" for i in range(1, 200)),
    ],
)
def test_deep_nesting_in_yaml_is_a_problem(tmp_path: Path, text: str) -> None:
    (message,) = file_errors(tmp_path, MINIMAL_YAML + "extra: " + text + "\n")
    assert "nested more than 50 levels deep" in message


def test_deep_nesting_from_code_is_a_problem() -> None:
    deep: Any = "x"
    for _ in range(5000):
        deep = [deep]
    (message,) = errors_of(minimal_config(name=deep))
    assert "nested more than 50 levels deep" in message


@pytest.mark.parametrize("capacity", [10**400, 10**30, 2**64, 2**31])
def test_astronomical_capacity_is_a_field_error(capacity: int) -> None:
    messages = errors_of(minimal_config(storage={"lustre": {"storage_capacity_gib": capacity}}))
    assert_error(messages, "storage.lustre.storage_capacity_gib", "must be between 1,200 and 157,272,000 GiB")
    assert all(len(m) < 300 for m in messages)


# Multiples of 2400 that FSx's 32-bit field takes, but more file servers than any subnet holds: they
# were blamed on network.compute_subnet_prefix_length (the servers' addresses), not on the capacity.
@pytest.mark.parametrize("capacity", [2_147_481_600, 240_000_000, 157_274_400])
def test_a_capacity_no_subnet_can_serve_is_an_error_of_the_capacity(capacity: int) -> None:
    messages = errors_of(minimal_config(storage={"lustre": {"storage_capacity_gib": capacity}}))
    assert messages == [
        f"storage.lustre.storage_capacity_gib: must be between 1,200 and 157,272,000 GiB (got {capacity})"
    ]


def test_the_largest_capacity_allowed_is_the_field_s_only_problem() -> None:
    """At the bound the capacity is allowed; a /16 compute subnet holds its file servers."""
    data = minimal_config(
        storage={"lustre": {"storage_capacity_gib": 157_272_000}}, network={"compute_subnet_prefix_length": 16}
    )
    messages = errors_of(data)  # the fleet and the servers together overflow even a /16: blamed on the subnet
    assert not any(m.startswith("storage.lustre.storage_capacity_gib:") for m in messages), messages
    data["storage"]["lustre"]["storage_capacity_gib"] = 157_274_400
    assert_error(errors_of(data), "storage.lustre.storage_capacity_gib", "157,272,000 GiB (got 157274400)")


def test_a_number_too_long_for_python_is_a_field_error(tmp_path: Path) -> None:
    (message,) = file_errors(tmp_path, MINIMAL_YAML.replace("count: 2", "count: " + "9" * 5000))
    assert message == (
        "instance_groups[0].count: must be between 1 and 2000 instances (got a number of about 5000 digits)"
    )
    (message,) = file_errors(tmp_path, MINIMAL_YAML.replace("count: 2", "count: -" + "9" * 5000))
    assert message.startswith("instance_groups[0].count: must be between 1 and 2000 instances (got ")


def special_files(tmp_path: Path) -> dict[str, str]:
    links = {}
    for name, target in (("mem", "/proc/self/mem"), ("zero", "/dev/zero"), ("kernel", "/sys/kernel/profiling")):
        link = tmp_path / f"{name}.sh"
        link.symlink_to(target)
        links[str(link)] = "not one of the system's special files"
    hop = tmp_path / "hop"
    hop.symlink_to("/proc/self")
    links[str(hop / "mem")] = "not one of the system's special files"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    big = tmp_path / "big.sh"
    big.write_bytes(b"#" * (1024 * 1024 + 1))
    unreadable = tmp_path / "secret.sh"
    unreadable.write_text("echo\n")
    unreadable.chmod(0)
    return {
        "/proc/self/mem": "not one of the system's special files",
        "/proc/self/status": "not one of the system's special files",
        "/dev/zero": "not one of the system's special files",
        "//proc/self/mem": "not one of the system's special files",
        "/tmp/../proc/self/mem": "not one of the system's special files",
        "/./dev/zero": "not one of the system's special files",
        **links,
        str(fifo): "not a regular file",
        str(tmp_path): "not a regular file",
        str(big): "larger than 1,048,576 bytes",
        "/tmp/a\0b": "the path has a NUL character",
        **({} if os.geteuid() == 0 else {str(unreadable): "Permission denied"}),
    }


def test_lifecycle_script_must_be_a_regular_readable_file_of_reasonable_size(tmp_path: Path) -> None:
    for script, words in special_files(tmp_path).items():
        messages = errors_of(with_group(lifecycle_script=script))
        assert_error(messages, "instance_groups[0].lifecycle_script", words)
    assert ClusterConfig.from_dict(with_group(lifecycle_script=str(SCRIPT))).instance_groups[0].lifecycle_script
    mine = tmp_path / "mine.sh"
    mine.symlink_to(SCRIPT)  # a link to a regular file of yours is fine
    assert ClusterConfig.from_dict(with_group(lifecycle_script=str(mine))).instance_groups[0].lifecycle_script == mine


def test_a_link_to_a_special_file_is_named_with_where_it_leads(tmp_path: Path) -> None:
    link = tmp_path / "script.sh"
    link.symlink_to("/proc/self/mem")
    (message,) = errors_of(with_group(lifecycle_script=str(link)))
    assert message.startswith("instance_groups[0].lifecycle_script: must be a regular file of yours, not one of")
    assert f"(got {show(str(link))}, which is '/proc/" in message


def test_values_the_node_bootstrap_refuses_are_field_errors() -> None:
    """The bootstrap's own rule (no quotes or newlines in a setting), asked by the config check for
    every config value that becomes a node setting: a config built in code without the field
    patterns still gets the field's path, not NodeBootstrap.set's bare ValueError."""
    valid = ClusterConfig.from_dict(minimal_config(orchestrator={"users": {"alice": 2001}}))
    hostile = valid.model_copy(update={"name": "demo'; reboot #"})
    messages = [str(f) for f in check(hostile)]
    assert_error(messages, "name", "must not contain quotes, newlines or NUL characters", '(got "demo\'; reboot #")')
    with pytest.raises(ValueError, match="must not contain quotes, newlines or NUL characters"):
        NodeBootstrap().set("CLUSTER_NAME", "demo'; reboot #")


# --- templates built from a wrong value -----------------------------------------------------


def test_duplicate_keys_name_the_key_and_both_lines(tmp_path: Path) -> None:
    text = MINIMAL_YAML + "    count: 200\nregion: us-west-2\n"
    messages = file_errors(tmp_path, text)
    assert messages == [
        "key 'region' appears twice in one mapping, on lines 2 and 9; keep one",
        "key 'count' appears twice in one mapping, on lines 7 and 8; keep one",
    ]
    assert file_errors(tmp_path, "{a: 1, a: 2}") == ["key 'a' appears twice in one mapping, on lines 1 and 1; keep one"]


ALIAS_BOMB = """\
a: &a [x, x, x, x, x, x, x, x, x, x]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]
"""


def test_an_alias_bomb_is_rejected_fast(tmp_path: Path) -> None:
    assert len(ALIAS_BOMB) < 600  # 10^8 references once expanded
    started = time.perf_counter()
    (message,) = file_errors(tmp_path, MINIMAL_YAML + ALIAS_BOMB)
    assert time.perf_counter() - started < 2
    assert "stands for more than 100,000 values once its aliases are followed" in message


def test_an_alias_bomb_from_code_is_rejected_fast() -> None:
    bomb: Any = ["x"] * 10
    for _ in range(7):
        bomb = [bomb] * 10
    started = time.perf_counter()
    (message,) = errors_of(minimal_config(instance_groups=bomb))
    assert time.perf_counter() - started < 2
    assert "more than 100,000 values" in message


def test_a_recursive_alias_is_a_problem(tmp_path: Path) -> None:
    (message,) = file_errors(tmp_path, MINIMAL_YAML + "x: &x [*x]\n")
    assert "recursive anchors are not allowed" in message


def test_shown_values_are_bounded_in_length_and_time() -> None:
    huge: Any = list(range(10**6))
    started = time.perf_counter()
    for value in (huge, [huge] * 1000, {"k" * 10**6: huge}, 10**5000, "x" * 10**7):
        assert len(show(value)) <= 80
    assert time.perf_counter() - started < 0.5
    assert show(10**5000) == "a number of about 5000 digits"


def test_an_empty_orchestrator_section_is_slurm_with_its_defaults(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(MINIMAL_YAML + "storage:\n  lustre: {}\norchestrator:\n")
    config = ClusterConfig.from_yaml(path)
    assert config.orchestrator.enabled and config.orchestrator.login_nodes == 1
    assert config.instance_groups[0].os == "ubuntu-24.04"


@pytest.mark.parametrize(
    ("yaml_line", "path"),
    [
        ("count: yes", "instance_groups[0].count"),
        ("count: true", "instance_groups[0].count"),
        ('count: "1_200"', "instance_groups[0].count"),
        ('count: "2"', "instance_groups[0].count"),
        ("count: 2.0", "instance_groups[0].count"),
        ("root_volume_gib: on", "instance_groups[0].root_volume_gib"),
        ("placement_group: yes please", "instance_groups[0].placement_group"),
    ],
)
def test_numbers_and_booleans_must_be_written_as_such(tmp_path: Path, yaml_line: str, path: str) -> None:
    text = MINIMAL_YAML.replace(
        "count: 2", yaml_line if yaml_line.startswith("count") else f"count: 2\n    {yaml_line}"
    )
    assert_error(file_errors(tmp_path, text), path, "got ")


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("orchestrator", "login_nodes", True),
        ("orchestrator", "login_nodes", "1"),
        ("auto_repair", "max_parallel_replacements", 1.0),
        ("auto_repair", "check_interval_seconds", "30"),
        ("auto_repair", "dry_run", "false"),
        ("observability", "scrape_interval_seconds", False),
        ("network", "compute_subnet_prefix_length", "17"),
        ("network", "flow_logs", 1),
    ],
)
def test_strict_numbers_and_booleans_in_every_section(section: str, key: str, value: Any) -> None:
    data = minimal_config(**{section: {key: value}})
    assert_error(errors_of(data), f"{section}.{key}", f"(got {show(value)})")


def test_strict_numbers_inside_mappings_and_lustre() -> None:
    assert_error(errors_of(slurm(users={"alice": "2001"})), "orchestrator.users.alice", "valid integer")
    lustre = {"storage_capacity_gib": "1200", "throughput_mbps_per_tib": True, "metadata_iops": 1500.0}
    messages = errors_of(minimal_config(storage={"lustre": lustre}))
    for key in lustre:
        assert_error(messages, f"storage.lustre.{key}", "got ")


@pytest.mark.parametrize(
    ("data", "path", "words"),
    [
        (minimal_config(region="us-east-\u0661", availability_zone="us-east-\u0661a"), "region", "such as us-east-1"),
        (minimal_config(availability_zone="us-east-1a\n"), "availability_zone", "such as us-east-1a"),
        (minimal_config(auto_repair={"policy": {"xid": {"\u0667\u0669": "replace"}}}), "auto_repair.policy.xid", "79"),
        (minimal_config(auto_repair={"policy": {"xid": {"079": "replace"}}}), "auto_repair.policy.xid", "no leading"),
        (minimal_config(auto_repair={"policy": {"xid": {"1000": "replace"}}}), "auto_repair.policy.xid", "0 to 999"),
        (
            minimal_config(auto_repair={"policy": {"xid": {79: "replace", "79": "observe"}}}),
            "auto_repair.policy.xid",
            "key '79' is given twice, as a number and as a string",
        ),
        (
            minimal_config(storage={"lustre": {"kms_key_arn": "arn:aws:kms:us-east-1:\u0661" * 1}}),
            "storage.lustre.kms_key_arn",
            "KMS key ARN",
        ),
        (
            minimal_config(auto_repair={"notification_email": "ops@ex\u0430mple.com"}),
            "auto_repair.notification_email",
            "e-mail",
        ),
    ],
)
def test_patterns_are_ascii_only(data: dict[str, Any], path: str, words: str) -> None:
    assert_error(errors_of(data), path, words)


def test_xid_number_keys_are_taken_as_their_number() -> None:
    config = ClusterConfig.from_dict(minimal_config(auto_repair={"policy": {"xid": {79: "replace", 0: "observe"}}}))
    assert config.auto_repair.policy.xid == {"79": "replace", "0": "observe"}


@pytest.mark.parametrize(
    ("mount_path", "words"),
    [
        ("/fsx/../etc", "must be a normalized absolute path (no '.', '..', '//' or trailing '/'): '/etc'"),
        ("/fsx/", "normalized absolute path"),
        ("//fsx", "normalized absolute path"),
        ("/fsx/./data", "'/fsx/data'"),
        ("/", "must be an absolute path such as /fsx"),
        ("/etc", "is the system folder /etc"),
        ("/usr/local", "is under the system folder /usr"),
        ("/var/lib/fsx", "under the system folder /var"),
        ("/proc/fs", "under the system folder /proc"),
        ("/home", "is the system folder /home"),
        ("/opt/training-cluster", "is /opt/training-cluster, which the nodes need"),
        ("/opt/training-cluster/bootstrap.d", "is under /opt/training-cluster"),
        ("/opt", "holds /opt/training-cluster"),
        ("/opt/dlami", "is /opt/dlami"),
        ("/mnt", "where the system mounts other disks"),
    ],
)
def test_mount_path_is_a_normalized_folder_of_its_own(mount_path: str, words: str) -> None:
    assert_error(
        errors_of(minimal_config(storage={"lustre": {"mount_path": mount_path}})), "storage.lustre.mount_path", words
    )


@pytest.mark.parametrize("mount_path", ["/fsx", "/mnt/fsx", "/lustre/data", "/opt/fsx", "/data"])
def test_ordinary_mount_paths_are_allowed(mount_path: str) -> None:
    lustre = ClusterConfig.from_dict(minimal_config(storage={"lustre": {"mount_path": mount_path}})).storage.lustre
    assert lustre is not None and lustre.mount_path == mount_path


def test_upper_bounds() -> None:
    assert_error(
        errors_of(with_group(count=2001)), "instance_groups[0].count", "must be between 1 and 2000 instances (got 2001)"
    )
    assert_error(
        errors_of(minimal_config(instance_groups=[group(name=f"g{i}", count=2000) for i in range(30)])),
        "network.compute_subnet_prefix_length",
        "more than a /16 subnet holds",
    )
    big = ClusterConfig.from_dict(minimal_config(storage={"lustre": {"storage_capacity_gib": 240000}}))
    (warning,) = big.warnings()
    assert str(warning).startswith("storage.lustre.storage_capacity_gib: 240000 GiB is above FSx for Lustre's default")


@pytest.mark.parametrize("name", ["key\nname", "it's", 'a"b', "$(reboot)", "`id`", " lead", "trail ", "k" * 256, ""])
def test_ec2_names_follow_ec2_rules_and_are_safe(name: str) -> None:
    assert_error(errors_of(slurm(ssh_key_name=name)), "orchestrator.ssh_key_name", "got ")
    assert_error(errors_of(with_group(placement_group_name=name)), "instance_groups[0].placement_group_name", "got ")


def test_ordinary_ec2_names_are_allowed() -> None:
    for name in ("ops", "my key.pem", "team/ops@example_1", "a100-reserved-pg"):
        ClusterConfig.from_dict(slurm(ssh_key_name=name))
        ClusterConfig.from_dict(with_group(placement_group_name=name))


@pytest.mark.parametrize(
    ("cidr", "words"),
    [
        (
            "169.254.0.0/16",
            "overlaps 169.254.0.0/16 (link-local, where the instance metadata service lives), which no VPC",
        ),
        ("127.0.0.0/16", "overlaps 127.0.0.0/8 (loopback)"),
        ("0.0.0.0/16", "overlaps 0.0.0.0/8"),
        ("224.0.0.0/16", "overlaps 224.0.0.0/4 (multicast)"),
        ("239.255.0.0/16", "overlaps 224.0.0.0/4"),
        ("240.0.0.0/16", "overlaps 240.0.0.0/4"),
        ("255.255.255.240/28", "overlaps 240.0.0.0/4"),
        ("10.0.0.0/8", "between /16 and /28"),
        ("10.0.0.0/15", "between /16 and /28"),
        ("10.0.0.0/29", "between /16 and /28"),
        ("10.0.0.1/16", "not an IPv4 CIDR block"),
    ],
)
def test_vpc_cidr_aws_refuses_is_an_error(cidr: str, words: str) -> None:
    assert_error(errors_of(minimal_config(network={"vpc_cidr": cidr})), "network.vpc_cidr", words)


def cidr_warnings(network: dict[str, Any]) -> list[str]:
    return [str(f) for f in ClusterConfig.from_dict(minimal_config(network=network)).warnings()]


@pytest.mark.parametrize(
    ("cidr", "words"),
    [
        ("8.8.0.0/16", "8.8.0.0/16 is publicly routable (outside RFC 1918 and 100.64.0.0/10): AWS allows it"),
        ("203.0.0.0/16", "publicly routable"),
        ("172.17.0.0/16", "overlaps 172.17.0.0/16, the range of Docker's default bridge (docker0) on the nodes"),
    ],
)
def test_vpc_cidr_aws_allows_but_is_probably_not_meant_is_a_warning(cidr: str, words: str) -> None:
    """AWS lets a VPC use a publicly routable range, and 172.17.0.0/16: the config goes on, warned."""
    messages = cidr_warnings({"vpc_cidr": cidr})
    assert_error(messages, "network.vpc_cidr", words)


def test_usual_vpc_ranges_are_allowed_without_a_warning() -> None:
    for cidr in ("10.1.0.0/16", "172.31.0.0/16", "172.16.0.0/16", "172.18.0.0/16", "192.168.0.0/16", "100.64.0.0/16"):
        assert not any(m.startswith("network.") for m in cidr_warnings({"vpc_cidr": cidr})), cidr


def test_subnet_cidr_follows_the_same_rules() -> None:
    own = {"vpc_id": "vpc-0123456789abcdef0", "subnet_id": "subnet-0123456789abcdef0"}
    assert_error(errors_of(minimal_config(network={**own, "subnet_cidr": "169.254.0.0/20"})), "network.subnet_cidr",
                 "overlaps 169.254.0.0/16")  # fmt: skip
    assert_error(errors_of(minimal_config(network={**own, "subnet_cidr": "10.0.0.0/30"})), "network.subnet_cidr",
                 "between /16 and /28")  # fmt: skip
    assert_error(cidr_warnings({**own, "subnet_cidr": "172.17.0.0/20"}), "network.subnet_cidr", "Docker's default")
    assert_error(cidr_warnings({**own, "subnet_cidr": "8.8.8.0/24"}), "network.subnet_cidr", "publicly routable")
    assert not cidr_warnings({**own, "subnet_cidr": "10.20.0.0/20"})


def test_duplicate_database_subnets() -> None:
    data = minimal_config(
        network={
            "vpc_id": "vpc-0123456789abcdef0",
            "subnet_id": "subnet-0123456789abcdef0",
            "database_subnet_ids": ["subnet-0aaaaaaaaaaaaaaa1", "subnet-0aaaaaaaaaaaaaaa1"],
        },
        orchestrator={"accounting": "rds"},
    )
    assert_error(errors_of(data), "network.database_subnet_ids", "subnet-0aaaaaaaaaaaaaaa1 is listed 2 times")


@pytest.mark.parametrize(
    "user",
    ["sudo", "docker", "tss", "adm", "lxd", "ubuntu", "ec2-user", "ssm-user", "systemd-coredump", "nogroup", "users",
     "staff", "wheel", "video", "render", "munge", "slurm", "mysql", "nvidia-persistenced", "_chrony"],
)  # fmt: skip
def test_cluster_users_cannot_take_image_users_or_groups(user: str) -> None:
    assert_error(errors_of(slurm(users={user: 2001})), f"orchestrator.users.{user}", "a user or group the node images")


def test_a_too_small_vpc_is_blamed_on_the_vpc_with_the_smallest_that_fits() -> None:
    (message,) = errors_of(minimal_config(network={"vpc_cidr": "10.0.0.0/28"}))
    assert message == (
        "network.vpc_cidr: 10.0.0.0/28 is too small for a public /24 subnet and the /17 compute subnet; "
        "the smallest VPC that holds them is a /16, such as 10.0.0.0/16"
    )
    (message,) = errors_of(minimal_config(network={"vpc_cidr": "10.0.0.0/24", "compute_subnet_prefix_length": 24}))
    assert message.startswith("network.vpc_cidr: 10.0.0.0/24 is too small") and "is a /23" in message
    (message,) = errors_of(minimal_config(network={"vpc_cidr": "10.0.0.0/20", "compute_subnet_prefix_length": 20}))
    assert message.startswith("network.compute_subnet_prefix_length: /20 does not fit") and "/21 to /26" in message


# --- YAML 1.1's other ways to write an integer ----------------------------------------------

YAML_11_INTEGERS = [
    ("010", "octal", "8"),
    ("-010", "octal", "-8"),
    ("00", "octal", "0"),
    ("0x4F", "hexadecimal", "79"),
    ("0b11", "binary", "3"),
    ("1_3", "with _ between its digits", "13"),
    ("1:30", "base 60", "90"),
]


@pytest.mark.parametrize(("written", "kind", "value"), YAML_11_INTEGERS, ids=[w for w, _, _ in YAML_11_INTEGERS])
def test_yaml_11_integer_forms_are_refused_as_a_number(tmp_path: Path, written: str, kind: str, value: str) -> None:
    (message,) = file_errors(tmp_path, MINIMAL_YAML.replace("count: 2", f"count: {written}"))
    assert message == (
        f"instance_groups[0].count: {written} (line 7) is a YAML 1.1 {kind} number, which YAML reads as {value}; "
        "write the number in plain decimal digits, or quote it if you mean text"
    )


@pytest.mark.parametrize(("written", "kind", "value"), YAML_11_INTEGERS, ids=[w for w, _, _ in YAML_11_INTEGERS])
def test_yaml_11_integer_forms_are_refused_as_an_xid(tmp_path: Path, written: str, kind: str, value: str) -> None:
    text = MINIMAL_YAML + f"auto_repair:\n  policy:\n    xid:\n      {written}: replace\n"
    (message,) = file_errors(tmp_path, text)
    assert message == (
        f"auto_repair.policy.xid: key {written} (line 11) is a YAML 1.1 {kind} number, which YAML reads as "
        f"{value}; write the number in plain decimal digits, or quote it if you mean text"
    )


def test_plain_decimal_and_quoted_forms_are_unaffected(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    text = MINIMAL_YAML.replace("count: 2", "count: 10") + (
        'storage:\n  lustre: {}\norchestrator:\n  ssh_key_name: "1:30"\n  login_nodes: 0\n'
        'auto_repair:\n  policy:\n    xid: {79: replace, "13": observe, 0: observe}\n'
    )
    path.write_text(text)
    config = ClusterConfig.from_yaml(path)
    assert config.instance_groups[0].count == 10 and config.orchestrator.ssh_key_name == "1:30"
    assert config.auto_repair.policy.xid == {"79": "replace", "13": "observe", "0": "observe"}
    # quoted, a leading zero is text: the XID's own rule, not YAML's octal
    assert_error(
        file_errors(tmp_path, MINIMAL_YAML + 'auto_repair: {policy: {xid: {"017": replace}}}\n'),
        "auto_repair.policy.xid",
        "no leading zeros",
    )


# --- YAML merge keys ------------------------------------------------------------------------

MERGED = """\
name: t
region: us-east-1
availability_zone: us-east-1a
instance_groups:
  - &gpu
    name: gpu
    instance_type: p5.48xlarge
    count: 2
    root_volume_gib: 200
  - <<: *gpu
    name: more
    count: 4
"""


def test_merge_keys_merge_and_the_mapping_s_own_keys_win(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(MERGED)
    more = ClusterConfig.from_yaml(path).instance_groups[1]
    assert (more.name, more.instance_type, more.count, more.root_volume_gib) == ("more", "p5.48xlarge", 4, 200)


def test_merge_keys_from_several_anchors(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(MERGED + "  - <<: [{name: third, count: 3}, *gpu]\n    count: 5\n")
    third = ClusterConfig.from_yaml(path).instance_groups[2]
    # the first mapping listed wins over the later ones; the mapping's own keys over both
    assert (third.name, third.count, third.root_volume_gib) == ("third", 5, 200)


def test_a_key_written_twice_beside_a_merge_is_still_refused(tmp_path: Path) -> None:
    messages = file_errors(tmp_path, MERGED + "    count: 8\n")
    assert messages == ["key 'count' appears twice in one mapping, on lines 12 and 13; keep one"]


# --- empty sections -------------------------------------------------------------------------


def test_an_empty_section_is_that_section_with_its_defaults(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    text = MINIMAL_YAML.replace("count: 2", "count: 2\n    capacity:")
    path.write_text(text + "network:\nstorage:\n  lustre:\nauto_repair:\n  policy:\nobservability:\n")
    config = ClusterConfig.from_yaml(path)
    assert config.network.vpc_cidr == "10.0.0.0/16" and config.instance_groups[0].capacity.type == "on-demand"
    assert config.auto_repair.enabled and config.auto_repair.policy.xid == {}
    assert config.observability.prometheus and config.observability.grafana
    # lustre written with nothing after it is a file system with its defaults, as lustre: {} is
    assert config.storage.lustre is not None and config.storage.lustre.storage_capacity_gib == 1200
    assert config.storage.lustre.deployment_type == "PERSISTENT_2"


def test_an_empty_storage_section_has_no_file_system(tmp_path: Path) -> None:
    """No file system is spelled by leaving lustre out (storage's default), written empty or not."""
    path = tmp_path / "cluster.yaml"
    path.write_text(MINIMAL_YAML + "storage:\n")
    assert ClusterConfig.from_yaml(path).storage.lustre is None
    assert ClusterConfig.from_dict(minimal_config(storage={"lustre": None})).storage.lustre is not None


# --- messages -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("orchestrator", "path", "words"),
    [
        ({"users": {"Alice": 2001}}, "orchestrator.users", "key 'Alice' must be a user name"),
        ({"users": {"9lives": 2001}}, "orchestrator.users", "starting with a lower case letter or _"),
        ({"partitions": {"Big": ["gpu"]}}, "orchestrator.partitions", "key 'Big' must be a Slurm partition name"),
    ],
)
def test_user_and_partition_names_are_explained_in_words(orchestrator: dict[str, Any], path: str, words: str) -> None:
    (message,) = errors_of(slurm(**orchestrator))
    assert_error([message], path, words, "lower case letters, digits, _ and -")
    assert "^[" not in message and "{0,31}" not in message


@pytest.mark.parametrize(
    ("line", "key"),
    [("null: 1", "null"), ("~: 1", "null"), ("5: x", "5"), ("true: 1", "true"), ("1.5: x", "1.5")],
)
def test_a_top_level_key_that_yaml_reads_as_a_value_is_named(tmp_path: Path, line: str, key: str) -> None:
    (message,) = file_errors(tmp_path, MINIMAL_YAML + line + "\n")
    assert message.startswith(f"key {key} is not a name: YAML reads an unquoted ")
    assert "allowed keys here: name, region, availability_zone, network, instance_groups" in message


def test_a_section_key_that_yaml_reads_as_a_value_is_named(tmp_path: Path) -> None:
    (message,) = file_errors(tmp_path, MINIMAL_YAML + "network:\n  5: x\n")
    assert message.startswith("network: key 5 is not a name: ")
    assert "allowed keys here: vpc_cidr, compute_subnet_prefix_length" in message


# Values that were taken and then silently ignored or failed only at deploy time.


@pytest.mark.parametrize(
    ("orchestrator", "field"),
    [
        ({"type": "none", "users": {"alice": 2001}}, "orchestrator.users"),
        ({"type": "none", "partitions": {"train": ["gpu"]}}, "orchestrator.partitions"),
        ({"type": "none", "login_nodes": 2}, "orchestrator.login_nodes"),
    ],
)
def test_slurm_settings_without_slurm_are_errors(orchestrator: dict[str, Any], field: str) -> None:
    assert_error(errors_of(minimal_config(orchestrator=orchestrator)), field, "only used with orchestrator.type: slurm")


def test_no_orchestrator_alone_is_fine() -> None:
    assert ClusterConfig.from_dict(minimal_config(orchestrator={"type": "none"})).orchestrator.enabled is False


def test_a_group_listed_twice_in_a_partition_is_an_error() -> None:
    messages = errors_of(minimal_config(orchestrator={"partitions": {"train": ["gpu", "gpu"]}}))
    assert_error(messages, "orchestrator.partitions.train", "instance group 'gpu' is listed 2 times")


def test_a_key_of_another_region_is_an_error() -> None:
    key = "arn:aws:kms:eu-west-1:123456789012:key/0123abcd-0123-4567-89ab-0123456789ab"
    messages = errors_of(minimal_config(storage={"lustre": {"kms_key_arn": key}}))
    assert_error(messages, "storage.lustre.kms_key_arn", "the key is in eu-west-1, the cluster in us-east-1")
    same = key.replace("eu-west-1", "us-east-1")
    assert ClusterConfig.from_dict(minimal_config(storage={"lustre": {"kms_key_arn": same}})).storage.lustre


def test_a_bucket_named_like_an_ip_address_is_an_error() -> None:
    messages = errors_of(minimal_config(storage={"lustre": {"s3_import_path": "s3://192.168.10.5/data"}}))
    assert_error(messages, "storage.lustre.s3_import_path", "never formatted as an IP address")
    fine = minimal_config(storage={"lustre": {"s3_import_path": "s3://192.168.10.5.data/x"}})
    assert ClusterConfig.from_dict(fine).storage.lustre


def test_database_subnets_of_yours_in_a_new_vpc_are_an_error() -> None:
    """They would land in the new VPC's subnet group and fail at deploy."""
    subnets = ["subnet-0123456789abcdef1", "subnet-0123456789abcdef0"]
    data = minimal_config(orchestrator={"accounting": "rds"}, network={"database_subnet_ids": subnets})
    assert_error(errors_of(data), "network.database_subnet_ids", "only with your own VPC (network.vpc_id)")
    assert ClusterConfig.from_dict(minimal_config(orchestrator={"accounting": "rds"})).orchestrator.accounting == "rds"
