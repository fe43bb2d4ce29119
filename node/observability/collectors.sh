#!/bin/bash
# Metrics collectors of a cdk-training-cluster node: node_exporter (with the textfile and
# infiniband collectors), the NVIDIA DCGM exporter on GPU nodes, the Neuron monitor on Trainium
# nodes, and Prometheus in agent mode writing to Amazon Managed Prometheus with SigV4.
# Versions are pinned; every download is checked against its publisher's SHA-256 sums before
# use. Safe to run again. Runs as a bootstrap stage (settings come from the environment).
set -Eeuo pipefail

: "${CLUSTER_NAME:?}" "${INSTANCE_GROUP:?}" "${NODE_OS:?}" "${PROMETHEUS_REMOTE_WRITE_URL:?}" "${AWS_REGION_NAME:?}"
COLLECTOR_DIR=${COLLECTOR_DIR:-/opt/training-cluster/observability}
INSTALL_DIR=${INSTALL_DIR:-/usr/local/bin}
SYSTEMD_DIR=${TRAINING_CLUSTER_SYSTEMD_DIR:-/etc/systemd/system}
CONFIG_DIR=${CONFIG_DIR:-/etc/training-cluster}
TEXTFILE_DIR=${TEXTFILE_DIR:-/var/lib/node_exporter/textfile}
SCRAPE_INTERVAL=${SCRAPE_INTERVAL_SECONDS:-15}
GPUS=${EXPECTED_GPUS:-0}
# Where the DCGM exporter runs: docker (a unit here) or kubernetes (the cluster's DaemonSet on
# the host network, on EKS, whose images have containerd but no Docker). Scraped at :9400 either way.
GPU_EXPORTER=${GPU_EXPORTER:-docker}
NEURON_DEVICES=${EXPECTED_NEURON_DEVICES:-0}

PROMETHEUS_VERSION=2.53.2
NODE_EXPORTER_VERSION=1.8.2
DCGM_EXPORTER_IMAGE=nvcr.io/nvidia/k8s/dcgm-exporter:3.3.9-3.6.1-ubuntu22.04

log() { printf '%s collectors: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"; }
die() {
  log "FAILED: $*"
  exit 1
}
trap 'die "line $LINENO: $BASH_COMMAND exited with $?"' ERR

# fetch_release REPO NAME VERSION: download a Prometheus project release for linux-amd64, check it
# against the release's sha256sums.txt, unpack it, and install its NAME binary.
fetch_release() {
  local repo=$1 name=$2 version=$3 work tarball
  if [[ -x $INSTALL_DIR/$name ]] && "$INSTALL_DIR/$name" --version 2>&1 | grep -q "version $version"; then
    log "$name $version: already installed"
    return
  fi
  work=$(mktemp -d)
  tarball="$name-$version.linux-amd64.tar.gz"
  curl -fsSL --retry 5 -o "$work/$tarball" "https://github.com/prometheus/$repo/releases/download/v$version/$tarball"
  curl -fsSL --retry 5 -o "$work/sha256sums.txt" "https://github.com/prometheus/$repo/releases/download/v$version/sha256sums.txt"
  grep " $tarball\$" "$work/sha256sums.txt" >"$work/expected" || die "$tarball is not listed in its sha256sums.txt"
  (cd "$work" && sha256sum --check --status expected) || die "$tarball does not match its published SHA-256"
  tar -xzf "$work/$tarball" -C "$work"
  install -m 0755 "$work/$name-$version.linux-amd64/$name" "$INSTALL_DIR/$name"
  rm -rf "$work"
  log "$name $version: installed"
}

unit() { # unit NAME DESCRIPTION EXEC: a restarting systemd service
  cat >"$SYSTEMD_DIR/$1.service" <<UNIT
[Unit]
Description=$2
After=network-online.target
Wants=network-online.target

[Service]
ExecStart=$3
Restart=always
RestartSec=10

[Install]
WantedBy=multi-user.target
UNIT
}

mkdir -p "$TEXTFILE_DIR" "$CONFIG_DIR" /var/lib/prometheus-agent
fetch_release node_exporter node_exporter "$NODE_EXPORTER_VERSION"
fetch_release prometheus prometheus "$PROMETHEUS_VERSION"
unit training-cluster-node-exporter "node_exporter for cluster $CLUSTER_NAME" \
  "$INSTALL_DIR/node_exporter --collector.infiniband --collector.textfile.directory=$TEXTFILE_DIR"

extra=()
if ((GPUS > 0)); then
  extra+=(--gpu)
  case $GPU_EXPORTER in
    kubernetes) log "DCGM exporter: the cluster's DaemonSet (counters from $COLLECTOR_DIR/dcgm-counters.csv)" ;;
    docker)
      command -v docker >/dev/null || die "the DCGM exporter runs in Docker, which this AMI lacks"
      docker pull --quiet "$DCGM_EXPORTER_IMAGE" >/dev/null
      unit training-cluster-dcgm-exporter "NVIDIA DCGM exporter" \
        "/usr/bin/docker run --rm --name dcgm-exporter --gpus all --cap-add SYS_ADMIN --network host -v $COLLECTOR_DIR/dcgm-counters.csv:/etc/dcgm-exporter/counters.csv:ro $DCGM_EXPORTER_IMAGE -f /etc/dcgm-exporter/counters.csv"
      ;;
    *) die "GPU_EXPORTER is docker or kubernetes, got '$GPU_EXPORTER'" ;;
  esac
fi
if ((NEURON_DEVICES > 0)); then
  extra+=(--neuron)
  unit training-cluster-neuron-monitor "Neuron monitor for Prometheus" \
    "/bin/sh -c '/opt/aws/neuron/bin/neuron-monitor | /opt/aws/neuron/bin/neuron-monitor-prometheus.py --port 8000'"
fi

instance_id=$(cat "${INSTANCE_ID_FILE:-/var/lib/cloud/data/instance-id}")
python3 "$COLLECTOR_DIR/collector_config.py" --cluster "$CLUSTER_NAME" --instance-group "$INSTANCE_GROUP" \
  --instance-id "$instance_id" --remote-write-url "$PROMETHEUS_REMOTE_WRITE_URL" --region "$AWS_REGION_NAME" \
  --scrape-interval "$SCRAPE_INTERVAL" "${extra[@]}" >"$CONFIG_DIR/prometheus-agent.yml"
unit training-cluster-prometheus-agent "Prometheus agent writing to Amazon Managed Prometheus" \
  "$INSTALL_DIR/prometheus --enable-feature=agent --config.file=$CONFIG_DIR/prometheus-agent.yml --storage.agent.path=/var/lib/prometheus-agent"

systemctl daemon-reload
for service in "$SYSTEMD_DIR"/training-cluster-{node-exporter,dcgm-exporter,neuron-monitor,prometheus-agent}.service; do
  [[ -e $service ]] || continue
  systemctl enable "$(basename "$service")"
  systemctl restart "$(basename "$service")"
done
log "collectors running"
