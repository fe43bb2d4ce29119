"""The shapes of the config's free-text values, and what each means in words.

Patterns are ASCII only: pydantic's regular expressions are Unicode-aware, so ``\\d`` would take
Arabic-Indic digits and ``\\s`` any Unicode space. :data:`PATTERN_HINTS` is what an error says
when a value does not match.
"""

from __future__ import annotations

NAME_PATTERN = r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$"
"""Cluster and instance group names: they become resource names, tags and node settings."""
REGION_PATTERN = r"^[a-z]{2}(-gov)?-[a-z]+-[0-9]$"
ZONE_PATTERN = r"^[a-z]{2}(-gov)?-[a-z]+-[0-9][a-z0-9-]*$"
XID_PATTERN = r"^(0|[1-9][0-9]{0,2})$"
EMAIL_PATTERN = r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$"
KMS_KEY_PATTERN = r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[0-9a-f-]{36}$"
EC2_NAME_PATTERN = r"^[A-Za-z0-9._+=@:/-]+( [A-Za-z0-9._+=@:/-]+)*$"
"""Key pair and placement group names: EC2 allows up to 255 ASCII characters; these are the
ones that are safe in user data, tags and shell (no quotes, newlines, $ or parentheses)."""
VPC_ID_PATTERN = r"^vpc-[0-9a-f]{8,17}$"
SUBNET_ID_PATTERN = r"^subnet-[0-9a-f]{8,17}$"
AMI_ID_PATTERN = r"^ami-[0-9a-f]{8,17}$"
MOUNT_PATH_PATTERN = r"^/[A-Za-z0-9._/-]+$"
S3_URI_PATTERN = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$"
RDS_CLASS_PATTERN = r"^db\.[a-z0-9]+\.[a-z0-9]+$"
HYPERPOD_NAME_PATTERN = r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"
"""What SageMaker HyperPod takes for a cluster, instance group or Slurm partition name."""
SLURM_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"
"""Slurm partition names."""
USER_NAME_PATTERN = r"^[a-z_][a-z0-9_-]{0,31}$"
"""Cluster user names, as ``useradd`` takes them by default."""

PATTERN_HINTS = {
    NAME_PATTERN: "must be lower case letters, digits and single hyphens, starting with a letter",
    REGION_PATTERN: "must be an AWS region name such as us-east-1",
    ZONE_PATTERN: "must be an availability zone name such as us-east-1a",
    EC2_NAME_PATTERN: "must be an EC2 name of letters, digits, spaces between words and . _ - + = @ : / (no quotes, "
    "newlines, $ or parentheses)",
    VPC_ID_PATTERN: "must be a VPC id such as vpc-0123456789abcdef0",
    SUBNET_ID_PATTERN: "must be a subnet id such as subnet-0123456789abcdef0",
    AMI_ID_PATTERN: "must be an AMI id such as ami-0123456789abcdef0",
    MOUNT_PATH_PATTERN: "must be an absolute path such as /fsx",
    S3_URI_PATTERN: "must be an S3 URI such as s3://bucket/prefix",
    KMS_KEY_PATTERN: "must be a KMS key ARN such as "
    "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    EMAIL_PATTERN: "must be an e-mail address such as ops@example.com",
    XID_PATTERN: "must be an XID number such as 79, as the kernel prints it (0 to 999, no leading zeros)",
    RDS_CLASS_PATTERN: "must be an RDS instance class such as db.t4g.medium",
    SLURM_NAME_PATTERN: "must be a Slurm partition name of up to 32 lower case letters, digits, _ and -, starting "
    "with a lower case letter",
    USER_NAME_PATTERN: "must be a user name of up to 32 lower case letters, digits, _ and -, starting with a lower "
    "case letter or _",
}
"""What a value that does not match the pattern must be, in words (with an example)."""
