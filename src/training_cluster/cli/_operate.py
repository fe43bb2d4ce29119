"""The commands that read a deployed cluster (``status``, ``nodes``, ``incidents``, ``incident``)
and ask its control plane to act (``repair``, ``reset-breaker``: the repair function is invoked,
so a person's request has the same breaker, limits, drain and ledger as an automatic repair).

The cluster is found by ``--stack NAME --region R``, or by ``--config FILE``, whose name and
region give the default stack name ``<name>-training-cluster``. boto3 is imported here only when
one of these commands runs (``training_cluster.operate``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from ..contract import INSTANCE_ID
from ..ledger_view import ledger_seconds
from ._output import CommandError, printable, styler, table

if TYPE_CHECKING:
    from ..operate import Cluster, Node

Command = Callable[[argparse.Namespace, TextIO, TextIO], int]
STORY_LIMIT = 300
"""Characters of one value in an incident's story."""
EVIDENCE_SHOWN = 50
"""Evidence objects listed per location (a node may write any number under its own prefix)."""
NOT_YET = ("deferred", "suppressed", "duplicate", "dry-run")
"""Outcomes of a repair the control plane accepted and has not acted on: exit 3."""
MEANING = {
    "rebooted": "rebooted",
    "replaced": "replaced: terminated through its Auto Scaling group, a new node is launching",
    "deferred": "deferred: the group's replacement limit is reached or it waits for capacity; the sweep retries it",
    "suppressed": "held: the group's circuit breaker is open; `reset-breaker` releases it",
    "duplicate": "an incident is open for this node already",
    "dry-run": "recorded only: auto-repair is in dry run",
    "ignored": "refused: not an instance of this cluster's groups",
    "closed": "closed: it recovered",
}


def command_parser(commands: Any, name: str, run: Command, summary: str) -> argparse.ArgumentParser:
    """A command that names a deployed cluster (``--stack``/``--region``, or ``--config``)."""
    sub: argparse.ArgumentParser = commands.add_parser(name, help=summary, description=summary + ".")
    sub.set_defaults(command=run)
    where = sub.add_argument_group("which cluster")
    where.add_argument("--stack", help="its CloudFormation stack (default: <name>-training-cluster of --config)")
    where.add_argument("--region", help="its region (default: --config's, or as boto3 finds it: AWS_REGION, ...)")
    where.add_argument("--config", metavar="FILE", help="its config file: the stack name and region from it")
    where.add_argument("--profile", help="an AWS profile (default: AWS_PROFILE, or boto3's default)")
    return sub


def _positive(text: str) -> int:
    """An argument that is a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"a whole number of at least 1 (got {text!r})")
    return value


def add_commands(commands: Any) -> list[argparse.ArgumentParser]:
    def command(name: str, run: Command, summary: str) -> argparse.ArgumentParser:
        return command_parser(commands, name, run, summary)

    status = command("status", _status, "is the cluster whole: groups, circuit breakers, file system, last incidents")
    status.add_argument(
        "--incidents", type=_positive, default=5, metavar="N", help="how many of the last incidents (5)"
    )
    nodes = command("nodes", _nodes, "one line per node: where, how long up, its health and last fault")
    nodes.add_argument("--all", action="store_true", help="terminated nodes too (EC2 keeps them about an hour)")
    incidents = command("incidents", _incidents, "what auto-repair did: the latest incidents in the ledger")
    incidents.add_argument("--limit", type=_positive, default=20, metavar="N", help="how many, newest first (20)")
    incident = command("incident", _incident, "the story of one incident, step by step, with its evidence")
    incident.add_argument("incident_id", metavar="ID", help="the incident's id (from `incidents`)")
    repair = command("repair", _repair, "reboot or replace a node through the auto-repair control plane")
    repair.add_argument("node", metavar="NODE", help="the node's instance id (i-...)")
    action = repair.add_mutually_exclusive_group(required=True)
    action.add_argument(
        "--reboot", dest="action", action="store_const", const="reboot", help="reboot it (its drain first)"
    )
    action.add_argument(
        "--replace",
        dest="action",
        action="store_const",
        const="replace",
        help="terminate it through its Auto Scaling group, which launches a new node (its drain first)",
    )
    reset = command(
        "reset-breaker", _reset, "reset a group's circuit breaker: auto-repair resumes, held nodes repaired"
    )
    reset.add_argument("group", metavar="GROUP", help="the instance group")
    for sub in (repair, reset):
        sub.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    return [status, nodes, incidents, incident, repair, reset]


@contextmanager
def cluster_of(args: argparse.Namespace) -> Iterator[Cluster]:
    """The cluster the arguments name; AWS's errors as ``CommandError``s."""
    stack, region = args.stack, args.region
    if args.config:
        from ..config import ClusterConfig
        from ..errors import ConfigError

        try:
            config = ClusterConfig.from_yaml(args.config)
        except ConfigError as exc:
            raise CommandError(str(exc), code=2) from None
        stack, region = stack or f"{config.name}-training-cluster", region or config.region
    if not stack:
        raise CommandError("which cluster? pass --stack NAME (and --region), or --config FILE")
    from ..operate import OperateError, aws_errors, find

    try:
        cluster = find(stack, region, args.profile)
        with aws_errors(cluster.region):
            yield cluster
    except OperateError as exc:
        raise CommandError(str(exc)) from None


def _print_json(value: Any, out: TextIO) -> None:
    print(json.dumps(value, indent=2, default=str), file=out)


def _when(at: float | None) -> str:
    return "-" if not at else datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _duration(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    return f"{days}d{hours:02d}h" if days else f"{hours}h{rest // 60:02d}m"


# status -----------------------------------------------------------------------------------------


def _status(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    with cluster_of(args) as cluster:
        groups = cluster.status()
        fs = cluster.file_system()
        incidents = cluster.ledger.incidents(args.incidents) if "RepairLedgerTableName" in cluster.outputs else []
    if args.json:
        _print_json(
            {
                "stack": cluster.stack,
                "region": cluster.region,
                "groups": [asdict(g) for g in groups],
                "file_system": fs,
                "incidents": [asdict(i) for i in incidents],
            },
            out,
        )
        return 0
    bold = styler(out.isatty())
    header = ["GROUP", "DESIRED", "IN SERVICE", "HEALTHY", "UNHEALTHY", "UNKNOWN", "REPAIRING", "BREAKER", "CAPACITY"]
    rows = [
        [
            g.group, str(g.desired), str(g.in_service), str(g.healthy), str(g.unhealthy), str(g.unknown),
            str(g.being_repaired),
            g.breaker + (f" ({len(g.held)} held)" if g.held else ""),
            f"backing off until {_when(g.capacity_backoff_until)}" if g.capacity_backoff_until else "ok",
        ]
        for g in groups
    ]  # fmt: skip
    lines = [bold(f"{cluster.stack}: {cluster.region}"), "", *table(header, rows, bold), ""]
    lines += [f"breaker open for {g.group}: {g.breaker_reason}" for g in groups if g.breaker == "open"]
    if fs is None:
        lines.append("file system: none")
    else:
        why = f" ({fs['error']})" if fs.get("error") else ""
        lines.append(f"file system {fs['id']}: {fs['state']}{why}")
    whole = all(
        g.in_service == g.desired and g.unhealthy == g.unknown == g.being_repaired == 0 and g.breaker != "open"
        for g in groups
    )
    lines.append("whole: every node in service, healthy, none being repaired" if whole else "not whole: see above")
    if incidents:
        lines += ["", bold("last incidents"), *_incident_table(incidents, bold)]
    print("\n".join(lines), file=out)
    return 0


# nodes ------------------------------------------------------------------------------------------


def _nodes(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    with cluster_of(args) as cluster:
        nodes = cluster.nodes(include_terminated=args.all)
        states = cluster.scheduler_states([n.instance_id for n in nodes if n.state == "running"])
    nodes = [replace(n, scheduler=states.get(n.instance_id, "-")) for n in nodes]
    if args.json:
        _print_json({"stack": cluster.stack, "region": cluster.region, "nodes": [asdict(n) for n in nodes]}, out)
        return 0
    bold = styler(out.isatty())
    header = ["INSTANCE", "GROUP", "TYPE", "ZONE", "STATE", "UPTIME", "CHECKS", "HEALTH", "SCHEDULER", "LAST FAULT"]
    rows = [
        [
            n.instance_id, n.group, n.instance_type, n.zone, n.state, _duration(n.uptime_seconds), n.status_checks,
            n.health + (" " + " ".join(n.failures) if n.failures else ""), n.scheduler, _fault(n),
        ]
        for n in nodes
    ]  # fmt: skip
    print("\n".join(table(header, rows, bold)), file=out)
    return 0


def _fault(node: Node) -> str:
    incident = node.incident
    if not incident:
        return "-"
    status = str(incident.get("status", ""))
    result = f"{incident.get('action', '')} {status}" + (f" ({incident['outcome']})" if incident.get("outcome") else "")
    return f"{incident.get('fault') or '?'}: {result}"


# incidents --------------------------------------------------------------------------------------


def _incidents(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    with cluster_of(args) as cluster:
        incidents = cluster.ledger.incidents(args.limit)
    if args.json:
        _print_json({"incidents": [asdict(i) for i in incidents]}, out)
        return 0
    print("\n".join(_incident_table(incidents, styler(out.isatty()))), file=out)
    return 0


def _incident_table(incidents: list[Any], bold: Callable[[str], str]) -> list[str]:
    header = ["INCIDENT", "OPENED", "INSTANCE", "GROUP", "SOURCE", "ACTION", "STATUS", "SIGNAL"]
    rows = [
        [i.incident_id, _when(i.opened_at), i.instance_id, i.group, i.source, i.action,
         i.status + (f" ({i.outcome})" if i.outcome else ""), i.signal[:80]]
        for i in incidents
    ]  # fmt: skip
    return table(header, rows, bold) if rows else ["no incidents"]


def _incident(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    with cluster_of(args) as cluster:
        steps = cluster.ledger.story(args.incident_id)
        if not steps:
            raise CommandError(f"no incident {args.incident_id} in the ledger of {cluster.stack}")
        evidence = {
            str(s["location"]): cluster.ledger.evidence(str(s["location"]), limit=EVIDENCE_SHOWN + 1)
            for s in steps
            if s.get("location")
        }
    if args.json:
        _print_json({"incident_id": args.incident_id, "steps": steps, "evidence": evidence}, out)
        return 0
    bold = styler(out.isatty())
    lines = [bold(f"incident {printable(args.incident_id)}")]
    for step in steps:
        details = {k: v for k, v in step.items() if k not in ("pk", "sk", "step", "at")}
        text = ", ".join(f"{k}: {printable(v, STORY_LIMIT)}" for k, v in details.items())
        lines.append(f"{_when(ledger_seconds(step.get('at')))}  {printable(step['step'], 20):<9} {text}".rstrip())
    for location, objects in evidence.items():
        lines += ["", bold(f"evidence {printable(location, None)}")]
        lines += [f"  {printable(o, None)}" for o in objects[:EVIDENCE_SHOWN]]
        if len(objects) > EVIDENCE_SHOWN:
            lines.append(f"  ... and more: aws s3 ls --recursive {printable(location, None)}")
        if not objects:
            lines.append("  (no objects: the node did not write its evidence)")
    print("\n".join(lines), file=out)
    return 0


# acting -----------------------------------------------------------------------------------------


def _confirm(question: str, args: argparse.Namespace, err: TextIO) -> None:
    if args.yes:
        return
    if not sys.stdin.isatty():
        raise CommandError(f"{question}: not confirmed (no terminal to ask on; pass --yes)")
    print(f"{question} [y/N] ", end="", file=err, flush=True)
    if sys.stdin.readline().strip().lower() not in ("y", "yes"):
        raise CommandError("not confirmed: nothing done")


def _repair(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if not INSTANCE_ID.fullmatch(args.node):
        raise CommandError(f"NODE must be an instance id such as i-0123456789abcdef0 (got {args.node[:40]!r})")
    with cluster_of(args) as cluster:
        if cluster.hyperpod is not None:
            from .. import operate_hyperpod

            raise CommandError(operate_hyperpod.repair_instead(cluster, args.action, args.node))
        node = next((n for n in cluster.nodes() if n.instance_id == args.node), None)
        if node is None:
            raise CommandError(f"{args.node} is not a node of {cluster.stack}'s instance groups in {cluster.region}")
        cluster.output("RepairFunctionName")  # before asking: a cluster without auto-repair cannot act
        _confirm(f"{args.action} {node.instance_id} ({node.group}, {node.instance_type}) in {cluster.stack}", args, err)
        payload = {"repair": {"instance_id": node.instance_id, "action": args.action, "requested_by": cluster.caller()}}
        outcomes = cluster.invoke(payload, said=lambda text: print(text, file=err))
    return _report(outcomes, args, out, expected=1)


def _reset(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    with cluster_of(args) as cluster:
        if cluster.hyperpod is not None:
            from .. import operate_hyperpod

            raise CommandError(operate_hyperpod.repair_instead(cluster, None, None))
        if args.group not in cluster.groups.values():
            known = ", ".join(sorted(cluster.groups.values()))
            raise CommandError(f"{args.group!r} is not an instance group of {cluster.stack} (its groups: {known})")
        cluster.output("RepairFunctionName")  # as above
        _confirm(f"reset the circuit breaker of {args.group} in {cluster.stack}", args, err)
        outcomes = cluster.invoke({"reset_circuit_breaker": args.group}, said=lambda text: print(text, file=err))
    return _report(outcomes, args, out, expected=0, done=f"circuit breaker of {args.group} reset")


def _report(
    outcomes: list[dict[str, Any]], args: argparse.Namespace, out: TextIO, *, expected: int, done: str = ""
) -> int:
    if expected and not outcomes:
        raise CommandError("the repair function did nothing (an older version without manual repairs?)")
    refused = any(o.get("result") == "ignored" for o in outcomes)
    waiting = any(o.get("result") in NOT_YET for o in outcomes)
    code = 1 if refused else 3 if waiting else 0
    if args.json:
        _print_json({"outcomes": outcomes}, out)
        return code
    lines = [done] if done else []
    for o in outcomes:
        incident = f" (incident {printable(o['incident_id'])})" if o.get("incident_id") else ""
        result = str(o.get("result", "?"))
        lines.append(f"{printable(o.get('instance_id', '?'))}: {MEANING.get(result, printable(result))}{incident}")
    if done and not outcomes:
        lines.append("no held nodes to repair")
    print("\n".join(lines), file=out)
    return code
