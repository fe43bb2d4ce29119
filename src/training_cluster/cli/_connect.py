"""``training-cluster connect NODE``: a Session Manager session on a node.

With ``--stack`` or ``--config`` the node must be one of that cluster's (in its groups, running),
and the session opens in the cluster's region; ``--login`` picks a running login node from the
login group's members (never an instance that merely carries the cluster's tags). ``--profile``
goes to the AWS CLI as given."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
from typing import TextIO

from ..contract import INSTANCE_ID
from ._output import CommandError

SESSION_MANAGER_PLUGIN = "session-manager-plugin"
PLUGIN_HELP = (
    "https://docs.aws.amazon.com/systems-manager/latest/userguide/session-manager-working-with-install-plugin.html"
)
RUNNING = ("running", "Running")  # EC2's word, and HyperPod's


def connect_command(node: str, region: str | None, profile: str | None = None, target: str | None = None) -> list[str]:
    """The AWS CLI command that opens a Session Manager session on ``node`` (or on ``target``, a
    HyperPod node's own)."""
    if not INSTANCE_ID.fullmatch(node):
        raise CommandError(f"NODE must be an instance id such as i-0123456789abcdef0 (got {node[:40]!r})")
    command = ["aws", "ssm", "start-session", "--target", target or node]
    if region:
        command += ["--region", region]
    if profile:
        command += ["--profile", profile]
    return command


def cluster_node(args: argparse.Namespace) -> tuple[str, str, str | None]:
    """(node, region, Session Manager target or None) for the cluster the arguments name: NODE,
    which must be a running node of it, or (``--login``) its first running login node."""
    from .. import operate_hyperpod
    from ._operate import cluster_of

    with cluster_of(args) as cluster:
        # ``nodes`` lists the groups' members, and instances outside them only while they go
        running = [n for n in cluster.nodes() if n.state in RUNNING]
        if args.login:
            logins = sorted((n for n in running if n.group == "login"), key=lambda n: n.instance_id)
            if not logins:
                raise CommandError(f"no login node is running in {cluster.stack} (orchestrator.login_nodes)")
            node = logins[0]
        else:
            found = next((n for n in running if n.instance_id == args.node), None)
            if found is None:
                raise CommandError(
                    f"{args.node} is not a running node of {cluster.stack} (`training-cluster nodes` lists them)"
                )
            node = found
        target = operate_hyperpod.session_target(cluster, node) if cluster.hyperpod is not None else None
        return node.instance_id, cluster.region, target


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.login and args.node is not None:
        raise CommandError("give NODE (an instance id) or --login, not both")
    if not args.login and args.node is None:
        raise CommandError("give NODE (an instance id), or --login for a login node")
    if args.node is not None and not INSTANCE_ID.fullmatch(args.node):
        connect_command(args.node, None)  # its error names the expected form
    region: str | None
    target: str | None = None
    if args.login or args.stack or args.config:
        node, region, target = cluster_node(args)
    else:
        node, region = str(args.node), args.region or os.environ.get("AWS_REGION")
    command = connect_command(node, region, args.profile, target)
    if args.print or args.json:
        print(json.dumps({"command": command}) if args.json else shlex.join(command), file=out)
        return 0
    if shutil.which("aws") is None:
        raise CommandError("the AWS CLI is not installed: https://docs.aws.amazon.com/cli/")
    if shutil.which(SESSION_MANAGER_PLUGIN) is None:
        raise CommandError(
            f"the AWS CLI's Session Manager plugin ({SESSION_MANAGER_PLUGIN}) is not installed: see {PLUGIN_HELP}"
        )
    return subprocess.run(command, env=os.environ.copy(), check=False).returncode
