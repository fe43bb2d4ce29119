"""From a config file to a synthesized stack: parse, check, build, and check what only the built
stack can say (its resources and user data, counted before synthesis; its template's size,
measured after), so that every problem is a :class:`ConfigError` and no template is left behind.

``app.py`` runs exactly this; so do the tests that try hostile configs.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml
from aws_cdk import App, CfnResource, Stack, cx_api
from aws_cdk import aws_iam as iam
from constructs import IConstruct

from .config import ClusterConfig
from .errors import ConfigError, Finding
from .stacks import TrainingClusterStack

CLOUDFORMATION_MAX_RESOURCES = 500
"""Resources in one CloudFormation stack (CloudFormation quotas: "Resources: 500")."""
CLOUDFORMATION_MAX_TEMPLATE_BYTES = 1_000_000
"""A template CloudFormation reads from S3 (CloudFormation quotas: "Template body size in an Amazon
S3 object: 1 MB"; the CDK CLI uploads every template over 50 KiB). The quota gives no byte count:
the CDK's own check (``@aws-cdk/core:Stack.templateSize``, a warning only) takes 1,000,000 bytes,
and so does this one, the smaller reading."""


@dataclass(frozen=True)
class BuiltCluster:
    """A cluster built and synthesized: the stack, and the cloud assembly it was synthesized into
    (``app.synth()`` returns the same assembly again; it does not synthesize twice)."""

    stack: TrainingClusterStack
    assembly: cx_api.CloudAssembly

    @property
    def artifact(self) -> cx_api.CloudFormationStackArtifact:
        """The stack's template in the assembly, as CloudFormation receives it."""
        return self.assembly.get_stack_by_name(self.stack.stack_name)


def build_cluster(app: App, path: str | Path, *, stack_id: str | None = None) -> BuiltCluster:
    """The cluster the config file at ``path`` describes, built in ``app`` and synthesized.

    Raises :class:`ConfigError` with every problem: the config's; then the stack's resources and
    user data; then the size of its synthesized template (whose file is removed)."""
    config = ClusterConfig.from_yaml(path)
    stack = TrainingClusterStack(app, stack_id or f"{config.name}-training-cluster", config=config)
    problems = [*resource_budget(stack), *user_data_budget(stack)]
    if problems:
        raise ConfigError(problems, str(path))
    assembly = app.synth()
    template = Path(assembly.get_stack_by_name(stack.stack_name).template_full_path)
    problems = template_size_budget(stack, template.stat().st_size)
    if problems:
        template.unlink()
        raise ConfigError(problems, str(path))
    write_handed_over_manifests(stack, Path(assembly.directory))
    return BuiltCluster(stack, assembly)


def write_handed_over_manifests(stack: TrainingClusterStack, directory: Path) -> list[Path]:
    """EKS with ``install_components: false``: the components' manifests, for Argo CD or Flux, in
    ``<directory>/<stack>.kubernetes/`` (one YAML file per component, in the order to apply them).
    Values known only after deploy are ``${NAME}`` placeholders (``envsubst`` fills them in from the
    stack's outputs; the folder's README says which)."""
    if stack.eks is None or stack.config.orchestrator.install_components or not stack.kubernetes_manifests:
        return []
    folder = directory / f"{stack.artifact_id}.kubernetes"
    folder.mkdir(exist_ok=True)
    written = []
    for index, (name, objects) in enumerate(stack.kubernetes_manifests.items(), start=1):
        path = folder / f"{index:02d}-{name}.yaml"
        path.write_text(yaml.safe_dump_all(objects, sort_keys=False), encoding="utf-8")
        written.append(path)
    readme = folder / "README.txt"
    readme.write_text(
        f"In-cluster components of EKS cluster {stack.config.name} (cdk-training-cluster), not applied on deploy\n"
        "(orchestrator.install_components: false). Apply the files in order. Fill in the file system's values\n"
        "from the stack's outputs first:\n\n"
        "  FILE_SYSTEM_ID=<output FileSystemId> FILE_SYSTEM_DNS_NAME=<output FileSystemDnsName> \\\n"
        "  FILE_SYSTEM_MOUNT_NAME=<output FileSystemMountName> envsubst < NN-fsx-volume.yaml | kubectl apply -f -\n\n"
        "NN-repair-access.yaml is the repair control plane's ClusterRole and binding: without it, auto-repair cannot\n"
        "cordon, drain, label or delete nodes (it records each refusal in its ledger and repairs anyway).\n",
        encoding="utf-8",
    )
    return [*written, readme]


def count_resources(scope: IConstruct) -> int:
    """CloudFormation resources under ``scope`` in the construct tree, before synthesis."""
    return sum(1 for c in scope.node.find_all() if CfnResource.is_cfn_resource(c))


IAM_INLINE_POLICY_CHARACTERS = 10_000
IAM_OVERFLOW_POLICY_CHARACTERS = 5_000
"""A role's policy above 10,000 characters is split by the CDK at synthesis into managed
policies of up to 6,000 (``aws-iam`` ``Role``): counted here with 5,000, to stay on the safe side
of the packing."""


def overflow_policies(scope: IConstruct) -> int:
    """Managed policies the CDK will add at synthesis for roles whose policy is too large
    (the repair role's grows with every instance group)."""
    stack = Stack.of(scope)
    extra = 0
    for construct in scope.node.find_all():
        policy = construct.node.try_find_child("DefaultPolicy") if isinstance(construct, iam.Role) else None
        if isinstance(policy, iam.Policy):
            size = len(json.dumps(stack.resolve(policy.document), separators=(",", ":")))
            extra += -(-max(0, size - IAM_INLINE_POLICY_CHARACTERS) // IAM_OVERFLOW_POLICY_CHARACTERS)
    return extra


def resource_budget(stack: TrainingClusterStack) -> list[Finding]:
    """The stack's resources against CloudFormation's limit, counted in the built construct tree
    (plus the policies the CDK splits off at synthesis): what the cluster shares and what each
    instance group adds (its fleet: launch template, Auto Scaling group, role, instance profile,
    policy, placement group)."""
    overflow = overflow_policies(stack)
    total = count_resources(stack) + overflow
    if total <= CLOUDFORMATION_MAX_RESOURCES:
        return []
    per_group = {name: count_resources(fleet) for name, fleet in stack.compute_fleets.items()}
    shared = total - sum(per_group.values())
    largest = max(per_group.values())
    fits = max(0, (CLOUDFORMATION_MAX_RESOURCES - shared) // largest)
    return [
        Finding(
            path="instance_groups",
            message=f"the stack would have {total} resources, more than the {CLOUDFORMATION_MAX_RESOURCES} "
            f"CloudFormation allows in one stack: the cluster's shared resources take {shared} and each instance "
            f"group up to {largest}, so at most {fits} groups like these fit (got {len(per_group)}); "
            "merge groups, or split the cluster",
        )
    ]


def template_size_budget(stack: TrainingClusterStack, size: int) -> list[Finding]:
    """The synthesized template's ``size`` in bytes against CloudFormation's limit. How many groups
    fit is measured too: a copy of the cluster with only its first instance group is synthesized
    (apart, only when the template is too large), and the difference is what the other groups add."""
    if size <= CLOUDFORMATION_MAX_TEMPLATE_BYTES:
        return []
    limit, groups = CLOUDFORMATION_MAX_TEMPLATE_BYTES, len(stack.config.instance_groups)
    found = f"the template would be {size:,} bytes, more than the {limit:,} CloudFormation takes"
    if groups == 1:
        return [Finding(path="instance_groups", message=f"{found}, with one instance group: split the cluster")]
    one_group = one_group_template_bytes(stack)
    per_group = -(-(size - one_group) // (groups - 1))
    fits = 0 if one_group > limit else 1 + (limit - one_group) // per_group
    return [
        Finding(
            path="instance_groups",
            message=f"{found}: the cluster's shared resources take about {one_group - per_group:,} bytes and each "
            f"instance group about {per_group:,}, so at most {fits} groups like these fit (got {groups}); "
            "merge groups, or split the cluster",
        )
    ]


def one_group_template_bytes(stack: TrainingClusterStack) -> int:
    """The size of the template of ``stack``'s cluster with its first instance group only,
    synthesized in an app of its own with the same context."""
    config = stack.config
    one_group = config.model_copy(
        update={
            "instance_groups": config.instance_groups[:1],
            "orchestrator": config.orchestrator.model_copy(update={"partitions": None}),
        }
    )
    with tempfile.TemporaryDirectory(prefix="template-size-") as outdir:
        app = App(context=stack.node.get_all_context(), outdir=outdir)
        copy = TrainingClusterStack(app, stack.node.id, config=one_group)
        template = app.synth().get_stack_by_name(copy.stack_name).template_full_path
        return Path(template).stat().st_size


EC2_USER_DATA_BYTES = 16 * 1024
"""EC2 takes at most 16 KB of user data, before base64 (EC2 User Guide, "Run commands when you
launch an EC2 instance with user data input")."""
REFERENCE_BYTES = 256
"""An upper bound for a value known at deploy time (an ARN, an S3 URL, an endpoint) in user data."""


def user_data_bytes(stack: Stack, text: str) -> int:
    """An upper bound of ``text``'s length once deployed: its literal parts, and
    :data:`REFERENCE_BYTES` for each value CloudFormation fills in."""
    resolved = stack.resolve(text)
    if isinstance(resolved, str):
        return len(resolved.encode())
    parts = resolved["Fn::Join"][1]
    return sum(len(p.encode()) if isinstance(p, str) else _reference_bytes(p) for p in parts)


CERTIFICATE_BYTES = 4096
"""An upper bound for an EKS cluster's CA certificate in user data (base64 PEM; about 1,500 bytes)."""


def _reference_bytes(part: object) -> int:
    attribute = part.get("Fn::GetAtt") if isinstance(part, dict) else None
    if isinstance(attribute, list) and attribute[-1] == "CertificateAuthorityData":
        return CERTIFICATE_BYTES
    return REFERENCE_BYTES


def user_data_budget(stack: TrainingClusterStack) -> list[Finding]:
    """Each fleet's user data against EC2's limit: a launch that fails at deploy time (every node
    of the group) becomes a config error, one for all the groups it affects. What grows it from the
    config is the list of cluster users."""
    sizes = {name: user_data_bytes(stack, fleet.bootstrap.render()) for name, fleet in stack.fleets.items()}
    over = {name: size for name, size in sizes.items() if size > EC2_USER_DATA_BYTES}
    if not over:
        return []
    users = stack.config.orchestrator.users
    return [
        Finding(
            path="orchestrator.users" if users else "instance_groups",
            message=f"the user data of the {', '.join(over)} nodes would be up to {max(over.values()):,} bytes, "
            f"more than the {EC2_USER_DATA_BYTES:,} EC2 allows"
            + (f"; it lists every cluster user (got {len(users)}): list fewer" if users else ""),
        )
    ]
