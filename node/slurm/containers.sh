#!/bin/bash
# enroot and pyxis, so that jobs run container images:
#     srun --container-image=nvcr.io#nvidia/pytorch:24.09-py3 python train.py
# Compute nodes get both; login nodes (--pyxis-only) the plugin alone, so srun there knows the
# options. enroot comes from its release packages; pyxis (a Slurm SPANK plugin) is built against
# the node's Slurm. Images and container roots go to the instance's NVMe where the AMI mounts it.
# Each user has a folder of their own (mode 0700) in each of enroot's paths, whose parents only
# root may write to: made here for the cluster's users (SLURM_USERS), at every boot for the
# runtime path in /run, and by Slurm's prolog for any other job's user (enroot-folders.sh).
# Safe to run again.
set -euo pipefail
ENROOT_VERSION=${ENROOT_VERSION:-3.5.0}
PYXIS_VERSION=${PYXIS_VERSION:-0.20.0}
SCRATCH=${ENROOT_SCRATCH:-/opt/dlami/nvme}
ENROOT_CONF_DIR=${ENROOT_CONF_DIR:-/etc/enroot/enroot.conf.d}
TMPFILES_DIR=${TMPFILES_DIR:-/etc/tmpfiles.d}
RUN_DIR=${ENROOT_RUN_DIR:-/run/enroot}
PYXIS=${PYXIS_PLUGIN:-/usr/local/lib/slurm/spank_pyxis.so}
HERE=$(dirname "${BASH_SOURCE[0]}")
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
  # enroot would make each user's folders itself, in parents everyone may write to, where one user
  # could make (or link) another's first. Parents only root may write to; folders made for users.
  local dir parents=("$SCRATCH/enroot/data" "$SCRATCH/enroot/cache" "$SCRATCH/enroot/tmp" "$RUN_DIR")
  for dir in "$SCRATCH/enroot" "${parents[@]}"; do
    if [[ -L $dir ]]; then
      echo "containers: $dir is a symlink: refusing to make enroot's folders through it" >&2
      return 1
    fi
  done
  mkdir -p "$ENROOT_CONF_DIR" "${parents[@]}"
  chown root:root "$SCRATCH/enroot" "${parents[@]}"
  chmod 0755 "$SCRATCH/enroot" "${parents[@]}"
  local entry uid uids=()
  for entry in ${SLURM_USERS:-}; do
    uids+=("${entry##*:}")
  done
  {
    printf 'd %s 0755 root root -\n' "$RUN_DIR" # /run is emptied at boot
    for uid in "${uids[@]}"; do
      printf 'd %s/%s 0700 %s - -\n' "$RUN_DIR" "$uid" "$uid"
    done
  } >"$TMPFILES_DIR/training-cluster-enroot.conf"
  cat >"$ENROOT_CONF_DIR/training-cluster.conf" <<CONF
ENROOT_RUNTIME_PATH $RUN_DIR/\${UID}
ENROOT_DATA_PATH $SCRATCH/enroot/data/\${UID}
ENROOT_CACHE_PATH $SCRATCH/enroot/cache/\${UID}
ENROOT_TEMP_PATH $SCRATCH/enroot/tmp/\${UID}
CONF
  if ((${#uids[@]})); then
    ENROOT_CONF=$ENROOT_CONF_DIR/training-cluster.conf bash "$HERE/enroot-folders.sh" "${uids[@]}"
  fi
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
