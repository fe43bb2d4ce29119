#!/bin/bash
# enroot and pyxis on a compute node, so that jobs run container images:
#     srun --container-image=nvcr.io#nvidia/pytorch:24.09-py3 python train.py
# enroot from its release packages; pyxis (a Slurm SPANK plugin) built against the node's Slurm.
# Container layers go to the instance's NVMe where the AMI mounts it. Safe to run again.
set -euo pipefail
ENROOT_VERSION=${ENROOT_VERSION:-3.5.0}
PYXIS_VERSION=${PYXIS_VERSION:-0.20.0}
SCRATCH=${ENROOT_SCRATCH:-/opt/dlami/nvme}
[[ -d $SCRATCH ]] || SCRATCH=/var/lib
export DEBIAN_FRONTEND=noninteractive
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if ! command -v enroot >/dev/null; then
  arch=$(dpkg --print-architecture)
  base=https://github.com/NVIDIA/enroot/releases/download/v$ENROOT_VERSION
  for package in enroot enroot+caps; do
    curl -fsSL --retry 5 -o "$work/$package.deb" "$base/${package}_${ENROOT_VERSION}-1_${arch}.deb"
  done
  apt-get install -y -q "$work/enroot.deb" "$work/enroot+caps.deb"
fi
mkdir -p /etc/enroot/enroot.conf.d "$SCRATCH/enroot"
chmod 1777 "$SCRATCH/enroot"
cat >/etc/enroot/enroot.conf.d/training-cluster.conf <<CONF
ENROOT_RUNTIME_PATH /run/enroot/user-\${UID}
ENROOT_DATA_PATH $SCRATCH/enroot/data/user-\${UID}
ENROOT_CACHE_PATH $SCRATCH/enroot/cache/user-\${UID}
ENROOT_TEMP_PATH $SCRATCH/enroot/tmp
CONF

if [[ ! -f /usr/local/lib/slurm/spank_pyxis.so ]]; then
  apt-get install -y -q --no-install-recommends libslurm-dev gcc make
  curl -fsSL --retry 5 -o "$work/pyxis.tar.gz" "https://github.com/NVIDIA/pyxis/archive/refs/tags/v$PYXIS_VERSION.tar.gz"
  tar -xzf "$work/pyxis.tar.gz" -C "$work"
  make -C "$work/pyxis-$PYXIS_VERSION" install prefix=/usr/local >/dev/null
fi
