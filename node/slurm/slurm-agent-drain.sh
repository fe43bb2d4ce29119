#!/bin/bash
# The health agent's drain hook on a Slurm compute node (/opt/training-cluster/hooks/drain): when
# the agent finds a fault, no new job lands here; auto-repair decides what happens next. The
# reason carries the agent's prefix (DRAIN_REASON_AGENT): Slurm's health check (a quicker check)
# never resumes it.
#     slurm-agent-drain.sh REASON
set -euo pipefail
# shellcheck source=../lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
reason=${1:?reason}
node=$(node_name)
scontrol update nodename="$node" state=drain reason="$DRAIN_REASON_AGENT${reason:0:120}"
