#!/bin/bash
# The orchestrator hook for a node about to be rebooted or replaced (run on the controller):
# mark it down so that its jobs are requeued now, with the repair's reason.
#     slurm-drain.sh NODE REASON
set -euo pipefail
node=${1:?node name}
reason=${2:?reason}
scontrol update nodename="$node" state=down reason="repair: ${reason:0:120}"
