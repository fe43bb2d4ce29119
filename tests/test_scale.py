"""A thousand nodes (issue 14): the template and the subnet check at 1,024 p5 nodes. Synthesis
does not look at a group's count beyond the Auto Scaling group's sizes, so these are as quick
as any other synthesis; the control plane and Slurm at that size are measured in ``make bench``."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import yaml

from conftest import ROOT, Synthesized, mask_asset_hashes
from training_cluster import ClusterConfig
from training_cluster.build import CLOUDFORMATION_MAX_RESOURCES, CLOUDFORMATION_MAX_TEMPLATE_BYTES


def _default(groups: list[dict[str, Any]]) -> ClusterConfig:
    data = yaml.safe_load((ROOT / "examples" / "default.yaml").read_text())
    data["instance_groups"] = groups
    data["orchestrator"]["partitions"] = {"gpu": [g["name"] for g in groups]}
    return ClusterConfig.from_dict(data)


def test_a_thousand_nodes_in_one_group_is_the_same_template_as_two(
    default_cluster: Synthesized, synth: Callable[..., Synthesized]
) -> None:
    """The default cluster with its gpu group at 1,024 instead of 2: the same resources, the
    template differs only in the group's sizes (it does not grow with the count)."""
    base = default_cluster.config.model_dump(exclude_unset=True, mode="json")
    base["instance_groups"][0]["count"] = 1024
    big = synth(ClusterConfig.from_dict(base))
    assert set(big.template_json["Resources"]) == set(default_cluster.template_json["Resources"])
    sizes = re.compile(r'"(MinSize|MaxSize|DesiredCapacity)": "(2|1024)"')
    small_text = sizes.sub(r'"\1": "N"', json.dumps(mask_asset_hashes(default_cluster.template_json), sort_keys=True))
    big_text = sizes.sub(r'"\1": "N"', json.dumps(mask_asset_hashes(big.template_json), sort_keys=True))
    assert big_text == small_text


def test_eight_groups_of_128_fit_cloudformations_limits(synth: Callable[..., Synthesized]) -> None:
    groups = [{"name": f"gpu{i}", "instance_type": "p5.48xlarge", "count": 128} for i in range(8)]
    s = synth(_default(groups))
    assert len(s.template_json["Resources"]) <= CLOUDFORMATION_MAX_RESOURCES
    assert s.template_path.stat().st_size <= CLOUDFORMATION_MAX_TEMPLATE_BYTES
    asgs = [r for r in s.template_json["Resources"].values() if r["Type"] == "AWS::AutoScaling::AutoScalingGroup"]
    sizes = sorted(int(r["Properties"]["MaxSize"]) for r in asgs)
    assert sizes == [1, 1] + [128] * 8  # and Slurm's controller and login groups


def test_the_subnet_check_at_a_thousand_nodes() -> None:
    """1,024 p5 nodes (one address each: their other 31 interfaces are EFA-only), the controller
    and a login node, with 25% headroom: 1,295 addresses; a /22 (1,024) is refused naming /21."""
    groups = [{"name": "gpu", "instance_type": "p5.48xlarge", "count": 1024}]
    config = _default(groups)
    from training_cluster.addresses import compute_subnet_addresses_needed

    assert compute_subnet_addresses_needed(config) == 1295
    data = config.model_dump(exclude_unset=True, mode="json")
    data["network"] = {"vpc_cidr": "10.0.0.0/16", "compute_subnet_prefix_length": 22}
    from conftest import errors_of

    assert errors_of(data) == [
        "network.compute_subnet_prefix_length: the compute subnet has 1024 addresses but the cluster needs 1,295 "
        "(fleet with 25% headroom for replacements, file system, endpoints, 5 AWS reserves); use /21 or larger"
    ]
