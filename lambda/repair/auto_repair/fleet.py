"""What the control plane reads about the cluster's instances from AWS: which group each is in,
group sizes, EC2 status checks, health tags."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from .aws import THROTTLING, Clients, with_retries
from .identity import health_tags
from .ledger import Ledger
from .settings import Settings
from .signals import Failure, HealthTag, Malformed, Signal, parse_health_tag

log = logging.getLogger("training-cluster.repair")


class Fleet:
    def __init__(self, settings: Settings, clients: Clients, ledger: Ledger, sleep: Callable[[float], None]) -> None:
        self.settings = settings
        self.clients = clients
        self.ledger = ledger
        self.sleep = sleep
        self.sizes: dict[str, int] = {}  # desired capacity per group, read once per invocation
        self.in_groups: set[str] = set()
        """Of the instances :meth:`memberships` was last asked about, those in one of the cluster's
        Auto Scaling groups now and not leaving it (terminating, detaching); the others' groups
        are the ledger's memory."""

    def memberships(self, instance_ids: list[str]) -> dict[str, str]:
        """instance id -> instance group, for the cluster's instances only."""
        found: dict[str, str] = {}
        in_service: set[str] = set()
        instance_ids = sorted(set(instance_ids))
        for start in range(0, len(instance_ids), 50):
            chunk = instance_ids[start : start + 50]
            for item in with_retries(
                self.clients.autoscaling.describe_auto_scaling_instances, sleep=self.sleep, InstanceIds=chunk
            )["AutoScalingInstances"]:
                group = self.settings.groups.get(item["AutoScalingGroupName"])
                if group is not None:
                    found[item["InstanceId"]] = group
                    if not str(item.get("LifecycleState", "")).startswith(("Terminat", "Detach")):
                        in_service.add(item["InstanceId"])
        self.in_groups = in_service
        # Terminated instances have left their group: the ledger still knows where they were.
        for instance_id in set(instance_ids) - set(found):
            known = self.ledger.instance(instance_id).get("instance_group")
            if known:
                found[instance_id] = str(known)
        return found

    def still_failing(self, states: dict[str, dict[str, Any]]) -> set[str]:
        """Of these incidents' instances, those whose fault is still seen: the health tag still
        unhealthy (agent faults), the status check still impaired (sweep faults); others (a
        scheduled retirement, a stop) do not go away by themselves."""
        by_tag = [i for i, s in states.items() if s.get("source") in ("agent", "health-tag")]
        by_status = [i for i, s in states.items() if s.get("source") == "status-sweep"]
        failing = set(states) - set(by_tag) - set(by_status)
        for instance_id, value in health_tags(self.clients, by_tag, self.sleep).items():
            try:
                if not parse_health_tag(value).healthy:
                    failing.add(instance_id)
            except Malformed:
                log.warning("held node %s: unreadable health tag", instance_id)
        failing |= set(self.impaired(by_status))
        return failing

    def health(self, ids: list[str]) -> dict[str, HealthTag]:
        """instance id -> its health tag, read (trusted: only the instance can write its tag), for
        those with a readable one; none when DescribeTags is throttled. DescribeTags has an
        account-wide request budget that others (a flood of reports at the intake, say) can spend:
        the sweep's uses of the tags skip one sweep rather than the sweep failing."""
        try:
            tags = health_tags(self.clients, ids, self.sleep)
        except ClientError as error:
            if error.response["Error"]["Code"] not in THROTTLING:
                raise
            log.warning("sweep: health tags not read this time (throttled)")
            return {}
        parsed: dict[str, HealthTag] = {}
        for instance_id, value in sorted(tags.items()):
            try:
                parsed[instance_id] = parse_health_tag(value)
            except Malformed:
                continue
        return parsed

    @staticmethod
    def tagged_unhealthy(tags: dict[str, HealthTag]) -> list[Signal]:
        """The instances whose health tag (:meth:`health`) says unhealthy, as signals. The sweep's
        catch for a tag-change event that was never delivered (that delivery is best effort) after
        a report that raced its own tag."""
        return [
            Signal(instance_id, "health-tag", tag.failures, boot_id=tag.boot_id)
            for instance_id, tag in sorted(tags.items())
            if not tag.healthy
        ]

    def impaired(self, ids: list[str]) -> dict[str, Failure]:
        """instance id -> its failed EC2 status checks, for those that have any."""
        found: dict[str, Failure] = {}
        for start in range(0, len(ids), 100):
            statuses = with_retries(
                self.clients.ec2.describe_instance_status,
                sleep=self.sleep,
                InstanceIds=ids[start : start + 100],
                IncludeAllInstances=True,
            )["InstanceStatuses"]
            for status in statuses:
                failed = [
                    name
                    for name, key in (("system", "SystemStatus"), ("instance", "InstanceStatus"))
                    if status.get(key, {}).get("Status") == "impaired"
                ]
                if failed:
                    found[status["InstanceId"]] = Failure(
                        check="status_check",
                        code=",".join(failed),
                        message=f"{' and '.join(failed)} status check failed",
                    )
        return found

    def groups(self) -> dict[str, tuple[str, list[dict[str, Any]]]]:
        names = list(self.settings.groups)
        result: dict[str, tuple[str, list[dict[str, Any]]]] = {}
        for start in range(0, len(names), 50):
            response = with_retries(
                self.clients.autoscaling.describe_auto_scaling_groups,
                sleep=self.sleep,
                AutoScalingGroupNames=names[start : start + 50],
            )
            for asg in response["AutoScalingGroups"]:
                result[asg["AutoScalingGroupName"]] = (
                    self.settings.groups[asg["AutoScalingGroupName"]],
                    asg["Instances"],
                )
                self.sizes[self.settings.groups[asg["AutoScalingGroupName"]]] = int(asg["DesiredCapacity"])
        return result

    def group_size(self, group: str) -> int:
        if group not in self.sizes:
            asg = next(a for a, g in self.settings.groups.items() if g == group)
            response = with_retries(
                self.clients.autoscaling.describe_auto_scaling_groups, sleep=self.sleep, AutoScalingGroupNames=[asg]
            )
            self.sizes[group] = int(response["AutoScalingGroups"][0]["DesiredCapacity"])
        return max(1, self.sizes[group])
