"""``training-cluster``: the operator's command line.

``validate CONFIG`` runs the config's checks, the ones synthesis runs, with no Node, no
aws-cdk-lib and no AWS call, and prints what the config will deploy. ``status``, ``nodes``,
``incidents`` and ``incident ID`` read the deployed cluster (found through its stack's outputs);
``repair NODE`` and ``reset-breaker GROUP`` ask its auto-repair control plane to act (never EC2
directly); ``connect NODE`` opens a Session Manager session on a node. Every command takes
``--json`` for scripts. Only the commands that talk to AWS import boto3.

Exit status: 0 done; 2 a config with errors (as ``app.py``) or a usage error; 3 a repair the
control plane accepted but has not acted on (held by the breaker, deferred, already in hand); 130
interrupted; 1 anything else that stops a command (no credentials, no such stack, no AWS CLI or
Session Manager plugin, a refused request, ...).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import NoReturn, TextIO

from ..contract import INSTANCE_ID
from . import _connect, _operate, _validate
from ._connect import connect_command
from ._output import CommandError, printable

__all__ = ["INSTANCE_ID", "CommandError", "connect_command", "main"]


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a terminal of any encoding shows what it cannot print as ?
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(errors="replace")  # type: ignore[union-attr]
    out, err = out or sys.stdout, err or sys.stderr
    words = list(sys.argv[1:] if argv is None else argv)
    _Parser.json_out = out if "--json" in words else None
    args = _parser().parse_args(words)
    command: Callable[[argparse.Namespace, TextIO, TextIO], int] = args.command
    try:
        code = command(args, out, err)
        out.flush()  # here, where a reader that has gone (``| head``) is caught, not at exit
        return code
    except CommandError as exc:
        if args.json:
            print(json.dumps({"error": str(exc)}), file=out)
        print("error: " + "\n".join(printable(line, None) for line in str(exc).splitlines()), file=err)
        return exc.code
    except BrokenPipeError:  # the reader (``| head``) has gone: nothing more to say
        _quiet(out)
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=err)
        return 130
    except Exception as exc:  # the last resort: a message, not a traceback (TRAINING_CLUSTER_DEBUG=1 shows it)
        if os.environ.get("TRAINING_CLUSTER_DEBUG"):
            raise
        print(
            f"error: unexpected {type(exc).__name__}: {str(exc)[:500]} (TRAINING_CLUSTER_DEBUG=1 shows where)", file=err
        )
        return 1


def _quiet(out: TextIO) -> None:
    """Point stdout at /dev/null, so that Python's flush at exit does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
    except (OSError, ValueError):  # not a real file (a test's StringIO)
        pass


def _version() -> str:
    try:
        return version("cdk-training-cluster")
    except PackageNotFoundError:
        return "unknown"


class _Parser(argparse.ArgumentParser):
    """argparse's, but a usage error is also JSON on ``json_out`` when ``--json`` is given (exit 2)."""

    json_out: TextIO | None = None  # set by main for the one parse it makes

    def error(self, message: str) -> NoReturn:
        if _Parser.json_out is not None:
            print(json.dumps({"error": f"{self.prog}: {message}"}), file=_Parser.json_out)
        super().error(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="training-cluster", description="Check and operate a training cluster.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts (before or after COMMAND)")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    validate = commands.add_parser(
        "validate",
        help="check a config as synthesis does and show what it will deploy",
        description="Check a config as synthesis does (no Node, no AWS call) and show what it will deploy.",
    )
    validate.add_argument("config", metavar="CONFIG", help="the cluster's YAML config file")
    validate.set_defaults(command=_validate.run)
    subcommands = [validate, *_operate.add_commands(commands)]
    connect = _operate.command_parser(
        commands, "connect", _connect.run, "open a Session Manager session on a node (or a login node)"
    )
    connect.add_argument("node", metavar="NODE", nargs="?", help="the node's instance id (i-...)")
    connect.add_argument("--login", action="store_true", help="a running login node of the cluster")
    connect.add_argument("--print", action="store_true", help="print the command instead of running it")
    for sub in (*subcommands, connect):
        # SUPPRESS: given after COMMAND it sets json; not given, the top level's value stands
        sub.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON for scripts")
    return parser
