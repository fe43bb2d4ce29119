#!/bin/bash
# HyperPod runs this on every new node once its own setup is done (LifeCycleConfig.OnInitComplete),
# as root, from the folder it downloaded the cluster's lifecycle prefix into: this script, lib.sh
# and contract.sh (what every node script of the cluster shares) and settings.env (written by the
# stack). A non-zero exit fails the node's creation, and HyperPod tries again with another instance.
#   - only root reaches the instance metadata service (the execution role's credentials), unless
#     USERS_CAN_USE_NODE_ROLE=true
#   - the file system: HyperPod mounts it (InstanceStorageConfigs.FsxLustreConfig); waited for
#     (MOUNT_WAIT_SECONDS, 300) and checked here
#   - the cluster's users (Slurm): one uid on every node, homes on the file system
set -Eeuo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
etc="${TRAINING_CLUSTER_ETC:-/etc/training-cluster}"
log_file="${TRAINING_CLUSTER_LOG:-/var/log/training-cluster-lifecycle.log}"
exec > >(tee -a "$log_file") 2>&1

# shellcheck source=../../../node/lib.sh
. "$here/lib.sh"
# shellcheck source=/dev/null
. "$here/settings.env"
: "${CLUSTER_NAME:?}"

log() { printf '%s lifecycle (%s): %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$CLUSTER_NAME" "$*"; }

install -d -m 0755 "$etc"
install -m 0644 "$here/settings.env" "$etc/cluster.env"

if [[ ${USERS_CAN_USE_NODE_ROLE:-false} != true ]]; then
  restrict_instance_metadata "${TRAINING_CLUSTER_SYSTEMD_DIR:-/etc/systemd/system}" ""
  log "only root reaches the instance metadata service"
fi

if [[ -n ${FSX_MOUNT_PATH:-} ]]; then
  waited=0
  until mountpoint -q "$FSX_MOUNT_PATH"; do
    if ((waited >= ${MOUNT_WAIT_SECONDS:-300})); then
      log "the file system is not mounted at $FSX_MOUNT_PATH after ${waited} s: this node cannot run jobs"
      exit 1
    fi
    sleep 5
    waited=$((waited + 5))
  done
  log "file system mounted at $FSX_MOUNT_PATH"
  if [[ -n ${CLUSTER_USERS:-} ]]; then
    create_users "$FSX_MOUNT_PATH/home" "$CLUSTER_USERS"
    log "users: $CLUSTER_USERS"
  fi
elif [[ -n ${CLUSTER_USERS:-} ]]; then
  log "cluster users need the file system for their homes, and this cluster has none"
  exit 1
fi
log "done"
