#!/bin/bash
# The health agent's resume hook on a Slurm compute node (/opt/training-cluster/hooks/resume): the
# node is healthy again (the fault cleared, or the node came back from a repair's reboot). Put it
# back in service if the agent, the health check or a repair took it out; a node people drained
# stays drained.
set -uo pipefail
node=${SLURMD_NODENAME:-$(cat /var/lib/cloud/data/instance-id 2>/dev/null || hostname -s)}
info=$(scontrol show node "$node" 2>/dev/null) || exit 0 # not registered yet: nothing to undo
if grep -Eq 'Reason=(agent: |health: |repair \(reboot\): )' <<<"$info" &&
  grep -Eq 'State=[A-Z_+]*(DRAIN|DOWN|FAIL)' <<<"$info"; then
  scontrol update nodename="$node" state=resume
fi
exit 0
