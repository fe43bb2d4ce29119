"""User data for cluster nodes: the settings file, node-software stages and ``node/bootstrap.sh``.

Later capabilities (metrics agents, the health agent, the scheduler) add their software with
:meth:`NodeBootstrap.add_stage`; each stage becomes ``/opt/training-cluster/bootstrap.d/NN-name.sh``
and runs after the file system is mounted and before the user's lifecycle script. The order is the
stages' own, not the order of the calls: by phase (:data:`PHASES`: node software first, then the
scheduler, whose health check expects the node software in place), then by name.
"""

from __future__ import annotations

import base64
import gzip
import re
from typing import Literal

from aws_cdk import Token

from . import contract
from ._assets import asset_path
from .rules.settings import setting_problem as setting_problem  # the rule lives without aws-cdk-lib

ENV_FILE = "/etc/training-cluster/cluster.env"
STAGE_DIR = "/opt/training-cluster/bootstrap.d"
BOOTSTRAP = "/opt/training-cluster/bootstrap.sh"
LIBRARY_DIR = "/opt/training-cluster"
"""Where ``lib.sh`` and ``contract.sh`` are on a node, beside ``bootstrap.sh``; the scripts of the
node assets unpacked in folders below source ``../lib.sh``."""
_HEREDOC = "TRAINING_CLUSTER_EOF"
_KEY = re.compile(r"^[A-Z][A-Z0-9_]*$")
_STAGE = re.compile(r"^[a-z][a-z0-9-]*$")
_BOUNDARY = "==TRAINING_CLUSTER_BOUNDARY=="
_CONTENT_TYPE = re.compile(r"[a-z]+/[a-z0-9.+-]+", re.ASCII)

StagePhase = Literal["software", "scheduler"]
PHASES: tuple[StagePhase, ...] = ("software", "scheduler")
"""The order stages run in: ``software`` (agents, collectors) before ``scheduler`` (the scheduler's
daemons, which start taking work, so everything they check must be installed first)."""


def asset_stage(description: str, *, uri_setting: str, directory: str, script: str) -> str:
    """A stage that fetches a zipped folder asset (its S3 URI in the setting ``uri_setting``),
    unpacks it into ``directory`` and runs ``script`` from it with bash."""
    archive = f"/tmp/training-cluster-{directory.rstrip('/').rsplit('/', 1)[-1]}.zip"
    return (
        "set -euo pipefail\n"
        f"# {description}: fetched as one asset, installed by {script}.\n"
        f"mkdir -p {directory}\n"
        f'aws s3 cp --only-show-errors "${uri_setting}" {archive}\n'
        f"python3 -m zipfile -e {archive} {directory}\n"
        f"chmod 0755 {directory}/*.sh\n"
        f"bash {directory}/{script}\n"
    )


def node_library() -> dict[str, str]:
    """What every node script sources, by file name: ``node/lib.sh`` and ``contract.sh``, the
    contract's names for the shell (:func:`training_cluster.contract.shell`)."""
    return {"lib.sh": asset_path("node", "lib.sh").read_text(encoding="utf-8"), "contract.sh": contract.shell()}


class NodeBootstrap:
    """Builds the user data of one instance group. Values may be CDK tokens (resolved at deploy)."""

    def __init__(self) -> None:
        self._environment: dict[str, str] = {}
        self._stages: dict[str, tuple[StagePhase, str]] = {}
        self._parts: list[tuple[str, str]] = []

    @property
    def environment(self) -> dict[str, str]:
        """The settings written to ``/etc/training-cluster/cluster.env`` (a copy)."""
        return dict(self._environment)

    @property
    def stage_names(self) -> list[str]:
        """The stages in the order they run."""
        return sorted(self._stages, key=lambda name: (PHASES.index(self._stages[name][0]), name))

    def set(self, key: str, value: str) -> None:
        """Add a setting; every node script can read it from the settings file."""
        if not _KEY.match(key):
            raise ValueError(f"setting names are upper case shell names, got {key!r}")
        problem = None if Token.is_unresolved(value) else setting_problem(value)
        if problem is not None:
            raise ValueError(f"setting {key} {problem}, got {value!r}")
        self._environment[key] = value

    def set_default(self, key: str, value: str) -> None:
        """Add a setting unless it is set already."""
        if key not in self._environment:
            self.set(key, value)

    def add_stage(self, name: str, script: str, *, phase: StagePhase = "software") -> None:
        """Add node software: a bash script run as root at boot, which must be safe to run twice.
        It runs in its ``phase`` (default ``software``; see :data:`PHASES`), by name within it."""
        if not _STAGE.match(name):
            raise ValueError(f"stage names are lower case words joined by hyphens, got {name!r}")
        if phase not in PHASES:
            raise ValueError(f"stage {name!r}: phase must be one of {', '.join(PHASES)}, got {phase!r}")
        if name in self._stages:
            raise ValueError(f"stage {name!r} is added already")
        if _HEREDOC in script:
            raise ValueError(f"stage {name!r} must not contain the line {_HEREDOC}")
        self._stages[name] = (phase, script)

    def add_part(self, content_type: str, body: str) -> None:
        """Add a part of user data for another reader than cloud-init's shell, such as nodeadm's
        ``NodeConfig`` (``application/node.eks.aws``). With parts, the user data is a MIME
        multi-part document: the parts in the order added, then the bootstrap script."""
        if not _CONTENT_TYPE.fullmatch(content_type):
            raise ValueError(
                f"a part's content type is a MIME type such as application/node.eks.aws, got {content_type!r}"
            )
        if _BOUNDARY in body:
            raise ValueError(f"a part must not contain {_BOUNDARY}")
        self._parts.append((content_type, body))

    def render(self) -> str:
        """The user data: the bootstrap script alone, or a MIME multi-part document of the parts
        (:meth:`add_part`) and the script."""
        script = self.render_text()
        if not self._parts:
            return script
        lines = ["MIME-Version: 1.0", f'Content-Type: multipart/mixed; boundary="{_BOUNDARY}"', ""]
        parts = [*self._parts, ('text/x-shellscript; charset="us-ascii"', script)]
        for content_type, body in parts:
            lines += [f"--{_BOUNDARY}", f"Content-Type: {content_type}", "", body.rstrip("\n")]
        lines.append(f"--{_BOUNDARY}--")
        return "\n".join(lines) + "\n"

    def render_text(self) -> str:
        """The user data script: write the settings and stages, then run the bootstrap script.

        The settings are written as they are (CloudFormation fills in their references); the
        scripts (stages, the library, the bootstrap) travel gzip-compressed and base64-encoded,
        unpacked by ``base64 -d | gunzip | bash`` on the node: EC2 takes 16 KB of user data, and
        an EKS node's holds the cluster's certificate as well. A stage with a deploy-time value in
        it stays uncompressed. :func:`expand` shows the script as the node runs it."""
        bootstrap = asset_path("node", "bootstrap.sh").read_text(encoding="utf-8")
        lines = [
            "set -euo pipefail",
            f"mkdir -p {ENV_FILE.rsplit('/', 1)[0]} {STAGE_DIR}",
            f"cat > {ENV_FILE} <<'{_HEREDOC}'",
            *(f"{key}='{value}'" for key, value in sorted(self._environment.items())),
            _HEREDOC,
        ]
        packed: list[str] = []
        for index, name in enumerate(self.stage_names, start=1):
            script = self._stages[name][1]
            path = f"{STAGE_DIR}/{index:02d}-{name}.sh"
            heredoc = [f"cat > {path} <<'{_HEREDOC}'", script.rstrip("\n"), _HEREDOC]
            (lines if Token.is_unresolved(script) else packed).extend(heredoc)
        for name, text in node_library().items():
            packed += [f"cat > {LIBRARY_DIR}/{name} <<'{_HEREDOC}'", text.rstrip("\n"), _HEREDOC]
        packed += [f"cat > {BOOTSTRAP} <<'{_HEREDOC}'", bootstrap.rstrip("\n"), _HEREDOC]
        lines += [*_pack("\n".join(packed) + "\n"), f"chmod 0755 {BOOTSTRAP}", BOOTSTRAP]
        return "\n".join(["#!/bin/bash", *lines]) + "\n"


_PAYLOAD = "TRAINING_CLUSTER_PAYLOAD"
_UNPACK = f"base64 -d <<'{_PAYLOAD}' | gunzip | bash -eu"


def _pack(script: str) -> list[str]:
    """``script`` as lines that run it: gzip (no timestamp, so the same script gives the same
    bytes) and base64 in 76-character lines."""
    data = base64.encodebytes(gzip.compress(script.encode(), compresslevel=9, mtime=0)).decode()
    return ["# The node's scripts, compressed (user data is limited to 16 KB).", _UNPACK, data.rstrip("\n"), _PAYLOAD]


def expand(user_data: str) -> str:
    """User data with its compressed scripts (:meth:`NodeBootstrap.render_text`) written out as
    the node runs them: for reading it, and for tests."""
    lines = user_data.split("\n")
    if _UNPACK not in lines:
        return user_data
    start = lines.index(_UNPACK)
    end = lines.index(_PAYLOAD, start + 1)
    script = gzip.decompress(base64.b64decode("".join(lines[start + 1 : end]))).decode()
    return "\n".join([*lines[: start - 1], script.rstrip("\n"), *lines[end + 1 :]])
