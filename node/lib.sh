# shellcheck shell=bash
# What the node's scripts share, sourced by each: the cluster's contract, retry, the instance
# metadata service and the node's name. On a node it is /opt/training-cluster/lib.sh, beside
# bootstrap.sh, with contract.sh (the names in training_cluster/contract.py: tags, drain reasons,
# paths), both written by user data; scripts in the folders below source ../lib.sh.

# shellcheck source=/dev/null
. "$(dirname "${BASH_SOURCE[0]}")/contract.sh" || {
  echo "lib.sh: no contract.sh beside it in $(dirname "${BASH_SOURCE[0]}")" >&2
  exit 1
}

# retry CMD...: run CMD until it succeeds, at most RETRY_ATTEMPTS times (default 5), waiting 5 s
# after the first failure, 10 s after the second, and so on.
retry() {
  local n=1 attempts=${RETRY_ATTEMPTS:-5}
  until "$@"; do
    if ((n >= attempts)); then
      echo "failed $attempts times: $*" >&2
      return 1
    fi
    echo "retrying in $((n * 5)) s ($n/$attempts): $*" >&2
    sleep $((n * 5))
    n=$((n + 1))
  done
}

# imds PATH: the instance metadata at meta-data/PATH (local-ipv4, placement/region, ...), read
# with an IMDSv2 session token (the launch templates require one).
imds() {
  local token
  token=$(curl -fsS --max-time 10 -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' \
    http://169.254.169.254/latest/api/token) || return 1
  curl -fsS --max-time 10 -H "X-aws-ec2-metadata-token: $token" "http://169.254.169.254/latest/meta-data/$1"
}

# node_name: this node's name in the scheduler, its instance id (slurmd sets SLURMD_NODENAME for
# the scripts it runs; otherwise cloud-init's record of the id, or the metadata service's).
node_name() {
  if [[ -n ${SLURMD_NODENAME:-} ]]; then
    echo "$SLURMD_NODENAME"
  elif [[ -s ${INSTANCE_ID_FILE:-/var/lib/cloud/data/instance-id} ]]; then
    cat "${INSTANCE_ID_FILE:-/var/lib/cloud/data/instance-id}"
  else
    imds instance-id
  fi
}

# create_users HOMES "alice:2001 bob:2002": the cluster's users, one uid (and a group of the same
# name and id) on every node, their homes under HOMES (on the file system), made once from
# /etc/skel. Fails when the image has a user of that name with another uid.
create_users() {
  local homes=$1 entry name uid
  mkdir -p "$homes"
  for entry in ${2:-}; do
    name=${entry%%:*}
    uid=${entry##*:}
    getent group "$name" >/dev/null || groupadd --gid "$uid" "$name"
    getent passwd "$name" >/dev/null ||
      useradd --uid "$uid" --gid "$uid" --home-dir "$homes/$name" --no-create-home --shell /bin/bash "$name"
    if [[ $(id -u "$name") != "$uid" ]]; then
      echo "user $name exists on this image with uid $(id -u "$name"), not $uid: rename the cluster user" >&2
      return 1
    fi
    if [[ ! -d $homes/$name ]]; then
      mkdir -p "$homes/$name"
      cp -rT /etc/skel "$homes/$name" 2>/dev/null || true
      chown -R "$uid:$uid" "$homes/$name"
      chmod 0750 "$homes/$name"
    fi
  done
}

# restrict_instance_metadata SYSTEMD_DIR "UNIT ...": only root reaches the instance metadata
# service, and so the node role's credentials: a unit that puts the rule in place at every boot,
# before the UNITs start (users' jobs must not act as the node).
restrict_instance_metadata() {
  local systemd_dir=$1 before=$2 rule="OUTPUT -d 169.254.169.254 -m owner ! --uid-owner 0 -j REJECT"
  command -v iptables >/dev/null || retry apt-get install -y -q iptables
  cat >"$systemd_dir/training-cluster-imds.service" <<UNIT
[Unit]
Description=Only root reaches the instance metadata service (the node role's credentials)
DefaultDependencies=no
After=local-fs.target
Before=network-pre.target $before
Wants=network-pre.target
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'iptables -C $rule 2>/dev/null || iptables -I $rule'
[Install]
WantedBy=multi-user.target
UNIT
  systemctl daemon-reload
  systemctl enable training-cluster-imds.service
  systemctl start training-cluster-imds.service
}
