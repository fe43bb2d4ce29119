#!/bin/bash
# Bootstrap of a cdk-training-cluster node. User data writes the cluster settings to
# /etc/training-cluster/cluster.env, this script and lib.sh (with the contract) beside it, and runs
# it once at first boot; running it again is safe: every stage checks what is already done.
#
# Stages, in order:
#   1. lustre-client  install the FSx for Lustre client that matches the running kernel
#   2. lustre-mount   mount the file system through a systemd unit that retries until it mounts
#   3. aws-cli        the AWS CLI, where the image has none (Ubuntu's own images)
#   4. node-software  run /opt/training-cluster/bootstrap.d/*.sh (metrics, health agent, scheduler)
#   5. lifecycle      run the user's own lifecycle script, once per instance
set -Eeuo pipefail

ENV_FILE=${TRAINING_CLUSTER_ENV_FILE:-/etc/training-cluster/cluster.env}
LOG_DIR=${TRAINING_CLUSTER_LOG_DIR:-/var/log/training-cluster}
STATE_DIR=${TRAINING_CLUSTER_STATE_DIR:-/var/lib/training-cluster}
STAGE_DIR=${TRAINING_CLUSTER_STAGE_DIR:-/opt/training-cluster/bootstrap.d}
SYSTEMD_DIR=${TRAINING_CLUSTER_SYSTEMD_DIR:-/etc/systemd/system}
MOUNT_WAIT_SECONDS=${MOUNT_WAIT_SECONDS:-900}
SNAP_BIN=${SNAP_BIN:-/snap/bin}
BIN_DIR=${TRAINING_CLUSTER_BIN_DIR:-/usr/local/bin}

mkdir -p "$LOG_DIR" "$STATE_DIR"
# Everything goes to the log file and to standard output, which cloud-init copies to the console.
exec > >(tee -a "$LOG_DIR/bootstrap.log") 2>&1

log() { printf '%s training-cluster bootstrap: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"; }
die() {
  log "FAILED: $*"
  exit 1
}
trap 'die "line $LINENO: $BASH_COMMAND exited with $?"' ERR
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ -r $ENV_FILE ]] || die "missing $ENV_FILE (user data writes it)"
set -a
# shellcheck source=/dev/null
. "$ENV_FILE"
set +a
: "${CLUSTER_NAME:?}" "${INSTANCE_GROUP:?}" "${NODE_OS:?}"
log "cluster $CLUSTER_NAME, group $INSTANCE_GROUP, os $NODE_OS"

install_lustre_client() {
  if modinfo lustre >/dev/null 2>&1; then
    log "lustre client: already installed"
    return
  fi
  case $NODE_OS in
    ubuntu-*)
      local key=/usr/share/keyrings/fsx-ubuntu-public-key.gpg codename
      # shellcheck source=/dev/null
      codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
      export DEBIAN_FRONTEND=noninteractive
      retry curl -fsSL -o /tmp/fsx-ubuntu-public-key.asc \
        https://fsx-lustre-client-repo-public-keys.s3.amazonaws.com/fsx-ubuntu-public-key.asc
      gpg --batch --yes --dearmor -o "$key" /tmp/fsx-ubuntu-public-key.asc
      echo "deb [signed-by=$key] https://fsx-lustre-client-repo.s3.amazonaws.com/ubuntu $codename main" \
        >/etc/apt/sources.list.d/fsxlustreclientrepo.list
      retry apt-get update -q
      retry apt-get install -y -q "lustre-client-modules-$(uname -r)" ||
        die "no Lustre client for kernel $(uname -r) in the FSx repository: use an AMI with a supported kernel"
      ;;
    amazon-linux-*)
      retry dnf install -y -q lustre-client
      ;;
    *)
      die "unsupported NODE_OS $NODE_OS"
      ;;
  esac
  modprobe lustre
  log "lustre client: installed"
}

mount_lustre() {
  local unit where=$FSX_MOUNT_PATH
  unit=$(systemd-escape --path --suffix=mount "$where")
  mkdir -p "$where"
  cat >"$SYSTEMD_DIR/$unit" <<UNIT
[Unit]
Description=FSx for Lustre file system of cluster $CLUSTER_NAME
After=network-online.target
Wants=network-online.target

[Mount]
What=$FSX_DNS_NAME@tcp:/$FSX_MOUNT_NAME
Where=$where
Type=lustre
Options=relatime,flock,_netdev
TimeoutSec=120
UNIT
  # A mount unit cannot retry by itself; this service starts it until it succeeds, at every boot.
  cat >"$SYSTEMD_DIR/training-cluster-lustre.service" <<UNIT
[Unit]
Description=Mount $where until it succeeds
After=network-online.target
Wants=network-online.target
StartLimitIntervalSec=0

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/systemctl start $unit
Restart=on-failure
RestartSec=15

[Install]
WantedBy=multi-user.target
UNIT
  systemctl daemon-reload
  systemctl enable training-cluster-lustre.service
  systemctl start --no-block training-cluster-lustre.service
  local waited=0
  until mountpoint -q "$where"; do
    ((waited < MOUNT_WAIT_SECONDS)) || die "$where did not mount within ${MOUNT_WAIT_SECONDS}s (journalctl -u $unit)"
    sleep 5
    waited=$((waited + 5))
  done
  log "lustre: $FSX_DNS_NAME@tcp:/$FSX_MOUNT_NAME mounted at $where"
}

install_aws_cli() {
  # Node software calls the AWS CLI (assets, events, metrics, secrets). The Deep Learning AMIs
  # and Amazon Linux have it; Ubuntu's own images (controller, login) get it from the snap store.
  if command -v aws >/dev/null; then
    return
  fi
  case $NODE_OS in
    ubuntu-*) retry snap install aws-cli --classic ;;
    amazon-linux-*) retry dnf install -y -q awscli-2 ;;
  esac
  # Services that systemd starts do not have /snap/bin on their PATH.
  if [[ -x $SNAP_BIN/aws && ! -e $BIN_DIR/aws ]]; then
    ln -s "$SNAP_BIN/aws" "$BIN_DIR/aws"
  fi
  command -v aws >/dev/null || die "the AWS CLI did not install"
  log "aws cli: installed"
}

run_node_software() {
  local stage
  shopt -s nullglob
  for stage in "$STAGE_DIR"/*.sh; do
    log "node software: $(basename "$stage")"
    bash "$stage" || die "node software stage $(basename "$stage") failed"
  done
  shopt -u nullglob
}

run_lifecycle_script() {
  local marker=$STATE_DIR/lifecycle.done script=$STATE_DIR/lifecycle.sh
  if [[ -e $marker ]]; then
    log "lifecycle script: already ran"
    return
  fi
  mkdir -p "$(dirname "$script")"
  retry aws s3 cp --only-show-errors "$LIFECYCLE_SCRIPT_S3_URI" "$script"
  chmod 0755 "$script"
  log "lifecycle script: running $LIFECYCLE_SCRIPT_S3_URI"
  "$script" || die "lifecycle script $LIFECYCLE_SCRIPT_S3_URI exited with $?"
  touch "$marker"
}

if [[ -n ${FSX_DNS_NAME:-} ]]; then
  install_lustre_client
  mount_lustre
fi
install_aws_cli
run_node_software
if [[ -n ${LIFECYCLE_SCRIPT_S3_URI:-} ]]; then
  run_lifecycle_script
fi
touch "$STATE_DIR/bootstrap.done"
log "node ready"
