# jobs/lib.sh - helpers shared by the jobs/*.sbatch scripts (sourced; not run).
#
# Every job script first sources RUN_DIR/run.env (the run's settings, written by
# jobs/submit-pipeline or jobs/submit-scaling; it says where this file is), then this.
#
#   basis_job_init KIND      run the site's BASIS_JOB_SETUP, check the binary, print a header
#   basis_launch NP ARGS...  run "basis ARGS..." on NP ranks: srun --mpi=$BASIS_SRUN_MPI
#                            (BASIS_LAUNCH=srun) or mpirun (BASIS_LAUNCH=mpirun)
#   basis_trap_stop_signals  record SIGUSR1/SIGTERM to the batch shell instead of dying
#   basis_run_stoppable NP LOG ARGS...
#                            basis_launch in the background, output also written to LOG;
#                            SIGUSR1/SIGTERM sent to the batch shell are forwarded to the
#                            launcher (once basis train has installed its handler); returns
#                            basis' exit status; BASIS_STOP_SIGNAL tells what was received
#   basis_requeue_or_fail    after a checkpointed stop (exit 3): scontrol requeue this job
# shellcheck shell=bash disable=SC2034  # variables are used by the scripts that source this

basis_log() { printf '[%s %(%F %T)T] %s\n' "${BASIS_JOB_KIND:-basis}" -1 "$*"; }
basis_die() { basis_log "ERROR: $*" >&2; exit 1; }

basis_job_init() {
  BASIS_JOB_KIND=$1
  if [[ -n ${BASIS_JOB_SETUP:-} ]]; then eval "$BASIS_JOB_SETUP"; fi
  [[ -x $BASIS_BIN ]] || basis_die "basis binary $BASIS_BIN not found or not executable (BASIS_BIN in jobs/site.conf)"
  mkdir -p "$BASIS_RUN_DIR/logs"
  basis_log "job ${SLURM_JOB_ID:-?}${SLURM_ARRAY_TASK_ID:+ (array task $SLURM_ARRAY_TASK_ID)} on ${SLURM_JOB_NODELIST:-$(hostname)}, restart ${SLURM_RESTART_COUNT:-0}, launch $BASIS_LAUNCH, run folder $BASIS_RUN_DIR"
}

# basis_launch_cmd NP ARGS... : the launch command line, in the array BASIS_CMD.
basis_launch_cmd() {
  local np=$1 words=() nodes=${SLURM_JOB_NUM_NODES:-1}
  shift
  # More ranks than cores on a node (a test cluster with faked CPUs, a scaling study's
  # oversubscribed point): Open MPI busy-polls unless told to yield, and then collectives
  # crawl (minutes for -log_view's reductions at 4 ranks on 2 cores).
  if (( (np + nodes - 1) / nodes > $(nproc) )); then export OMPI_MCA_mpi_yield_when_idle=${OMPI_MCA_mpi_yield_when_idle:-1}; fi
  case $BASIS_LAUNCH in
    srun)
      read -r -a words <<<"${BASIS_SRUN_ARGS:-}"
      BASIS_CMD=(srun --mpi="$BASIS_SRUN_MPI" --ntasks="$np" --kill-on-bad-exit=1 "${words[@]}" "$BASIS_BIN" "$@") ;;
    mpirun)
      read -r -a words <<<"${BASIS_MPIRUN_ARGS:-}"
      [[ $(id -u) != 0 ]] || words=(--allow-run-as-root "${words[@]}")
      BASIS_CMD=(mpirun -np "$np" "${words[@]}" "$BASIS_BIN" "$@") ;;
    *) basis_die "BASIS_LAUNCH=$BASIS_LAUNCH: use srun or mpirun" ;;
  esac
}

basis_launch() {
  basis_launch_cmd "$@"
  "${BASIS_CMD[@]}"
}

# Forwarding: Slurm's "--signal=B:USR1@T" signals only the batch shell, and bash runs a
# trap only between commands, so the launcher runs in the background and the shell waits
# in "wait", which a trapped signal interrupts. The launcher (srun or mpirun) passes
# SIGUSR1 on to every rank. basis train installs its USR1/TERM handler only after its
# set-up (data, anchors, reference eigensolve); a signal before that would kill it, so
# the forward waits until train has printed its "train: N steps, batch ..." line.
BASIS_STOP_SIGNAL=
_basis_fwd_pending=
_basis_interrupted=
_basis_on_signal() {
  # TERM (scancel, or the time limit itself) wins over USR1: then the job must not requeue.
  [[ $BASIS_STOP_SIGNAL == TERM ]] || BASIS_STOP_SIGNAL=$1
  _basis_fwd_pending=1
  _basis_interrupted=1
  basis_log "batch shell got SIG$1: forwarding SIGUSR1 to the ranks (checkpoint, then exit 3)"
}

# basis_trap_stop_signals: from now on SIGUSR1/SIGTERM to the batch shell are recorded
# (BASIS_STOP_SIGNAL) instead of killing it; call it first thing in the script.
basis_trap_stop_signals() {
  trap '_basis_on_signal USR1' USR1
  trap '_basis_on_signal TERM' TERM
}

basis_run_stoppable() {
  local np=$1 log=$2 pid rc=0
  shift 2
  basis_trap_stop_signals
  : >"$log"
  basis_launch_cmd "$np" "$@"
  "${BASIS_CMD[@]}" > >(tee -a "$log") 2>&1 &
  pid=$!   # the launcher itself (a function run with & would be a subshell, which dies of USR1)
  while :; do
    if [[ -n $_basis_fwd_pending ]]; then
      if grep -Eq '^train: [0-9]+ steps, batch' "$log"; then
        kill -USR1 "$pid" 2>/dev/null || true
        _basis_fwd_pending=
      elif kill -0 "$pid" 2>/dev/null; then
        sleep 1   # train is still setting up: forward once its handler is in place
        continue
      fi
    fi
    _basis_interrupted=
    rc=0
    wait "$pid" || rc=$?
    [[ -n $_basis_interrupted ]] && continue   # a trapped signal interrupted the wait
    break
  done
  wait || true   # let tee write the last lines
  return "$rc"
}

# After basis exited 3 (stopped by a signal, checkpoint written): requeue this job so it
# resumes (-resume) when it runs again, unless it was cancelled (TERM) or has been
# requeued BASIS_MAX_REQUEUES times already.
basis_requeue_or_fail() {
  local n=${SLURM_RESTART_COUNT:-0}
  if [[ $BASIS_STOP_SIGNAL == TERM ]]; then
    basis_log "stopped by SIGTERM (scancel or the time limit): checkpoint written; resubmit with: jobs/submit-pipeline --resume $BASIS_RUN_DIR"
    exit 3
  fi
  if (( n >= BASIS_MAX_REQUEUES )); then
    basis_log "already requeued $n times (BASIS_MAX_REQUEUES): not again; resubmit with: jobs/submit-pipeline --resume $BASIS_RUN_DIR"
    exit 3
  fi
  basis_log "checkpoint written; requeueing job $SLURM_JOB_ID (restart $((n + 1))); it resumes from $BASIS_MODEL"
  if scontrol requeue "$SLURM_JOB_ID"; then
    # slurmctld now ends this run (CANCELLED DUE TO JOB REQUEUE) and queues the job again
    sleep 60 || true
    exit 0
  fi
  basis_log "scontrol requeue failed (is the job requeueable? #SBATCH --requeue); resubmit with: jobs/submit-pipeline --resume $BASIS_RUN_DIR"
  exit 3
}

# ---------------------------------------------------------------------------------------
# Submission side (jobs/submit-pipeline, jobs/submit-scaling).

# basis_load_site: jobs/site.conf (or $BASIS_SITE_CONF) and the defaults derived from it.
basis_load_site() {
  local jobs_dir
  jobs_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  # shellcheck source=jobs/site.conf
  source "${BASIS_SITE_CONF:-$jobs_dir/site.conf}"
  BASIS_JOBS_DIR=$jobs_dir
  BASIS_ROOT=$(dirname "$jobs_dir")
  BASIS_BIN=${BASIS_BIN:-$BASIS_ROOT/build/basis}
  BASIS_BIN=$(realpath -m "$BASIS_BIN")
  [[ ${BASIS_DRY_RUN:-0} == 1 ]] || command -v sbatch >/dev/null 2>&1 || basis_die "sbatch not found: run this on a Slurm login node (or scripts/slurm-local up; export SLURM_CONF=...)"
}

# basis_sbatch_common: the sbatch options every job gets (account, partition, ...).
basis_sbatch_common() {
  BASIS_SBATCH=(--parsable --kill-on-invalid-dep=yes)
  [[ -z $BASIS_ACCOUNT ]] || BASIS_SBATCH+=(--account="$BASIS_ACCOUNT")
  [[ -z $BASIS_PARTITION ]] || BASIS_SBATCH+=(--partition="$BASIS_PARTITION")
  [[ -z $BASIS_QOS ]] || BASIS_SBATCH+=(--qos="$BASIS_QOS")
  [[ -z $BASIS_RANKS_PER_NODE ]] || BASIS_SBATCH+=(--ntasks-per-node="$BASIS_RANKS_PER_NODE")
  local extra
  read -r -a extra <<<"$BASIS_SBATCH_EXTRA"
  BASIS_SBATCH+=("${extra[@]}")
}

# basis_write_run_env VAR...: RUN_DIR/run.env, the settings the job scripts source.
basis_write_run_env() {
  local v
  {
    echo "# $BASIS_RUN_DIR/run.env - written by ${0##*/} on $(date '+%F %T'); sourced by the jobs/*.sbatch scripts."
    echo "# Edit only to point a queued or resubmitted run somewhere else."
    for v in BASIS_ROOT BASIS_JOBS_DIR BASIS_BIN BASIS_LAUNCH BASIS_SRUN_MPI BASIS_SRUN_ARGS BASIS_MPIRUN_ARGS \
      BASIS_JOB_SETUP BASIS_RANKS BASIS_RUN_DIR BASIS_OPTS BASIS_MAX_REQUEUES "$@"; do
      printf '%s=%q\n' "$v" "${!v}"
    done
  } >"$BASIS_RUN_DIR/run.env"
}

# basis_submit NAME SBATCH-ARGS... : submit (or print, with BASIS_DRY_RUN=1); sets BASIS_JOBID.
basis_submit() {
  local name=$1; shift
  if [[ ${BASIS_DRY_RUN:-0} == 1 ]]; then
    printf 'sbatch'; printf ' %q' "${BASIS_SBATCH[@]}" "$@"; printf '\n'
    BASIS_JOBID="<$name>"
    return 0
  fi
  BASIS_JOBID=$(sbatch "${BASIS_SBATCH[@]}" "$@") || basis_die "sbatch of the $name job failed"
  BASIS_JOBID=${BASIS_JOBID%%;*}   # --parsable prints "id[;cluster]"
  printf '%s %s\n' "$name" "$BASIS_JOBID"
}
