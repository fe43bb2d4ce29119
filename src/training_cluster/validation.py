"""The config's checks: each construct's own rules (:mod:`training_cluster.rules`) asked with the
config's values, their findings moved to the config's field paths, and the rules that only the
config knows (field paths across sections, the zone, the network's size, lifecycle scripts).

``check(config)`` returns every finding at once; errors stop synthesis, warnings become CDK
warning annotations on the stack. It imports no aws-cdk-lib, so a CLI gives the same findings.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from . import addresses, catalog
from .errors import Finding, show
from .rules import relocate
from .rules.auto_repair import RepairFleet, auto_repair_findings
from .rules.eks import EksFleet, eks_findings, service_cidr_problem
from .rules.fleet import fleet_findings, lifecycle_script_findings
from .rules.hyperpod import MAX_GROUPS, hyperpod_group_findings, instance_type_problem, partitions_problem
from .rules.hyperpod import kubernetes_version_warning as hyperpod_kubernetes_version_warning
from .rules.hyperpod import region_problem as hyperpod_region_problem
from .rules.lustre import kms_key_region_problem, lustre_findings
from .rules.network import zone_region_problem
from .rules.settings import setting_value_problem
from .rules.slurm import SlurmFleet, slurm_findings
from .types import SLURM_OS

if TYPE_CHECKING:  # the config imports this module to check itself
    from .config import ClusterConfig, InstanceGroupConfig, LustreConfig

SLURM_CONTROLLER_GROUP, SLURM_LOGIN_GROUP = "controller", "login"
"""The group names of the fleets the stack makes for Slurm's controller and login nodes."""


def check(config: ClusterConfig) -> list[Finding]:
    """Every problem with ``config``: errors and warnings, each once."""
    findings = [
        *_observability(config),
        *_zone(config),
        *addresses.network(config),
        *_groups(config),
        *(_lustre(config.storage.lustre) if config.storage.lustre else ()),
        *_key_region(config),
        *addresses.subnet_capacity(config),
        *_orchestrator(config),
        *_backend(config),
        *_repair_limits(config),
        *_node_settings(config),
    ]
    return list(dict.fromkeys(findings))  # a rule the config and a construct both state is said once


def _node_settings(config: ClusterConfig) -> Iterator[Finding]:
    """Config values that nodes read as settings, with the rule every construct's settings follow."""
    values: list[tuple[str, str]] = [("name", config.name), ("region", config.region)]
    values += [(f"instance_groups[{i}].name", g.name) for i, g in enumerate(config.instance_groups)]
    values += [(f"orchestrator.users.{user}", user) for user in config.orchestrator.users]
    if config.storage.lustre is not None:
        values.append(("storage.lustre.mount_path", config.storage.lustre.mount_path))
    for path, value in values:
        problem = setting_value_problem(value)
        if problem is not None:
            yield Finding(path=path, message=f"{problem} (got {show(value)})")


def _repair_limits(config: ClusterConfig) -> Iterator[Finding]:
    """The repair caps, with the rule the construct states (``options.`` moved to ``auto_repair.``)."""
    repair = config.auto_repair
    findings = auto_repair_findings(
        fleets=[RepairFleet(cluster_name=config.name, group_name=g.name) for g in config.instance_groups],
        max_unhealthy_per_group=repair.max_unhealthy_per_group,
        max_unhealthy_in_cluster=repair.max_unhealthy_in_cluster,
    )
    for finding in findings:
        if finding.path == "options.max_unhealthy_in_cluster" and finding.level == "warning":
            yield Finding(path="auto_repair.max_unhealthy_in_cluster", level="warning", message=finding.message)


def _observability(config: ClusterConfig) -> Iterator[Finding]:
    if config.observability.grafana and not config.observability.prometheus:
        yield Finding(
            path="observability.grafana",
            message="Grafana reads the Prometheus workspace: set prometheus: true, or grafana: false",
        )


def _zone(config: ClusterConfig) -> Iterator[Finding]:
    zones = catalog.availability_zones(config.region)
    az = config.availability_zone
    problem = zone_region_problem(az, config.region)
    if problem is not None:
        yield Finding(path="availability_zone", message=problem)
    elif zones and az not in zones:
        yield Finding(
            path="availability_zone",
            message=f"{az!r} is not a zone of {config.region}; allowed: {', '.join(zones)}",
        )
    if not zones:
        yield Finding(
            path="region",
            level="warning",
            message=f"{config.region!r} is not in the instance-type catalog; zone and offering checks were skipped",
        )


def _groups(config: ClusterConfig) -> Iterator[Finding]:
    for name, n in Counter(g.name for g in config.instance_groups).items():
        if n > 1:
            yield Finding(
                path="instance_groups", message=f"group name {name!r} is used {n} times; names must be unique"
            )
    by_id: dict[str, list[str]] = {}
    for name in dict.fromkeys(g.name for g in config.instance_groups):
        by_id.setdefault(name.replace("-", ""), []).append(name)
    for names in by_id.values():
        if len(names) > 1:
            yield Finding(
                path="instance_groups",
                message=f"group names {' and '.join(map(repr, names))} differ only in hyphens and would give their "
                "resources the same ids; rename one",
            )
    for i, group in enumerate(config.instance_groups):
        yield from _group(config, f"instance_groups[{i}]", group)


EFA_PROP = {"auto": None, "on": True, "off": False}
"""A group's ``efa`` as :class:`Fleet` takes it."""
FLEET_FIELDS = {"create_placement_group": "placement_group"}
"""Fleet props whose config field has another name (the others have the same)."""


def _group(config: ClusterConfig, path: str, group: InstanceGroupConfig) -> Iterator[Finding]:
    """The fleet's own rules, and what only the config knows: the catalog's offerings, the script."""
    findings = fleet_findings(
        instance_type=group.instance_type,
        count=group.count,
        spares=group.spares,
        efa=EFA_PROP[group.efa],
        capacity_type=group.capacity.type,
        reservation_id=group.capacity.reservation_id,
        create_placement_group=group.placement_group,
        placement_group_name=group.placement_group_name,
    )
    props = {"instance_type", "count", "spares", "efa", "capacity", "create_placement_group", "placement_group_name"}
    yield from relocate(findings, {prop: f"{path}.{FLEET_FIELDS.get(prop, prop)}" for prop in props})
    info = catalog.get(group.instance_type)
    known_region = bool(catalog.availability_zones(config.region))  # else one warning says it all
    if known_region and info is not None and info.offered_in and not info.is_offered_in(config.availability_zone):
        yield Finding(
            path=f"{path}.instance_type",
            level="warning",
            message=f"{info.name} was not offered in {config.availability_zone} when the catalog was made; "
            "check DescribeInstanceTypeOfferings for your account before deploying",
        )
    if group.lifecycle_script is not None:
        yield from lifecycle_script_findings(f"{path}.lifecycle_script", group.lifecycle_script)


def _key_region(config: ClusterConfig) -> Iterator[Finding]:
    """A customer key must be in the cluster's region: FSx cannot use a key of another region."""
    lustre = config.storage.lustre
    if lustre is not None and lustre.kms_key_arn is not None:
        problem = kms_key_region_problem(lustre.kms_key_arn, config.region)
        if problem is not None:
            yield Finding(path="storage.lustre.kms_key_arn", message=problem)


def _lustre(lustre: LustreConfig) -> list[Finding]:
    """The file system's own rules, on ``storage.lustre``'s fields."""
    findings = lustre_findings(
        deployment_type=lustre.deployment_type,
        storage_capacity_gib=lustre.storage_capacity_gib,
        throughput_mbps_per_tib=lustre.throughput_mbps_per_tib,
        metadata_iops=lustre.metadata_iops,
        compression=lustre.compression,
        kms_key=lustre.kms_key_arn is not None,
        s3_import_path=lustre.s3_import_path,
        mount_path=lustre.mount_path,
    )
    props = {"storage_capacity_gib", "throughput_mbps_per_tib", "metadata_iops", "s3_import_path", "mount_path"}
    paths = {prop: f"storage.lustre.{prop}" for prop in props}
    return relocate(findings, {**paths, "kms_key": "storage.lustre.kms_key_arn"})


def _slurm(config: ClusterConfig) -> list[Finding]:
    """Slurm's own rules, on the fleets the stack gives it: the controller, the login nodes and
    every instance group."""
    orchestrator = config.orchestrator
    controller = SlurmFleet(
        group_name=SLURM_CONTROLLER_GROUP, instance_type=orchestrator.controller_instance_type, count=1, os=SLURM_OS
    )
    login = SlurmFleet(
        group_name=SLURM_LOGIN_GROUP,
        instance_type=orchestrator.login_instance_type,
        count=max(orchestrator.login_nodes, 1),
        os=SLURM_OS,
    )
    groups = config.instance_groups
    findings = slurm_findings(
        controller=controller,
        # The login type is checked even without login nodes: a later login_nodes: 1 must not fail.
        login=login,
        compute=[
            SlurmFleet(group_name=g.name, instance_type=g.instance_type, count=g.count, os=g.os, spares=g.spares)
            for g in groups
        ],
        partitions=orchestrator.partitions,
        users=orchestrator.users,
    )
    paths = {
        "controller.instance_type": "orchestrator.controller_instance_type",
        "login.instance_type": "orchestrator.login_instance_type",
        "compute": "instance_groups",
        "options.partitions": "orchestrator.partitions",
        "options.users": "orchestrator.users",
    }
    for i in range(len(groups)):
        paths[f"compute[{i}].group_name"] = f"instance_groups[{i}].name"
        paths[f"compute[{i}].os"] = f"instance_groups[{i}].os"
    return relocate(findings, paths)


SERVICE_CIDR_SUGGESTIONS = ("192.168.0.0/16", "172.20.0.0/16", "10.100.0.0/16")
"""Service ranges an overlap error suggests, those outside the VPC's range first."""
EKS_FIELDS = frozenset(
    {
        "kubernetes_version",
        "endpoint_public_cidrs",
        "admin_role_arns",
        "system_instance_type",
        "system_nodes",
        "service_cidr",
        "pod_addresses_per_node",
        "taints",
        "components",
        "install_components",
    }
)
"""The ``orchestrator`` fields EKS reads; the others (but ``type``) are Slurm's."""


HYPERPOD_GROUP_FIELDS = ("deep_health_checks", "training_plan_arn", "threads_per_core")
"""The instance group fields only HyperPod reads."""


def _backend(config: ClusterConfig) -> Iterator[Finding]:
    """``backend: hyperpod``: what HyperPod offers, and the self-managed options it has no use for,
    each refused with what takes its place; ``self-managed``: HyperPod's fields refused."""
    groups = config.instance_groups
    if config.backend != "hyperpod":
        for i, group in enumerate(groups):
            for field in HYPERPOD_GROUP_FIELDS:
                if field in group.model_fields_set:
                    yield Finding(
                        path=f"instance_groups[{i}].{field}", message="only used with backend: hyperpod; remove it"
                    )
        return
    problem = hyperpod_region_problem(config.region)
    if problem is not None:
        yield Finding(path="region", message=problem)
    orchestrator = config.orchestrator
    if orchestrator.type == "none":
        yield Finding(path="orchestrator.type", message="a HyperPod cluster runs slurm or eks; set one of them")
    made = {"slurm": 1 + (1 if orchestrator.login_nodes else 0), "eks": 1}.get(orchestrator.type, 0)
    if len(groups) + made > MAX_GROUPS:
        yield Finding(
            path="instance_groups",
            message=f"a HyperPod cluster has at most {MAX_GROUPS} instance groups, {made} of them the orchestrator's; "
            f"got {len(groups)} of yours",
        )
    for i, group in enumerate(groups):
        path = f"instance_groups[{i}]"
        findings = hyperpod_group_findings(
            path,
            instance_type=group.instance_type,
            count=group.count,
            deep_health_checks=group.deep_health_checks,
            training_plan_arn=group.training_plan_arn,
            region=config.region,
        )
        if catalog.get(group.instance_type) is None:  # the catalog's error names the field once
            findings = [
                f for f in findings if f.path != f"{path}.instance_type" or f.message.startswith("write the EC2")
            ]
        yield from findings
        for field, message in _hyperpod_refusals(group, eks=orchestrator.eks):
            yield Finding(path=f"{path}.{field}", message=message)
        if group.placement_group:
            yield Finding(
                path=f"{path}.placement_group",
                level="warning",
                message="HyperPod places a group's instances itself and makes no placement group of ours; "
                "remove it, or stay on backend: self-managed",
            )
    if orchestrator.eks:
        warning = hyperpod_kubernetes_version_warning(orchestrator.kubernetes_version)
        if warning is not None:
            yield Finding(path="orchestrator.kubernetes_version", level="warning", message=warning)
    own = {"slurm": ("controller_instance_type", "login_instance_type"), "eks": ("system_instance_type",)}
    for field in own.get(orchestrator.type, ()):
        if field == "login_instance_type" and not orchestrator.login_nodes:
            continue
        problem = instance_type_problem(getattr(orchestrator, field))
        if problem is not None:
            yield Finding(path=f"orchestrator.{field}", message=problem)
    if orchestrator.enabled and orchestrator.accounting == "rds":
        yield Finding(
            path="orchestrator.accounting",
            message="HyperPod runs its own Slurm, with no accounting database of ours (HyperPod's own needs "
            "continuous provisioning); remove it",
        )
    for field, what in (
        ("accounting", "HyperPod runs its own Slurm, with no accounting database of ours"),
        ("containers", "HyperPod's images bring their own container runtime; ours is not installed"),
        ("ssh_key_name", "HyperPod's nodes are reached through Session Manager; the key pair is not used"),
    ):
        set_here = field in orchestrator.model_fields_set and (
            field != "accounting" or orchestrator.accounting != "rds"
        )
        if orchestrator.enabled and set_here:
            yield Finding(path=f"orchestrator.{field}", level="warning", message=f"{what}; remove it")
    for i, names in _partitions_of(config).items():
        problem = partitions_problem(names)
        if problem is not None:
            yield Finding(
                path="orchestrator.partitions", message=f"{problem}: {groups[i].name} is in {', '.join(sorted(names))}"
            )
    repair = config.auto_repair
    ignored = sorted(
        repair.model_fields_set
        & {
            "max_parallel_replacements",
            "unhealthy_threshold_percent",
            "max_unhealthy_per_group",
            "max_unhealthy_in_cluster",
            "reboot_before_replace",
            "check_interval_seconds",
            "policy",
        }
    )
    for field in ignored:
        yield Finding(
            path=f"auto_repair.{field}",
            level="warning",
            message="HyperPod repairs its own nodes, by its own rules: not used (dry_run is: HyperPod then labels "
            "faulty nodes and acts on none); remove it",
        )
    if "scrape_interval_seconds" in config.observability.model_fields_set:
        yield Finding(
            path="observability.scrape_interval_seconds",
            level="warning",
            message="no collector of ours runs on HyperPod's nodes yet: the workspaces get no node metrics; remove it",
        )
    if config.auto_repair.deep_checks:
        yield Finding(
            path="auto_repair.deep_checks",
            message="HyperPod runs its own deep health checks on new nodes: set instance_groups[].deep_health_checks "
            "instead, and remove this",
        )
    if orchestrator.eks:
        chosen = sorted(orchestrator.components.model_fields_set)
        if chosen or "install_components" in orchestrator.model_fields_set:
            yield Finding(
                path="orchestrator.components" if chosen else "orchestrator.install_components",
                message="HyperPod on EKS installs its own health agent and device plugins; ours are not installed "
                "beside them: remove it",
            )


def _partitions_of(config: ClusterConfig) -> dict[int, list[str]]:
    """Instance group index -> the partitions the config puts it in."""
    found: dict[int, list[str]] = {}
    index = {g.name: i for i, g in enumerate(config.instance_groups)}
    for partition, names in (config.orchestrator.partitions or {}).items():
        for name in names:
            if name in index:
                found.setdefault(index[name], []).append(partition)
    return found


def _hyperpod_refusals(group: InstanceGroupConfig, *, eks: bool) -> Iterator[tuple[str, str]]:
    """(field, message) for a group's self-managed options HyperPod has no counterpart for, each
    naming what takes its place."""
    if group.capacity.type != "on-demand":
        yield (
            "capacity",
            f"{group.capacity.type} is EC2's; HyperPod takes reserved capacity (Capacity Blocks included) from a "
            "SageMaker training plan: set training_plan_arn instead",
        )
    if group.placement_group_name is not None:
        yield "placement_group_name", "HyperPod places a group's instances itself; remove it"
    if group.efa == "off":
        yield "efa", "HyperPod sets up every EFA interface of the type itself; remove it"
    if group.image_id is not None and not eks:
        yield "image_id", "HyperPod's Slurm runs its own image: put what you need in lifecycle_script"


def _eks(config: ClusterConfig) -> list[Finding]:
    """EKS's own rules, on the fleets the stack joins to it: every instance group (the system
    group is the stack's, with the EKS image)."""
    orchestrator = config.orchestrator
    groups = config.instance_groups
    findings = eks_findings(
        version=orchestrator.kubernetes_version,
        endpoint_public_cidrs=orchestrator.endpoint_public_cidrs,
        admin_role_arns=orchestrator.admin_role_arns,
        fleets=[EksFleet(group_name=g.name, os=g.os) for g in groups],
        taints=orchestrator.taints,
        system_instance_type=orchestrator.system_instance_type,
        service_ipv4_cidr=orchestrator.service_cidr,
    )
    paths = {
        "version": "orchestrator.kubernetes_version",
        "endpoint_public_cidrs": "orchestrator.endpoint_public_cidrs",
        "admin_role_arns": "orchestrator.admin_role_arns",
        "system_instance_type": "orchestrator.system_instance_type",
        "taints": "orchestrator.taints",
        "service_ipv4_cidr": "orchestrator.service_cidr",
    }
    for i in range(len(groups)):
        paths[f"fleets[{i}].group_name"] = f"instance_groups[{i}].name"
        paths[f"fleets[{i}].os"] = f"instance_groups[{i}].os"
    out = relocate(findings, paths)
    net = config.network
    vpc_range = net.subnet_cidr if net.uses_existing_vpc else net.vpc_cidr
    if vpc_range is not None and service_cidr_problem(orchestrator.service_cidr) is None:
        service = ipaddress.IPv4Network(orchestrator.service_cidr)
        vpc = ipaddress.IPv4Network(vpc_range)
        if service.overlaps(vpc):
            field = "network.subnet_cidr" if net.uses_existing_vpc else "network.vpc_cidr"
            free = [c for c in SERVICE_CIDR_SUGGESTIONS if not ipaddress.IPv4Network(c).overlaps(vpc)]
            out.append(
                Finding(
                    path="orchestrator.service_cidr",
                    message=f"overlaps {field} {vpc_range}: EKS needs the service range outside the VPC's; set "
                    f"another, such as {' or '.join(free[:2])} (got {show(orchestrator.service_cidr)})",
                )
            )
    elif vpc_range is None:
        out.append(
            Finding(
                path="orchestrator.service_cidr",
                level="warning",
                message=f"{orchestrator.service_cidr} cannot be checked against your VPC without network.subnet_cidr: "
                "make sure it overlaps none of your VPC's ranges (EKS refuses the cluster at deploy time if it does)",
            )
        )
    components = orchestrator.components
    infos = [catalog.get(g.instance_type) for g in groups]
    accelerators = {info.accelerator for info in infos if info is not None}
    needs_labels = [
        name
        for name, on in (
            ("components.training_operator", components.training_operator and bool(accelerators - {"none"})),
            ("components.neuron_device_plugin", components.neuron_device_plugin and "neuron" in accelerators),
        )
        if on
    ]
    if needs_labels and not config.auto_repair.enabled:
        out.append(
            Finding(
                path="auto_repair.enabled",
                message="on EKS the control plane labels each node with its group and accelerator (labels a node "
                f"cannot set itself), which {' and '.join(needs_labels)} select: keep auto-repair on, or set "
                f"{' and '.join('orchestrator.' + n + ': false' for n in needs_labels)}",
            )
        )
    ids = net.control_plane_subnet_ids or []
    if len(set(ids)) < len(ids):
        out.append(Finding(path="network.control_plane_subnet_ids", message="a subnet is listed twice; list each once"))
    elif net.control_plane_subnet_ids is not None and len(ids) < 2:
        out.append(
            Finding(
                path="network.control_plane_subnet_ids",
                message=f"two or more subnets in different zones: EKS places its control plane's network interfaces "
                f"in two zones at least (got {len(ids)})",
            )
        )
    if config.network.uses_existing_vpc and not config.network.control_plane_subnet_ids:
        out.append(
            Finding(
                path="network.control_plane_subnet_ids",
                message="required with orchestrator.type: eks in your own VPC: two or more subnets in different "
                "zones for the EKS control plane's network interfaces",
            )
        )
    elif not config.network.uses_existing_vpc and len(catalog.availability_zones(config.region)) < 2:
        out.append(
            Finding(
                path="orchestrator.type",
                message=f"EKS needs subnets in two availability zones and the catalog knows none but one for "
                f"{config.region}; use your own VPC with network.control_plane_subnet_ids",
            )
        )
    return out


def _spares(config: ClusterConfig) -> Iterator[Finding]:
    """Spares are Slurm's: its controller holds them in a reservation and lets one go when a node
    fails. Elsewhere nothing would keep them out of work, so they are refused, not ignored."""
    for i, group in enumerate(config.instance_groups):
        if not group.spares:
            continue
        if config.backend == "hyperpod":
            message = "HyperPod replaces failed nodes itself and keeps no spares of ours; remove it"
        elif config.orchestrator.type == "slurm":
            continue
        elif config.orchestrator.eks:
            message = "hot spares are kept by Slurm's controller; EKS clusters cannot have them yet: remove it"
        else:
            message = "hot spares need orchestrator.type: slurm, which keeps them out of jobs; remove it"
        yield Finding(path=f"instance_groups[{i}].spares", message=message)


def _orchestrator(config: ClusterConfig) -> Iterator[Finding]:
    orchestrator = config.orchestrator
    yield from _spares(config)
    if config.network.database_subnet_ids and not (orchestrator.enabled and orchestrator.accounting == "rds"):
        yield Finding(
            path="network.database_subnet_ids",
            message="only used by the Slurm accounting database: set orchestrator.accounting: rds, or remove it",
        )
    elif config.network.database_subnet_ids and not config.network.uses_existing_vpc:
        yield Finding(
            path="network.database_subnet_ids",
            message="only with your own VPC (network.vpc_id): a new VPC makes the database's subnets itself; remove it",
        )
    if config.network.control_plane_subnet_ids and not orchestrator.eks:
        yield Finding(
            path="network.control_plane_subnet_ids",
            message="only used by the EKS control plane: set orchestrator.type: eks, or remove it",
        )
    elif config.network.control_plane_subnet_ids and not config.network.uses_existing_vpc:
        yield Finding(
            path="network.control_plane_subnet_ids",
            message="only with your own VPC (network.vpc_id): a new VPC makes the control plane's subnets itself; "
            "remove it",
        )
    for field in sorted(orchestrator.model_fields_set - {"type"}):
        owner = "eks" if field in EKS_FIELDS else "slurm"
        if owner != orchestrator.type:
            yield Finding(path=f"orchestrator.{field}", message=f"only used with orchestrator.type: {owner}; remove it")
    if orchestrator.eks:
        yield from _eks(config)
    if not orchestrator.enabled:
        return
    yield from _slurm(config)
    if config.storage.lustre is None:
        yield Finding(
            path="orchestrator.type",
            message="Slurm keeps its state, the accounting database and users' homes on the file system: "
            "add storage.lustre, or set orchestrator.type: none",
        )
    if orchestrator.accounting == "rds":
        if config.network.uses_existing_vpc and not config.network.database_subnet_ids:
            yield Finding(
                path="network.database_subnet_ids",
                message="required with orchestrator.accounting: rds in your own VPC: two or more subnets in "
                "different zones for the database",
            )
        elif not config.network.uses_existing_vpc and len(catalog.availability_zones(config.region)) < 2:
            yield Finding(
                path="orchestrator.accounting",
                message=f"rds needs a second availability zone and the catalog knows none for {config.region}; "
                "use local or off",
            )
