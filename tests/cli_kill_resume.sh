#!/usr/bin/env bash
# cli_kill_resume.sh BASIS - training survives kill -9 (a node failure, an OOM kill, a
# job killed past its time limit without a warning signal):
#  * a 2-rank, 300-step run with -checkpoint_every 20 is killed with SIGKILL after its
#    first checkpoint, once by killing mpiexec and the ranks at once (as a node failure does),
#    once by killing one rank (mpiexec then takes down the other);
#  * the file under the model's name is then always a complete checkpoint (a multiple of
#    20 steps): checkpoints are written as NAME.<run>.partial and renamed;
#  * -resume (guard vectors on: -align_extra 3) runs to the end with network parameters,
#    Adam moments and random streams bitwise identical to an uninterrupted run;
#    (the second resume is given no -steps: it must finish the checkpoint's 300, not
#    train's default);
#  * a NAME.partial (left by the kill, or made by deleting basis_complete from a
#    checkpoint, which is what an interrupted write leaves) is refused by basis embed;
#  * while a run trains NAME, a second train of NAME (even with -force) and an embed
#    -orthonormalize compute (which rewrites the model) are refused, and the first run's
#    model is the one left;
#  * a lock left on another node by an earlier incarnation of the same Slurm job (same
#    SLURM_JOB_ID, fewer restarts) is taken over by the requeued run; one of the same
#    incarnation, or met outside Slurm, is not.
# Silent on success; prints each failure.
set -u
basis=$1
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/basis-kill.XXXXXX")
bg=
trap '[[ -n $bg ]] && kill -9 -- -"$bg" 2>/dev/null; rm -rf "$work"' EXIT
mpiexec=(mpiexec --oversubscribe --allow-run-as-root)
fail=0
die() { echo "FAIL: $*"; fail=1; }

"${mpiexec[@]}" -n 1 "$basis" generate -n 800 -d 6 -classes 4 -output "$work/data.h5" >/dev/null || { echo "FAIL: generate"; exit 1; }
base=(train -input "$work/data.h5" -batch 200 -anchors 20 -hidden 32,32 -dim 4 -align_extra 3 -lr 1e-3
  -checkpoint_every 20 -train_monitor 0)
opts=("${base[@]}" -steps 300)
timeout 300 "${mpiexec[@]}" -n 2 "$basis" "${opts[@]}" -model "$work/ref.h5" >/dev/null 2>&1 || { echo "FAIL: uninterrupted run"; exit 1; }

# step FILE: "complete step" of a model file, or an error text
step() {
  /usr/bin/python3 -c 'import h5py, sys
f = h5py.File(sys.argv[1], "r")
print(f.attrs["basis_complete"][0], f.attrs["step"][0])' "$1" 2>&1 | tail -1
}

# killed HOW: start the run in its own process group, wait for its first checkpoint, kill -9.
killed() {
  local how=$1 model=$work/$1.h5 rank
  setsid "${mpiexec[@]}" -n 2 "$basis" "${opts[@]}" -model "$model" >"$work/$how.log" 2>&1 &
  bg=$!
  for _ in $(seq 3000); do [[ -e $model ]] && break; sleep 0.01; done
  if [[ $how == group ]]; then
    # Open MPI puts each rank in a process group of its own, so a signal to mpiexec's
    # group would leave the ranks running (for seconds, still holding the output's lock);
    # a node failure or Slurm's cgroup kill takes all of them at once.
    kill -9 -- -"$bg" $(pgrep -P "$bg")
  else # one rank: a child of mpiexec running basis
    rank=$(pgrep -P "$bg" -x basis | head -1)
    [[ -n $rank ]] && kill -9 "$rank"
  fi
  wait "$bg" 2>/dev/null
  kill -9 -- -"$bg" 2>/dev/null # what mpiexec may have left of the group
  bg=
  read -r complete at < <(step "$model")
  if [[ $complete != 1 ]] || ((at % 20 != 0 || at < 20)); then
    die "kill -9 ($how): $model is not a complete checkpoint ($complete $at)"; return
  fi
  ((at < 300)) || { die "kill -9 ($how): the run finished before it was killed; make it longer"; return; }
  local resume=("${opts[@]}")
  [[ $how == rank ]] && resume=("${base[@]}")
  timeout 300 "${mpiexec[@]}" -n 2 "$basis" "${resume[@]}" -model "$model" -resume >"$work/$how.resume.log" 2>&1 \
    || { die "kill -9 ($how): -resume from step $at failed:"; grep -m3 "error" "$work/$how.resume.log"; return; }
  for d in /network/params /optimizer/adam_m /optimizer/adam_v /train/rng; do
    "$here/h5cmp.py" "$work/ref.h5" "$model" "$d" >/dev/null || die "kill -9 ($how) at step $at + resume: $d differs from the uninterrupted run"
  done
  # a .partial left by the kill must never be taken for a model
  # (temporaries are named NAME.<run>.partial, one per run)
  for partial in "$model".*.partial; do
    [[ -e $partial ]] || continue
    timeout 60 "${mpiexec[@]}" -n 2 "$basis" embed -model "$partial" -input "$work/data.h5" -output "$work/e.h5" >/dev/null 2>&1 \
      && die "basis embed accepted $partial left by kill -9"
  done
}
killed group
killed rank

# Two runs on one model: the second is refused while the first trains, whatever -force says.
setsid "${mpiexec[@]}" -n 2 "$basis" "${base[@]}" -steps 3000 -model "$work/busy.h5" -seed 1 >"$work/busy.log" 2>&1 &
bg=$!
for _ in $(seq 3000); do [[ -e $work/busy.h5 ]] && break; sleep 0.01; done
out=$(timeout 60 "${mpiexec[@]}" -n 2 "$basis" "${base[@]}" -steps 5 -model "$work/busy.h5" -seed 2 -force 2>&1)
rc=$?
[[ $rc == 1 ]] || die "a second train of a model being trained exited $rc, expected 1"
grep -q "busy.h5 is being written by another basis run" <<<"$out" || { die "second train: unexpected message"; head -3 <<<"$out"; }
out=$(timeout 60 "${mpiexec[@]}" -n 2 "$basis" embed -model "$work/busy.h5" -input "$work/data.h5" -output "$work/busy.e.h5" \
  -orthonormalize compute 2>&1)
rc=$?
[[ $rc == 1 ]] || die "embed -orthonormalize compute of a model being trained exited $rc, expected 1"
grep -q "busy.h5 is being written by another basis run" <<<"$out" || { die "embed of a model in training: unexpected message"; head -3 <<<"$out"; }
[[ ! -e $work/busy.e.h5 ]] || die "embed -orthonormalize compute of a model being trained left an output"
wait "$bg" || die "the first run failed beside the refused ones: $(grep -m1 error "$work/busy.log")"
bg=
read -r complete at < <(step "$work/busy.h5")
[[ "$complete $at" == "1 3000" ]] || die "the model left is not the first run's ($complete $at)"
[[ ! -e $work/busy.h5.lock ]] || die "the first run left its lock"

# A node died under a Slurm job: its lock names the other node, whose pid cannot be checked.
# (basis is started without mpiexec here: Open MPI's launcher would take the SLURM_ variables
# for an allocation.)
lock() { printf 'basis othernode 12345 777.0\n' >"$work/inc.h5.lock"; }
small=(train -input "$work/data.h5" -batch 200 -anchors 20 -hidden 8,8 -dim 4 -steps 3 -train_monitor 0)
lock
SLURM_JOB_ID=777 SLURM_RESTART_COUNT=0 timeout 60 "$basis" "${small[@]}" -model "$work/inc.h5" >/dev/null 2>&1 &&
  die "a lock of the same Slurm incarnation on another node was taken over"
SLURM_JOB_ID=777 SLURM_RESTART_COUNT=1 timeout 60 "$basis" "${small[@]}" -model "$work/inc.h5" >"$work/inc.log" 2>&1 ||
  { die "the requeued job (restart 1) did not take over its earlier incarnation's lock:"; grep -m1 error "$work/inc.log"; }
[[ ! -e $work/inc.h5.lock ]] || die "the requeued job left the lock"
lock
timeout 60 "$basis" "${small[@]}" -model "$work/inc.h5" -force >/dev/null 2>&1 && die "a live-looking lock from another node was taken over outside Slurm"
rm -f "$work/inc.h5.lock"

# An interrupted checkpoint write: everything but the completeness attribute.
cp "$work/ref.h5" "$work/cut.h5.partial"
/usr/bin/python3 -c 'import h5py, sys; del h5py.File(sys.argv[1], "r+").attrs["basis_complete"]' "$work/cut.h5.partial"
for np in 1 2; do
  out=$(timeout 60 "${mpiexec[@]}" -n $np "$basis" embed -model "$work/cut.h5.partial" -input "$work/data.h5" -output "$work/e.h5" 2>&1)
  rc=$?
  [[ $rc == 1 ]] || die "np=$np embed of a .partial model exited $rc, expected 1"
  grep -q "is incomplete (its writer was interrupted)" <<<"$out" || { die "np=$np embed of a .partial model: unexpected message"; head -3 <<<"$out"; }
  [[ ! -e $work/e.h5 ]] || die "np=$np embed of a .partial model wrote an output"
done
# Killed after the mark but before the rename: complete, but still under the temporary name
# its writer recorded; it must be refused too (it was never committed).
cp "$work/ref.h5" "$work/ref.h5.4242-abcdef01.partial"
/usr/bin/python3 -c 'import h5py, sys; h5py.File(sys.argv[1], "r+").attrs["basis_temporary_name"] = "ref.h5.4242-abcdef01.partial"' \
  "$work/ref.h5.4242-abcdef01.partial"
for np in 1 2; do
  out=$(timeout 60 "${mpiexec[@]}" -n $np "$basis" embed -model "$work/ref.h5.4242-abcdef01.partial" -input "$work/data.h5" \
    -output "$work/e.h5" 2>&1)
  rc=$?
  [[ $rc == 1 ]] || die "np=$np embed of an uncommitted temporary model exited $rc, expected 1"
  grep -q "is the temporary file of a run that was stopped before it committed it" <<<"$out" ||
    { die "np=$np embed of an uncommitted temporary model: unexpected message"; head -3 <<<"$out"; }
  [[ ! -e $work/e.h5 ]] || die "np=$np embed of an uncommitted temporary model wrote an output"
done
exit $fail
