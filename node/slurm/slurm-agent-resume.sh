#!/bin/bash
# The health agent's resume hook on a Slurm compute node (/opt/training-cluster/hooks/resume): the
# node is healthy again (the fault cleared, or the node came back from a repair's reboot). Put it
# back in service if the agent, the health check or a repair's reboot took it out (their drain
# reasons); a node people drained, or one being replaced, stays out.
set -uo pipefail
# shellcheck source=../lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
node=$(node_name) || exit 0
info=$(scontrol show node "$node" 2>/dev/null) || exit 0 # not registered yet: nothing to undo
reason=$(sed -n 's/^ *Reason=//p' <<<"$info")
case $reason in
  "$DRAIN_REASON_AGENT"* | "$DRAIN_REASON_HEALTH"* | "$DRAIN_REASON_REBOOT"*)
    if grep -Eq 'State=[A-Z_+]*(DRAIN|DOWN|FAIL)' <<<"$info"; then
      scontrol update nodename="$node" state=resume
    fi
    ;;
esac
exit 0
