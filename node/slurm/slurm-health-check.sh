#!/bin/bash
# Slurm's HealthCheckProgram on a compute node: run the health agent's quick check and drain this
# node, with the check's reason (DRAIN_REASON_HEALTH before it), when it fails. When the check
# passes again (after a reboot, say) a node this check drained is resumed; nodes drained by people,
# the agent or repair are left alone.
set -uo pipefail
# shellcheck source=../lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

AGENT=${HEALTH_AGENT:-$HEALTH_AGENT_PATH}

[[ -f $AGENT ]] || exit 0 # no health agent on this node: auto-repair is off
NODE=$(node_name) || {
  echo "health check: this node's name is unknown" >&2
  exit 1
}
failures=$(python3 "$AGENT" --config "$HEALTH_AGENT_CONFIG" --once) || {
  echo "health check could not run: $AGENT exited with $?" >&2
  exit 1
}
reason=$(printf '%s' "$failures" | python3 -c 'import json,sys; print("; ".join(f["message"] for f in json.load(sys.stdin))[:120])')
if [[ -n $reason ]]; then
  scontrol update nodename="$NODE" state=drain reason="$DRAIN_REASON_HEALTH$reason"
  exit 1
fi
if [[ $(scontrol show node "$NODE" 2>/dev/null | sed -n 's/^ *Reason=//p') == "$DRAIN_REASON_HEALTH"* ]]; then
  scontrol update nodename="$NODE" state=resume
fi
exit 0
