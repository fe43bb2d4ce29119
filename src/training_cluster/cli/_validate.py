"""``training-cluster validate CONFIG``: the config's checks as synthesis runs them, and a plan."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any, TextIO

from ..errors import ConfigError, Finding
from ._output import styler, table

if TYPE_CHECKING:
    from ..plan import Plan


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from ..config import ClusterConfig  # the schema takes a third of a second to build: only when needed
    from ..plan import plan

    try:
        config = ClusterConfig.from_yaml(args.config)
    except ConfigError as exc:
        if args.json:
            print(json.dumps(_report(args.config, list(exc.findings), [], None), indent=2), file=out)
        print(f"error: {exc}", file=err)
        return 2
    warnings = config.warnings()
    the_plan = plan(config)
    if args.json:
        print(json.dumps(_report(args.config, [], warnings, the_plan), indent=2), file=out)
        return 0
    for warning in warnings:
        print(f"warning: {warning}", file=err)
    print(_show_plan(the_plan, styled=out.isatty()), file=out)
    return 0


def _report(source: str, errors: list[Finding], warnings: list[Finding], the_plan: Plan | None) -> dict[str, Any]:
    return {
        "config": source,
        "valid": not errors,
        "errors": [{"path": f.path, "message": f.message} for f in errors],
        "warnings": [{"path": f.path, "message": f.message} for f in warnings],
        "plan": the_plan.to_json() if the_plan is not None else None,
    }


def _gbps(value: float) -> str:
    """Gbps as a person reads them: whole above 100, one decimal below where it has one (12.5)."""
    return f"{value:,.0f}" if value >= 100 or value == int(value) else f"{value:,.1f}"


def _show_plan(the_plan: Plan, *, styled: bool) -> str:
    bold = styler(styled)
    rows = [
        [
            g.name,
            g.role,
            g.instance_type,
            f"{g.count} + {g.spares} spare{'s' if g.spares > 1 else ''}" if g.spares else str(g.count),
            _accelerators(g.gpus_per_node, g.neuron_devices_per_node),
            str(g.efa_interfaces_per_node),
            _gbps(g.network_gbps_per_node),
            _gbps(g.network_gbps),
            g.capacity,
        ]
        for g in the_plan.groups
    ]
    header = ["GROUP", "ROLE", "TYPE", "NODES", "ACCEL/NODE", "EFA/NODE", "GBPS/NODE", "GBPS", "CAPACITY"]
    lines = [
        bold(
            f"{the_plan.cluster}: {the_plan.region}, {the_plan.availability_zone}"
            + (", on SageMaker HyperPod (ml. types)" if the_plan.backend == "hyperpod" else "")
        ),
        "",
        *table(header, rows, bold),
        "",
        f"nodes {the_plan.nodes}, GPUs {the_plan.gpus}"
        + (f", Neuron devices {the_plan.neuron_devices}" if the_plan.neuron_devices else ""),
    ]
    size = f"{the_plan.subnet_addresses:,}" if the_plan.subnet_addresses is not None else "unknown (no subnet_cidr)"
    lines.append(f"compute subnet: {the_plan.subnet_addresses_needed:,} addresses needed of {size}")
    fs = the_plan.file_system
    if fs is None:
        lines.append("file system: none")
    else:
        throughput = f", {fs.throughput_mbps:,} MB/s" if fs.throughput_mbps is not None else ""
        per_tib = f" ({fs.throughput_mbps_per_tib} MB/s/TiB)" if fs.throughput_mbps_per_tib is not None else ""
        lines.append(
            f"file system: FSx for Lustre {fs.deployment_type}, {fs.storage_capacity_gib:,} GiB{throughput}{per_tib}, "
            f"at {fs.mount_path}"
        )
    return "\n".join(lines)


def _accelerators(gpus: int, neuron: int) -> str:
    if gpus:
        return f"{gpus} GPU"
    if neuron:
        return f"{neuron} Neuron"
    return "-"
