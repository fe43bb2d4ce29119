"""Where the files that run outside synthesis (instance scripts, Lambda code) are.

In a wheel they sit inside the package (``training_cluster/_assets/``, see pyproject.toml); in
a source checkout they are the top-level ``node/`` and ``lambda/`` folders.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aws_cdk import aws_iam as iam
    from aws_cdk import aws_s3_assets as s3_assets

_PACKAGED = Path(__file__).resolve().parent / "_assets"
_CHECKOUT = Path(__file__).resolve().parents[2]


def asset_path(*parts: str) -> Path:
    """The path of ``node/...`` or ``lambda/...``, packaged or checked out."""
    for root in (_PACKAGED, _CHECKOUT):
        candidate = root.joinpath(*parts)
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"{'/'.join(parts)} is neither in {_PACKAGED} nor in {_CHECKOUT}")


def grant_read(asset: s3_assets.Asset, grantee: iam.IGrantable) -> None:
    """Let ``grantee`` (a node role) download ``asset``: that one object, not the whole asset bucket."""
    from aws_cdk import aws_iam as iam

    grantee.grant_principal.add_to_principal_policy(
        iam.PolicyStatement(actions=["s3:GetObject"], resources=[asset.bucket.arn_for_objects(asset.s3_object_key)])
    )
