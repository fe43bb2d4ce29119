"""Evidence of a replaced node: its kernel log, nvidia-smi and DCGM output, to S3 through SSM Run
Command, under the instance's ARN (the only prefix the instance's own credentials may write)."""

from __future__ import annotations

from collections.abc import Callable

from botocore.exceptions import ClientError

from .aws import Clients
from .ledger import Ledger
from .settings import Settings

EVIDENCE_COMMANDS = [
    "journalctl -k --no-pager -n 5000 || dmesg",
    "nvidia-smi -q || true",
    "dcgmi health -c || true",
    "cat /var/log/training-cluster/health-agent.log 2>/dev/null | tail -n 500 || true",
]


def capture_evidence(
    clients: Clients,
    settings: Settings,
    ledger: Ledger,
    instance_id: str,
    incident_id: str,
    *,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> None:
    """Kernel log, nvidia-smi and DCGM output to S3 through SSM, waiting at most
    ``settings.evidence_wait_seconds``; the result (or why there is none) goes to the ledger."""
    try:
        command = clients.ssm.send_command(
            InstanceIds=[instance_id],
            DocumentName="AWS-RunShellScript",
            Comment=f"training-cluster evidence {incident_id}"[:100],
            Parameters={"commands": EVIDENCE_COMMANDS},
            OutputS3BucketName=settings.evidence_bucket,
            OutputS3KeyPrefix=evidence_prefix(settings, instance_id, incident_id),
            TimeoutSeconds=max(30, settings.evidence_wait_seconds),
        )["Command"]["CommandId"]
    except ClientError as error:
        ledger.record(incident_id, "evidence", result="not sent", error=str(error))
        return
    deadline = clock() + settings.evidence_wait_seconds
    status = "Pending"
    while clock() < deadline:
        try:
            status = clients.ssm.get_command_invocation(CommandId=command, InstanceId=instance_id)["Status"]
        except ClientError:
            status = "Pending"
        if status not in ("Pending", "InProgress", "Delayed"):
            break
        sleep(2)
    ledger.record(
        incident_id,
        "evidence",
        result=status,
        location=f"s3://{settings.evidence_bucket}/{evidence_prefix(settings, instance_id, incident_id)}",
    )


def evidence_prefix(settings: Settings, instance_id: str, incident_id: str) -> str:
    """Under the instance's ARN: the only prefix that instance's own credentials may write."""
    return f"evidence/{settings.cluster}/{settings.instance_arn(instance_id)}/{incident_id}"
