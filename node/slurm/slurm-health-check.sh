#!/bin/bash
# Slurm's HealthCheckProgram on a compute node: run the health agent's quick check and drain this
# node, with the check's reason, when it fails. When the check passes again (after a reboot, say)
# a node this check drained is resumed; nodes drained by people or by repair are left alone.
set -uo pipefail

AGENT=${HEALTH_AGENT:-/opt/training-cluster/health_agent.py}
CONFIG=${HEALTH_AGENT_CONFIG:-/etc/training-cluster/health-agent.json}
NODE=${SLURMD_NODENAME:-$(cat /var/lib/cloud/data/instance-id 2>/dev/null || hostname -s)}

[[ -f $AGENT ]] || exit 0 # no health agent on this node: auto-repair is off
failures=$(python3 "$AGENT" --config "$CONFIG" --once) || {
  echo "health check could not run: $AGENT exited with $?" >&2
  exit 1
}
reason=$(printf '%s' "$failures" | python3 -c 'import json,sys; print("; ".join(f["message"] for f in json.load(sys.stdin))[:120])')
if [[ -n $reason ]]; then
  scontrol update nodename="$NODE" state=drain reason="health: $reason"
  exit 1
fi
if scontrol show node "$NODE" 2>/dev/null | grep -q 'Reason=health: '; then
  scontrol update nodename="$NODE" state=resume
fi
exit 0
