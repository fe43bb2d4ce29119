"""User data for cluster nodes: the settings file, node-software stages and ``node/bootstrap.sh``.

Later capabilities (metrics agents, the health agent, the scheduler) add their software with
:meth:`NodeBootstrap.add_stage`; each stage becomes ``/opt/training-cluster/bootstrap.d/NN-name.sh``
and runs, in the order added, after the file system is mounted and before the user's lifecycle
script.
"""

from __future__ import annotations

import re

from aws_cdk import Token

from ._assets import asset_path

ENV_FILE = "/etc/training-cluster/cluster.env"
STAGE_DIR = "/opt/training-cluster/bootstrap.d"
BOOTSTRAP = "/opt/training-cluster/bootstrap.sh"
_HEREDOC = "TRAINING_CLUSTER_EOF"
_KEY = re.compile(r"^[A-Z][A-Z0-9_]*$")
_STAGE = re.compile(r"^[a-z][a-z0-9-]*$")


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


def setting_problem(value: str) -> str | None:
    """Why ``value`` cannot be a setting (each is written as ``KEY='value'`` into a shell file
    that every node script sources), or ``None``. The config check asks this of every config value
    that becomes a setting, so a config user sees the field's path instead of this construct's error."""
    if "'" in value or "\n" in value or "\r" in value or "\0" in value:
        return "must not contain quotes, newlines or NUL characters"
    return None


class NodeBootstrap:
    """Builds the user data of one instance group. Values may be CDK tokens (resolved at deploy)."""

    def __init__(self) -> None:
        self._environment: dict[str, str] = {}
        self._stages: list[tuple[str, str]] = []

    @property
    def environment(self) -> dict[str, str]:
        """The settings written to ``/etc/training-cluster/cluster.env`` (a copy)."""
        return dict(self._environment)

    @property
    def stage_names(self) -> list[str]:
        return [name for name, _ in self._stages]

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

    def add_stage(self, name: str, script: str) -> None:
        """Add node software: a bash script run as root at boot, which must be safe to run twice."""
        if not _STAGE.match(name):
            raise ValueError(f"stage names are lower case words joined by hyphens, got {name!r}")
        if name in self.stage_names:
            raise ValueError(f"stage {name!r} is added already")
        if _HEREDOC in script:
            raise ValueError(f"stage {name!r} must not contain the line {_HEREDOC}")
        self._stages.append((name, script))

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
        for index, (name, script) in enumerate(self._stages, start=1):
            path = f"{STAGE_DIR}/{index:02d}-{name}.sh"
            lines += [f"cat > {path} <<'{_HEREDOC}'", script.rstrip("\n"), _HEREDOC]
        lines += [
            f"cat > {BOOTSTRAP} <<'{_HEREDOC}'",
            bootstrap.rstrip("\n"),
            _HEREDOC,
            f"chmod 0755 {BOOTSTRAP}",
            BOOTSTRAP,
        ]
        return "\n".join(["#!/bin/bash", *lines]) + "\n"
