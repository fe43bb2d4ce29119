"""Acknowledged cdk-nag findings. Each carries the reason it stands, next to the code it is about.

cdk-nag 3 reads CDK's own ``Validations.of(scope).acknowledge``; nothing here needs cdk-nag at run time.
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, Validations
from constructs import IConstruct

SSM_MANAGED_POLICY = "Policy::arn:<AWS::Partition>:iam::aws:policy/AmazonSSMManagedInstanceCore"


def acknowledge(scope: IConstruct, rule: str, reason: str) -> None:
    """Acknowledge the AwsSolutions ``rule`` (with its finding, ``IAM5[Resource::*]``) on ``scope``."""
    Validations.of(scope).acknowledge(Acknowledgment(id=f"AwsSolutions::AwsSolutions-{rule}", reason=reason))
