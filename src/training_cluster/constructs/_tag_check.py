"""AutoRepair's check that the fleets it acts on carry the cluster tag its permissions name."""

from __future__ import annotations

from typing import TYPE_CHECKING

import jsii
from aws_cdk import CfnResource, Stack
from constructs import IValidation

from .. import contract

if TYPE_CHECKING:
    from .auto_repair import AutoRepair


@jsii.implements(IValidation)
class FleetsCarryTheClusterTag:
    """Reboot and Run Command are allowed on instances tagged ``training-cluster:cluster`` with the
    cluster's name, and the tag-change rule matches on it: each fleet tags what it launches, but a
    tag added over it (a higher priority, on the stack or a parent) or removed from it would leave
    the instances out, silently, until a repair is denied. Checked at synthesis, once every tag
    is applied."""

    def __init__(self, repair: AutoRepair) -> None:
        self._repair = repair

    def validate(self) -> list[str]:
        problems = []
        for fleet in self._repair.fleets:
            group = fleet.auto_scaling_group.node.default_child
            assert isinstance(group, CfnResource)
            rendered = Stack.of(fleet).resolve(group.tags.render_tags()) or []  # type: ignore[attr-defined]
            tag = next((t for t in rendered if t["key"] == contract.TAG_CLUSTER), None)
            if tag is not None and tag["value"] == self._repair.cluster_name and tag.get("propagateAtLaunch"):
                continue
            found = f"{tag['value']!r}" if tag is not None else "no such tag"
            problems.append(
                f"fleet {fleet.group_name!r}: its instances would carry {contract.TAG_CLUSTER}: {found}, not "
                f"{self._repair.cluster_name!r}, so auto-repair could neither reboot them nor hear their health "
                "tag: do not remove or override this tag (Tags.of(...).add with a higher priority)"
            )
        return problems
