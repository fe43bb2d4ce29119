#!/bin/bash
# The orchestrator hook auto-repair runs on the controller (SSM Run Command) before it reboots or
# replaces a node: take the node down so that its jobs go back to the queue now, with the
# repair's reason (DRAIN_REASON_REBOOT or DRAIN_REASON_REPLACE before it). Before a replacement,
# also delete the node: the replacement registers under its own instance id and no ghost of the
# old one stays behind.
#     slurm-drain.sh NODE reboot|replace REASON
set -euo pipefail
# shellcheck source=../lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
node=${1:?node name (its instance id)}
action=${2:?reboot or replace}
reason=${3:?reason}
case $action in
  reboot) prefix=$DRAIN_REASON_REBOOT ;;
  replace) prefix=$DRAIN_REASON_REPLACE ;;
  *)
    echo "action must be reboot or replace, got $action" >&2
    exit 2
    ;;
esac
if ! scontrol ping >/dev/null; then
  echo "slurmctld does not answer: $node was not drained" >&2
  exit 1
fi
if ! scontrol show node "$node" >/dev/null 2>&1; then
  echo "$node is not a Slurm node: nothing to drain"
  exit 0
fi
scontrol update nodename="$node" state=down reason="$prefix${reason:0:100}"
echo "$node is down: its jobs are requeued"
# A hot spare of its group takes its place now (and the node leaves the spares if it was one, so
# that it can be deleted); the requeued job need not wait for the replacement.
here=$(dirname "${BASH_SOURCE[0]}")
if [[ -f ${SLURM_LAYOUT_FILE:-$here/layout.json} ]]; then
  # (--failed: Slurm may show the node idle again a moment after it is set down, when its slurmd
  # still answers; it is on its way out whatever Slurm shows.)
  python3 "$here/slurm_spares.py" reconcile --layout "${SLURM_LAYOUT_FILE:-$here/layout.json}" --failed "$node" ||
    echo "the spares could not be updated; their timer tries again within 30 s" >&2
fi
if [[ $action == replace ]]; then
  # A node is deleted once its jobs have left it; requeueing takes a moment.
  for _ in $(seq "${DELETE_ATTEMPTS:-20}"); do
    if scontrol delete nodename="$node" 2>/dev/null; then
      echo "$node deleted"
      exit 0
    fi
    sleep 1
  done
  echo "$node could not be deleted yet; slurm-reap.sh deletes it once its instance is gone" >&2
fi
