#!/usr/bin/env python3
"""The ready app: ``cdk synth -c config=path/to/cluster.yaml`` (default: examples/default.yaml)."""

from __future__ import annotations

import sys
from pathlib import Path

import aws_cdk as cdk

from training_cluster import ConfigError
from training_cluster.build import build_cluster

DEFAULT_CONFIG = Path(__file__).resolve().parent / "examples" / "default.yaml"


def main() -> int:
    app = cdk.App()
    path = app.node.try_get_context("config") or DEFAULT_CONFIG
    if str(app.node.try_get_context("moto")).lower() == "true":  # make deploy-local only
        from training_cluster.deploy_local import MotoCompatible

        cdk.Aspects.of(app).add(MotoCompatible())
    try:
        build_cluster(app, path)  # synthesized into the app's output folder, for the CDK CLI
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
