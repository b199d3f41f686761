# tests/slurm_test_lib.sh - helpers of the tests that submit the jobs/ scripts to a real
# Slurm (tests/slurm_jobs.sh, tests/multinode.sh). Sourced. The caller sets JOBCOMP (the
# cluster's jobcomp/filetxt log) and t_start (SECONDS at its start).
# shellcheck shell=bash disable=SC2154  # root, t_start: set by the caller

die() { echo "FAIL: $*"; exit 1; }
note() { printf '%s [%3ds] %s\n' "${NOTE_TAG:-test}" "$((SECONDS - t_start))" "$*"; }

# wait_jobs TIMEOUT ID... : until no job (or array task) of IDs is in the queue
wait_jobs() {
  local limit=$1 deadline=$((SECONDS + $1)) ids
  shift
  ids=$(IFS=,; echo "$*")
  while grep -q . <<<"$(squeue -h -j "$ids" 2>/dev/null)"; do # no pipe: grep -q + pipefail = SIGPIPE
    if ((SECONDS > deadline)); then
      squeue -j "$ids" || true
      scancel "$@" || true
      die "jobs $ids not finished after ${limit}s"
    fi
    sleep 0.5
  done
}
# job_state ID : final JobState (slurmctld's record, else the jobcomp log)
job_state() {
  local st
  st=$(scontrol show job -o "$1" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p' | sort -u | tr '\n' ' ')
  [[ -n $st ]] || st=$(grep "^JobId=$1 " "$JOBCOMP" 2>/dev/null | tail -1 | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p')
  echo "${st% }"
}
expect_completed() {  # expect_completed WHAT ID OUTFILE
  local st
  st=$(job_state "$2")
  [[ $st == COMPLETED ]] || { [[ -f $3 ]] && tail -n 30 "$3"; die "$1 job $2: JobState=$st, expected COMPLETED"; }
}
restarts() { local n; n=$(scontrol show job -o "$1" 2>/dev/null | sed -n 's/.*Restarts=\([0-9]*\).*/\1/p'); echo "${n:-0}"; }
id_of() { awk -v s="$1" '$1 == s { print $2 }' <<<"$2"; }
max_diff() {
  /usr/bin/python3 -c 'import sys,h5py,numpy as np; a=h5py.File(sys.argv[1],"r")[sys.argv[3]][()]; b=h5py.File(sys.argv[2],"r")[sys.argv[3]][()]; print("%g" % np.abs(a.astype(np.float64)-b).max())' "$@"
}
# wait_step LOG STEP TIMEOUT : until train's monitor line reports at least STEP
wait_step() {
  local deadline=$((SECONDS + $3))
  until [[ -f $1 ]] && awk -v s="$2" '$1 == "step" && $2 + 0 >= s { f = 1 } END { exit !f }' "$1"; do
    ((SECONDS <= deadline)) || die "train never reached step $2 (log $1)"
    sleep 0.2
  done
}
# small_opts FILE : jobs/pipeline.opts with a small problem appended (3000 x 16 points, a
# 16-32-32-4 network; the last value of an option wins)
small_opts() {
  { cat "$root/jobs/pipeline.opts"
    printf -- '-n 3000\n-d 16\n-steps 40\n-batch 160\n-anchors 40\n-hidden 32,32\n-dim 4\n-lr 1e-3\n'
    printf -- '-checkpoint_every 20\n-monitor_every 10\n-restarts 2\n'; } >"$1"
}
