"""The hot spares' keeper (node/slurm/slurm_spares.py): which nodes it holds, lets go and takes
in, from Slurm's node states; the real slurmctld runs it in test_real_slurm.py."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from slurm_spares import GroupPlan, Node, Pools, metrics, parse_nodes, plan

POOLS = Pools(counts={"gpu": 4}, spares={"gpu": 2})
IDLE = frozenset({"IDLE", "DYNAMIC_NORM"})
BUSY = frozenset({"ALLOCATED", "DYNAMIC_NORM"})


def nodes(idle: str = "", busy: str = "", down: str = "", group: str = "gpu") -> list[Node]:
    out = [Node(n, group, IDLE) for n in idle.split()]
    out += [Node(n, group, BUSY) for n in busy.split()]
    out += [Node(n, group, frozenset({"IDLE", "DRAIN", "DYNAMIC_NORM"})) for n in down.split()]
    return out


def test_a_whole_group_keeps_its_pool_as_it_is() -> None:
    (same,) = plan(POOLS, nodes(idle="e f", busy="a b c d"), {"gpu": ["e", "f"]})
    assert same.pool == ("e", "f") and not same.changed


def test_an_empty_pool_fills_with_idle_nodes_by_name() -> None:
    (filled,) = plan(POOLS, nodes(idle="f e", busy="a b c d"), {})
    assert filled.pool == ("e", "f") and filled.added == ("e", "f")


def test_a_failed_node_lets_one_spare_go_and_a_second_failure_the_other() -> None:
    (one,) = plan(POOLS, nodes(idle="e f", busy="a b c", down="d"), {"gpu": ["e", "f"]})
    assert one.pool == ("e",) and one.promoted == ("f",)
    (two,) = plan(POOLS, nodes(idle="e f", busy="a b", down="c d"), {"gpu": ["e"]})
    assert two.pool == () and two.promoted == ("e",)


def test_a_spare_that_fails_leaves_the_pool_and_nothing_takes_its_place_without_a_surplus() -> None:
    (failed,) = plan(POOLS, nodes(idle="f", busy="a b c d", down="e"), {"gpu": ["e", "f"]})
    assert failed.pool == ("f",) and failed.dropped == ("e",) and not failed.added


def test_a_replacement_refills_the_pool_and_a_busy_node_is_never_taken() -> None:
    (refill,) = plan(POOLS, nodes(idle="g", busy="a b c d f"), {"gpu": []})
    # f runs a job (a user's job took it while the pool was short): only the idle newcomer is taken.
    assert refill.pool == ("g",) and refill.added == ("g",)


def test_other_groups_nodes_and_unknown_groups_are_left_alone() -> None:
    (gpu,) = plan(POOLS, [*nodes(busy="a b c d"), *nodes(idle="x y", group="cpu")], {"gpu": ["x"]})
    assert gpu.pool == () and gpu.dropped == ("x",)  # x is not the group's: it leaves the reservation


def test_a_layout_without_spares_has_no_pools() -> None:
    layout = {"cluster": "c", "groups": [{"name": "gpu"}, {"name": "trn", "count": 8, "spares": 1}]}
    assert Pools.from_layout(json.dumps(layout)) == Pools(counts={"trn": 8}, spares={"trn": 1})


def test_node_states_from_scontrol() -> None:
    text = (
        "NodeName=i-01 Arch=x86_64 AvailableFeatures=gpu,nn-1 ActiveFeatures=gpu State=IDLE+DYNAMIC_NORM Reason=x y=z\n"
        "NodeName=i-02 AvailableFeatures=gpu State=DOWN*+DRAIN+DYNAMIC_NORM\n"
        "NodeName=i-03 AvailableFeatures=cpu State=MIXED\n"
    )
    parsed = parse_nodes(text, ["gpu"])
    assert [(n.name, n.group, n.healthy, n.idle) for n in parsed] == [
        ("i-01", "gpu", True, True),
        ("i-02", "gpu", False, False),
        ("i-03", None, True, False),
    ]


def test_the_metrics_pass_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool comes from Debian's prometheus package, which make test installs")
    text = metrics([GroupPlan("gpu", 2, ("e",)), GroupPlan("trn", 1, ())])
    assert 'training_cluster_slurm_spares{group="gpu"} 1' in text
    assert 'training_cluster_slurm_spares{group="trn"} 0' in text
    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_slurm_rules_know_how_many_node_records_slurmctld_keeps() -> None:
    import slurm_config
    from training_cluster.rules.slurm import MAX_NODE_RECORDS

    conf = slurm_config.render_slurm_conf(
        cluster="c", controller="c", groups=[slurm_config.Group("gpu")], partitions={"gpu": ["gpu"]}
    )
    assert f"MaxNodeCount={MAX_NODE_RECORDS}\n" in conf
