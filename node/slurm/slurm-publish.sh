#!/bin/bash
# On the controller: publish its address in the SSM parameter compute nodes read when slurmd
# starts, unless the parameter holds it already.
#     slurm-publish.sh ADDRESS
set -euo pipefail
: "${SLURM_CONTROLLER_PARAMETER:?}"
address=${1:?address}
current=$(aws ssm get-parameter --name "$SLURM_CONTROLLER_PARAMETER" --query Parameter.Value --output text)
if [[ $current != "$address" ]]; then
  aws ssm put-parameter --name "$SLURM_CONTROLLER_PARAMETER" --value "$address" --type String --overwrite >/dev/null
  echo "published $address in $SLURM_CONTROLLER_PARAMETER (was $current)"
fi
