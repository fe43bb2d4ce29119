"""``training-cluster connect NODE``: a Session Manager session on a node."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
from typing import TextIO

from ..contract import INSTANCE_ID
from ._output import CommandError

SESSION_MANAGER_PLUGIN = "session-manager-plugin"
PLUGIN_HELP = (
    "https://docs.aws.amazon.com/systems-manager/latest/userguide/session-manager-working-with-install-plugin.html"
)


def connect_command(node: str, region: str | None) -> list[str]:
    """The AWS CLI command that opens a Session Manager session on ``node``."""
    if not INSTANCE_ID.fullmatch(node):
        raise CommandError(f"NODE must be an instance id such as i-0123456789abcdef0 (got {node[:40]!r})")
    command = ["aws", "ssm", "start-session", "--target", node]
    if region:
        command += ["--region", region]
    return command


def login_node(args: argparse.Namespace) -> tuple[str, str]:
    """A running login node of the cluster the arguments name, and the cluster's region."""
    from ._operate import cluster_of

    with cluster_of(args) as cluster:
        running = sorted(n.instance_id for n in cluster.nodes() if n.group == "login" and n.state == "running")
        if not running:
            raise CommandError(f"no login node is running in {cluster.stack} (orchestrator.login_nodes)")
        return running[0], cluster.region


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.login == (args.node is not None):
        raise CommandError("give NODE (an instance id) or --login, not both")
    node, region = (args.node, args.region) if args.node is not None else login_node(args)
    command = connect_command(node, region)
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
