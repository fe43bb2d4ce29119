"""node/health/health_agent.py on recorded nvidia-smi, dcgmi, kernel-log and fi_info output and sysfs trees."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import health_agent
from conftest import NODE, ROOT
from health_agent import Agent, Failure, Reporter, Settings
from stand_ins import script, stand_ins
from training_cluster._staging import stage

DATA = Path(__file__).parent / "data"


class Recorded:
    """Answers commands with recorded output; records what was asked."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.calls: list[list[str]] = []

    def __call__(self, command: Sequence[str], timeout: float) -> tuple[int, str]:
        self.calls.append(list(command))
        for prefix, answer in self.answers.items():
            if " ".join(command).startswith(prefix):
                if isinstance(answer, BaseException):
                    raise answer
                code, name = answer if isinstance(answer, tuple) else (0, answer)
                return code, (DATA / name).read_text() if name else ""
        return 127, ""  # not installed


HEALTHY = {
    "nvidia-smi --query-gpu": "nvidia-smi-8-gpus.txt",
    "journalctl": "journal-quiet.txt",
    "dcgmi health": "dcgmi-health-healthy.txt",
    "nvidia-smi --query-remapped-rows": (0, ""),
    "mountpoint": (0, ""),
    "stat": (0, ""),
}


@pytest.fixture
def node(tmp_path: Path) -> Settings:
    infiniband = tmp_path / "infiniband"
    for i in range(32):
        (infiniband / f"rdmap{i}s27").mkdir(parents=True)
    return Settings(
        cluster="demo",
        instance_group="gpu",
        expected_gpus=8,
        expected_efa_devices=32,
        lustre_mount_path="/fsx",
        transient_xids=["13", "31", "43", "63", "92", "94"],
        sysfs_infiniband=str(infiniband),
        dev_dir=str(tmp_path / "dev"),
        state_dir=str(tmp_path / "state"),
        drain_hook=str(tmp_path / "drain"),
        resume_hook=str(tmp_path / "resume"),
        disk_used_percent_limit=100.0,
        textfile_dir=str(tmp_path / "textfile"),
    )


def checks(failures: list[Failure]) -> list[tuple[str, str | None]]:
    return [(f.check, f.code) for f in failures]


def test_a_healthy_p5_reports_nothing(node: Settings) -> None:
    assert Agent(node, Recorded(HEALTHY)).check() == []


def test_missing_gpu(node: Settings) -> None:
    failures = Agent(node, Recorded({**HEALTHY, "nvidia-smi --query-gpu": "nvidia-smi-7-gpus.txt"})).check()
    assert [(f.check, f.message) for f in failures] == [("gpu_count", "7 of 8 GPUs visible")]


def test_nvidia_smi_failing_counts_as_no_gpus(node: Settings) -> None:
    failures = Agent(node, Recorded({**HEALTHY, "nvidia-smi --query-gpu": (9, "")})).check()
    assert [(f.check, f.message) for f in failures] == [("gpu_count", "nvidia-smi exited with 9")]


def test_xids_hardware_held_application_reported_once(node: Settings) -> None:
    runner = Recorded({**HEALTHY, "journalctl": "journal-xid.txt"})
    agent = Agent(node, runner)
    first = agent.check()
    assert checks(first) == [("xid", "79"), ("xid", "13")]
    assert "GPU 0000:a8:00" in first[0].message and "fallen off the bus" in first[0].message
    runner.answers["journalctl"] = "journal-quiet.txt"
    second = agent.check()
    assert checks(second) == [("xid", "79")]  # held for this boot; the application error is not
    journal_calls = [c for c in runner.calls if c[0] == "journalctl"]
    assert "-b" in journal_calls[0]
    assert journal_calls[1][-2:] == ["--after-cursor", "s=7f2a1c;i=1c2f;b=4c5d;m=91a2;t=5f3e;x=aa11"]


def test_dcgm_failure_names_the_errors(node: Settings) -> None:
    (failure,) = Agent(node, Recorded({**HEALTHY, "dcgmi health": "dcgmi-health-failure.txt"})).check()
    assert failure.check == "dcgm_health"
    assert "Detected more than 8 PCIe replays per minute" in failure.message
    assert "Volatile DBEs detected for GPU 3" in failure.message


def test_no_dcgm_on_the_ami_is_not_a_failure(node: Settings) -> None:
    answers = {k: v for k, v in HEALTHY.items() if k != "dcgmi health"}
    assert Agent(node, Recorded(answers)).check() == []


def test_row_remaps(node: Settings) -> None:
    failures = Agent(
        node, Recorded({**HEALTHY, "nvidia-smi --query-remapped-rows": "nvidia-smi-remapped-rows.txt"})
    ).check()
    assert [(f.check, f.message) for f in failures] == [
        ("row_remap_pending", "GPU 00000000:64:00.0: a row remap waits for a GPU reset"),
        ("row_remap_failure", "GPU 00000000:86:00.0: row remapping failed"),
    ]


def test_missing_efa_devices(node: Settings) -> None:
    for device in list(Path(node.sysfs_infiniband).iterdir())[:2]:
        device.rmdir()
    (failure,) = Agent(node, Recorded(HEALTHY)).check()
    assert (failure.check, failure.message.split(" in ")[0]) == ("efa_count", "30 of 32 EFA devices")


def test_neuron_devices(node: Settings, tmp_path: Path) -> None:
    trn = Settings(**{**node.__dict__, "expected_gpus": 0, "expected_neuron_devices": 16})
    dev = Path(trn.dev_dir)
    dev.mkdir()
    for i in range(15):
        (dev / f"neuron{i}").touch()
    (dev / "neuron_monitor").touch()
    (failure,) = Agent(trn, Recorded(HEALTHY)).check()
    assert (failure.check, failure.message) == ("neuron_count", "15 of 16 Neuron devices")


def test_lustre_not_mounted_or_hanging(node: Settings) -> None:
    (unmounted,) = Agent(node, Recorded({**HEALTHY, "mountpoint": (1, "")})).check()
    assert (unmounted.check, unmounted.message) == ("lustre", "/fsx is not mounted")
    hang = subprocess.TimeoutExpired(["stat", "-t", "/fsx"], 10)
    (hung,) = Agent(node, Recorded({**HEALTHY, "stat": hang})).check()
    assert (hung.check, hung.message) == ("lustre", "stat -t /fsx did not answer within 10s")


def test_disk_nearly_full(node: Settings) -> None:
    full = Settings(**{**node.__dict__, "disk_used_percent_limit": 0.0})
    (failure,) = Agent(full, Recorded(HEALTHY)).check()
    assert failure.check == "disk" and failure.message.endswith("% full")


def test_a_broken_check_does_not_stop_the_others(node: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    agent = Agent(node, Recorded({**HEALTHY, "nvidia-smi --query-gpu": "nvidia-smi-7-gpus.txt"}))
    monkeypatch.setattr(agent, "check_row_remap", lambda: 1 / 0)
    assert checks(agent.check()) == [("gpu_count", None), ("agent", None)]


def test_reports_only_changes_and_drains_first(node: Settings) -> None:
    hook = script(Path(node.drain_hook), "")
    runner = Recorded({**HEALTHY, "nvidia-smi --query-gpu": "nvidia-smi-7-gpus.txt"})
    agent = Agent(node, runner)
    failures = agent.check()
    assert agent.changed(failures) and not agent.changed(agent.check())
    agent.tell_orchestrator(failures)
    assert runner.calls[-1] == [str(hook), "7 of 8 GPUs visible"]
    runner.answers["nvidia-smi --query-gpu"] = "nvidia-smi-8-gpus.txt"
    healthy = agent.check()
    assert agent.changed(healthy)  # back to healthy is a change too
    resume = script(Path(node.resume_hook), "")
    agent.tell_orchestrator(healthy)
    assert runner.calls[-1] == [str(resume)]  # back in service


def test_an_application_xid_does_not_drain_the_node(node: Settings) -> None:
    hook = script(Path(node.drain_hook), "")
    runner = Recorded({**HEALTHY, "journalctl": "journal-xid.txt"})  # XID 79 (hardware) and 13 (application)
    agent = Agent(node, runner)
    failures = agent.check()
    assert checks(agent.blocking(failures)) == [("xid", "79")]
    agent.tell_orchestrator(failures)
    assert runner.calls[-1][0] == str(hook) and "13" not in runner.calls[-1][1] and "fallen off" in runner.calls[-1][1]
    calls = len(runner.calls)
    agent.tell_orchestrator([f for f in failures if f.code == "13"])  # an application error alone: no drain
    assert len(runner.calls) == calls


def test_event_and_metric_through_the_aws_cli(node: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health_agent, "instance_identity", lambda: ("i-0abc", "us-east-1"))
    monkeypatch.setattr(health_agent, "boot_id", lambda: "boot-7")
    sent: list[Any] = []

    def aws(command: Sequence[str], timeout: float) -> tuple[int, str]:
        if "put-events" in command:
            sent.append(json.loads(Path(command[-1].removeprefix("file://")).read_text()))
        else:
            sent.append(list(command))
        return 0, ""

    reporter = Reporter(node, aws)
    reporter.event([Failure("xid", "GPU 0000:a8:00: fallen off the bus", code="79")])
    reporter.metric(False)
    (entry,) = sent[0]
    assert (entry["Source"], entry["DetailType"]) == ("training-cluster.health", "Node Health Changed")
    assert json.loads(entry["Detail"]) == {
        "cluster": "demo",
        "instance_group": "gpu",
        "instance_id": "i-0abc",
        "boot_id": "boot-7",
        "state": "unhealthy",
        "failures": [{"check": "xid", "code": "79", "message": "GPU 0000:a8:00: fallen off the bus"}],
    }
    assert sent[1][:3] == ["aws", "--region", "us-east-1"]
    assert sent[1][sent[1].index("--value") + 1] == "0"
    assert "InstanceId=i-0abc" in sent[1][-1]


BOOT = "6f1c2a7e-0d3b-4c55-9a1e-2b7c8d9e0f11"


def test_a_change_tags_the_instance_before_it_sends_the_event(node: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tag is what the control plane acts on (IAM lets a node tag only itself); the event follows."""
    monkeypatch.setattr(health_agent, "instance_identity", lambda: ("i-0abc", "us-east-1"))
    monkeypatch.setattr(health_agent, "boot_id", lambda: BOOT)
    runner = Recorded({"aws": (0, "")})
    Reporter(node, runner).report(
        [Failure("xid", "GPU 0000:a8:00: fallen off the bus", code="79"), Failure("gpu_count", "7 of 8 GPUs visible")]
    )
    tag, event = runner.calls
    assert tag[:7] == ["aws", "--region", "us-east-1", "ec2", "create-tags", "--resources", "i-0abc"]
    assert tag[7] == "--tags" and len(tag) == 9  # the tags are one argument: nothing for a shell to split
    assert json.loads(tag[8]) == [
        {"Key": "training-cluster:health", "Value": f"unhealthy boot={BOOT} xid:79 gpu_count"}
    ]
    assert event[3:5] == ["events", "put-events"]


def test_the_health_tag_value() -> None:
    assert health_agent.health_tag_value([], BOOT) == f"healthy boot={BOOT}"
    failures = [
        Failure("xid", "GPU 0000:a8:00", code="79"),
        Failure("xid", "GPU 0000:b9:00", code="79"),  # the same fault on a second GPU: one token
        Failure("xid", "GPU 0000:a8:00", code="13"),
        Failure("dcgm_health", "dcgmi diag -r 2 failed", code="diag"),
        Failure("lustre", "/fsx is not mounted"),
    ]
    assert (
        health_agent.health_tag_value(failures, BOOT) == f"unhealthy boot={BOOT} xid:79 xid:13 dcgm_health:diag lustre"
    )


def test_the_health_tag_keeps_to_the_contracts_characters() -> None:
    failures = [
        Failure("xid", "", code="79 dcgm_health"),  # a space would make a second token
        Failure("Row-Remap!", "", code="$(reboot);"),
        Failure("xid", "", code="٧٩"),  # non-ASCII digits are not digits here
        Failure("ü", "", code="1.2_3-x"),
    ]
    value = health_agent.health_tag_value(failures, "6f1c 2a7e_\n")
    assert value == "unhealthy boot=6f1c2a7e xid:79dcgm_health rowremap:reboot xid"  # "ü" leaves no check
    assert health_agent.health_tag_value([Failure("x" * 100, "", code="7" * 100)], "b" * 100) == (
        f"unhealthy boot={'b' * 64} {'x' * 64}:{'7' * 64}"
    )
    assert re.fullmatch(r"(healthy|unhealthy) boot=[A-Za-z0-9-]+( [a-z0-9_]+(:[A-Za-z0-9._-]+)?)*", value)


def test_the_health_tag_is_cut_at_whole_tokens() -> None:
    failures = [Failure("xid", "", code=str(code)) for code in range(100, 160)]
    value = health_agent.health_tag_value(failures, BOOT)
    assert len(value) <= 256 and len(value) > 256 - len(" xid:159")
    tokens = value.split(" ")
    assert tokens[:3] == ["unhealthy", f"boot={BOOT}", "xid:100"]
    assert tokens[2:] == [f"xid:{code}" for code in range(100, 100 + len(tokens) - 2)]  # in order, none cut


def test_the_service_tags_then_sends_on_a_change(
    node: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """main(): a change is tagged, then sent, then the metric; no change, only the metric."""
    path = tmp_path / "agent.json"
    path.write_text(json.dumps({**node.__dict__, "textfile_dir": None}))
    monkeypatch.setattr(health_agent, "instance_identity", lambda: ("i-0abc", "us-east-1"))
    monkeypatch.setattr(health_agent, "boot_id", lambda: BOOT)
    checks = Recorded({**HEALTHY, "nvidia-smi --query-gpu": "nvidia-smi-7-gpus.txt"})
    aws = Recorded({"aws": (0, "")})
    monkeypatch.setattr(health_agent, "Agent", lambda settings: Agent(settings, checks))
    monkeypatch.setattr(health_agent, "Reporter", lambda settings: Reporter(settings, aws))

    class Stop(Exception):
        pass

    intervals: list[float] = []

    def sleep(seconds: float) -> None:
        intervals.append(seconds)
        if len(intervals) % 2 == 0:  # two checks per run
            raise Stop

    monkeypatch.setattr(health_agent.time, "sleep", sleep)
    with pytest.raises(Stop):
        health_agent.main(["--config", str(path)])
    assert [c[3:5] for c in aws.calls] == [
        ["ec2", "create-tags"],
        ["events", "put-events"],
        ["cloudwatch", "put-metric-data"],
        ["cloudwatch", "put-metric-data"],
    ]

    # A tag that could not be written is written again at the next check: until then the control
    # plane has nothing to act on.
    aws.calls.clear()
    aws.answers = {"aws --region us-east-1 ec2 create-tags": (255, ""), "aws": (0, "")}
    with pytest.raises(Stop):
        health_agent.main(["--config", str(path)])
    assert [c[3:5] for c in aws.calls] == [
        ["ec2", "create-tags"],
        ["events", "put-events"],
        ["cloudwatch", "put-metric-data"],
        ["ec2", "create-tags"],
        ["events", "put-events"],
        ["cloudwatch", "put-metric-data"],
    ]


def test_agent_reports_are_what_the_control_plane_reads(node: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent's tag, in the event AWS sends for it (shaped after the Tagging user guide's
    example), and its own event parse into the signals the repair function acts on."""
    from auto_repair.signals import from_event

    monkeypatch.setattr(health_agent, "instance_identity", lambda: ("i-0123456789abcdef0", "us-east-1"))
    monkeypatch.setattr(health_agent, "boot_id", lambda: BOOT)
    calls: list[list[str]] = []
    entries: list[Any] = []

    def aws(command: Sequence[str], timeout: float) -> tuple[int, str]:
        calls.append(list(command))
        if "put-events" in command:
            entries.extend(json.loads(Path(command[-1].removeprefix("file://")).read_text()))
        return 0, ""

    Reporter(node, aws).report([Failure("xid", "GPU 0000:a8:00: fallen off the bus", code="79")])
    (tag,) = json.loads(calls[0][-1])
    tag_change = {
        "version": "0",
        "id": "bddcf1d6-0251-35a1-aab0-adc1fb47c11c",
        "detail-type": "Tag Change on Resource",
        "source": "aws.tag",
        "account": "123456789012",
        "time": "2026-12-01T11:00:00Z",
        "region": "us-east-1",
        "resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0"],
        "detail": {
            "changed-tag-keys": [tag["Key"]],
            "service": "ec2",
            "resource-type": "instance",
            "version": 3,
            "tags": {tag["Key"]: tag["Value"], "training-cluster:cluster": "demo"},
        },
    }
    (proven,) = from_event(tag_change)
    assert (proven.instance_id, proven.boot_id, proven.healthy) == ("i-0123456789abcdef0", BOOT, False)
    assert [(f.check, f.code) for f in proven.failures] == [("xid", "79")]
    (entry,) = entries
    event = {"source": entry["Source"], "detail-type": entry["DetailType"], "detail": json.loads(entry["Detail"])}
    (claim,) = from_event(event)
    assert claim.instance_id == "i-0123456789abcdef0" and [f.check for f in claim.failures] == ["xid"]


def test_deep_checks(node: Settings) -> None:
    runner = Recorded({"dcgmi diag": (0, "dcgmi-diag-fail.txt"), "fi_info": "fi-info-efa-2.txt"})
    failures = Agent(node, runner).deep_checks()
    assert [(f.check, f.code) for f in failures] == [("dcgm_health", "diag"), ("efa_count", None)]
    assert failures[1].message == "fi_info lists 2 EFA endpoints, expected 32"


def test_settings_reject_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "agent.json"
    path.write_text(json.dumps({"cluster": "demo", "instance_group": "gpu", "expected_gpu": 8}))
    with pytest.raises(ValueError, match=r"unknown settings \['expected_gpu'\]"):
        Settings.load(path)


def test_once_prints_the_failures(
    node: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "agent.json"
    path.write_text(json.dumps({**node.__dict__, "expected_gpus": 0, "lustre_mount_path": None}))
    assert health_agent.main(["--config", str(path), "--once"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    # The boot's kernel log holds an application XID (13) and a hardware one (79): only 79 counts.
    recorded = Recorded({**HEALTHY, "journalctl": "journal-xid.txt"})
    monkeypatch.setattr(health_agent, "Agent", lambda settings: Agent(settings, recorded))
    assert health_agent.main(["--config", str(path), "--once"]) == 0
    assert [(f["check"], f["code"]) for f in json.loads(capsys.readouterr().out)] == [("xid", "79")]


def test_textfile_metrics_for_node_exporter(node: Settings, promtool: str) -> None:
    counters = Path(node.sysfs_infiniband) / "rdmap0s27" / "ports" / "1" / "hw_counters"
    counters.mkdir(parents=True)
    (counters / "retrans_pkts").write_text("42\n")
    (counters / "impaired_remote_conn_events").write_text("1\n")
    agent = Agent(node, Recorded(HEALTHY))
    agent.write_textfile([Failure("gpu_count", "7 of 8")])
    text = (Path(node.textfile_dir or "") / "training_cluster.prom").read_text()
    assert "training_cluster_node_healthy 0\n" in text
    assert 'training_cluster_efa_retrans_packets_total{device="rdmap0s27"} 42\n' in text
    assert 'training_cluster_efa_impaired_remote_conn_events_total{device="rdmap0s27"} 1\n' in text
    assert "retrans_timeout_events" not in text  # no such counter file: no metric, no guess
    assert not list(Path(node.textfile_dir or "").glob("*.tmp"))
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_install_stage_writes_the_settings_and_runs_the_agent_as_a_service(tmp_path: Path) -> None:
    """node/health/install.sh as the bootstrap runs it, from the unpacked asset beside lib.sh."""
    calls = tmp_path / "systemctl.calls"
    bin_dir = stand_ins(tmp_path / "bin", {"systemctl": f'echo "$*" >> {calls}'})
    settings = '{"cluster":"demo","instance_group":"gpu","interval_seconds":30}'
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "HEALTH_AGENT_SETTINGS": settings,
        "TRAINING_CLUSTER_SYSTEMD_DIR": str(tmp_path / "systemd"),
        "TRAINING_CLUSTER_LOG_DIR": str(tmp_path / "log"),
        "TRAINING_CLUSTER_ETC_DIR": str(tmp_path / "etc"),
    }
    (tmp_path / "systemd").mkdir()
    install = NODE / "health" / "install.sh"
    result = subprocess.run(["bash", str(install)], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    config = tmp_path / "etc" / "health-agent.json"
    assert json.loads(config.read_text()) == json.loads(settings)
    unit = (tmp_path / "systemd" / "training-cluster-health.service").read_text()
    assert f"ExecStart=/usr/bin/python3 {NODE}/health/health_agent.py --config {config}\n" in unit
    assert calls.read_text().splitlines() == [
        "daemon-reload",
        "enable training-cluster-health.service",
        "restart training-cluster-health.service",
    ]
    # Without its settings it stops before touching anything.
    del env["HEALTH_AGENT_SETTINGS"]
    again = subprocess.run(["bash", str(install)], env=env, capture_output=True, text=True, timeout=30)
    assert again.returncode != 0 and "HEALTH_AGENT_SETTINGS" in again.stderr


def test_the_agent_asset_runs_with_only_what_it_ships(tmp_path: Path) -> None:
    """The asset synthesis stages (node/health with the contract copied in) runs on a node's
    python3 with nothing of this package installed: no site-packages here."""
    stage(ROOT / "node" / "health", ["contract"], tmp_path / "asset")
    assert (tmp_path / "asset" / "training_cluster" / "contract.py").is_file()
    result = subprocess.run(
        [sys.executable, "-S", "-E", "-s", str(tmp_path / "asset" / "health_agent.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "--once" in result.stdout
