"""The cluster config: one YAML file, parsed into typed, validated settings.

``ClusterConfig.from_yaml(path)`` reads a file; ``ClusterConfig.from_dict(data)`` takes the
same mapping from code. Both raise :class:`ConfigError` listing every problem at once, each
naming the field path, the value received and what is allowed. Cross-field rules live in
:mod:`training_cluster.validation`, which maps the config's fields onto the constructs' own rules
(:mod:`training_cluster.rules`). Importing this module does not import aws-cdk-lib.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    field_validator,
    model_validator,
)

from . import _findings, _yaml, catalog, patterns
from .contract import HealthCheck as HealthCheck  # re-exported
from .errors import ConfigError, Finding, show
from .ip_ranges import cidr_problem
from .repair_policy import Action
from .rules import auto_repair as repair_rules
from .rules import eks as eks_rules
from .rules import fleet as fleet_rules
from .rules import lustre as lustre_rules
from .rules import observability as observability_rules
from .rules import slurm as slurm_rules
from .rules.settings import MAX_CLUSTER_NAME_LENGTH, MAX_GROUP_NAME_LENGTH, name_problem
from .types import EKS_OS, SLURM_OS, CapacityType, LustreDeploymentType, OperatingSystem
from .validation import check

StrictInt = Annotated[int, Strict()]
"""A whole number written as a number: YAML's yes, true, 2.0 and "1_200" are not numbers."""
StrictBool = Annotated[bool, Strict()]
"""true or false: not 1, "yes" or "false"."""

EfaMode = Literal["auto", "on", "off"]

GroupNames = Annotated[list[str], Field(min_length=1)]


class _Section(BaseModel):
    # Lax by default (a path may be a string); numbers and booleans are strict where declared.
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:
        """A section written with nothing after it (``auto_repair:``, ``lustre:``) is YAML's null:
        it means the section with its defaults, as an empty mapping does."""
        if not isinstance(data, Mapping):
            return data
        empty = [name for name in _sections(cls) if name in data and data[name] is None]
        return {**data, **{name: {} for name in empty}} if empty else data


@cache
def _sections(model: type[_Section]) -> tuple[str, ...]:
    """The fields of ``model`` that are sections (optional or not)."""
    return tuple(
        name
        for name, info in model.model_fields.items()
        if any(isinstance(t, type) and issubclass(t, _Section) for t in (info.annotation, *get_args(info.annotation)))
    )


def _rule(problem: Callable[[Any], str | None]) -> AfterValidator:
    """A field checked with a construct's one-value rule: the construct's message, with the value
    received (as :func:`training_cluster.rules.got` shows it to a direct user)."""

    def check(value: Any) -> Any:
        message = problem(value)
        if message is not None:
            raise ValueError(message)
        return value

    return AfterValidator(check)


def _name(max_length: int) -> Any:
    """A cluster or group name, checked by the rule :class:`Fleet` checks its names with."""
    return Annotated[str, _rule(lambda value: name_problem(value, max_length))]


Cidr = Annotated[str, _rule(cidr_problem)]
"""What AWS refuses (:func:`cidr_problem`); what it allows but is probably not meant is a warning."""


class NetworkConfig(_Section):
    """Where the cluster lives: a new VPC (the default) or the user's own VPC and subnet."""

    vpc_cidr: Cidr = "10.0.0.0/16"
    """CIDR of the new VPC: /16 to /28, in a range AWS allows (:mod:`training_cluster.ip_ranges`;
    a publicly routable one, or one overlapping Docker's bridge, is a warning). Rejected with ``vpc_id``."""
    compute_subnet_prefix_length: Annotated[StrictInt, Field(ge=16, le=26)] = 17
    """Prefix length of the new VPC's compute subnet. Fixed by the user, never derived from the
    fleet size, so that growing a fleet never replaces the subnet (and everything in it)."""
    vpc_id: Annotated[str, Field(pattern=patterns.VPC_ID_PATTERN)] | None = None
    """The user's own VPC. Needs ``subnet_id``."""
    subnet_id: Annotated[str, Field(pattern=patterns.SUBNET_ID_PATTERN)] | None = None
    """The compute subnet in the user's VPC, in ``availability_zone``."""
    subnet_cidr: Cidr | None = None
    """CIDR of ``subnet_id``; optional, lets validation check the subnet holds the fleet (and its range,
    as for ``vpc_cidr``)."""
    interface_endpoints: StrictBool = True
    """Interface endpoints for SSM and CloudWatch in a new VPC, so nodes reach them privately."""
    flow_logs: StrictBool = True
    """VPC flow logs to CloudWatch Logs for a new VPC."""
    database_subnet_ids: (
        Annotated[list[Annotated[str, Field(pattern=patterns.SUBNET_ID_PATTERN)]], Field(min_length=2)] | None
    ) = None
    """Subnets in two or more zones of your VPC for the Slurm accounting database
    (``orchestrator.accounting: rds``). A new VPC gets two small isolated subnets of its own."""
    control_plane_subnet_ids: list[Annotated[str, Field(pattern=patterns.SUBNET_ID_PATTERN)]] | None = None
    """Subnets in two or more zones of your VPC for the EKS control plane's network interfaces
    (``orchestrator.type: eks``; EKS requires two zones). A new VPC gets two small isolated subnets."""

    @property
    def uses_existing_vpc(self) -> bool:
        return self.vpc_id is not None


class CapacityConfig(_Section):
    """Which capacity a group launches into."""

    type: CapacityType = "on-demand"
    """``on-demand``; ``reservation`` (a targeted On-Demand Capacity Reservation); or
    ``capacity-block`` (an EC2 Capacity Block for ML)."""
    reservation_id: str | None = None
    """The reservation (``cr-`` followed by 17 hex digits) for ``reservation`` and
    ``capacity-block``."""


class InstanceGroupConfig(_Section):
    """A fleet of identical instances: a GPU/Trainium group, or a CPU group (controller, login)."""

    name: _name(MAX_GROUP_NAME_LENGTH)  # type: ignore[valid-type]
    instance_type: str
    count: Annotated[StrictInt, _rule(fleet_rules.count_problem)]
    """Instances in the group (a fixed fleet): 1 to 2000."""
    spares: Annotated[StrictInt, Field(ge=0, le=fleet_rules.MAX_SPARES)] = 0
    """Hot spares (Slurm): this many more instances, booted, checked and held out of the partitions
    in a reservation of their own; one is let into the partition the moment a node of the group
    fails, and the failed node's replacement becomes the next spare. Default none."""
    efa: EfaMode = "auto"
    """``auto``: EFA on every EFA card where the type supports it; ``on``: the same, and an error
    where it does not; ``off``: one ENA interface."""
    placement_group: StrictBool | None = None
    """Create a cluster placement group for the group (one AZ, low-latency network). Default: yes
    for on-demand capacity; no for a reservation (it was created in, or outside, a placement group
    of its own) or a Capacity Block (already placed close together)."""
    placement_group_name: Annotated[str, Field(max_length=255, pattern=patterns.EC2_NAME_PATTERN)] | None = None
    """An existing cluster placement group to launch into instead, such as the one an On-Demand
    Capacity Reservation was created in."""
    capacity: CapacityConfig = CapacityConfig()
    root_volume_gib: Annotated[StrictInt, _rule(fleet_rules.root_volume_problem)] = 500
    os: OperatingSystem = "ubuntu-22.04"
    """The operating system of the group's AMI: picks the default AMI, the root device name and
    how the Lustre client installs. Default ``ubuntu-22.04``; ``ubuntu-24.04`` when the cluster
    runs Slurm (its archive has the Slurm the nodes install); ``amazon-linux-2023`` with EKS (the
    EKS-optimized accelerated images)."""
    image_id: Annotated[str, Field(pattern=patterns.AMI_ID_PATTERN)] | None = None
    """Default: the Deep Learning Base OSS Nvidia Driver AMI for ``os`` (the Deep Learning Base
    Neuron AMI on Trainium and Inferentia); with EKS, the EKS-optimized AL2023 image of the cluster's
    Kubernetes version (NVIDIA, Neuron or standard). Resolved at deploy time from its SSM public parameter."""
    lifecycle_script: Path | None = None
    """The user's own script, run as root at the end of boot; shipped as an asset. A relative
    path is taken from the config file's folder."""
    deep_health_checks: list[str] | None = None
    """``backend: hyperpod`` only: HyperPod's checks on every new node before it takes work
    (``InstanceStress``, ``InstanceConnectivity``). Default: both on accelerator groups, none on
    CPU groups."""
    training_plan_arn: str | None = None
    """``backend: hyperpod`` only: the SageMaker training plan the group's capacity comes from
    (HyperPod's counterpart of a Capacity Block)."""
    threads_per_core: Literal[1, 2] | None = None
    """``backend: hyperpod`` only: 1 turns simultaneous multithreading off. Default: the type's own."""

    @field_validator("efa", mode="before")
    @classmethod
    def _yaml_on_off(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare on/off as a boolean: take it as the word the user wrote.
        if isinstance(value, bool):
            return "on" if value else "off"
        return value

    @property
    def instance_info(self) -> catalog.InstanceTypeInfo:
        info = catalog.get(self.instance_type)
        if info is None:  # validation rejects unknown types before anything asks
            raise LookupError(f"instance type {self.instance_type!r} is not in the catalog")
        return info

    @property
    def creates_placement_group(self) -> bool:
        return fleet_rules.creates_placement_group(self.placement_group, self.placement_group_name, self.capacity.type)

    @property
    def efa_enabled(self) -> bool:
        return self.efa != "off" and self.instance_info.efa_supported


class LustreConfig(_Section):
    """An FSx for Lustre file system, mounted on every node."""

    storage_capacity_gib: Annotated[StrictInt, Field(ge=1), _rule(lustre_rules.storage_capacity_problem)] = 1200
    deployment_type: LustreDeploymentType = "PERSISTENT_2"
    throughput_mbps_per_tib: Annotated[StrictInt, Field(ge=1, le=100_000)] | None = None
    """Default: 250 for PERSISTENT_2, 200 for PERSISTENT_1, none for the scratch types."""
    mount_path: Annotated[str, Field(max_length=200, pattern=patterns.MOUNT_PATH_PATTERN)] = "/fsx"
    """Where every node mounts the file system: a normalized absolute path of a folder of its own."""
    s3_import_path: Annotated[str, Field(pattern=patterns.S3_URI_PATTERN)] | None = None
    """An S3 location linked to the file system: a data repository association importing and
    exporting new, changed and deleted objects on PERSISTENT_2; import/export paths otherwise."""
    compression: Literal["NONE", "LZ4"] = "LZ4"
    metadata_iops: Annotated[StrictInt, Field(ge=1, le=1_000_000)] | None = None
    """PERSISTENT_2 metadata IOPS; default: AUTOMATIC mode."""
    kms_key_arn: Annotated[str, Field(pattern=patterns.KMS_KEY_PATTERN)] | None = None
    """A customer managed key (persistent types only). Default: the AWS managed key for FSx."""
    retain_on_delete: StrictBool = True
    """Keep the file system (and its data) when the stack is deleted or the resource replaced."""

    @property
    def throughput(self) -> int | None:
        if self.throughput_mbps_per_tib is not None:
            return self.throughput_mbps_per_tib
        return lustre_rules.default_throughput(self.deployment_type)


class StorageConfig(_Section):
    lustre: LustreConfig | None = None
    """Omit for no file system."""


RepairAction = Action


class RepairPolicyConfig(_Section):
    """Overrides of the default repair policy (see training_cluster/repair_policy.py)."""

    xid: dict[Annotated[str, Field(pattern=patterns.XID_PATTERN)], RepairAction] = {}
    """NVIDIA XID number -> action, e.g. ``{"79": replace, "13": observe}``. Keys are the number as
    the kernel prints it (``79``, not ``079``); a YAML number key is taken as that number."""
    checks: dict[HealthCheck, RepairAction] = {}
    """Health check or signal -> action, e.g. ``{lustre: observe}``."""

    @field_validator("xid", mode="before")
    @classmethod
    def _number_keys(cls, value: Any) -> Any:
        # {79: replace} in YAML has a number key: take it as the number it is.
        if not isinstance(value, Mapping):
            return value
        out: dict[Any, Any] = {}
        for key, action in value.items():
            name = str(key) if isinstance(key, int) and not isinstance(key, bool) else key
            if name in out:
                raise ValueError(f"key {show(name)} is given twice, as a number and as a string")
            out[name] = action
        return out


class AutoRepairConfig(_Section):
    """The health agent on every node and the control plane that reboots or replaces failed nodes."""

    enabled: StrictBool = True
    dry_run: StrictBool = False
    """Decide and record, but reboot or replace nothing."""
    max_parallel_replacements: Annotated[StrictInt, Field(ge=1, le=25)] = 1
    """Replacements in flight at once in one instance group."""
    unhealthy_threshold_percent: Annotated[StrictInt, Field(ge=1, le=100)] = 20
    """Above this share of a group unhealthy at once (and more than one node), stop acting and notify."""
    max_unhealthy_per_group: Annotated[StrictInt, Field(ge=1, le=1000)] = repair_rules.DEFAULT_MAX_UNHEALTHY_PER_GROUP
    """Above this many nodes of one group unhealthy at once, whatever its size, stop acting and notify."""
    max_unhealthy_in_cluster: Annotated[StrictInt, Field(ge=1, le=1000)] = repair_rules.DEFAULT_MAX_UNHEALTHY_IN_CLUSTER
    """Above this many nodes of the whole cluster unhealthy at once, stop acting and notify."""
    reboot_before_replace: StrictBool = True
    """Reboot for faults a reboot can clear; replace only if the fault comes back within an hour."""
    notification_email: Annotated[str, Field(max_length=254, pattern=patterns.EMAIL_PATTERN)] | None = None
    """Subscribe this address to the cluster's events topic (the address must confirm)."""
    policy: RepairPolicyConfig = RepairPolicyConfig()
    check_interval_seconds: Annotated[StrictInt, Field(ge=10, le=3600)] = 30
    """How often the agent checks each node."""
    deep_checks: StrictBool = False
    """On first boot, run ``dcgmi diag -r 2`` and an EFA provider check before the node takes work."""


class ObservabilityConfig(_Section):
    """Amazon Managed Prometheus and Managed Grafana, with alerts."""

    prometheus: StrictBool = True
    """An Amazon Managed Prometheus workspace with the cluster's alert rules."""
    grafana: StrictBool = True
    """An Amazon Managed Grafana workspace; false for teams with their own Grafana (the
    Prometheus workspace still receives the metrics)."""
    grafana_auth: Literal["AWS_SSO", "SAML"] = "AWS_SSO"
    """How people sign in to Grafana: IAM Identity Center (must be enabled in the account) or SAML."""
    alert_email: Annotated[str, Field(max_length=254, pattern=patterns.EMAIL_PATTERN)] | None = None
    """Subscribe this address to the cluster's events topic, where alerts go (it must confirm)."""
    scrape_interval_seconds: Annotated[StrictInt, _rule(observability_rules.scrape_interval_problem)] = 15
    """How often each node's collector scrapes its exporters."""


class EksComponentsConfig(_Section):
    """The in-cluster components of an EKS cluster, each pinned (``training_cluster.kube_manifests``)."""

    nvidia_device_plugin: StrictBool = True
    """The NVIDIA device plugin on GPU nodes (``nvidia.com/gpu``)."""
    efa_device_plugin: StrictBool = True
    """The EFA device plugin on EFA nodes (``vpc.amazonaws.com/efa``)."""
    neuron_device_plugin: StrictBool = True
    """The Neuron device plugin on Trainium and Inferentia nodes (``aws.amazon.com/neuron``)."""
    gpu_metrics: StrictBool = True
    """The DCGM exporter on GPU nodes, with pod and namespace labels, scraped by each node's collector."""
    training_operator: StrictBool = True
    """The Kubeflow training operator 1.8.1 (``PyTorchJob``; HyperPod's job auto-resume works with it)."""


class OrchestratorConfig(_Section):
    """The scheduler. Omit the section for none; write it (even empty) for Slurm."""

    type: Literal["slurm", "eks", "none"] = "slurm"
    """``slurm``: a controller, optional login nodes, and every instance group as Slurm compute
    nodes; ``eks``: an Amazon EKS cluster whose nodes are the instance groups and a small system
    group; ``none``: the instance groups alone."""
    controller_instance_type: str = "m7i.4xlarge"
    """The controller runs slurmctld and slurmdbd (and the accounting database with ``local``)."""
    login_nodes: Annotated[StrictInt, Field(ge=0, le=10)] = 1
    """Login nodes where users submit jobs; reached through SSM Session Manager."""
    login_instance_type: str = "m7i.2xlarge"
    accounting: Literal["local", "rds", "off"] = "local"
    """``local``: slurmdbd and MariaDB on the controller, the database kept on the file system;
    ``rds``: slurmdbd on the controller, the database in Amazon RDS for MariaDB (in two small
    subnets of a new VPC, or ``network.database_subnet_ids``); ``off``: no job accounting."""
    accounting_instance_class: Annotated[str, Field(pattern=patterns.RDS_CLASS_PATTERN)] = "db.t4g.medium"
    """The RDS instance class with ``accounting: rds``."""
    partitions: dict[Annotated[str, _rule(slurm_rules.partition_name_problem)], GroupNames] | None = None
    """Partition name -> instance group names; the first is the default partition. Default: one
    partition per instance group, named after it."""
    users: dict[
        Annotated[str, _rule(slurm_rules.user_name_problem)], Annotated[StrictInt, _rule(slurm_rules.uid_problem)]
    ] = {}
    """Cluster users and their uids, the same on every node, homes on the file system:
    ``{alice: 2001}``. Jobs run as these users (Slurm needs a user to exist, with one uid, on every node)."""
    containers: StrictBool = False
    """Install enroot and pyxis on compute nodes so jobs can run container images
    (``srun --container-image=...``)."""
    users_can_use_node_role: StrictBool = False
    """Let users' jobs and sessions use the nodes' IAM role (through the instance metadata
    service). Off: only root reaches it, because the role can read the munge key, and the key
    makes anyone root on every node. Turn on only if every user may be root."""
    ssh_key_name: Annotated[str, Field(max_length=255, pattern=patterns.EC2_NAME_PATTERN)] | None = None
    """An EC2 key pair for the login and controller nodes. Default: none; use Session Manager
    (and its SSH port forwarding) instead."""

    kubernetes_version: str = eks_rules.DEFAULT_KUBERNETES_VERSION
    """EKS: the Kubernetes version, one in EKS standard support (``training_cluster.rules.eks``).
    Write it in quotes: YAML reads 1.30 as the number 1.3."""
    endpoint_public_cidrs: list[str] = []
    """EKS: address ranges that may reach the Kubernetes API endpoint from the internet. Empty (the
    default): the endpoint is private, reached from the VPC only."""
    admin_role_arns: list[str] = []
    """EKS: IAM roles given cluster-admin through access entries."""
    system_instance_type: str = "m7i.xlarge"
    """EKS: the CPU type of the system group, where cluster add-ons and operators run."""
    system_nodes: Annotated[StrictInt, Field(ge=1, le=10)] = 2
    """EKS: nodes in the system group."""
    service_cidr: str = eks_rules.DEFAULT_SERVICE_CIDR
    """EKS: the Kubernetes service range (RFC 1918, /12 to /24), outside the VPC's range."""
    pod_addresses_per_node: Annotated[StrictInt, _rule(eks_rules.pod_addresses_problem)] = (
        eks_rules.DEFAULT_POD_ADDRESSES
    )
    """EKS: compute subnet addresses the VPC CNI keeps on each node for pods (4 to 250; 2 more are
    kept ready). The subnet check counts them."""
    taints: dict[str, list[str]] = {}
    """EKS: instance group name -> taints its nodes register with, ``key[=value]:Effect``, e.g.
    ``{gpu: ["dedicated=gpu:NoSchedule"]}``."""
    components: EksComponentsConfig = EksComponentsConfig()
    install_components: StrictBool = True
    """EKS: apply the components on deploy (through the cluster's kubectl provider). False: leave
    them out of the stack and write their manifests into the cloud assembly, for Argo CD or Flux."""

    @field_validator("kubernetes_version", mode="before")
    @classmethod
    def _version_text(cls, value: Any) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            raise ValueError(
                f'write the version in quotes, such as "{eks_rules.DEFAULT_KUBERNETES_VERSION}": YAML reads a '
                "bare 1.30 as the number 1.3"
            )
        return value

    @property
    def enabled(self) -> bool:
        """Slurm runs the cluster."""
        return self.type == "slurm"

    @property
    def eks(self) -> bool:
        return self.type == "eks"


class ClusterConfig(_Section):
    """A whole cluster. The key names are the user's contract."""

    name: _name(MAX_CLUSTER_NAME_LENGTH)  # type: ignore[valid-type]
    """Lower case letters, digits and single hyphens; used in resource names and tags."""
    region: Annotated[str, Field(pattern=patterns.REGION_PATTERN)]
    availability_zone: Annotated[str, Field(max_length=64, pattern=patterns.ZONE_PATTERN)]
    """Where the capacity is: every node and the file system live in this zone."""
    network: NetworkConfig = NetworkConfig()
    instance_groups: Annotated[list[InstanceGroupConfig], Field(min_length=1)]
    storage: StorageConfig = StorageConfig()
    auto_repair: AutoRepairConfig = AutoRepairConfig()
    observability: ObservabilityConfig = ObservabilityConfig()
    orchestrator: OrchestratorConfig = OrchestratorConfig(type="none")
    backend: Literal["self-managed", "hyperpod"] = "self-managed"
    """``self-managed``: the nodes are this stack's Auto Scaling groups, repaired by its own
    control plane. ``hyperpod``: the same instance groups, network, file system and observability,
    with the nodes run by a SageMaker HyperPod cluster (its health agent, deep checks and node
    recovery)."""

    @model_validator(mode="before")
    @classmethod
    def _slurm_os(cls, data: Any) -> Any:
        """An empty ``orchestrator:`` is Slurm with its defaults; a group that does not name its
        ``os`` runs Ubuntu 24.04 with Slurm and Amazon Linux 2023 with EKS."""
        if not isinstance(data, Mapping):
            return data
        if "orchestrator" in data and data["orchestrator"] is None:
            data = {**data, "orchestrator": {}}
        orchestrator = data.get("orchestrator")
        kind = orchestrator.get("type", "slurm") if isinstance(orchestrator, Mapping) else None
        os = {"slurm": SLURM_OS, "eks": EKS_OS}.get(kind) if isinstance(kind, str) else None
        groups = data.get("instance_groups")
        if os is None or not isinstance(groups, list):
            return data
        return {
            **data,
            "instance_groups": [{**g, "os": os} if isinstance(g, Mapping) and "os" not in g else g for g in groups],
        }

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, base_dir: Path | None = None, source: str | None = None
    ) -> ClusterConfig:
        """Parse and validate. Relative ``lifecycle_script`` paths resolve against ``base_dir``."""
        if not isinstance(data, Mapping):
            raise ConfigError([Finding(path="", message=f"a config is a mapping of keys, got {show(data)}")], source)
        shape = _yaml.shape_problem(data)
        if shape is not None:
            raise ConfigError([Finding(path="", message=shape)], source)
        try:
            config = cls.model_validate(_resolve_paths(data, base_dir))
        except ValidationError as exc:
            raise ConfigError(_findings.findings(cls, exc), source) from None
        errors = [f for f in check(config) if f.level == "error"]
        if errors:
            raise ConfigError(errors, source)
        return config

    @classmethod
    def from_yaml(cls, path: str | Path) -> ClusterConfig:
        """Read a cluster config file."""
        path = Path(path)
        try:
            data = _yaml.load(_yaml.read_regular_file(path, _yaml.MAX_CONFIG_BYTES))
        except OSError as exc:
            raise ConfigError([Finding(path="", message=f"cannot read the file: {exc.strerror}")], str(path)) from None
        except _yaml.LoadProblem as exc:
            raise ConfigError([Finding(path="", message=m) for m in exc.problems], str(path)) from None
        return cls.from_dict(data if data is not None else {}, base_dir=path.parent, source=str(path))

    def warnings(self) -> list[Finding]:
        """What is allowed but probably not meant (reported as CDK warnings at synthesis)."""
        return [f for f in check(self) if f.level == "warning"]


def _resolve_paths(data: Mapping[str, Any], base_dir: Path | None) -> dict[str, Any]:
    out = dict(data)
    groups = out.get("instance_groups")
    if base_dir is not None and isinstance(groups, list):
        out["instance_groups"] = [
            {**g, "lifecycle_script": str(base_dir / g["lifecycle_script"])}
            if isinstance(g, Mapping) and isinstance(g.get("lifecycle_script"), str)
            else g
            for g in groups
        ]
    return out
