#!/bin/bash
# Slurm's Epilog on a compute node: the job has left, and so has its label on the metrics.
dir=${TEXTFILE_DIR:-/var/lib/node_exporter/textfile}
[[ -n ${SLURM_JOB_ID:-} ]] && rm -f "$dir/slurm-job-$SLURM_JOB_ID.prom"
exit 0
