"""The instance-type catalog and the EFA layouts it gives (REFERENCE.md section 1, EC2 User Guide)."""

from __future__ import annotations

import importlib.util

import pytest

from conftest import ROOT
from training_cluster import catalog

# type: (accelerators, network cards, EFA interfaces in the layout, first EFA card)
REFERENCE_TYPES = {
    "p4d.24xlarge": (8, 4, 4, 0),
    "p4de.24xlarge": (8, 4, 4, 0),
    "p5.48xlarge": (8, 32, 32, 0),
    "p5e.48xlarge": (8, 32, 32, 0),
    "p5en.48xlarge": (8, 16, 16, 0),
    "p6-b200.48xlarge": (8, 8, 8, 0),
    "p6-b300.48xlarge": (8, 17, 16, 1),
    "g5.48xlarge": (8, 1, 1, 0),
    "g6.48xlarge": (8, 1, 1, 0),
    "g6e.48xlarge": (8, 4, 4, 0),
    "g6e.24xlarge": (4, 2, 2, 0),
    "trn1.32xlarge": (16, 8, 8, 0),
    "trn1n.32xlarge": (16, 16, 16, 0),
    "trn2.48xlarge": (16, 16, 16, 0),
}


@pytest.mark.parametrize("name", sorted(REFERENCE_TYPES))
def test_reference_types_have_the_documented_efa_layout(name: str) -> None:
    accelerators, cards, efa_interfaces, first_efa_card = REFERENCE_TYPES[name]
    info = catalog.get(name)
    assert info is not None
    assert max(info.gpus, info.neuron_devices) == accelerators
    assert len(info.network_cards) == cards
    layout = info.efa_layout()
    efa = [s for s in layout if s.interface_type == "efa-only"]
    assert len(efa) == efa_interfaces == info.max_efa_interfaces
    # The primary interface is card 0 device 0 and an ENA interface (efa-only cannot be primary).
    assert (layout[0].network_card_index, layout[0].device_index, layout[0].interface_type) == (
        0,
        0,
        "interface",
    )
    assert efa[0].network_card_index == first_efa_card
    # One EFA interface per card: device 1 on card 0 (beside the primary), device 0 elsewhere.
    assert len({s.network_card_index for s in efa}) == len(efa)
    for slot in efa:
        assert slot.device_index == (1 if slot.network_card_index == 0 else 0)
    # Only the primary interface takes an IP address.
    assert [s.takes_ip_address for s in layout].count(True) == 1


def test_p6_b300_card_zero_has_no_efa() -> None:
    info = catalog.get("p6-b300.48xlarge")
    assert info is not None
    assert not info.network_cards[0].efa
    assert [s.network_card_index for s in info.efa_layout() if s.interface_type == "efa-only"] == list(range(1, 17))


def test_cpu_types_get_only_the_primary_interface() -> None:
    info = catalog.get("m7i.4xlarge")
    assert info is not None
    assert not info.efa_supported
    assert len(info.efa_layout()) == 1


def test_unknown_type_is_none() -> None:
    assert catalog.get("p9.96xlarge") is None


def test_capacity_block_and_zone_facts() -> None:
    p5 = catalog.get("p5.48xlarge")
    g6e = catalog.get("g6e.24xlarge")
    assert p5 is not None and g6e is not None
    assert p5.supports_capacity_blocks and not g6e.supports_capacity_blocks
    assert p5.is_offered_in("us-east-1a")
    assert "us-east-1a" in catalog.availability_zones("us-east-1")
    assert catalog.availability_zones("xx-nowhere-1") == ()


def test_committed_catalog_matches_its_source() -> None:
    """The committed catalog is what scripts/generate_catalog.py makes from moto's EC2 records."""
    spec = importlib.util.spec_from_file_location("generate_catalog", ROOT / "scripts" / "generate_catalog.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (ROOT / "src" / "training_cluster" / "catalog.json").read_text() == module.render()
