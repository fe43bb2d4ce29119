"""Assets that carry the package's shared modules, so the repository holds one copy of each.

The repair function and the health agent import ``training_cluster.contract`` (and the repair
function ``training_cluster.repair_policy``): at synthesis the asset's folder is copied and those
modules are copied into a ``training_cluster/`` folder inside it, beside the code that imports
them. The copy is local bundling (no Docker); the asset's hash is the output's, so it changes with
any byte of the folder or the modules and stays the same for the same files.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jsii
from aws_cdk import AssetHashType, BundlingOptions, DockerImage, ILocalBundling
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3_assets as s3_assets
from constructs import Construct

_PACKAGE = Path(__file__).resolve().parent
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc")
_INIT = '"""The modules of cdk-training-cluster this asset uses, copied in at synthesis."""\n'


def stage(source: Path, modules: Sequence[str], output_dir: Path) -> None:
    """Copy ``source`` (caches left out) into ``output_dir`` and the package's ``modules`` (names
    of standard-library-only modules) into ``output_dir/training_cluster/``."""
    unknown = [m for m in modules if not (_PACKAGE / f"{m}.py").is_file()]
    if unknown:
        raise ValueError(f"no such module of training_cluster to ship: {', '.join(unknown)}")
    shutil.copytree(source, output_dir, dirs_exist_ok=True, ignore=_IGNORED)
    package = output_dir / "training_cluster"
    package.mkdir(exist_ok=True)
    (package / "__init__.py").write_text(_INIT, encoding="utf-8")
    for module in modules:
        shutil.copyfile(_PACKAGE / f"{module}.py", package / f"{module}.py")


@jsii.implements(ILocalBundling)
class _Stage:
    def __init__(self, source: Path, modules: Sequence[str]) -> None:
        self._source = source
        self._modules = tuple(modules)

    def try_bundle(self, output_dir: str, *, image: DockerImage, **options: Any) -> bool:
        stage(self._source, self._modules, Path(output_dir))
        return True


def _bundling(source: Path, modules: Sequence[str]) -> BundlingOptions:
    # The image is never used: local bundling always succeeds.
    return BundlingOptions(image=DockerImage.from_registry("unused"), local=_Stage(source, modules))


def lambda_code(source: Path, modules: Sequence[str]) -> lambda_.Code:
    """A Lambda function's code: ``source`` with the package's ``modules``."""
    return lambda_.Code.from_asset(
        str(source), bundling=_bundling(source, modules), asset_hash_type=AssetHashType.OUTPUT
    )


def folder_asset(scope: Construct, construct_id: str, source: Path, modules: Sequence[str]) -> s3_assets.Asset:
    """A zipped folder asset (a node asset stage's): ``source`` with the package's ``modules``."""
    return s3_assets.Asset(
        scope,
        construct_id,
        path=str(source),
        bundling=_bundling(source, modules),
        asset_hash_type=AssetHashType.OUTPUT,
    )
