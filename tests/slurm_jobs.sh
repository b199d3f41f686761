#!/usr/bin/env bash
# slurm_jobs.sh BASIS - the Slurm job scripts in jobs/ against a REAL single-node Slurm
# (scripts/slurm-local: slurmctld + slurmd + munged on localhost, 8 faked CPUs; the
# packages are installed with apt when missing). Checks:
#  1. jobs/submit-pipeline: prepare (generate) -> train -> embed -> eval chained with
#     afterok, srun --mpi=pmix, 2 ranks: every job COMPLETED, outputs present;
#  2. jobs/submit-scaling: weak scaling array at 1, 2, 4 ranks -> 3 CSV rows, and
#     scripts/scaling-report makes the table and the plots;
#  3. the pre-limit signal emulated with "scancel --signal=USR1 --batch" (mpirun launch):
#     the batch shell forwards USR1, train checkpoints and exits 3, the job requeues
#     itself, resumes (-resume) and COMPLETES; its afterok embed runs after it; the
#     final /network/params are bitwise equal to an uninterrupted run (same seed, ranks);
#  4. a real time limit: --time=1 --signal=B:USR1@50 and a train calibrated to need
#     ~90 s: Slurm itself signals, the job requeues and resumes until done; bitwise equal
#     to an uninterrupted run.
# Waits poll squeue every 0.5 s with timeouts; the cluster is ALWAYS torn down (trap).
# Knobs: BASIS_SLURM_TIMELIMIT=0 skips part 4; BASIS_SLURM_TRAIN_SECONDS (default 90) is
# the calibrated length of part 4's train; SLURM_LOCAL_CTLD_PORT (default here 6827);
# BASIS_SLURM_KEEP=1 keeps the run folders and Slurm logs after a success too.
# Silent on success except one summary line per part; prints each failure.
set -euo pipefail
basis=$(realpath "${1:?usage: slurm_jobs.sh PATH/TO/basis}")
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[[ $(id -u) == 0 ]] || { echo "SKIP: slurm_jobs.sh runs the Slurm daemons as root"; exit 0; }

work=$(mktemp -d "${TMPDIR:-/tmp}/basis-slurm-jobs.XXXXXX")
SLURM_LOCAL_DIR=$(mktemp -d /tmp/basis-slurm-test.XXXXXX)   # short path: munge socket
export SLURM_LOCAL_DIR SLURM_LOCAL_CPUS=8 SLURM_LOCAL_CTLD_PORT=${SLURM_LOCAL_CTLD_PORT:-6827}
export SLURM_CONF=$SLURM_LOCAL_DIR/etc/slurm.conf
export BASIS_BIN=$basis BASIS_RUN_ROOT=$work BASIS_ACCOUNT='' BASIS_PARTITION='' BASIS_QOS='' \
  BASIS_SBATCH_EXTRA='' BASIS_RANKS_PER_NODE='' BASIS_JOB_SETUP='' BASIS_SITE_CONF=$root/jobs/site.conf
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
cmp_h5=$root/tests/h5cmp.py
t_start=$SECONDS

cleanup() {
  local rc=$?
  trap - EXIT
  if ((rc)); then
    echo "slurm_jobs: FAILED; logs kept in $work and $SLURM_LOCAL_DIR/log"
    squeue 2>/dev/null || true
    tail -n 20 "$SLURM_LOCAL_DIR"/log/slurmctld.log 2>/dev/null || true
  fi
  "$root/scripts/slurm-local" down >/dev/null 2>&1 || { echo "FAIL: scripts/slurm-local down"; rc=1; }
  if ((rc == 0)) && [[ ${BASIS_SLURM_KEEP:-0} != 1 ]]; then rm -rf "$work" "$SLURM_LOCAL_DIR"
  elif ((rc == 0)); then echo "slurm_jobs: kept $work and $SLURM_LOCAL_DIR (BASIS_SLURM_KEEP=1)"; fi
  exit "$rc"
}
trap cleanup EXIT
# shellcheck source=tests/slurm_test_lib.sh
source "$root/tests/slurm_test_lib.sh"
JOBCOMP=$SLURM_LOCAL_DIR/log/jobcomp.txt NOTE_TAG=slurm_jobs

SLURM_LOCAL_TIMEOUT=60 "$root/scripts/slurm-local" up >"$work/slurm-up.log" 2>&1 || { cat "$work/slurm-up.log"; die "scripts/slurm-local up"; }
note "cluster up ($(sinfo -h -o '%N %C'))"

# Small problem (small_opts): 3000 x 16 points, a 16-32-32-4 network.
small=$work/small.opts
small_opts "$small"

# ---- 1. pipeline ---------------------------------------------------------------------
out=$("$root/jobs/submit-pipeline" --run-dir "$work/pipe" --ranks 2 --opts "$small" 2>/dev/null) \
  || die "submit-pipeline: $out"
ids=()
for s in prepare train embed eval; do
  id=$(id_of "$s" "$out"); [[ $id =~ ^[0-9]+$ ]] || die "submit-pipeline printed no $s job id: '$out'"
  ids+=("$id")
done
wait_jobs 240 "${ids[@]}"
i=0
for s in prepare train embed eval; do
  expect_completed "$s" "${ids[$i]}" "$work/pipe/logs/basis-$s-${ids[$i]}.out"; i=$((i + 1))
done
for f in data.h5 model.h5 embedding.h5 eval.json; do [[ -s $work/pipe/$f ]] || die "pipeline output $f missing"; done
# grep reads a captured string, not a pipe: under pipefail, grep -q leaving early kills
# h5dump with SIGPIPE and fails the check when the header is long (it is: one attribute
# per parameter)
grep -q 'DATASPACE  SIMPLE { ( 3000, 4 )' <<<"$(h5dump -H -d /embedding "$work/pipe/embedding.h5")" \
  || die "embedding is not 3000 x 4"
/usr/bin/python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$work/pipe/eval.json" || die "eval.json is not JSON"
note "pipeline prepare ${ids[0]} -> train ${ids[1]} -> embed ${ids[2]} -> eval ${ids[3]}: all COMPLETED"

# ---- 2. scaling array ----------------------------------------------------------------
out=$("$root/jobs/submit-scaling" --run-dir "$work/scaling" --mode weak --ranks 1,2,4 --n-per-rank 1000 \
  --steps 20 --opts "$small" 2>/dev/null) || die "submit-scaling: $out"
arr=$(id_of scaling "$out"); [[ $arr =~ ^[0-9]+$ ]] || die "submit-scaling printed no job id: '$out'"
wait_jobs 240 "$arr"
for t in 0 1 2; do expect_completed "scaling task $t" "${arr}_$t" "$work/scaling/logs/basis-scaling-${arr}_$t.out"; done
rows=$(cat "$work"/scaling/csv/*.csv | grep -vc '^mode,' || true)
[[ $rows == 3 ]] || die "scaling: $rows CSV rows, expected 3"
[[ $(cut -d, -f2 "$work"/scaling/csv/*.csv | grep -v ranks | sort -n | tr '\n' ' ') == "1 2 4 " ]] || die "scaling: rank column is not 1 2 4"
"$root/scripts/scaling-report" "$work/scaling/csv" "$work/scaling/report" >/dev/null || die "scaling-report"
for f in scaling.md scaling.csv; do [[ -s $work/scaling/report/$f ]] || die "scaling-report made no $f"; done
if command -v gnuplot >/dev/null; then
  for f in speedup-weak.png phases-weak.png; do [[ -s $work/scaling/report/$f ]] || die "scaling-report made no $f"; done
fi
note "scaling array $arr: 3 tasks COMPLETED, 3 CSV rows (1, 2, 4 ranks), report made"

# ---- 3. emulated pre-limit signal: scancel --signal=USR1 --batch, mpirun ----------------
rq=$work/rq.opts
{ cat "$small"; printf -- '-steps 6000\n-monitor_every 250\n-checkpoint_every 1000\n'; } >"$rq"
out=$("$root/jobs/submit-pipeline" --run-dir "$work/rq" --ranks 2 --opts "$rq" --data "$work/pipe/data.h5" \
  --stages train,embed --launch mpirun 2>/dev/null) || die "submit-pipeline (requeue): $out"
id=$(id_of train "$out"); eid=$(id_of embed "$out")
ref=$(id_of train "$("$root/jobs/submit-pipeline" --run-dir "$work/rq-ref" --ranks 2 --opts "$rq" \
  --data "$work/pipe/data.h5" --stages train 2>/dev/null)")
wait_step "$work/rq/logs/train.$id.r0.log" 500 120
scancel --signal=USR1 --batch "$id"
wait_jobs 300 "$id" "$eid" "$ref"
log=$work/rq/logs/basis-train-$id.out
expect_completed "requeued train" "$id" "$log"
expect_completed "embed after the requeued train" "$eid" "$work/rq/logs/basis-embed-$eid.out"
expect_completed "reference train" "$ref" "$work/rq-ref/logs/basis-train-$ref.out"
n=$(restarts "$id")
grep -q 'batch shell got SIGUSR1' "$log" || die "no 'batch shell got SIGUSR1' in $log"
stop=$(sed -n 's/^train: stopped by signal after step \([0-9]*\);.*/\1/p' "$log" | head -1)
[[ -n $stop ]] || die "train was not stopped by the signal (finished first?): $log"
grep -q "requeueing job $id" "$log" || die "the job did not requeue itself: $log"
grep -q "^train: resuming .* at step $stop of 6000" "$work/rq/logs/train.$id.r1.log" || die "restart 1 did not resume at step $stop"
((n >= 1)) || die "Restarts=$n"
"$cmp_h5" "$work/rq/model.h5" "$work/rq-ref/model.h5" /network/params \
  || die "requeued run differs from the uninterrupted one (max |diff| $(max_diff "$work/rq/model.h5" "$work/rq-ref/model.h5" /network/params))"
note "scancel --signal=USR1 --batch: stopped at step $stop, requeued (Restarts=$n), resumed, COMPLETED; embed after it COMPLETED; /network/params bitwise equal to job $ref (max |diff| $(max_diff "$work/rq/model.h5" "$work/rq-ref/model.h5" /network/params))"

# ---- 4. a real time limit: --time=1 --signal=B:USR1@50 --------------------------------
if [[ ${BASIS_SLURM_TIMELIMIT:-1} == 1 ]]; then
  tl=$work/tl.opts
  { cat "$small"; printf -- '-batch 300\n-monitor_every 2000\n-checkpoint_every 5000\n'; } >"$tl"
  # calibrate: steps that take BASIS_SLURM_TRAIN_SECONDS on 1 rank here, now
  "$basis" train -options_file "$tl" -input "$work/pipe/data.h5" -model "$work/cal.h5" -steps 1000 -force >"$work/cal.log" 2>&1 \
    || { cat "$work/cal.log"; die "calibration train"; }
  sec=$(sed -n 's/^train: 1000 steps in \([0-9.]*\) s.*/\1/p' "$work/cal.log")
  steps=$(awk -v t="${sec:-1}" -v want="${BASIS_SLURM_TRAIN_SECONDS:-90}" 'BEGIN { if (t < 0.1) t = 0.1; printf "%d", want * 1000 / t }')
  printf -- '-steps %s\n' "$steps" >>"$tl"
  out=$(BASIS_TIME_TRAIN=1 BASIS_SIGNAL_LEAD=50 "$root/jobs/submit-pipeline" --run-dir "$work/tl" --ranks 1 --opts "$tl" \
    --data "$work/pipe/data.h5" --stages train 2>/dev/null) || die "submit-pipeline (time limit): $out"
  id=$(id_of train "$out")
  ref=$(id_of train "$("$root/jobs/submit-pipeline" --run-dir "$work/tl-ref" --ranks 1 --opts "$tl" \
    --data "$work/pipe/data.h5" --stages train 2>/dev/null)")
  grep -q 'TimeLimit=00:01:00' <<<"$(scontrol show job -o "$id")" || die "time-limit job $id has no 1-minute limit"
  wait_jobs 600 "$id" "$ref"
  log=$work/tl/logs/basis-train-$id.out
  expect_completed "time-limited train" "$id" "$log"
  expect_completed "reference train" "$ref" "$work/tl-ref/logs/basis-train-$ref.out"
  n=$(restarts "$id")
  ((n >= 1)) || die "time-limited job $id was never requeued (Restarts=$n; train of $steps steps finished before Slurm's signal?)"
  [[ $(grep -c 'batch shell got SIGUSR1' "$log") -ge 1 && $(grep -c '^train: resuming' "$log") -ge 1 ]] \
    || die "no Slurm USR1 / resume in $log"
  "$cmp_h5" "$work/tl/model.h5" "$work/tl-ref/model.h5" /network/params \
    || die "time-limited run differs from the uninterrupted one (max |diff| $(max_diff "$work/tl/model.h5" "$work/tl-ref/model.h5" /network/params))"
  note "time limit 1 min, USR1@50 s: $steps steps ($(grep -c '^train: stopped by signal' "$log") Slurm-signalled stops, Restarts=$n), COMPLETED; /network/params bitwise equal to job $ref (max |diff| $(max_diff "$work/tl/model.h5" "$work/tl-ref/model.h5" /network/params))"
fi
note "all Slurm job checks passed"
