#!/bin/bash
# Slurm on a cluster node, by role (a bootstrap stage; safe to run again):
#   controller  slurmctld (state on the file system), slurmdbd (and MariaDB) for accounting, its
#               address in SSM, the ghost-node reaper, the hot spares' keeper, the network
#               topology's features; renders the configuration that compute
#               nodes fetch (configless) with slurm_config.py
#   compute     slurmd as a dynamic node named after the instance id, with its group's feature,
#               GPUs and memory; Slurm's health check and the health agent's drain hook
#   login       Slurm's commands, reading the controller's slurm.conf from the file system
# Every role: Ubuntu's Slurm packages, the munge key from Secrets Manager, the cluster's users
# with their homes on the file system.
set -Eeuo pipefail

: "${CLUSTER_NAME:?}" "${SLURM_ROLE:?}" "${SLURM_LAYOUT:?}" "${SLURM_CONTROLLER_PARAMETER:?}"
: "${SLURM_MUNGE_SECRET_ARN:?}" "${FSX_MOUNT_PATH:?}"
SLURM_DIR=${SLURM_DIR:-/opt/training-cluster/slurm}
HOOK_DIR=${HOOK_DIR:-/opt/training-cluster/hooks}
ETC=${SLURM_ETC_DIR:-/etc/slurm}
MUNGE_KEY=${MUNGE_KEY:-/etc/munge/munge.key}
SYSTEMD_DIR=${TRAINING_CLUSTER_SYSTEMD_DIR:-/etc/systemd/system}
MYSQL_CONF_DIR=${MYSQL_CONF_DIR:-/etc/mysql/mariadb.conf.d}
TMPFILES_DIR=${TMPFILES_DIR:-/etc/tmpfiles.d}
SHARED=$FSX_MOUNT_PATH/.slurm/$CLUSTER_NAME  # state, accounting database, configuration for login nodes
HOMES=$FSX_MOUNT_PATH/home
MYSQL_UID=850  # fixed, so that a replacement controller owns the database files on the file system
SLURM_UID=64030  # Debian's and Ubuntu's slurm account

# shellcheck source=../lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"  # retry, imds, node_name

log() { printf '%s slurm (%s): %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$SLURM_ROLE" "$*"; }
layout_file() {
  local file=$SLURM_DIR/layout.json
  printf '%s\n' "$SLURM_LAYOUT" >"$file"
  echo "$file"
}
systemd_dropin() { # UNIT TEXT: a drop-in that orders UNIT after the file system and restarts it
  mkdir -p "$SYSTEMD_DIR/$1.d"
  printf '%s\n' "$2" >"$SYSTEMD_DIR/$1.d/training-cluster.conf"
}
wait_for_mount() { # the file system's systemd unit mounts it at every boot; units wait for it
  printf '%s' "ExecStartPre=/bin/sh -c 'until mountpoint -q $FSX_MOUNT_PATH; do sleep 5; done'"
}

install_packages() {
  export DEBIAN_FRONTEND=noninteractive
  local packages=(munge slurm-client)
  retry apt-get update -q
  case $SLURM_ROLE in
    controller)
      packages+=(slurmctld python3-boto3)  # boto3: the topology (slurm_topology.py)
      if [[ ${SLURM_ACCOUNTING:-false} == true && -n ${SLURM_DATABASE_SECRET_ARN:-} ]]; then
        packages+=(slurmdbd)  # the database is in RDS
      elif [[ ${SLURM_ACCOUNTING:-false} == true ]]; then
        getent group mysql >/dev/null || groupadd --system --gid "$MYSQL_UID" mysql
        getent passwd mysql >/dev/null ||
          useradd --system --uid "$MYSQL_UID" --gid mysql --home-dir /nonexistent --shell /bin/false mysql
        packages+=(slurmdbd mariadb-server)
      fi
      ;;
    compute)
      packages+=(slurmd)
      # GPUs through NVML (gres.conf AutoDetect=nvml), where the archive has the plugin.
      if [[ ${SLURM_GPUS:-0} != 0 ]] && apt-cache show slurm-wlm-nvml-plugin >/dev/null 2>&1; then
        packages+=(slurm-wlm-nvml-plugin)
      fi
      ;;
    login) ;;
    *)
      log "unknown SLURM_ROLE $SLURM_ROLE (controller, compute or login)"
      return 1
      ;;
  esac
  retry apt-get install -y -q --no-install-recommends "${packages[@]}"
  [[ $(id -u slurm) == "$SLURM_UID" ]] || log "warning: the slurm account has uid $(id -u slurm), not $SLURM_UID"
}

install_munge_key() {
  local key
  key=$(retry aws secretsmanager get-secret-value --secret-id "$SLURM_MUNGE_SECRET_ARN" \
    --query SecretString --output text)
  [[ ${#key} -ge 32 ]] || {
    log "the munge key from $SLURM_MUNGE_SECRET_ARN is too short"
    return 1
  }
  install -d -m 0700 "$(dirname "$MUNGE_KEY")"
  (
    umask 077
    printf '%s' "$key" >"$MUNGE_KEY.tmp"
  )
  chown munge:munge "$MUNGE_KEY.tmp"
  chmod 0400 "$MUNGE_KEY.tmp"
  mv -f "$MUNGE_KEY.tmp" "$MUNGE_KEY"
  chown munge:munge "$(dirname "$MUNGE_KEY")"
  systemctl enable munge
  systemctl restart munge
}

controller() {
  local host address layout
  host=$(hostname -s)
  address=$(imds local-ipv4)
  layout=$(layout_file)
  install -d -o slurm -g slurm "$SHARED" "$SHARED/state" "$SHARED/etc" /var/log/slurm
  printf 'd /run/slurm 0755 slurm slurm -\n' >"$TMPFILES_DIR/training-cluster-slurm.conf"
  install -d -o slurm -g slurm /run/slurm
  # Nodes find the controller through an SSM parameter this controller keeps current (now and
  # every 5 minutes with the reaper), so a replacement controller takes over without anyone
  # reconfiguring a node, and a stack update that resets the parameter is undone.
  retry "$SLURM_DIR/slurm-publish.sh" "$address"
  local database=()
  if [[ -n ${SLURM_DATABASE_SECRET_ARN:-} ]]; then
    (
      umask 077
      retry aws secretsmanager get-secret-value --secret-id "$SLURM_DATABASE_SECRET_ARN" \
        --query SecretString --output text >"$SLURM_DIR/database.json"
    )
    database=(--database "$SLURM_DIR/database.json")
  fi
  python3 "$SLURM_DIR/slurm_config.py" render --layout "$layout" --controller "$host($address)" \
    --state-dir "$SHARED/state" --out-dir "$ETC" "${database[@]}"
  rm -f "$SLURM_DIR/database.json"
  if [[ ${SLURM_CONTAINERS:-false} == true ]]; then
    # Optional: nodes without pyxis (login, CPU groups) still start.
    printf 'optional /usr/local/lib/slurm/spank_pyxis.so\n' >"$ETC/plugstack.conf"
  fi
  local file
  for file in slurm.conf plugstack.conf; do # what login nodes read
    if [[ -f $ETC/$file ]]; then
      cp "$ETC/$file" "$SHARED/etc/$file.tmp"
      mv -f "$SHARED/etc/$file.tmp" "$SHARED/etc/$file"
    fi
  done

  if [[ ${SLURM_ACCOUNTING:-false} == true ]]; then
    chown slurm:slurm "$ETC/slurmdbd.conf"
  fi
  if [[ ${SLURM_ACCOUNTING:-false} == true && -z ${SLURM_DATABASE_SECRET_ARN:-} ]]; then
    install -d -o mysql -g mysql "$SHARED/mysql"
    cat >"$MYSQL_CONF_DIR/99-training-cluster.cnf" <<CNF
[mysqld]
# The accounting database lives on the file system, so a replacement controller keeps it.
datadir = $SHARED/mysql
innodb_use_native_aio = 0
innodb_buffer_pool_size = 1G
innodb_lock_wait_timeout = 900
CNF
    systemd_dropin mariadb.service "[Service]
$(wait_for_mount)
Restart=always
RestartSec=10"
    if [[ ! -d $SHARED/mysql/mysql ]]; then
      mariadb-install-db --user=mysql --datadir="$SHARED/mysql" >/dev/null
    fi
    systemctl daemon-reload
    systemctl enable mariadb
    systemctl restart mariadb
    mariadb -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED VIA unix_socket;
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
  fi
  if [[ ${SLURM_ACCOUNTING:-false} == true ]]; then
    systemd_dropin slurmdbd.service "[Unit]
After=mariadb.service
[Service]
Restart=always
RestartSec=10"
    systemctl daemon-reload
    systemctl enable slurmdbd
    systemctl restart slurmdbd
    retry sacctmgr --immediate show cluster "$CLUSTER_NAME" --noheader --parsable2 >/dev/null
    if [[ -z $(sacctmgr --noheader --parsable2 show cluster "$CLUSTER_NAME" format=cluster) ]]; then
      sacctmgr --immediate add cluster "$CLUSTER_NAME"
    fi
  fi

  systemd_dropin slurmctld.service "[Unit]
After=training-cluster-lustre.service slurmdbd.service munge.service
StartLimitIntervalSec=0
[Service]
$(wait_for_mount)
Restart=always
RestartSec=10"
  cat >"$SYSTEMD_DIR/training-cluster-slurm-reap.service" <<UNIT
[Unit]
Description=Publish the controller's address; delete Slurm nodes whose instances are gone
[Service]
Type=oneshot
Environment=AWS_DEFAULT_REGION=$AWS_DEFAULT_REGION SLURM_CONTROLLER_PARAMETER=$SLURM_CONTROLLER_PARAMETER
ExecStartPre=$SLURM_DIR/slurm-publish.sh $address
ExecStart=$SLURM_DIR/slurm-reap.sh
UNIT
  cat >"$SYSTEMD_DIR/training-cluster-slurm-reap.timer" <<UNIT
[Unit]
Description=Delete Slurm nodes whose instances are gone, every 5 minutes
[Timer]
OnBootSec=5min
OnUnitActiveSec=5min
[Install]
WantedBy=timers.target
UNIT
  # Hot spares (slurm_spares.py): the groups' pools kept full, and one let go when a group is short.
  cat >"$SYSTEMD_DIR/training-cluster-slurm-spares.service" <<UNIT
[Unit]
Description=Keep the instance groups' hot spares in their reservations
[Service]
Type=oneshot
Environment=TEXTFILE_DIR=${TEXTFILE_DIR:-/var/lib/node_exporter/textfile}
ExecStart=/usr/bin/python3 $SLURM_DIR/slurm_spares.py reconcile --layout $layout
UNIT
  cat >"$SYSTEMD_DIR/training-cluster-slurm-spares.timer" <<UNIT
[Unit]
Description=Keep the instance groups' hot spares, every 30 seconds
[Timer]
OnBootSec=2min
OnUnitActiveSec=30s
AccuracySec=5s
[Install]
WantedBy=timers.target
UNIT
  # The network topology (slurm_topology.py): topology.conf and each node's network-node features.
  cat >"$SYSTEMD_DIR/training-cluster-slurm-topology.service" <<UNIT
[Unit]
Description=Slurm's view of the network topology, from EC2 DescribeInstanceTopology
[Service]
Type=oneshot
ExecStart=/usr/bin/python3 $SLURM_DIR/slurm_topology.py refresh --region $AWS_DEFAULT_REGION --out-dir $SHARED/etc
UNIT
  cat >"$SYSTEMD_DIR/training-cluster-slurm-topology.timer" <<UNIT
[Unit]
Description=Slurm's view of the network topology, every 2 minutes
[Timer]
OnBootSec=3min
OnUnitActiveSec=2min
[Install]
WantedBy=timers.target
UNIT
  local timers="training-cluster-slurm-reap.timer training-cluster-slurm-spares.timer training-cluster-slurm-topology.timer"
  systemctl daemon-reload
  # shellcheck disable=SC2086 # the unit names
  systemctl enable slurmctld $timers
  systemctl restart slurmctld
  # shellcheck disable=SC2086
  systemctl start $timers
  # Registered nodes (a replacement controller's predecessor had them) get the new configuration.
  retry scontrol ping >/dev/null
  scontrol reconfigure
  log "slurmctld up at $host ($address)"
}

compute() {
  local node conf layout
  node=$(node_name)
  layout=$(layout_file)
  conf=$(python3 "$SLURM_DIR/slurm_config.py" node-conf --layout "$layout" --group "$INSTANCE_GROUP")
  install -d "$HOOK_DIR" /var/log/slurm /var/spool/slurmd
  install -m 0755 "$SLURM_DIR/slurm-health-check.sh" "$HOOK_DIR/slurm-health-check"
  install -m 0755 "$SLURM_DIR/slurm-agent-drain.sh" "$HOOK_DIR/drain"
  install -m 0755 "$SLURM_DIR/slurm-agent-resume.sh" "$HOOK_DIR/resume"
  install -m 0755 "$SLURM_DIR/slurm-prolog.sh" "$HOOK_DIR/slurm-prolog"
  install -m 0755 "$SLURM_DIR/slurm-epilog.sh" "$HOOK_DIR/slurm-epilog"
  printf 'd /run/slurm 0755 root root -\n' >"$TMPFILES_DIR/training-cluster-slurm.conf"
  install -d /run/slurm
  # Configless: slurmd fetches slurm.conf and the rest from the controller and registers this
  # node under its instance id; slurmd-start.sh finds the controller (see controller()).
  systemd_dropin slurmd.service "[Unit]
ConditionPathExists=
After=training-cluster-lustre.service munge.service
StartLimitIntervalSec=0
[Service]
Environment=SLURMD_NODENAME=$node AWS_DEFAULT_REGION=$AWS_DEFAULT_REGION
Environment=SLURM_CONTROLLER_PARAMETER=$SLURM_CONTROLLER_PARAMETER
Environment=\"SLURMD_CONF=$conf\"
ExecStart=
ExecStart=$SLURM_DIR/slurmd-start.sh
$(wait_for_mount)
Restart=always
RestartSec=10"
  if [[ ${SLURM_CONTAINERS:-false} == true ]]; then
    bash "$SLURM_DIR/containers.sh"
    # The prolog makes enroot's folders for a job's user who has none yet.
    install -m 0755 "$SLURM_DIR/enroot-folders.sh" "$HOOK_DIR/enroot-folders"
  fi
  systemctl daemon-reload
  systemctl enable slurmd
  systemctl restart slurmd
  log "slurmd up as $node ($conf)"
}

login() {
  # Slurm's commands read the controller's configuration, shared on the file system.
  local waited=0
  until [[ -s $SHARED/etc/slurm.conf ]]; do
    ((waited < ${CONTROLLER_WAIT_SECONDS:-1800})) || {
      log "the controller has not written $SHARED/etc/slurm.conf"
      return 1
    }
    sleep 10
    waited=$((waited + 10))
  done
  mkdir -p "$ETC"
  ln -sfn "$SHARED/etc/slurm.conf" "$ETC/slurm.conf"
  if [[ ${SLURM_CONTAINERS:-false} == true ]]; then
    # srun here must know pyxis's options (--container-image and the rest).
    bash "$SLURM_DIR/containers.sh" --pyxis-only
    ln -sfn "$SHARED/etc/plugstack.conf" "$ETC/plugstack.conf"
  fi
  log "login node ready: sinfo, sbatch and srun read $SHARED/etc/slurm.conf"
}

export AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-$(imds placement/region)}
install_packages
if [[ ${SLURM_USERS_USE_NODE_ROLE:-false} != true ]]; then
  # the nodes' role can read the munge key, with which anyone is root on every node
  restrict_instance_metadata "$SYSTEMD_DIR" "munge.service slurmd.service slurmctld.service"
fi
install_munge_key
create_users "$HOMES" "${SLURM_USERS:-}"
"$SLURM_ROLE"
