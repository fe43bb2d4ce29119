"""The words the config and the constructs share, written once.

Standard library only: the config (and a CLI) read these without importing aws-cdk-lib, and the
constructs take the same words as their props.
"""

from __future__ import annotations

from typing import Literal, get_args

OperatingSystem = Literal["ubuntu-22.04", "ubuntu-24.04", "amazon-linux-2023"]
"""The operating system of a fleet's AMI: picks the default AMI, the root device name and how the
Lustre client installs."""
OPERATING_SYSTEMS: tuple[OperatingSystem, ...] = get_args(OperatingSystem)

CapacityType = Literal["on-demand", "reservation", "capacity-block"]
"""Which capacity a fleet launches into: On-Demand, a targeted On-Demand Capacity Reservation, or
an EC2 Capacity Block for ML."""
CAPACITY_TYPES: tuple[CapacityType, ...] = get_args(CapacityType)

LustreDeploymentType = Literal["SCRATCH_1", "SCRATCH_2", "PERSISTENT_1", "PERSISTENT_2"]
"""The FSx for Lustre deployment types (SSD storage)."""
LUSTRE_DEPLOYMENT_TYPES: tuple[LustreDeploymentType, ...] = get_args(LustreDeploymentType)

SLURM_OS: OperatingSystem = "ubuntu-24.04"
"""Slurm nodes run Ubuntu 24.04, whose archive has Slurm 23.11 (dynamic nodes, configless)."""

EKS_OS: OperatingSystem = "amazon-linux-2023"
"""EKS nodes run the EKS-optimized Amazon Linux 2023 images, which join the cluster with nodeadm."""
