"""The auto-repair control plane against moto: every branch of decide, guard and act."""

from __future__ import annotations

from collections.abc import Callable
from unittest import mock

import pytest
from botocore.stub import Stubber

from auto_repair.aws import with_retries
from auto_repair.signals import Failure, Signal, from_event
from repair_world import SESSION, World, agent_event, aws, health_tag, impaired, make_world, story, world, xid
from training_cluster.contract import HEALTH_TAG
from training_cluster.repair_policy import Policy

__all__ = ["aws", "world"]  # fixtures


def test_replace_class_xid_replaces_the_node_through_its_group(world: World) -> None:
    bad, *healthy = world.instances()
    (outcome,) = world.repairer().handle(from_event(world.agent(bad, xid(79))))
    assert (outcome.result, outcome.action) == ("replaced", "replace")
    assert world.state(bad) in ("shutting-down", "terminated")
    assert all(world.state(i) == "running" for i in healthy)
    after = world.instances()
    assert bad not in after and len(after) == 8  # desired capacity kept: a new node came up
    assert story(world, outcome.incident_id) == ["signal", "decision", "evidence", "action"]
    assert any("Replacing" in s for s in world.notifications())


def test_the_orchestrator_drains_before_the_node_goes(world: World) -> None:
    bad, rebooted = world.instances()[:2]
    repairer = world.repairer(unhealthy_threshold_percent=50)
    drained: list[tuple[str, str, str, str]] = []
    waited: list[tuple[str, str]] = []

    def hook(instance: str, action: str, reason: str) -> Callable[[], str]:
        drained.append((instance, action, reason, world.state(instance)))

        def wait() -> str:
            waited.append((instance, world.state(instance)))
            return "drained on i-controller"

        return wait

    repairer.drain_hook = hook
    (replaced,) = repairer.handle(from_event(world.agent(bad, xid(79))))
    (reboot,) = repairer.handle(from_event(world.agent(rebooted, xid(62))))
    assert (replaced.result, reboot.result) == ("replaced", "rebooted")
    # Drained while still running, with the action and the signal's reason.
    assert drained == [
        (bad, "replace", "replace: xid 79: NVRM: Xid (PCI:0000:53:00): 79, pid=1234", "running"),
        (rebooted, "reboot", "reboot: xid 62: NVRM: Xid (PCI:0000:53:00): 62, pid=1234", "running"),
    ]
    assert waited == [(bad, "running"), (rebooted, "running")]  # and waited for before it went
    # Before a replacement the drain and the evidence capture run at once: their waits overlap.
    assert story(world, replaced.incident_id) == ["signal", "decision", "evidence", "drain", "action"]
    assert story(world, reboot.incident_id) == ["signal", "decision", "drain", "action"]
    (step,) = [s for s in repairer.ledger.story(replaced.incident_id) if s["step"] == "drain"]
    assert step["result"] == "drained on i-controller"


def test_a_failing_drain_hook_is_recorded_and_the_repair_goes_on(world: World) -> None:
    repairer = world.repairer(unhealthy_threshold_percent=50, max_parallel_replacements=2)

    def broken(instance: str, action: str, reason: str) -> Callable[[], str]:
        raise RuntimeError("no controller in service")

    def fails_later(instance: str, action: str, reason: str) -> Callable[[], str]:
        def wait() -> str:
            raise RuntimeError("drain command Failed on i-0c: scontrol: error")

        return wait

    for hook, error in ((broken, "no controller in service"), (fails_later, "drain command Failed on i-0c")):
        bad = world.instances()[0]
        repairer.drain_hook = hook
        (outcome,) = repairer.handle(from_event(world.agent(bad, xid(79))))
        assert outcome.result == "replaced" and world.state(bad) in ("shutting-down", "terminated")
        (step,) = [s for s in repairer.ledger.story(outcome.incident_id) if s["step"] == "drain"]
        assert step["result"] == "failed" and step["error"].startswith(error)


def test_evidence_goes_to_s3_through_run_command(world: World) -> None:
    bad = world.instances()[0]
    repairer = world.repairer()
    with mock.patch.object(world.clients.ssm, "send_command", wraps=world.clients.ssm.send_command) as send:
        (outcome,) = repairer.handle(from_event(world.agent(bad, xid(48))))
    kwargs = send.call_args.kwargs
    assert kwargs["InstanceIds"] == [bad] and kwargs["OutputS3BucketName"] == "evidence"
    assert "nvidia-smi -q || true" in kwargs["Parameters"]["commands"]
    evidence = [s for s in repairer.ledger.story(outcome.incident_id or "") if s["step"] == "evidence"]
    # under the instance's ARN: the only prefix the instance's own role may write to
    prefix = f"evidence/demo/arn:aws:ec2:us-east-1:123456789012:instance/{bad}/"
    assert kwargs["OutputS3KeyPrefix"] == prefix + str(outcome.incident_id)
    assert evidence[0]["location"] == f"s3://evidence/{prefix}{outcome.incident_id}"


def test_evidence_wait_is_bounded(world: World) -> None:
    bad = world.instances()[0]
    repairer = world.repairer(evidence_wait_seconds=10)
    stuck = {"Status": "InProgress"}
    with mock.patch.object(world.clients.ssm, "get_command_invocation", return_value=stuck):
        (outcome,) = repairer.handle(from_event(world.agent(bad, xid(79))))
    assert outcome.result == "replaced"
    assert sum(world.clock.slept) <= 12


def test_reboot_class_xid_reboots_then_a_recurrence_replaces(world: World) -> None:
    bad = world.instances()[0]
    repairer = world.repairer()
    with mock.patch.object(world.clients.ec2, "reboot_instances", wraps=world.clients.ec2.reboot_instances) as reboot:
        (first,) = repairer.handle(from_event(world.agent(bad, xid(46))))
    assert (first.result, first.action) == ("rebooted", "reboot")
    reboot.assert_called_once_with(InstanceIds=[bad])
    assert world.state(bad) == "running"
    world.clock.now += 30
    (same_boot,) = repairer.handle(from_event(world.agent(bad, state="healthy")))
    assert same_boot.result == "ignored"  # healthy before the reboot happened: the incident stays open
    world.clock.now += 300
    (back,) = repairer.handle(from_event(world.agent(bad, state="healthy", boot="boot-2")))
    assert back.result == "closed"
    world.clock.now += 600  # within the one-hour window, from the new boot
    (second,) = repairer.handle(from_event(world.agent(bad, xid(46), boot="boot-2")))
    assert (second.result, second.action) == ("replaced", "replace")
    assert second.incident_id != first.incident_id
    signal = next(s for s in repairer.ledger.story(second.incident_id or "") if s["step"] == "signal")
    assert "rebooted for a fault within the window" in signal["signal"]


def test_reboot_outside_the_window_reboots_again(world: World) -> None:
    bad = world.instances()[0]
    repairer = world.repairer()
    repairer.handle(from_event(world.agent(bad, xid(46))))
    repairer.handle(from_event(world.agent(bad, state="healthy", boot="boot-2")))
    world.clock.now += 2 * 3600
    (again,) = repairer.handle(from_event(world.agent(bad, xid(46), boot="boot-2")))
    assert again.result == "rebooted"


def test_reboot_before_replace_off_replaces_at_once(world: World) -> None:
    bad = world.instances()[0]
    (outcome,) = world.repairer(reboot_before_replace=False).handle(
        from_event(world.agent(bad, {"check": "gpu_count", "message": "7 of 8 GPUs"}))
    )
    assert outcome.result == "replaced"


def test_application_xid_is_observed_and_nothing_is_touched(world: World) -> None:
    bad = world.instances()[0]
    (outcome,) = world.repairer().handle(from_event(world.agent(bad, xid(13))))
    assert (outcome.result, outcome.action) == ("observed", "observe")
    assert world.state(bad) == "running" and bad in world.instances()
    assert story(world, outcome.incident_id) == ["observed"]


def test_the_worst_failure_of_an_event_decides(world: World) -> None:
    bad = world.instances()[0]
    (outcome,) = world.repairer().handle(
        from_event(world.agent(bad, xid(13), {"check": "gpu_count", "message": "7 of 8"}, xid(74)))
    )
    assert outcome.action == "replace"


def test_policy_overrides_from_the_config(world: World) -> None:
    bad = world.instances()[0]
    repairer = world.repairer(policy=Policy.with_overrides({"xid": {"79": "observe"}}))
    (outcome,) = repairer.handle(from_event(world.agent(bad, xid(79))))
    assert outcome.result == "observed" and world.state(bad) == "running"
    with pytest.raises(ValueError, match=r"policy.xid.79: must be one of observe, reboot, replace \(got 'destroy'\)"):
        Policy.with_overrides({"xid": {"79": "destroy"}})


def test_duplicate_events_act_once(world: World) -> None:
    bad = world.instances()[0]
    repairer = world.repairer()
    event = world.agent(bad, xid(79))
    with mock.patch.object(
        world.clients.autoscaling,
        "terminate_instance_in_auto_scaling_group",
        wraps=world.clients.autoscaling.terminate_instance_in_auto_scaling_group,
    ) as terminate:
        first = repairer.handle(from_event(event))
        second = repairer.handle(from_event(event))
        both = world.repairer().handle(from_event(event) * 2)  # two copies in one batch
    assert terminate.call_count == 1
    assert [o.result for o in first + second + both] == ["replaced", "duplicate", "duplicate", "duplicate"]
    assert story(world, first[0].incident_id).count("duplicate") == 3


def test_three_failing_with_one_replacement_at_a_time(aws: None) -> None:
    world = make_world({"gpu": 8})
    bad = world.instances()[:3]
    repairer = world.repairer(max_parallel_replacements=1, unhealthy_threshold_percent=50)
    outcomes = repairer.handle([s for i in bad for s in from_event(world.agent(i, xid(79)))])
    assert [o.result for o in outcomes] == ["replaced", "deferred", "deferred"]
    assert [world.state(i) for i in bad][1:] == ["running", "running"]
    replaced = 1
    while replaced < 3:
        world.clock.now += 60
        # the sweep sees the replaced node gone, frees its slot, and replaces the next one
        results = [o.result for o in repairer.sweep()]
        assert results.count("replaced") == 1 and results.count("closed") == 1
        replaced += 1
    assert all(world.state(i) in ("shutting-down", "terminated") for i in bad)
    assert len(world.instances()) == 8


def test_failed_status_check_replaces(world: World) -> None:
    bad = world.instances()[0]
    with mock.patch.object(world.clients.ec2, "describe_instance_status", side_effect=impaired([bad])):
        outcomes = world.repairer().sweep()
    assert [(o.instance_id, o.result) for o in outcomes] == [(bad, "replaced")]


def test_half_the_group_unhealthy_opens_the_breaker_and_touches_nothing(world: World) -> None:
    bad = world.instances()[:4]
    repairer = world.repairer()
    with (
        mock.patch.object(world.clients.autoscaling, "terminate_instance_in_auto_scaling_group") as terminate,
        mock.patch.object(world.clients.ec2, "describe_instance_status", side_effect=impaired(bad)),
    ):
        outcomes = repairer.sweep()
        again = repairer.sweep()
    assert terminate.call_count == 0
    assert {o.result for o in outcomes} == {"suppressed"} and len(outcomes) == 4
    assert {o.result for o in again} == {"duplicate"}
    assert all(world.state(i) == "running" for i in bad)
    assert repairer.ledger.group("gpu")["breaker"] == "open"
    assert sum("Auto-repair stopped" in s for s in world.notifications()) == 1
    # a person resets the breaker; the next fault is repaired again
    repairer.reset_breaker("gpu")
    good = world.instances()[5]
    (outcome,) = repairer.handle(from_event(world.agent(good, xid(79))))
    assert outcome.result == "replaced"


def test_a_single_unhealthy_node_of_a_small_group_is_repaired(aws: None) -> None:
    world = make_world({"gpu": 2})
    (outcome,) = world.repairer().handle(from_event(world.agent(world.instances()[0], xid(79))))
    assert outcome.result == "replaced"  # 1 of 2 is 50%, but one node alone never trips the breaker


def test_throttling_is_retried_with_jitter(world: World) -> None:
    bad = world.instances()[0]
    event = world.agent(bad, xid(46))
    ec2 = SESSION.client("ec2", region_name="us-east-1")
    stubber = Stubber(ec2)
    tag = {"Key": HEALTH_TAG, "ResourceId": bad, "ResourceType": "instance", "Value": health_tag(xid(46))}
    stubber.add_client_error("describe_tags", service_error_code="RequestLimitExceeded", http_status_code=503)
    stubber.add_response("describe_tags", {"Tags": [tag]})
    stubber.add_client_error("reboot_instances", service_error_code="RequestLimitExceeded", http_status_code=503)
    stubber.add_client_error("reboot_instances", service_error_code="RequestLimitExceeded", http_status_code=503)
    stubber.add_response("reboot_instances", {}, {"InstanceIds": [bad]})
    world.clients.set("ec2", ec2)
    with stubber:
        (outcome,) = world.repairer().handle(from_event(event))
    stubber.assert_no_pending_responses()
    assert outcome.result == "rebooted"
    assert len(world.clock.slept) == 3 and world.clock.slept[0] <= 0.2
    assert world.clock.slept[1] <= 0.2 and world.clock.slept[2] <= 0.4


def test_retries_give_up_and_other_errors_are_not_retried() -> None:
    from botocore.exceptions import ClientError

    calls: list[int] = []

    def throttled() -> None:
        calls.append(1)
        raise ClientError({"Error": {"Code": "Throttling", "Message": "slow down"}}, "X")

    with pytest.raises(ClientError):
        with_retries(throttled, attempts=3, sleep=lambda s: None)
    assert len(calls) == 3

    def denied() -> None:
        calls.append(1)
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "X")

    with pytest.raises(ClientError, match="AccessDenied"):
        with_retries(denied, sleep=lambda s: None)
    assert len(calls) == 4


def test_no_capacity_backs_off_and_notifies_then_retries(world: World) -> None:
    bad = world.instances()[0]
    repairer = world.repairer()
    asg = next(iter(world.groups))
    result = repairer.launch_failed(
        asg,
        "We currently do not have sufficient p5.48xlarge capacity in the Availability Zone you requested (InsufficientInstanceCapacity).",
    )
    assert result is not None and result.result == "backoff"
    assert any("No capacity in instance group gpu" in s for s in world.notifications())
    (outcome,) = repairer.handle(from_event(world.agent(bad, xid(79))))
    assert outcome.result == "deferred" and world.state(bad) == "running"
    world.clock.now += 300
    assert [o.result for o in repairer.sweep()] == ["deferred"]  # still backing off: no loop
    world.clock.now += 301
    assert [o.result for o in repairer.sweep()] == ["replaced"]


def test_dry_run_decides_but_does_not_act(world: World) -> None:
    bad = world.instances()[0]
    (outcome,) = world.repairer(dry_run=True).handle(from_event(world.agent(bad, xid(79))))
    assert outcome.result == "dry-run" and world.state(bad) == "running"
    assert story(world, outcome.incident_id) == ["signal", "decision", "dry-run"]
    assert any(s.startswith("[demo] [dry run] Replacing") for s in world.notifications())


def test_instances_outside_the_cluster_are_ignored(world: World) -> None:
    ec2 = world.clients.ec2
    image = "ami-0123456789abcdef0"
    stranger = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    (outcome,) = world.repairer().handle(from_event(world.agent(stranger, xid(79))))
    assert outcome.result == "ignored" and world.state(stranger) == "running"


def test_aws_health_retirement_replaces(world: World) -> None:
    bad = world.instances()[2]
    event = {
        "source": "aws.health",
        "detail-type": "AWS Health Event",
        "detail": {
            "service": "EC2",
            "eventTypeCode": "AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED",
            "eventTypeCategory": "scheduledChange",
            "affectedEntities": [{"entityValue": bad}],
        },
    }
    (outcome,) = world.repairer().handle(from_event(event))
    assert outcome.result == "replaced"


def test_healthy_report_does_not_end_a_replacement(world: World) -> None:
    bad = world.instances()[0]
    repairer = world.repairer()
    (replaced,) = repairer.handle(from_event(world.agent(bad, xid(79))))
    assert replaced.result == "replaced"
    (healthy,) = repairer.handle(from_event(world.agent(bad, state="healthy", boot="boot-2")))
    assert healthy.result == "ignored"
    assert repairer.ledger.instance(bad)["status"] == "open"


def test_unexpected_stop_replaces_and_termination_closes(world: World) -> None:
    bad = world.instances()[1]
    stop = {
        "source": "aws.ec2",
        "detail-type": "EC2 Instance State-change Notification",
        "detail": {"instance-id": bad, "state": "stopped"},
    }
    (outcome,) = world.repairer().handle(from_event(stop))
    assert outcome.result == "replaced"
    gone = {**stop, "detail": {"instance-id": bad, "state": "terminated"}}
    (closed,) = world.repairer().handle(from_event(gone))
    assert closed.result == "closed"
    assert story(world, outcome.incident_id)[-1] == "closed"
    assert metric(world, "SecondsToRepair") == [0.0]  # the fake clock did not move
    assert world.repairer().ledger.group("gpu").get("replacing_count", 0) == 0


def metric(world: World, name: str) -> list[float]:
    """Values put for one metric of the repair namespace (moto keeps them)."""
    data = world.clients.cloudwatch.list_metrics(Namespace="TrainingCluster/Repair", MetricName=name)["Metrics"]
    if not data:
        return []
    stats = world.clients.cloudwatch.get_metric_statistics(
        Namespace="TrainingCluster/Repair", MetricName=name, Dimensions=data[0]["Dimensions"],
        StartTime=0, EndTime=4_000_000_000, Period=60, Statistics=["Maximum"],
    )  # fmt: skip
    return [p["Maximum"] for p in stats["Datapoints"]]


def test_repeated_replacements_in_a_group_are_flagged(world: World) -> None:
    repairer = world.repairer(max_parallel_replacements=3, unhealthy_threshold_percent=100)
    for instance_id in world.instances()[:3]:
        repairer.handle(from_event(world.agent(instance_id, xid(79))))
        world.clock.now += 60
        repairer.sweep()
    assert sum("keeps losing nodes" in s for s in world.notifications()) == 1


def test_signals_from_events() -> None:
    assert (
        from_event(
            {
                "source": "aws.ec2",
                "detail-type": "EC2 Instance State-change Notification",
                "detail": {"instance-id": "i-1", "state": "running"},
            }
        )
        == []
    )
    assert (
        from_event({"source": "aws.health", "detail": {"affectedEntities": [{"entityValue": "arn:aws:ec2:..."}]}}) == []
    )
    (signal,) = from_event(agent_event("i-0123456789abcdef0", xid(79), {"check": "disk", "message": "97% used"}))
    assert signal == Signal(
        instance_id="i-0123456789abcdef0",
        source="agent",
        failures=(Failure("xid", "79", signal.failures[0].message), Failure("disk", None, "97% used")),
        boot_id="boot-1",
        detail=signal.detail,
        claim=True,
    )


def test_a_large_group_stops_at_an_absolute_number_of_unhealthy_nodes(aws: None) -> None:
    """At 20% a 40-node group would act on eight nodes at once; with at most three, the fourth
    unhealthy node opens the breaker, whatever the share."""
    world = make_world({"gpu": 40})
    bad = world.instances()[:4]
    repairer = world.repairer(max_unhealthy_per_group=3, max_parallel_replacements=25)
    with (
        mock.patch.object(world.clients.autoscaling, "terminate_instance_in_auto_scaling_group") as terminate,
        mock.patch.object(world.clients.ec2, "describe_instance_status", side_effect=impaired(bad)),
    ):
        outcomes = repairer.sweep()
    assert terminate.call_count == 0 and {o.result for o in outcomes} == {"suppressed"}
    state = repairer.ledger.group("gpu")
    assert state["breaker"] == "open" and state["breaker_reason"] == "4 nodes unhealthy at once (limit 3 a group)"
    assert world.notifications().count("[demo] Auto-repair stopped for instance group gpu") == 1


def test_the_cluster_stops_at_an_absolute_number_of_unhealthy_nodes_across_groups(aws: None) -> None:
    """Two faults in each of two groups, each well under its group's limits: the cluster's limit
    of three holds the second group's, while the first group's replacements go on."""
    world = make_world({"gpu": 10, "cpu": 10})
    repairer = world.repairer(max_unhealthy_in_cluster=3, max_parallel_replacements=25)
    gpu_bad, cpu_bad = world.instances("gpu")[:2], world.instances("cpu")[:2]
    first = [repairer.handle(from_event(world.agent(i, xid(79))))[0] for i in gpu_bad]
    assert [o.result for o in first] == ["replaced", "replaced"]
    second = [repairer.handle(from_event(world.agent(i, xid(79))))[0] for i in cpu_bad]
    assert [o.result for o in second] == ["replaced", "suppressed"]
    cpu = repairer.ledger.group("cpu")
    assert cpu["breaker_reason"] == "4 nodes of the cluster unhealthy at once (limit 3)"
    assert repairer.ledger.group("gpu").get("breaker") != "open"
    assert world.state(cpu_bad[1]) == "running"


def test_the_caps_come_from_the_functions_environment() -> None:
    from auto_repair.settings import Settings

    base = {
        "CLUSTER_NAME": "demo",
        "LEDGER_TABLE": "ledger",
        "TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:t",
        "EVIDENCE_BUCKET": "evidence",
        "AUTO_SCALING_GROUPS": "{}",
        "INSTANCE_ARN_PREFIX": "arn:aws:ec2:us-east-1:123456789012:instance/",
    }
    defaults = Settings.from_env(base)
    assert (defaults.max_unhealthy_per_group, defaults.max_unhealthy_in_cluster) == (16, 32)
    given = Settings.from_env({**base, "MAX_UNHEALTHY_PER_GROUP": "8", "MAX_UNHEALTHY_IN_CLUSTER": "24"})
    assert (given.max_unhealthy_per_group, given.max_unhealthy_in_cluster) == (8, 24)
