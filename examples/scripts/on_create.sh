#!/bin/bash
# An example lifecycle script: runs as root once per node, after the file system is mounted.
set -euo pipefail
mkdir -p /fsx/checkpoints /fsx/datasets
echo "$(hostname) ready at $(date -u +%Y-%m-%dT%H:%M:%SZ)" >>/fsx/nodes.log
