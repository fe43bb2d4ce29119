#!/usr/bin/env python3
"""Node health agent of cdk-training-cluster: checks this node every interval and reports changes.

Python 3 standard library only, so it runs on the stock AMI; the cluster's contract (its tag,
event and metric names, ``training_cluster/contract.py``) ships beside it in its asset. Each check runs with a timeout:
GPU count, NVIDIA XID errors in the kernel log, DCGM health, pending and failed ECC row remaps,
EFA device count, the Lustre mount answering, root disk space, Neuron device count. When the
set of failures changes, the node is first taken out of scheduling through the orchestrator hook
(``/opt/training-cluster/hooks/drain``, when present; ``hooks/resume`` puts it back once healthy,
application XIDs aside), then the agent tags its own instance with its health (the contract's ``HEALTH_TAG``:
IAM lets a node tag only itself, so the tag change AWS reports is the control plane's proof of
who spoke), then an EventBridge event goes to the repair control plane; a CloudWatch metric
(Healthy 1/0) is sent every interval.
Opt-in deep checks on first boot (``dcgmi diag -r 2``, EFA provider check) report a node that
fails them before it takes work.

    health_agent.py [--config /etc/training-cluster/health-agent.json] [--once]

``--once`` is the scheduler's health check: it prints the failures that keep the node from work.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training_cluster.contract import (
    AGENT_DETAIL_TYPE,
    AGENT_SOURCE,
    DIMENSION_CLUSTER,
    DIMENSION_GROUP,
    DIMENSION_INSTANCE,
    HEALTH_AGENT_CONFIG,
    HEALTH_NAMESPACE,
    HEALTH_TAG,
    METRIC_HEALTHY,
    CheckName,
    format_health_tag,
)

XID_LINE = re.compile(r"NVRM: Xid \(PCI:(?P<pci>[0-9A-Fa-f:.]+)\): (?P<xid>\d+),(?P<rest>.*)")
CURSOR_LINE = re.compile(r"^-- cursor: (?P<cursor>.+)$")
log = logging.getLogger("health-agent")
# EFA hardware counter files -> metrics (node_exporter's infiniband collector reads only the standard counters).
EFA_COUNTERS = {
    "retrans_pkts": "training_cluster_efa_retrans_packets_total",
    "retrans_timeout_events": "training_cluster_efa_retrans_timeout_events_total",
    "impaired_remote_conn_events": "training_cluster_efa_impaired_remote_conn_events_total",
    "rx_drops": "training_cluster_efa_rx_drops_total",
}

# Agent.check_<name> -> what its command not answering is a failure of (a row remap query's: none
# of its own, so the agent's).
CHECKS: dict[str, CheckName] = {
    "gpu_count": "gpu_count", "xid": "xid", "dcgm": "dcgm_health", "row_remap": "agent", "efa": "efa_count",
    "neuron": "neuron_count", "lustre": "lustre", "disk": "disk",
}  # fmt: skip


@dataclass(frozen=True)
class Failure:
    check: CheckName
    message: str
    code: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.check, "code": self.code, "message": self.message}


@dataclass
class Settings:
    cluster: str
    instance_group: str
    expected_gpus: int = 0
    expected_efa_devices: int = 0
    expected_neuron_devices: int = 0
    lustre_mount_path: str | None = None
    transient_xids: list[str] = field(default_factory=list)  # observe-class: reported once, not held
    interval_seconds: int = 30
    check_timeout_seconds: int = 10
    disk_used_percent_limit: float = 95.0
    deep_checks: bool = False
    state_dir: str = "/var/lib/training-cluster"
    drain_hook: str = "/opt/training-cluster/hooks/drain"  # run with the reason when a fault appears
    resume_hook: str = "/opt/training-cluster/hooks/resume"  # run when the node is healthy again
    sysfs_infiniband: str = "/sys/class/infiniband"
    textfile_dir: str | None = "/var/lib/node_exporter/textfile"  # node_exporter's textfile collector
    dev_dir: str = "/dev"

    @classmethod
    def load(cls, path: Path) -> Settings:
        data = json.loads(path.read_text())
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"{path}: unknown settings {sorted(unknown)}")
        return cls(**data)


Runner = Callable[[Sequence[str], float], "tuple[int, str]"]


def run(command: Sequence[str], timeout: float) -> tuple[int, str]:
    """Run a command; (exit code, standard output). A missing program is exit code 127."""
    if shutil.which(command[0]) is None:
        return 127, ""
    result = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout, check=False)
    return result.returncode, result.stdout


@dataclass
class Agent:
    settings: Settings
    runner: Runner = run
    cursor: str | None = None  # where the kernel log was read up to
    last_failures: frozenset[Failure] | None = None
    pending_xids: list[Failure] = field(default_factory=list)

    # checks: each returns the failures it sees; a timeout or crash is a failure of that check
    def check_gpu_count(self) -> list[Failure]:
        expected = self.settings.expected_gpus
        if not expected:
            return []
        code, out = self.runner(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], self.settings.check_timeout_seconds
        )
        found = len([line for line in out.splitlines() if line.strip()]) if code == 0 else 0
        if found < expected:
            detail = f"nvidia-smi exited with {code}" if code else f"{found} of {expected} GPUs visible"
            return [Failure("gpu_count", detail)]
        return []

    def check_xid(self) -> list[Failure]:
        command = ["journalctl", "-k", "-o", "cat", "--no-pager", "--show-cursor"]
        command += ["--after-cursor", self.cursor] if self.cursor else ["-b"]
        code, out = self.runner(command, self.settings.check_timeout_seconds)
        if code != 0:
            return []  # no journal to read: nothing to report
        failures = []
        for line in out.splitlines():
            cursor = CURSOR_LINE.match(line)
            if cursor:
                self.cursor = cursor.group("cursor")
                continue
            xid = XID_LINE.search(line)
            if xid:
                failures.append(Failure("xid", f"GPU {xid.group('pci')}: {line.strip()[:200]}", code=xid.group("xid")))
        # A hardware XID leaves the GPU broken until a reset: it is held for the rest of this boot.
        # Observe-class XIDs (application errors) are reported in the interval they appear only.
        transient = set(self.settings.transient_xids)
        self.pending_xids += [f for f in failures if f.code not in transient and f not in self.pending_xids]
        return self.pending_xids + [f for f in failures if f.code in transient]

    def check_dcgm(self) -> list[Failure]:
        if not self.settings.expected_gpus:
            return []
        code, out = self.runner(["dcgmi", "health", "-g", "0", "-c"], self.settings.check_timeout_seconds)
        if code == 127:
            return []  # DCGM is not on this AMI
        overall = re.search(r"Overall Health\s*\|\s*(\w+)", out)
        if overall is None:
            return [Failure("dcgm_health", f"dcgmi health gave no verdict (exit {code})")] if code else []
        if overall.group(1).lower() == "failure":
            problems = [m.strip() for m in re.findall(r"Error\s*:\s*([^|]+)", out)]
            return [Failure("dcgm_health", "DCGM health failure" + (": " + "; ".join(problems) if problems else ""))]
        return []

    def check_row_remap(self) -> list[Failure]:
        if not self.settings.expected_gpus:
            return []
        code, out = self.runner(
            [
                "nvidia-smi",
                "--query-remapped-rows=gpu_bus_id,remapped_rows.pending,remapped_rows.failure",
                "--format=csv,noheader",
            ],
            self.settings.check_timeout_seconds,
        )
        if code != 0:
            return []
        failures = []
        for line in out.splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) != 3:
                continue
            bus, pending, failed = parts
            if failed.lower() in ("yes", "1", "true"):
                failures.append(Failure("row_remap_failure", f"GPU {bus}: row remapping failed"))
            elif pending.lower() in ("yes", "1", "true"):
                failures.append(Failure("row_remap_pending", f"GPU {bus}: a row remap waits for a GPU reset"))
        return failures

    def check_efa(self) -> list[Failure]:
        expected = self.settings.expected_efa_devices
        if not expected:
            return []
        root = Path(self.settings.sysfs_infiniband)
        found = len(list(root.iterdir())) if root.is_dir() else 0
        return [Failure("efa_count", f"{found} of {expected} EFA devices in {root}")] if found < expected else []

    def check_neuron(self) -> list[Failure]:
        expected = self.settings.expected_neuron_devices
        if not expected:
            return []
        found = len([p for p in Path(self.settings.dev_dir).glob("neuron*") if re.fullmatch(r"neuron\d+", p.name)])
        return [Failure("neuron_count", f"{found} of {expected} Neuron devices")] if found < expected else []

    def check_lustre(self) -> list[Failure]:
        path = self.settings.lustre_mount_path
        if not path:
            return []
        code, _ = self.runner(["mountpoint", "-q", path], self.settings.check_timeout_seconds)
        if code != 0:
            return [Failure("lustre", f"{path} is not mounted")]
        code, _ = self.runner(["stat", "-t", path], self.settings.check_timeout_seconds)
        return [Failure("lustre", f"stat {path} failed")] if code != 0 else []

    def check_disk(self) -> list[Failure]:
        usage = shutil.disk_usage("/")
        used = 100.0 * usage.used / usage.total
        if used > self.settings.disk_used_percent_limit:
            return [Failure("disk", f"root file system {used:.0f}% full")]
        return []

    def check(self) -> list[Failure]:
        failures: list[Failure] = []
        for name, check in CHECKS.items():
            try:
                failures += getattr(self, f"check_{name}")()
            except subprocess.TimeoutExpired as timeout:
                failures.append(
                    Failure(check, f"{' '.join(map(str, timeout.cmd))} did not answer within {timeout.timeout:g}s")
                )
            except Exception as error:  # a broken check must not stop the others
                log.exception("check %s failed to run", name)
                failures.append(Failure("agent", f"check {name} could not run: {error}"))
        return failures

    def deep_checks(self) -> list[Failure]:
        """First boot only: a DCGM level-2 diagnostic and the EFA provider, before the node takes work."""
        failures: list[Failure] = []
        if self.settings.expected_gpus:
            code, out = self.runner(["dcgmi", "diag", "-r", "2"], 900)
            if code not in (0, 127) or re.search(r"\|\s*Fail", out):
                failures.append(Failure("dcgm_health", f"dcgmi diag -r 2 failed (exit {code})", code="diag"))
        if self.settings.expected_efa_devices:
            code, out = self.runner(["fi_info", "-p", "efa", "-t", "FI_EP_RDM"], 60)
            found = len(re.findall(r"^provider: efa", out, re.M))
            if code != 0 or found < self.settings.expected_efa_devices:
                failures.append(
                    Failure(
                        "efa_count",
                        f"fi_info lists {found} EFA endpoints, expected {self.settings.expected_efa_devices}",
                    )
                )
        return failures

    def textfile(self, failures: list[Failure]) -> str:
        """This node's health and EFA counters in the Prometheus text format."""
        lines = [
            "# HELP training_cluster_node_healthy 1 when every health check passes.",
            "# TYPE training_cluster_node_healthy gauge",
            f"training_cluster_node_healthy {0 if failures else 1}",
        ]
        root = Path(self.settings.sysfs_infiniband)
        devices = sorted(root.iterdir()) if root.is_dir() else []
        for counter, metric in EFA_COUNTERS.items():
            samples = []
            for device in devices:
                path = device / "ports" / "1" / "hw_counters" / counter
                try:
                    samples.append(f'{metric}{{device="{device.name}"}} {int(path.read_text().strip())}')
                except (OSError, ValueError):
                    continue
            if samples:
                lines += [f"# HELP {metric} EFA hardware counter {counter}.", f"# TYPE {metric} counter", *samples]
        return "\n".join(lines) + "\n"

    def write_textfile(self, failures: list[Failure]) -> None:
        directory = self.settings.textfile_dir
        if not directory:
            return
        Path(directory).mkdir(parents=True, exist_ok=True)
        target = Path(directory) / "training_cluster.prom"
        staged = target.with_suffix(".prom.tmp")
        staged.write_text(self.textfile(failures))
        staged.replace(target)  # node_exporter never reads half a file

    def changed(self, failures: list[Failure]) -> bool:
        current = frozenset(failures)
        if current == self.last_failures:
            return False
        self.last_failures = current
        return True

    def blocking(self, failures: list[Failure]) -> list[Failure]:
        """The failures that should keep the node from taking work: all but application XIDs
        (observe-class), which are the job's fault, not the node's."""
        transient = set(self.settings.transient_xids)
        return [f for f in failures if not (f.check == "xid" and f.code in transient)]

    def tell_orchestrator(self, failures: list[Failure]) -> None:
        """The orchestrator's hooks: drain the node, with the reason, while a fault keeps it from
        work; resume it once healthy (the hook leaves nodes that people drained alone)."""
        blocking = self.blocking(failures)
        hook = Path(self.settings.drain_hook if blocking else self.settings.resume_hook)
        if hook.is_file() and os.access(hook, os.X_OK):
            command = [str(hook), "; ".join(f.message for f in blocking)[:200]] if blocking else [str(hook)]
            self.runner(command, 60)


def health_tag_value(failures: Sequence[Failure], boot: str) -> str:
    """The health tag's value: state, boot id, then each failure as ``check`` or ``check:code``
    (see the contract's ``format_health_tag``)."""
    return format_health_tag(not failures, boot, [(f.check, f.code) for f in failures])


class Reporter:
    """Tags this instance and sends events and metrics with the AWS CLI (on the Deep Learning AMIs
    and Amazon Linux)."""

    def __init__(self, settings: Settings, runner: Runner = run) -> None:
        self.settings = settings
        self.runner = runner
        self.instance_id, self.region = instance_identity()

    def report(self, failures: list[Failure]) -> bool:
        """A state change: the tag first (what the control plane acts on), then the event.
        False when the tag could not be written."""
        boot = boot_id()
        tagged = self.tag(failures, boot)
        self.event(failures, boot)
        return tagged

    def tag(self, failures: list[Failure], boot: str) -> bool:
        tags = [{"Key": HEALTH_TAG, "Value": health_tag_value(failures, boot)}]
        return self._aws("ec2", "create-tags", "--resources", self.instance_id, "--tags", json.dumps(tags))

    def event(self, failures: list[Failure], boot: str | None = None) -> None:
        detail = {
            "cluster": self.settings.cluster,
            "instance_group": self.settings.instance_group,
            "instance_id": self.instance_id,
            "boot_id": boot_id() if boot is None else boot,
            "state": "unhealthy" if failures else "healthy",
            "failures": [f.as_dict() for f in failures],
        }
        entry = [{"Source": AGENT_SOURCE, "DetailType": AGENT_DETAIL_TYPE, "Detail": json.dumps(detail)}]
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
            json.dump(entry, fh)
        try:
            self._aws("events", "put-events", "--entries", f"file://{fh.name}")
        finally:
            os.unlink(fh.name)

    def metric(self, healthy: bool) -> None:
        s = self.settings
        dimensions = (
            f"{DIMENSION_CLUSTER}={s.cluster},{DIMENSION_GROUP}={s.instance_group},"
            f"{DIMENSION_INSTANCE}={self.instance_id}"
        )
        value = "1" if healthy else "0"
        self._aws(
            "cloudwatch", "put-metric-data", "--namespace", HEALTH_NAMESPACE, "--metric-name", METRIC_HEALTHY,
            "--value", value, "--dimensions", dimensions,
        )  # fmt: skip

    def _aws(self, *args: str) -> bool:
        code, _ = self.runner(["aws", "--region", self.region, *args], 30)
        if code != 0:
            log.warning("aws %s %s exited with %s", args[0], args[1], code)
        return code == 0


def boot_id() -> str:
    """Changes at every boot: tells the control plane that a rebooted node came back."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def instance_identity() -> tuple[str, str]:
    """This instance's id and region from IMDSv2."""
    token_request = urllib.request.Request(
        "http://169.254.169.254/latest/api/token", method="PUT", headers={"X-aws-ec2-metadata-token-ttl-seconds": "300"}
    )
    token = urllib.request.urlopen(token_request, timeout=5).read().decode()
    document = urllib.request.Request(
        "http://169.254.169.254/latest/dynamic/instance-identity/document", headers={"X-aws-ec2-metadata-token": token}
    )
    identity = json.loads(urllib.request.urlopen(document, timeout=5).read())
    return str(identity["instanceId"]), str(identity["region"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Path(HEALTH_AGENT_CONFIG))
    parser.add_argument(
        "--once",
        action="store_true",
        help="check once and print, as JSON, the failures that keep the node from work (the scheduler's "
        "health check); report nothing",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s health-agent %(levelname)s %(message)s")
    settings = Settings.load(args.config)
    agent = Agent(settings)
    if args.once:
        # A new process reads the whole boot's kernel log: application XIDs of jobs long gone
        # must not drain the node.
        print(json.dumps([f.as_dict() for f in agent.blocking(agent.check())], indent=2))
        return 0
    reporter = Reporter(settings)
    first_boot = Path(settings.state_dir) / "deep-checks.done"
    deep: list[Failure] = []
    if settings.deep_checks and not first_boot.exists():
        deep = agent.deep_checks()
        if not deep:
            first_boot.parent.mkdir(parents=True, exist_ok=True)
            first_boot.touch()
    while True:
        failures = deep + agent.check()
        if agent.changed(failures):
            log.info(
                "state %s: %s", "unhealthy" if failures else "healthy", json.dumps([f.as_dict() for f in failures])
            )
            agent.tell_orchestrator(failures)
            if not reporter.report(failures):
                agent.last_failures = None  # the control plane has not heard: report again next time
        reporter.metric(not failures)
        agent.write_textfile(failures)
        time.sleep(settings.interval_seconds)


if __name__ == "__main__":
    sys.exit(main())
