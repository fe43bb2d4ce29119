"""The benchmark's baseline: a bare CDK app holding one ec2.Vpc, run like app.py."""

from aws_cdk import App, Stack
from aws_cdk import aws_ec2 as ec2

app = App()
ec2.Vpc(Stack(app, "Bare", env={"region": "us-east-1"}), "Vpc")
app.synth()
