"""``make deploy-local``: a real ``cdk deploy`` of a cluster into moto's server on loopback.

The AWS CDK CLI bootstraps the account and deploys the app as it would to AWS, with every AWS
endpoint pointed at moto (``AWS_ENDPOINT_URL``); the stack's template URL is one moto can read
(``AWS_ENDPOINT_URL_S3_FOR_CLOUDFORMATION`` on ``localhost``). Then ``training-cluster status``
reads the deployed cluster. What it leaves out, because moto cannot model it:

- the resource types moto's CloudFormation skips with a warning (placement groups, FSx, Amazon
  Managed Prometheus and Grafana, EKS, S3 bucket policies, ...): they are not created;
- the tags of KMS keys (moto's CloudFormation reads them under other key names and fails):
  :class:`MotoCompatible`, applied by ``app.py`` with ``-c moto=true``, removes them;
- custom resources (their functions need Docker, and moto would wait for them for ever): they get
  a condition that never holds; other functions are created, never run;
- the AMIs' public SSM parameters: the config must give ``image_id`` (the default config here does).

Nothing here is used by a deployment to AWS: without ``-c moto=true`` the app is unchanged.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jsii
from aws_cdk import CfnCondition, CfnResource, Fn, IAspect, Stack
from constructs import IConstruct

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "123456789012"  # moto's
LOCAL_CONFIG = """\
# make deploy-local: a small cluster moto can hold (no placement group, an AMI id given).
name: local
region: us-east-1
availability_zone: us-east-1a
network:
  interface_endpoints: false
instance_groups:
  - name: cpu
    instance_type: m7i.4xlarge
    count: 2
    placement_group: false
    image_id: ami-0123456789abcdef0
observability:
  prometheus: false
  grafana: false
"""


@jsii.implements(IAspect)
class MotoCompatible:
    """What moto's CloudFormation cannot take, taken out of the template: KMS keys' tags, and
    custom resources (their functions would need Docker: moto would wait for them for ever),
    which get a condition that never holds."""

    def __init__(self) -> None:
        self._never: dict[str, CfnCondition] = {}

    def visit(self, node: IConstruct) -> None:
        if not isinstance(node, CfnResource):
            return
        if node.cfn_resource_type == "AWS::KMS::Key":
            node.add_property_deletion_override("Tags")
        elif (
            node.cfn_resource_type.startswith("Custom::")
            or node.cfn_resource_type == "AWS::CloudFormation::CustomResource"
        ):
            stack = Stack.of(node)
            if stack.node.addr not in self._never:
                self._never[stack.node.addr] = CfnCondition(
                    stack, "MotoNever", expression=Fn.condition_equals("moto", "aws")
                )
            node.cfn_options.condition = self._never[stack.node.addr]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help="the cluster config (default: a small one moto can hold)")
    parser.add_argument("--keep", action="store_true", help="keep moto's server running until Ctrl-C")
    args = parser.parse_args(argv)
    from moto.server import ThreadedMotoServer

    work = Path(tempfile.mkdtemp(prefix="deploy-local-"))
    config = args.config or work / "local.yaml"
    if args.config is None:
        config.write_text(LOCAL_CONFIG, encoding="utf-8")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    _, port = server.get_host_and_port()
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ENDPOINT_URL_S3_FOR_CLOUDFORMATION": f"http://localhost:{port}",  # a URL moto reads itself
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    }
    cdk = shutil.which("cdk", path=env.get("PATH")) or str(ROOT / "node_modules" / ".bin" / "cdk")
    context = ["-c", f"config={config}", "-c", "moto=true", "--output", str(work / "cdk.out")]
    try:
        for step in (
            [cdk, "bootstrap", f"aws://{ACCOUNT}/us-east-1", *context],
            # direct: moto's change sets leave the outputs out
            [cdk, "deploy", *context, "--require-approval", "never", "--all", "--method=direct"],
        ):
            print("$ " + " ".join(step[1:3]), flush=True)
            done = subprocess.run(step, env=env, cwd=ROOT, check=False)
            if done.returncode != 0:
                print(f"deploy-local: {step[1]} failed ({done.returncode})", file=sys.stderr)
                return done.returncode
        status = [str(Path(sys.executable).parent / "training-cluster"), "status", "--config", str(config)]
        print("$ training-cluster status --config " + str(config), flush=True)
        subprocess.run(status, env=env, check=False)
        if args.keep:
            print(f"moto's server: http://127.0.0.1:{port} (export AWS_ENDPOINT_URL to use it); Ctrl-C ends it")
            with contextlib.suppress(EOFError, KeyboardInterrupt):
                input()
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
