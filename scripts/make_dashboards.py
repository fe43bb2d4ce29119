"""Write the Grafana dashboards (src/training_cluster/observability/dashboards/*.json).

The dashboards are committed JSON; this script is how they are made, so that every panel has the
same shape. ``__CLUSTER__`` and ``__FILE_SYSTEM_ID__`` are filled in at synthesis.

    python scripts/make_dashboards.py            # rewrite them
    python scripts/make_dashboards.py --check    # exit 1 if a committed dashboard is stale
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "src" / "training_cluster" / "observability" / "dashboards"
PROMETHEUS = {"type": "prometheus", "uid": "training-cluster-prometheus"}
CLOUDWATCH = {"type": "cloudwatch", "uid": "training-cluster-cloudwatch"}
GROUP = 'cluster="__CLUSTER__", instance_group=~"$instance_group"'


def prom(
    title: str, *targets: tuple[str, str], unit: str = "short", kind: str = "timeseries", width: int = 12
) -> dict[str, Any]:
    return {
        "type": kind,
        "title": title,
        "datasource": PROMETHEUS,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "gridPos": {"w": width, "h": 8},
        "targets": [
            {"refId": chr(65 + i), "expr": expr, "legendFormat": legend} for i, (expr, legend) in enumerate(targets)
        ],
    }


def cloudwatch(
    title: str, namespace: str, metrics: list[str], dimensions: dict[str, str], stat: str = "Sum", unit: str = "short"
) -> dict[str, Any]:
    return {
        "type": "timeseries",
        "title": title,
        "datasource": CLOUDWATCH,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "gridPos": {"w": 12, "h": 8},
        "targets": [
            {
                "refId": chr(65 + i),
                "namespace": namespace,
                "metricName": metric,
                "dimensions": dimensions,
                "matchExact": False,
                "statistic": stat,
                "region": "default",
                "queryMode": "Metrics",
            }
            for i, metric in enumerate(metrics)
        ],
    }


def dashboard(uid: str, title: str, panels: list[dict[str, Any]], group_variable: bool = True) -> dict[str, Any]:
    x = y = 0
    for index, panel in enumerate(panels):
        panel["id"] = index + 1
        width = panel["gridPos"]["w"]
        if x + width > 24:
            x, y = 0, y + 8
        panel["gridPos"].update(x=x, y=y)
        x += width
    variables = []
    if group_variable:
        variables.append(
            {
                "name": "instance_group",
                "label": "instance group",
                "type": "query",
                "datasource": PROMETHEUS,
                "query": 'label_values(up{cluster="__CLUSTER__"}, instance_group)',
                "includeAll": True,
                "multi": True,
                "current": {"text": "All", "value": "$__all"},
                "refresh": 2,
            }
        )
    return {
        "uid": uid,
        "title": title,
        "tags": ["training-cluster", "__CLUSTER__"],
        "timezone": "utc",
        "schemaVersion": 39,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": variables},
        "panels": panels,
    }


def per_node(function: str, metric: str) -> str:
    """``function`` of ``metric`` summed per node, over Grafana's rate interval."""
    return f"sum by (instance_id) ({function}({metric}{{{GROUP}}}[$__rate_interval]))"


def dashboards() -> dict[str, dict[str, Any]]:
    rate = "$__rate_interval"
    return {
        "overview": dashboard(
            "tc-__CLUSTER__-overview",
            "__CLUSTER__ / cluster overview",
            [
                prom("Nodes reporting", (f'count(up{{job="node", {GROUP}}} == 1)', "reporting"), kind="stat", width=6),
                prom(
                    "Nodes healthy", (f"sum(training_cluster_node_healthy{{{GROUP}}})", "healthy"), kind="stat", width=6
                ),
                prom(
                    "GPUs busy (> 50%)", (f"count(DCGM_FI_DEV_GPU_UTIL{{{GROUP}}} > 50)", "busy"), kind="stat", width=6
                ),
                prom(
                    "Tensor cores active (goodput)",
                    (f"avg(DCGM_FI_PROF_PIPE_TENSOR_ACTIVE{{{GROUP}}})", "tensor active"),
                    unit="percentunit",
                    kind="stat",
                    width=6,
                ),
                prom(
                    "GPU utilization by group",
                    (f"avg by (instance_group) (DCGM_FI_DEV_GPU_UTIL{{{GROUP}}})", "{{instance_group}}"),
                    unit="percent",
                    width=24,
                ),
                prom(
                    "Unhealthy nodes", (f"training_cluster_node_healthy{{{GROUP}}} == 0", "{{instance_id}}"), width=24
                ),
            ],
        ),
        "gpu": dashboard(
            "tc-__CLUSTER__-gpu",
            "__CLUSTER__ / GPUs",
            [
                prom(
                    "Utilization by Slurm job",
                    (
                        # The job label comes from the Slurm prolog; one series per node and job,
                        # joined to the node's average GPU utilization.
                        f"avg by (job_id, user) (training_cluster_slurm_job_info{{{GROUP}}} "
                        f"* on (instance_id) group_left () avg by (instance_id) (DCGM_FI_DEV_GPU_UTIL{{{GROUP}}}))",
                        "job {{job_id}} ({{user}})",
                    ),
                    unit="percent",
                ),
                prom(
                    "Nodes per Slurm job",
                    (f"count by (job_id) (training_cluster_slurm_job_info{{{GROUP}}})", "job {{job_id}}"),
                ),
                prom(
                    "Utilization", (f"DCGM_FI_DEV_GPU_UTIL{{{GROUP}}}", "{{instance_id}} gpu {{gpu}}"), unit="percent"
                ),
                prom(
                    "Memory used", (f"DCGM_FI_DEV_FB_USED{{{GROUP}}}", "{{instance_id}} gpu {{gpu}}"), unit="decmbytes"
                ),
                prom("Power", (f"DCGM_FI_DEV_POWER_USAGE{{{GROUP}}}", "{{instance_id}} gpu {{gpu}}"), unit="watt"),
                prom(
                    "Temperature", (f"DCGM_FI_DEV_GPU_TEMP{{{GROUP}}}", "{{instance_id}} gpu {{gpu}}"), unit="celsius"
                ),
                prom(
                    "Clock throttling (share of time)",
                    (
                        f"rate(DCGM_FI_DEV_THERMAL_VIOLATION{{{GROUP}}}[{rate}]) / 1e6",
                        "thermal {{instance_id}} gpu {{gpu}}",
                    ),
                    (
                        f"rate(DCGM_FI_DEV_POWER_VIOLATION{{{GROUP}}}[{rate}]) / 1e6",
                        "power {{instance_id}} gpu {{gpu}}",
                    ),
                    unit="percentunit",
                ),
                prom(
                    "XID errors",
                    (
                        f"max_over_time(DCGM_FI_DEV_XID_ERRORS{{{GROUP}}}[{rate}]) > 0",
                        "XID {{instance_id}} gpu {{gpu}}",
                    ),
                ),
                prom(
                    "ECC errors",
                    (
                        f"increase(DCGM_FI_DEV_ECC_DBE_VOL_TOTAL{{{GROUP}}}[1h])",
                        "double-bit {{instance_id}} gpu {{gpu}}",
                    ),
                    (
                        f"increase(DCGM_FI_DEV_ECC_SBE_VOL_TOTAL{{{GROUP}}}[1h])",
                        "single-bit {{instance_id}} gpu {{gpu}}",
                    ),
                ),
                prom(
                    "PCIe replays",
                    (f"rate(DCGM_FI_DEV_PCIE_REPLAY_COUNTER{{{GROUP}}}[{rate}])", "{{instance_id}} gpu {{gpu}}"),
                ),
            ],
        ),
        "efa": dashboard(
            "tc-__CLUSTER__-efa",
            "__CLUSTER__ / EFA and network",
            [
                prom(
                    "EFA received",
                    (
                        per_node("rate", "node_infiniband_port_data_received_bytes_total"),
                        "{{instance_id}}",
                    ),
                    unit="Bps",
                ),
                prom(
                    "EFA sent",
                    (
                        per_node("rate", "node_infiniband_port_data_transmitted_bytes_total"),
                        "{{instance_id}}",
                    ),
                    unit="Bps",
                ),
                prom(
                    "Retransmitted packets",
                    (
                        per_node("rate", "training_cluster_efa_retrans_packets_total"),
                        "{{instance_id}}",
                    ),
                    unit="pps",
                ),
                prom(
                    "Retransmit timeouts and impaired connections",
                    (
                        per_node("increase", "training_cluster_efa_retrans_timeout_events_total"),
                        "timeouts {{instance_id}}",
                    ),
                    (
                        per_node("increase", "training_cluster_efa_impaired_remote_conn_events_total"),
                        "impaired {{instance_id}}",
                    ),
                ),
                prom(
                    "Receive drops",
                    (
                        per_node("rate", "training_cluster_efa_rx_drops_total"),
                        "{{instance_id}}",
                    ),
                    width=24,
                ),
            ],
        ),
        "fsx": dashboard(
            "tc-__CLUSTER__-fsx",
            "__CLUSTER__ / FSx for Lustre",
            [
                cloudwatch(
                    "Throughput",
                    "AWS/FSx",
                    ["DataReadBytes", "DataWriteBytes"],
                    {"FileSystemId": "__FILE_SYSTEM_ID__"},
                    unit="bytes",
                ),
                cloudwatch(
                    "Metadata operations", "AWS/FSx", ["MetadataOperations"], {"FileSystemId": "__FILE_SYSTEM_ID__"}
                ),
                cloudwatch(
                    "Free capacity",
                    "AWS/FSx",
                    ["FreeDataStorageCapacity"],
                    {"FileSystemId": "__FILE_SYSTEM_ID__"},
                    stat="Minimum",
                    unit="bytes",
                ),
                prom(
                    "Free space seen by nodes",
                    (
                        'min by (mountpoint) (node_filesystem_avail_bytes{fstype="lustre", cluster="__CLUSTER__"})',
                        "{{mountpoint}}",
                    ),
                    unit="bytes",
                ),
            ],
            group_variable=False,
        ),
        "repair": dashboard(
            "tc-__CLUSTER__-repair",
            "__CLUSTER__ / auto-repair",
            [
                cloudwatch(
                    "Incidents and observations",
                    "TrainingCluster/Repair",
                    ["Incidents", "Observations"],
                    {"Cluster": "__CLUSTER__"},
                ),
                cloudwatch(
                    "Reboots and replacements",
                    "TrainingCluster/Repair",
                    ["Reboots", "Replacements"],
                    {"Cluster": "__CLUSTER__"},
                ),
                cloudwatch(
                    "Seconds to action and to repaired",
                    "TrainingCluster/Repair",
                    ["SecondsToAction", "SecondsToRepair"],
                    {"Cluster": "__CLUSTER__"},
                    stat="Maximum",
                    unit="s",
                ),
                cloudwatch(
                    "Circuit breaker opened",
                    "TrainingCluster/Repair",
                    ["CircuitBreakerOpened"],
                    {"Cluster": "__CLUSTER__"},
                ),
            ],
            group_variable=False,
        ),
    }


def main() -> int:
    check = "--check" in sys.argv[1:]
    OUT.mkdir(parents=True, exist_ok=True)
    stale = []
    for name, body in dashboards().items():
        path, text = OUT / f"{name}.json", json.dumps(body, indent=2, sort_keys=True) + "\n"
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"stale (run python scripts/make_dashboards.py): {', '.join(stale)}", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
