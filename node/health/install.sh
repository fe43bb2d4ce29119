#!/bin/bash
# The health agent's bootstrap stage (safe to run again): its settings (HEALTH_AGENT_SETTINGS, JSON
# from synthesis) where the agent and Slurm's health check read them, and health_agent.py, unpacked
# beside this script with the contract it imports, as a systemd service.
set -euo pipefail
# shellcheck source=../lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
: "${HEALTH_AGENT_SETTINGS:?}"
SYSTEMD_DIR=${TRAINING_CLUSTER_SYSTEMD_DIR:-/etc/systemd/system}
LOG_DIR=${TRAINING_CLUSTER_LOG_DIR:-/var/log/training-cluster}
CONFIG=${TRAINING_CLUSTER_ETC_DIR:-/etc/training-cluster}/$(basename "$HEALTH_AGENT_CONFIG")
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

mkdir -p "$(dirname "$CONFIG")" "$LOG_DIR"
printf '%s\n' "$HEALTH_AGENT_SETTINGS" >"$CONFIG.tmp"
mv -f "$CONFIG.tmp" "$CONFIG"
chmod 0755 "$here/health_agent.py"
cat >"$SYSTEMD_DIR/training-cluster-health.service" <<UNIT
[Unit]
Description=cdk-training-cluster node health agent
After=network-online.target
Wants=network-online.target

[Service]
ExecStart=/usr/bin/python3 $here/health_agent.py --config $CONFIG
Restart=always
RestartSec=10
StandardOutput=append:$LOG_DIR/health-agent.log
StandardError=append:$LOG_DIR/health-agent.log

[Install]
WantedBy=multi-user.target
UNIT
systemctl daemon-reload
systemctl enable training-cluster-health.service
systemctl restart training-cluster-health.service
echo "health agent: running $here/health_agent.py with $CONFIG"
