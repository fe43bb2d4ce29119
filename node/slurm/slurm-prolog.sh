#!/bin/bash
# Slurm's Prolog on a compute node (at allocation, as root): enroot's folders for the job's user
# where the node runs containers (enroot-folders.sh), and this node's metrics labelled with the job
# that holds it, through node_exporter's textfile collector, so dashboards can show GPUs by job.
# It never fails: a failing prolog would drain the node. A folder refused is in the folders' log,
# and the job's containers then fail.
folders=${ENROOT_FOLDERS:-/opt/training-cluster/hooks/enroot-folders}
if [[ -x $folders && -n ${SLURM_JOB_UID:-} ]]; then
  "$folders" "$SLURM_JOB_UID" || true
fi
dir=${TEXTFILE_DIR:-/var/lib/node_exporter/textfile}
job=${SLURM_JOB_ID:-}
[[ -d $dir && -n $job ]] || exit 0
{
  echo "# HELP training_cluster_slurm_job_info The Slurm job that holds this node (one series per job)."
  echo "# TYPE training_cluster_slurm_job_info gauge"
  printf 'training_cluster_slurm_job_info{job_id="%s",user="%s",partition="%s"} 1\n' \
    "$job" "${SLURM_JOB_USER:-}" "${SLURM_JOB_PARTITION:-}"
} >"$dir/.slurm-job-$job.prom.tmp" && mv -f "$dir/.slurm-job-$job.prom.tmp" "$dir/slurm-job-$job.prom"
exit 0
