#!/bin/bash
# enroot's folders for users: in each of enroot's per-user paths (<parent>/${UID} in the
# configuration containers.sh writes), a folder owned by the user, mode 0700, in a parent that
# root owns and only root may write to (0755), so that no user can make, or link, another user's
# folder. Run at boot for the cluster's users (containers.sh) and by Slurm's prolog for the job's
# user. Safe to run again. A path that is there and is not a directory of that user's own (a
# symlink, a file, another user's folder) is refused and left for a person: exit 1.
#   enroot-folders.sh UID...
set -euo pipefail
CONF=${ENROOT_CONF:-/etc/enroot/enroot.conf.d/training-cluster.conf}
LOG=${ENROOT_FOLDERS_LOG:-/var/log/training-cluster/enroot-folders.log}

log() {
  local line
  line="$(date -u +%Y-%m-%dT%H:%M:%SZ) enroot-folders: $*"
  echo "$line" >&2
  { mkdir -p "$(dirname "$LOG")" && echo "$line" >>"$LOG"; } 2>/dev/null || true
}

[[ -f $CONF ]] || exit 0 # no enroot on this node
# shellcheck disable=SC2016 # the literal ${UID} that enroot expands
suffix='/${UID}'
parents=()
while read -r key value _; do
  if [[ $key == ENROOT_*_PATH && $value == *"$suffix" ]]; then
    parents+=("${value%"$suffix"}")
  fi
done <"$CONF"

# A parent is a real directory (not a link) of root's that nobody else may write to.
parent_ok() {
  [[ -d $1 && ! -L $1 && $(stat -c %u "$1") == 0 ]] && (((8#$(stat -c %a "$1") & 8#022) == 0))
}

folder() { # PARENT UID
  local parent=$1 uid=$2 path=$1/$2
  if [[ ! -e $parent && ! -L $parent ]]; then
    mkdir -p "$parent"
    chmod 0755 "$parent"
  fi
  if ! parent_ok "$parent"; then
    log "refusing $parent: not a directory of root's that only root may write to ($(stat -c '%F, owner %u, mode %a' "$parent"))"
    return 1
  fi
  if [[ ! -e $path && ! -L $path ]]; then
    mkdir -m 0700 "$path"
    chown "$uid" "$path"
    log "made $path for uid $uid"
  fi
  # No -L test passes for a symlink, so nothing below follows one.
  if [[ -L $path || ! -d $path || $(stat -c %u "$path") != "$uid" ]]; then
    log "refusing $path: not a directory of uid $uid's own ($(stat -c '%F, owner %u' "$path")); remove it to let enroot make it"
    return 1
  fi
  chmod 0700 "$path"
}

status=0
for uid in "$@"; do
  if [[ ! $uid =~ ^[0-9]+$ ]]; then
    log "refusing uid '$uid': not a number"
    status=1
    continue
  fi
  for parent in "${parents[@]}"; do
    folder "$parent" "$uid" || status=1
  done
done
exit "$status"
