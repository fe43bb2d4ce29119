#!/bin/bash
# On the controller, every few minutes: delete dynamic nodes that are down and whose instances are
# gone (terminated by a replacement, by Auto Scaling or by hand), so no ghost stays in the partition.
# Node names are instance ids.
set -euo pipefail
mapfile -t down < <(scontrol show nodes --oneliner 2>/dev/null |
  awk '$1 ~ /^NodeName=i-[0-9a-f]+$/ && /State=[A-Z_+]*DOWN/ {sub("NodeName=", "", $1); print $1}')
((${#down[@]})) || exit 0
ids=$(IFS=,; echo "${down[*]}")
alive=$(aws ec2 describe-instances --filters "Name=instance-id,Values=$ids" \
  "Name=instance-state-name,Values=pending,running,stopping,stopped" \
  --query 'Reservations[].Instances[].InstanceId' --output text | tr '\t\n' '  ')
for node in "${down[@]}"; do
  if [[ " $alive " != *" $node "* ]]; then
    scontrol delete nodename="$node" && echo "deleted $node: its instance is gone"
  fi
done
