"""``training-cluster``: the operator's command line.

``validate CONFIG`` runs the config's checks, the ones synthesis runs, with no Node, no
aws-cdk-lib and no AWS call, and prints what the config will deploy. ``connect NODE`` opens a
Session Manager session on a node. Every command takes ``--json`` for scripts.

Exit status: 0 done; 2 a config with errors (as ``app.py``); 1 anything else that stops a command
(no AWS CLI or Session Manager plugin, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from .errors import ConfigError, Finding

if TYPE_CHECKING:
    from .plan import Plan

INSTANCE_ID = re.compile(r"i-[0-9a-f]{8}([0-9a-f]{9})?", re.ASCII)
SESSION_MANAGER_PLUGIN = "session-manager-plugin"
PLUGIN_HELP = (
    "https://docs.aws.amazon.com/systems-manager/latest/userguide/session-manager-working-with-install-plugin.html"
)


class CommandError(Exception):
    """A command that cannot go on, in words for the operator (exit 1)."""


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    args = _parser().parse_args(argv)
    command: Callable[[argparse.Namespace, TextIO, TextIO], int] = args.command
    try:
        return command(args, out, err)
    except CommandError as exc:
        if args.json:
            print(json.dumps({"error": str(exc)}), file=out)
        print(f"error: {exc}", file=err)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="training-cluster", description="Check and operate a training cluster.")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    validate = commands.add_parser(
        "validate",
        help="check a config as synthesis does and show what it will deploy",
        description="Check a config as synthesis does (no Node, no AWS call) and show what it will deploy.",
    )
    validate.add_argument("config", metavar="CONFIG", help="the cluster's YAML config file")
    validate.set_defaults(command=_validate)
    connect = commands.add_parser(
        "connect",
        help="open a Session Manager session on a node",
        description="Open a Session Manager session on a node (the AWS CLI and its Session Manager plugin).",
    )
    connect.add_argument("node", metavar="NODE", help="the node's instance id (i-...)")
    connect.add_argument("--region", help="the cluster's region (default: as the AWS CLI finds it)")
    connect.add_argument("--print", action="store_true", help="print the command instead of running it")
    connect.set_defaults(command=_connect)
    for sub in (validate, connect):
        sub.add_argument("--json", action="store_true", help="print JSON for scripts")
    return parser


# validate ---------------------------------------------------------------------------------------


def _validate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .config import ClusterConfig  # the schema takes a third of a second to build: only when needed
    from .plan import plan

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


def _show_plan(the_plan: Plan, *, styled: bool) -> str:
    def bold(text: str) -> str:
        return f"\033[1m{text}\033[0m" if styled else text

    rows = [
        [
            g.name,
            g.role,
            g.instance_type,
            str(g.count),
            _accelerators(g.gpus_per_node, g.neuron_devices_per_node),
            str(g.efa_interfaces_per_node),
            f"{g.network_gbps_per_node:,.0f}",
            f"{g.network_gbps:,.0f}",
            g.capacity,
        ]
        for g in the_plan.groups
    ]
    header = ["GROUP", "ROLE", "TYPE", "NODES", "ACCEL/NODE", "EFA/NODE", "GBPS/NODE", "GBPS", "CAPACITY"]
    lines = [
        bold(f"{the_plan.cluster}: {the_plan.region}, {the_plan.availability_zone}"),
        "",
        *_table(header, rows, bold),
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


def _table(header: list[str], rows: list[list[str]], bold: Callable[[str], str]) -> list[str]:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()

    return [bold(line(header)), *(line(row) for row in rows)]


# connect ----------------------------------------------------------------------------------------


def connect_command(node: str, region: str | None) -> list[str]:
    """The AWS CLI command that opens a Session Manager session on ``node``."""
    if not INSTANCE_ID.fullmatch(node):
        raise CommandError(f"NODE must be an instance id such as i-0123456789abcdef0 (got {node[:40]!r})")
    command = ["aws", "ssm", "start-session", "--target", node]
    if region:
        command += ["--region", region]
    return command


def _connect(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    command = connect_command(args.node, args.region)
    if args.print or args.json:
        print(json.dumps({"command": command}) if args.json else " ".join(command), file=out)
        return 0
    if shutil.which("aws") is None:
        raise CommandError("the AWS CLI is not installed: https://docs.aws.amazon.com/cli/")
    if shutil.which(SESSION_MANAGER_PLUGIN) is None:
        raise CommandError(
            f"the AWS CLI's Session Manager plugin ({SESSION_MANAGER_PLUGIN}) is not installed: see {PLUGIN_HELP}"
        )
    return subprocess.run(command, env=os.environ.copy(), check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
