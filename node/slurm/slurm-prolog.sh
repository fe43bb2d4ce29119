#!/bin/bash
# Slurm's Prolog on a compute node (at allocation): label this node's metrics with the job that
# holds it, through node_exporter's textfile collector, so dashboards can show GPUs by job. It
# never fails: a failing prolog would drain the node.
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
