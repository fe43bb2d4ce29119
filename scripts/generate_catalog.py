"""Regenerate ``src/training_cluster/catalog.json`` from the EC2 records that moto ships.

moto (Apache-2.0) carries the EC2 ``DescribeInstanceTypes`` records and the per-zone
``DescribeInstanceTypeOfferings`` answers. This script keeps the fields the cluster needs for
the instance families a training cluster uses, so synthesis never calls AWS.

    python scripts/generate_catalog.py            # rewrite the catalog
    python scripts/generate_catalog.py --check    # exit 1 if the committed catalog is stale
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import moto

OUTPUT = Path(__file__).resolve().parents[1] / "src" / "training_cluster" / "catalog.json"

# Accelerated families (GPU, Trainium, Inferentia) and the x86 CPU families that make good
# controller and login nodes.
FAMILY = re.compile(r"^(p[4-9][a-z\d-]*|g[5-9]e?|g6f|trn\d[a-z]*|inf2|[mcr]5|[mcr][6-8][ia])\.(?!metal)[\w-]+$")


def _card(card: dict[str, Any]) -> dict[str, Any]:
    types = card.get("InterfaceTypes", ["interface"])
    return {
        "index": card["NetworkCardIndex"],
        "efa": "efa-only" in types or "efa" in types,
        "max_interfaces": card["MaximumNetworkInterfaces"],
        "gbps": card.get("PeakBandwidthInGbps") or card.get("BaselineBandwidthInGbps") or 0,
    }


def _record(raw: dict[str, Any]) -> dict[str, Any]:
    net = raw["NetworkInfo"]
    gpus = raw.get("GpuInfo", {}).get("Gpus", [])
    neuron = raw.get("NeuronInfo", {}).get("NeuronDevices", [])
    return {
        "architectures": sorted(raw["ProcessorInfo"]["SupportedArchitectures"]),
        "vcpus": raw["VCpuInfo"]["DefaultVCpus"],
        "memory_mib": raw["MemoryInfo"]["SizeInMiB"],
        "gpus": sum(g["Count"] for g in gpus),
        "gpu_name": gpus[0]["Name"] if gpus else None,
        "gpu_memory_mib": gpus[0]["MemoryInfo"]["SizeInMiB"] if gpus else 0,
        "neuron_devices": sum(n["Count"] for n in neuron),
        "neuron_name": neuron[0]["Name"] if neuron else None,
        "max_efa_interfaces": net.get("EfaInfo", {}).get("MaximumEfaInterfaces", 0) if net.get("EfaSupported") else 0,
        "ipv4_per_interface": net["Ipv4AddressesPerInterface"],
        "network_cards": [_card(c) for c in sorted(net["NetworkCards"], key=lambda c: c["NetworkCardIndex"])],
        "usage_classes": sorted(raw.get("SupportedUsageClasses", [])),
        "placement_strategies": sorted(raw.get("PlacementGroupInfo", {}).get("SupportedStrategies", [])),
    }


CORRECTIONS: dict[str, dict[str, Any]] = {
    # moto's record of the Trn2 UltraServer's instance has no NeuronInfo; each trn2u.48xlarge
    # has the 16 Trainium2 devices of a trn2.48xlarge (EC2 User Guide, "Amazon EC2 Trn2 instances
    # and UltraServers").
    "trn2u.48xlarge": {"neuron_devices": 16, "neuron_name": "Trainium2"},
}
"""Fields the EC2 records in moto lack or get wrong, with the source of each value."""


def build() -> dict[str, Any]:
    resources = Path(moto.__file__).parent / "ec2" / "resources"
    with gzip.open(resources / "instance_types.json.gz") as fh:
        raw_types: dict[str, dict[str, Any]] = json.load(fh)
    types = {name: _record(raw) for name, raw in sorted(raw_types.items()) if FAMILY.match(name)}
    for name, fields in CORRECTIONS.items():
        types[name].update(fields)
    zones: dict[str, list[str]] = {}
    offered: dict[str, dict[str, list[str]]] = {name: {} for name in types}
    for path in sorted((resources / "instance_type_offerings" / "availability-zone").glob("*.json.gz")):
        region = path.name.removesuffix(".json.gz")
        with gzip.open(path) as fh:
            offerings = json.load(fh)
        zones[region] = sorted({o["Location"] for o in offerings})
        for o in offerings:
            if o["InstanceType"] in offered:
                offered[o["InstanceType"]].setdefault(region, []).append(o["Location"])
    for name, per_region in offered.items():
        # Zone names without their region prefix keep the file small: "us-east-1": "a b c".
        types[name]["offered_in"] = {
            r: " ".join(sorted(z.removeprefix(r) for z in zs)) for r, zs in sorted(per_region.items())
        }
    return {
        "source": f"moto {version('moto')} ec2/resources (DescribeInstanceTypes, DescribeInstanceTypeOfferings)",
        "availability_zones": zones,
        "instance_types": types,
    }


def render() -> str:
    return json.dumps(build(), indent=None, separators=(",", ":"), sort_keys=True) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the committed catalog differs")
    args = parser.parse_args()
    text = render()
    if args.check:
        if OUTPUT.read_text() != text:
            print(f"{OUTPUT} is stale: run python scripts/generate_catalog.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT} ({len(text)} bytes, {len(json.loads(text)['instance_types'])} types)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
