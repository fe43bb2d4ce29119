#!/bin/bash
# enroot and pyxis, so that jobs run container images:
#     srun --container-image=nvcr.io#nvidia/pytorch:24.09-py3 python train.py
# Compute nodes get both; login nodes (--pyxis-only) the plugin alone, so srun there knows the
# options. enroot comes from its release packages; pyxis (a Slurm SPANK plugin) is built against
# the node's Slurm. Images and container roots go to the instance's NVMe where the AMI mounts it,
# in folders every user can make their own directory in. Safe to run again.
set -euo pipefail
ENROOT_VERSION=${ENROOT_VERSION:-3.5.0}
PYXIS_VERSION=${PYXIS_VERSION:-0.20.0}
SCRATCH=${ENROOT_SCRATCH:-/opt/dlami/nvme}
ENROOT_CONF_DIR=${ENROOT_CONF_DIR:-/etc/enroot/enroot.conf.d}
TMPFILES_DIR=${TMPFILES_DIR:-/etc/tmpfiles.d}
RUN_DIR=${ENROOT_RUN_DIR:-/run/enroot}
PYXIS=${PYXIS_PLUGIN:-/usr/local/lib/slurm/spank_pyxis.so}
[[ -d $SCRATCH ]] || SCRATCH=/var/lib
export DEBIAN_FRONTEND=noninteractive
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

install_enroot() {
  if ! command -v enroot >/dev/null; then
    local arch base package
    arch=$(dpkg --print-architecture)
    base=https://github.com/NVIDIA/enroot/releases/download/v$ENROOT_VERSION
    for package in enroot enroot+caps; do
      curl -fsSL --retry 5 -o "$work/$package.deb" "$base/${package}_${ENROOT_VERSION}-1_${arch}.deb"
    done
    apt-get install -y -q "$work/enroot.deb" "$work/enroot+caps.deb"
  fi
  # enroot makes each user's folders (mode 0700) under these: they must let everyone in.
  mkdir -p "$ENROOT_CONF_DIR" "$SCRATCH/enroot/data" "$SCRATCH/enroot/cache" "$SCRATCH/enroot/tmp" "$RUN_DIR"
  chmod 1777 "$SCRATCH/enroot/data" "$SCRATCH/enroot/cache" "$SCRATCH/enroot/tmp" "$RUN_DIR"
  printf 'd %s 1777 root root -\n' "$RUN_DIR" >"$TMPFILES_DIR/training-cluster-enroot.conf" # /run is emptied at boot
  cat >"$ENROOT_CONF_DIR/training-cluster.conf" <<CONF
ENROOT_RUNTIME_PATH $RUN_DIR/user-\${UID}
ENROOT_DATA_PATH $SCRATCH/enroot/data/user-\${UID}
ENROOT_CACHE_PATH $SCRATCH/enroot/cache/user-\${UID}
ENROOT_TEMP_PATH $SCRATCH/enroot/tmp
CONF
}

install_pyxis() {
  [[ -f $PYXIS ]] && return
  apt-get install -y -q --no-install-recommends libslurm-dev gcc make
  curl -fsSL --retry 5 -o "$work/pyxis.tar.gz" "https://github.com/NVIDIA/pyxis/archive/refs/tags/v$PYXIS_VERSION.tar.gz"
  tar -xzf "$work/pyxis.tar.gz" -C "$work"
  make -C "$work/pyxis-$PYXIS_VERSION" install prefix=/usr/local >/dev/null
}

if [[ ${1:-} != --pyxis-only ]]; then
  install_enroot
fi
install_pyxis
