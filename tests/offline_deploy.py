"""Create a synthesized stack in moto's CloudFormation: an offline stand-in for `cdk deploy`.

What moto does not model (placement groups, FSx, ...) is skipped with a warning; a CDK custom
resource cannot run (its Lambda needs Docker), so custom resources are left out too.
Call inside ``moto.mock_aws()``.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import boto3

ACCOUNT = "123456789012"  # moto's default account
NOT_MODELED = {
    "AWS::EC2::PlacementGroup",
    "AWS::FSx::FileSystem",
    "AWS::FSx::DataRepositoryAssociation",
    "AWS::APS::Workspace",
    "AWS::APS::RuleGroupsNamespace",
    "AWS::Grafana::Workspace",
    "AWS::SecretsManager::Secret",
    "AWS::EKS::Cluster",
    "AWS::EKS::AccessEntry",
    "AWS::EKS::Addon",
}
REF_IS_ARN = {"AWS::SecretsManager::Secret"}


def _zip_folder(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


def upload_assets(outdir: Path, artifact_id: str, region: str) -> None:
    """Create the bootstrap asset bucket and upload each file and folder asset, as `cdk deploy` would."""
    manifest = json.loads((outdir / f"{artifact_id}.assets.json").read_text())
    s3 = boto3.client("s3", region_name=region)
    for asset in manifest.get("files", {}).values():
        source = outdir / asset["source"]["path"]
        body = _zip_folder(source) if asset["source"].get("packaging") == "zip" else source.read_bytes()
        for destination in asset["destinations"].values():
            bucket = destination["bucketName"].replace("${AWS::AccountId}", ACCOUNT).replace("${AWS::Region}", region)
            existing = {b["Name"] for b in s3.list_buckets()["Buckets"]}
            if bucket not in existing:
                config = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
                s3.create_bucket(Bucket=bucket, **config)
            s3.put_object(Bucket=bucket, Key=destination["objectKey"], Body=body)


def deploy(template: dict[str, Any], outdir: Path, artifact_id: str, region: str, image_id: str) -> str:
    """Create the stack; returns its name. SSM AMI parameters become ``image_id`` (moto keeps no /aws/ names)."""
    template = json.loads(json.dumps(template))
    template.get("Parameters", {}).pop("BootstrapVersion", None)
    template.get("Rules", {}).pop("CheckBootstrapVersion", None)
    for parameter in template.get("Parameters", {}).values():
        if parameter["Type"].startswith("AWS::SSM::Parameter::Value"):
            parameter.update(Type="String", Default=image_id)
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] == "AWS::SSM::Parameter":  # CloudFormation names one that has none; moto does not
            resource["Properties"].setdefault("Name", f"/{artifact_id}/{logical_id}")
        if resource["Type"] == "AWS::KMS::Key":
            resource["Properties"].pop("Tags", None)  # moto's KMS reads CloudFormation tags under other key names
        if resource["Type"] == "AWS::SSM::Parameter":
            resource["Properties"].pop("Tags", None)  # a map in CloudFormation; moto's SSM wants a list
    # Resources moto does not model are left out; references to them become placeholder strings.
    # So are CDK custom resources: their Lambda functions cannot run inside moto (it needs Docker).
    left_out = {
        k for k, v in template["Resources"].items() if v["Type"] in NOT_MODELED or v["Type"].startswith("Custom::")
    }
    original = template["Resources"]
    # The security group EKS makes for a cluster: a group of the template's own stands in for it.
    stand_ins: dict[tuple[str, str], Any] = {}
    for k, v in list(original.items()):
        if v["Type"] == "AWS::EKS::Cluster":
            control_plane = v["Properties"]["ResourcesVpcConfig"]["SecurityGroupIds"][0]["Fn::GetAtt"][0]
            vpc = original[control_plane]["Properties"]["VpcId"]
            original[f"{k}StandInGroup"] = {
                "Type": "AWS::EC2::SecurityGroup",
                "Properties": {"GroupDescription": "stands in for the EKS cluster security group", "VpcId": vpc},
            }
            stand_ins[(k, "ClusterSecurityGroupId")] = {"Fn::GetAtt": [f"{k}StandInGroup", "GroupId"]}
    template["Resources"] = {k: v for k, v in template["Resources"].items() if k not in left_out}
    template = _replace_references(
        template, {k for k in left_out if original[k]["Type"] in REF_IS_ARN}, left_out, stand_ins
    )
    for resource in template["Resources"].values():
        depends = resource.get("DependsOn")
        if depends:
            resource["DependsOn"] = [
                d for d in ([depends] if isinstance(depends, str) else depends) if d not in left_out
            ]
    upload_assets(outdir, artifact_id, region)
    cloudformation = boto3.client("cloudformation", region_name=region)
    cloudformation.create_stack(
        StackName=artifact_id, TemplateBody=json.dumps(template), Capabilities=["CAPABILITY_IAM"]
    )
    return artifact_id


def _replace_references(
    value: Any, arns: set[str], left_out: set[str], stand_ins: dict[tuple[str, str], Any] | None = None
) -> Any:
    stand_ins = stand_ins or {}
    if isinstance(value, dict):
        attribute = value.get("Fn::GetAtt")
        if isinstance(attribute, list) and tuple(attribute) in stand_ins:
            return stand_ins[tuple(attribute)]
        if value.get("Ref") in arns:  # IAM policies want an ARN's shape
            return f"arn:aws:placeholder:us-east-1:{ACCOUNT}:{value['Ref']}"
        if value.get("Ref") in left_out:
            return f"{value['Ref']}-placeholder"
        if "Fn::GetAtt" in value and value["Fn::GetAtt"][0] in left_out:
            logical_id, attribute = value["Fn::GetAtt"]
            if attribute.endswith("Arn"):  # IAM policies want an ARN's shape
                return f"arn:aws:placeholder:us-east-1:{ACCOUNT}:{logical_id}"
            return f"{logical_id}-{attribute}-placeholder"
        return {k: _replace_references(v, arns, left_out, stand_ins) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_references(v, arns, left_out, stand_ins) for v in value]
    return value
