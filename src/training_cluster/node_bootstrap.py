"""User data for cluster nodes: the settings file, node-software stages and ``node/bootstrap.sh``.

Later capabilities (metrics agents, the health agent, the scheduler) add their software with
:meth:`NodeBootstrap.add_stage`; each stage becomes ``/opt/training-cluster/bootstrap.d/NN-name.sh``
and runs after the file system is mounted and before the user's lifecycle script. The order is the
stages' own, not the order of the calls: by phase (:data:`PHASES`: node software first, then the
scheduler, whose health check expects the node software in place), then by name.
"""

from __future__ import annotations

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

    def render_text(self) -> str:
        """The user data script: write the settings and stages, then run the bootstrap script."""
        bootstrap = asset_path("node", "bootstrap.sh").read_text(encoding="utf-8")
        lines = [
            "set -euo pipefail",
            f"mkdir -p {ENV_FILE.rsplit('/', 1)[0]} {STAGE_DIR}",
            f"cat > {ENV_FILE} <<'{_HEREDOC}'",
            *(f"{key}='{value}'" for key, value in sorted(self._environment.items())),
            _HEREDOC,
        ]
        for index, name in enumerate(self.stage_names, start=1):
            script = self._stages[name][1]
            path = f"{STAGE_DIR}/{index:02d}-{name}.sh"
            lines += [f"cat > {path} <<'{_HEREDOC}'", script.rstrip("\n"), _HEREDOC]
        for name, text in node_library().items():
            lines += [f"cat > {LIBRARY_DIR}/{name} <<'{_HEREDOC}'", text.rstrip("\n"), _HEREDOC]
        lines += [
            f"cat > {BOOTSTRAP} <<'{_HEREDOC}'",
            bootstrap.rstrip("\n"),
            _HEREDOC,
            f"chmod 0755 {BOOTSTRAP}",
            BOOTSTRAP,
        ]
        return "\n".join(["#!/bin/bash", *lines]) + "\n"
