#!/usr/bin/env python3
"""Render this node's Prometheus agent configuration (standard library only).

The same code renders it on the node at boot and in the project's tests, where ``promtool check
config`` validates it. JSON is YAML, so the file is written as JSON.

    collector_config.py --cluster demo --instance-group gpu --instance-id i-0abc \\
        --remote-write-url https://aps-workspaces.../api/v1/remote_write --region us-east-1 \\
        --scrape-interval 15 [--gpu] [--neuron]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

NODE_EXPORTER_PORT = 9100
DCGM_EXPORTER_PORT = 9400
NEURON_MONITOR_PORT = 8000


def render(
    *,
    cluster: str,
    instance_group: str,
    instance_id: str,
    remote_write_url: str,
    region: str,
    scrape_interval_seconds: int,
    gpu: bool,
    neuron: bool,
) -> dict[str, Any]:
    jobs = [("node", NODE_EXPORTER_PORT)]
    if gpu:
        jobs.append(("dcgm", DCGM_EXPORTER_PORT))
    if neuron:
        jobs.append(("neuron", NEURON_MONITOR_PORT))
    return {
        "global": {
            "scrape_interval": f"{scrape_interval_seconds}s",
            "scrape_timeout": f"{min(10, scrape_interval_seconds)}s",
            # Every series names its cluster, instance group and instance.
            "external_labels": {"cluster": cluster, "instance_group": instance_group, "instance_id": instance_id},
        },
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [f"localhost:{port}"]}]} for job, port in jobs
        ],
        "remote_write": [
            {
                "url": remote_write_url,
                "sigv4": {"region": region},
                "queue_config": {"max_samples_per_send": 1000, "max_shards": 20, "capacity": 2500},
            }
        ],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cluster", required=True)
    parser.add_argument("--instance-group", required=True)
    parser.add_argument("--instance-id", required=True)
    parser.add_argument("--remote-write-url", required=True)
    parser.add_argument("--region", required=True)
    parser.add_argument("--scrape-interval", type=int, default=15)
    parser.add_argument("--gpu", action="store_true", help="scrape the DCGM exporter")
    parser.add_argument("--neuron", action="store_true", help="scrape the Neuron monitor")
    args = parser.parse_args(argv)
    config = render(
        cluster=args.cluster,
        instance_group=args.instance_group,
        instance_id=args.instance_id,
        remote_write_url=args.remote_write_url,
        region=args.region,
        scrape_interval_seconds=args.scrape_interval,
        gpu=args.gpu,
        neuron=args.neuron,
    )
    json.dump(config, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
