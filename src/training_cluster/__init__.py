"""cdk-training-cluster: AWS CDK constructs and a stack for a resilient GPU training cluster."""

from .config import ClusterConfig
from .errors import ConfigError, Finding
from .node_bootstrap import NodeBootstrap
from .stacks import TrainingClusterStack

__all__ = ["ClusterConfig", "ConfigError", "Finding", "NodeBootstrap", "TrainingClusterStack"]
