"""The report intake: a function of its own between the agent's events and the repair function.

Anyone who may put events on the default bus can put the agent's (every node's role may), naming
any instance, as many as they like. The repair function runs one invocation at a time: if those
events reached it, a flood of forged reports would queue in front of real faults. The intake
(``handler.intake`` in the repair function's asset) takes them instead, with a reserved
concurrency of its own (a flood cannot take the account's unreserved pool either) and a queue of
its own: it checks each report against the named instance's health tag, records the unconfirmed
ones and forwards a confirmed one to the repair function once per change of the tag.

Its role reads tags, writes the ledger's ``report#`` items (and no others), and invokes the
repair function; nothing that changes an instance or tells anyone anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aws_cdk import Duration, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from .._lambda import python_function
from .._nag import acknowledge

REPORT_ITEMS = "report#*"  # the ledger's partition keys the intake may write (see ledger.py)
# A report older than this has been overtaken: AWS's tag-change event for the same tag went to the
# repair function directly, and its one-minute sweep reads every health tag. Older ones, a
# flood's backlog among them, are dropped rather than kept for Lambda's default of six hours.
MAX_REPORT_AGE = Duration.minutes(10)


def report_intake(
    scope: Construct,
    *,
    cluster_name: str,
    table: dynamodb.ITable,
    repair_function: lambda_.IFunction,
    asg_names: Mapping[str, str],
    modules: Sequence[str],
    reserved_concurrency: int = 2,
) -> lambda_.Function:
    """The intake function (``ReportIntake``, with ``ReportIntakeRole`` and ``ReportIntakeLogs``):
    the repair function's asset (with the package's ``modules``), another entry point.

    No dead-letter queue: what it drops is a report the repair function also hears of through
    AWS's tag-change event and its sweep, and forged reports must not fill the repair function's
    dead-letter queue, which holds real failures only.
    """
    function = python_function(
        scope,
        "ReportIntake",
        code="repair",
        handler="handler.intake",
        modules=modules,
        role_id="ReportIntakeRole",
        logs_id="ReportIntakeLogs",
        log_retention=logs.RetentionDays.THREE_MONTHS,
        timeout=Duration.seconds(30),
        memory_size=256,
        reserved_concurrent_executions=reserved_concurrency,
        max_event_age=MAX_REPORT_AGE,
        environment={
            "CLUSTER_NAME": cluster_name,
            "LEDGER_TABLE": table.table_name,
            "REPAIR_FUNCTION": repair_function.function_arn,
            "AUTO_SCALING_GROUPS": Stack.of(scope).to_json_string(dict(asg_names)),
        },
        description=f"Checks the health agent's reports for the auto-repair of cluster {cluster_name}",
    )
    role = function.role
    assert role is not None
    for statement in (
        # The claimed instance's health tag, and its Auto Scaling group (a tag only AWS writes).
        iam.PolicyStatement(actions=["ec2:DescribeTags"], resources=["*"]),
        # The ledger's report# items only. ForAllValues holds for a request without the key:
        # hence the Null (UpdateItem always carries it).
        iam.PolicyStatement(
            actions=["dynamodb:UpdateItem"],
            resources=[table.table_arn],
            conditions={
                "ForAllValues:StringLike": {"dynamodb:LeadingKeys": [REPORT_ITEMS]},
                "Null": {"dynamodb:LeadingKeys": "false"},
            },
        ),
        # The repair function itself: not its versions or aliases, not any other function.
        iam.PolicyStatement(actions=["lambda:InvokeFunction"], resources=[repair_function.function_arn]),
    ):
        role.add_to_principal_policy(statement)
    acknowledge(role, "IAM5[Resource::*]", "ec2:DescribeTags is read-only and takes no resource ARN")
    return function
