"""A real ``cdk deploy`` (the pinned AWS CDK CLI) of a small cluster into moto's server on loopback,
as ``make deploy-local`` runs it, then the command line reading what it deployed (issue 12)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow


def test_make_deploy_local_deploys_with_the_cdk_cli_and_the_command_line_reads_it() -> None:
    env_path = f"{ROOT / 'node_modules' / '.bin'}:{ROOT / '.venv' / 'bin'}:/usr/bin:/bin"
    done = subprocess.run(
        [sys.executable, "-m", "training_cluster.deploy_local"],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": env_path, "HOME": "/tmp", "JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION": "1"},
        cwd=ROOT,
        check=False,
    )
    out = done.stdout
    assert done.returncode == 0, (out[-3000:], done.stderr[-3000:])
    assert "$ bootstrap aws://123456789012/us-east-1" in out and "$ deploy -c" in out
    # the stack's outputs as CloudFormation gave them to the CDK CLI (it prints them on stderr)
    assert "local-training-cluster.CpuAutoScalingGroupName = " in out + done.stderr
    status = out[out.index("$ training-cluster status") :].splitlines()
    assert status[1] == "local-training-cluster: us-east-1"
    cpu = next(line.split() for line in status if line.startswith("cpu "))
    assert cpu[:3] == ["cpu", "2", "2"]  # both instances in service, launched by moto's Auto Scaling


def test_the_moto_aspect_touches_only_what_moto_cannot_take(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Without ``-c moto=true`` the app is unchanged; with it, KMS keys lose their tags and custom
    resources get a condition that never holds, nothing else."""
    import yaml
    from aws_cdk import App, Aspects

    from conftest import CDK_CONTEXT
    from training_cluster import ClusterConfig
    from training_cluster.deploy_local import LOCAL_CONFIG, MotoCompatible
    from training_cluster.stacks import TrainingClusterStack

    config = ClusterConfig.from_dict(yaml.safe_load(LOCAL_CONFIG))
    templates = []
    for moto in (False, True):
        app = App(context=CDK_CONTEXT, outdir=str(tmp_path / str(moto)))
        stack = TrainingClusterStack(app, "Local", config=config)
        if moto:
            Aspects.of(app).add(MotoCompatible())
        templates.append(app.synth().get_stack_by_name(stack.stack_name).template)
    plain, moto_ = templates
    changed = sorted(k for k in plain["Resources"] if plain["Resources"][k] != moto_["Resources"][k])
    types = {plain["Resources"][k]["Type"] for k in changed}
    assert types <= {"AWS::KMS::Key", "Custom::VpcRestrictDefaultSG"} and "AWS::KMS::Key" in types
    assert moto_["Conditions"]["MotoNever"] == {"Fn::Equals": ["moto", "aws"]}
    assert json.dumps(plain).count("MotoNever") == 0
