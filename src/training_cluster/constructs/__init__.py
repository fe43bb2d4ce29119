"""The public constructs: each can be used on its own in any CDK app."""

from .auto_repair import AutoRepair, AutoRepairOptions
from .eks import EksCluster, EksComponents, EksOptions
from .events import ClusterEvents
from .fleet import Fleet, FleetCapacity
from .lustre import LustreFileSystem
from .network import ClusterNetwork
from .observability import Observability, ObservabilityOptions
from .slurm import Slurm, SlurmOptions

__all__ = [
    "AutoRepair",
    "AutoRepairOptions",
    "ClusterEvents",
    "ClusterNetwork",
    "EksCluster",
    "EksComponents",
    "EksOptions",
    "Fleet",
    "FleetCapacity",
    "LustreFileSystem",
    "Observability",
    "ObservabilityOptions",
    "Slurm",
    "SlurmOptions",
]
