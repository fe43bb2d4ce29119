"""cdk-training-cluster: AWS CDK constructs and a stack for a resilient GPU training cluster.

Importing the package (or :mod:`training_cluster.config`) does not import aws-cdk-lib: the config,
its checks and the rules the constructs share read and validate a cluster without it. The stack
and the node bootstrap load aws-cdk-lib when first named.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, Finding

if TYPE_CHECKING:
    from .config import ClusterConfig
    from .node_bootstrap import NodeBootstrap
    from .stacks import TrainingClusterStack

_LAZY = {"ClusterConfig": ".config", "NodeBootstrap": ".node_bootstrap", "TrainingClusterStack": ".stacks"}
"""Names loaded when first used, and the module each comes from: the stack and the bootstrap need
aws-cdk-lib; the config builds its schema (pydantic), which a command line's ``--help`` need not wait for."""

__all__ = ["ClusterConfig", "ConfigError", "Finding", "NodeBootstrap", "TrainingClusterStack"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value
