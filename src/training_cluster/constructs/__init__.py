"""The public constructs: each can be used on its own in any CDK app."""

from .fleet import Fleet, FleetCapacity
from .lustre import LustreFileSystem
from .network import ClusterNetwork

__all__ = ["ClusterNetwork", "Fleet", "FleetCapacity", "LustreFileSystem"]
