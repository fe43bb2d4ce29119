#!/bin/bash
# The health agent's drain hook on a Slurm compute node (/opt/training-cluster/hooks/drain): when
# the agent finds a fault, no new job lands here; auto-repair decides what happens next. The
# "agent:" reason is the agent's own: Slurm's health check (a quicker check) never resumes it.
#     slurm-agent-drain.sh REASON
set -euo pipefail
reason=${1:?reason}
node=${SLURMD_NODENAME:-$(cat /var/lib/cloud/data/instance-id 2>/dev/null || hostname -s)}
scontrol update nodename="$node" state=drain reason="agent: ${reason:0:120}"
