"""Acknowledged cdk-nag findings. Each carries the reason it stands, next to the code it is about.

cdk-nag 3 reads CDK's own ``Validations.of(scope).acknowledge``; nothing here needs cdk-nag at run time.
"""

from __future__ import annotations

import weakref

from aws_cdk import Acknowledgment, Validations
from constructs import IConstruct

SSM_MANAGED_POLICY = "Policy::arn:<AWS::Partition>:iam::aws:policy/AmazonSSMManagedInstanceCore"

# A scope keeps one acknowledgment per finding: two constructs that add to one role (a wildcard
# each, say) keep both reasons, joined.
_REASONS: weakref.WeakKeyDictionary[IConstruct, dict[str, list[str]]] = weakref.WeakKeyDictionary()


def acknowledge(scope: IConstruct, rule: str, reason: str) -> None:
    """Acknowledge the AwsSolutions ``rule`` (with its finding, ``IAM5[Resource::*]``) on ``scope``."""
    reasons = _REASONS.setdefault(scope, {}).setdefault(rule, [])
    if reason not in reasons:
        reasons.append(reason)
    Validations.of(scope).acknowledge(
        Acknowledgment(id=f"AwsSolutions::AwsSolutions-{rule}", reason="; ".join(reasons))
    )
