"""Do the tags an IAM condition names match the tags the instances carry? Read from a template.

A permission limited by ``aws:ResourceTag/<key>`` (or ``ec2:ResourceTag/<key>``) works at run
time only if the instances it acts on carry that tag with an allowed value. moto does not enforce
IAM, so the offline runs cannot show it: this reads both sides from the synthesized template.
"""

from __future__ import annotations

import fnmatch
from typing import Any

TAG_PREFIXES = ("aws:ResourceTag/", "ec2:ResourceTag/")
OPERATORS = {"StringEquals": lambda value, allowed: value == allowed, "StringLike": fnmatch.fnmatchcase}


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def role_statements(template: dict[str, Any], role_id: str) -> list[dict[str, Any]]:
    """Every statement of the policies the template attaches to the role ``role_id`` (a logical id)."""
    return [
        statement
        for resource in template["Resources"].values()
        if resource["Type"] == "AWS::IAM::Policy" and {"Ref": role_id} in resource["Properties"].get("Roles", [])
        for statement in resource["Properties"]["PolicyDocument"]["Statement"]
    ]


def tag_conditions(statement: dict[str, Any]) -> list[tuple[str, str, list[Any]]]:
    """``(operator, tag key, allowed values)`` of each resource-tag condition of ``statement``.
    An operator this module cannot evaluate fails, rather than being guessed at."""
    found = []
    for operator, conditions in statement.get("Condition", {}).items():
        for key, allowed in conditions.items():
            prefix = next((p for p in TAG_PREFIXES if key.startswith(p)), None)
            if prefix is None:
                continue
            if operator not in OPERATORS:
                raise AssertionError(f"cannot evaluate {operator} on {key}")
            found.append((operator, key.removeprefix(prefix), _listed(allowed)))
    return found


def launched_tags(template: dict[str, Any], asg_id: str) -> dict[str, Any]:
    """The tags every instance of the Auto Scaling group ``asg_id`` is launched with: the group's
    tags that propagate at launch, and its launch template's instance tags."""
    group = template["Resources"][asg_id]["Properties"]
    tags = {t["Key"]: t["Value"] for t in group.get("Tags", []) if t.get("PropagateAtLaunch")}
    reference = group.get("LaunchTemplate", {}).get("LaunchTemplateId", {}).get("Ref")
    if reference is not None:
        data = template["Resources"][reference]["Properties"].get("LaunchTemplateData", {})
        for spec in data.get("TagSpecifications", []):
            if spec["ResourceType"] == "instance":
                tags.update({t["Key"]: t["Value"] for t in spec["Tags"]})
    return tags


def unmet_tag_conditions(template: dict[str, Any], role_id: str, asg_ids: list[str]) -> tuple[set[str], list[str]]:
    """``(actions checked, problems)``: each resource-tag condition on the role's statements,
    against each Auto Scaling group's launched tags; a problem where a group's instances would
    be denied."""
    checked: set[str] = set()
    problems = []
    for statement in role_statements(template, role_id):
        for operator, key, allowed in tag_conditions(statement):
            checked.update(_listed(statement["Action"]))
            for asg_id in asg_ids:
                value = launched_tags(template, asg_id).get(key)
                if value is None or not any(OPERATORS[operator](value, a) for a in allowed):
                    actions = ", ".join(_listed(statement["Action"]))
                    problems.append(f"{actions}: needs tag {key} in {allowed}; {asg_id}'s instances have {value!r}")
    return checked, problems
