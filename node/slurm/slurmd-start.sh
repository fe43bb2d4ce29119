#!/bin/bash
# slurmd's ExecStart on a compute node: find the controller's address in the SSM parameter the
# controller keeps current, then run slurmd as a dynamic node named after this instance,
# fetching its configuration from the controller (configless).
set -euo pipefail
: "${SLURM_CONTROLLER_PARAMETER:?}" "${SLURMD_NODENAME:?}" "${SLURMD_CONF:?}"
PORT=${SLURM_CONTROLLER_PORT:-6817}
until address=$(aws ssm get-parameter --name "$SLURM_CONTROLLER_PARAMETER" --query Parameter.Value --output text) &&
  [[ $address =~ ^[0-9.]+$ ]]; do
  echo "waiting for the controller to publish its address in $SLURM_CONTROLLER_PARAMETER" >&2
  sleep 10
done
exec "${SLURMD:-/usr/sbin/slurmd}" -D -s -Z -N "$SLURMD_NODENAME" --conf-server "$address:$PORT" --conf "$SLURMD_CONF"
