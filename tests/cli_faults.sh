#!/usr/bin/env bash
# cli_faults.sh BASIS - issue 18's hostile cases in the output writer, the options and the
# input opening (tests/faults_cases.sh), at 1, 2 and 4 ranks. Each case must, within 60 s:
#  * exit with status 1 (not 0, not a hang, not a signal or an MPI abort);
#  * print its expected message, once (or once per rank for a rank-local check);
#  * leave no output: no out.*, *.partial or new *.lock anywhere, the tmpfs empty;
#  * leave every file that existed before byte-for-byte unchanged.
# Then what must work: a stale lock is taken over, an input named like a temporary and a
# user's own "<output>.partial" are untouched, a path of ~300 characters works, two runs
# writing one output leave the complete output of one of them, PETSc's own options are
# accepted, and every option a command's -help lists is in src/options.c's table.
# The full-disk cases need root (a tmpfs); without it they are skipped, with a note.
# Silent on success; prints each failing case.
set -u
basis=$1
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/basis-faults.XXXXXX")
source "$here/faults_cases.sh"
trap 'faults_teardown "$work"; rm -rf "$work"' EXIT
export OMPI_MCA_odls_base_sigkill_timeout=0 # see tests/cli_bad_args.sh
mpi=(mpiexec --oversubscribe --allow-run-as-root)
fail=0
die() { echo "FAIL $*"; fail=1; }

faults_setup "$basis" "$work" >"$work/setup.log" 2>&1 || { echo "FAIL: setup"; cat "$work/setup.log"; exit 1; }
[[ $(id -u) == 0 ]] || echo "note: not root, the full-disk cases are skipped (they need a tmpfs)"
faults_cases "$work"
sums() { (cd "$work" && find . -type f ! -path './full/*' ! -path './near/*' -exec sha256sum {} + | sort); }
before=$(sums)

for np in 1 2 4; do
  for i in "${!case_name[@]}"; do
    read -ra args <<<"${case_args[$i]}"
    what="np=$np '${case_name[$i]}'"
    out=$(timeout 60 "${mpi[@]}" -n "$np" "$basis" "${args[@]}" 2>&1)
    rc=$?
    n=$(grep -Ec -- "${case_pattern[$i]}" <<<"$out")
    if [[ $rc != 1 ]]; then
      die "$what: exit status $rc, expected 1 (124 = hung, >= 128 = signal)"; sed 's/^/    /' <<<"$out" | head -4
    elif [[ $n == 0 ]]; then
      die "$what: message does not match '${case_pattern[$i]}':"; sed 's/^/    /' <<<"$out" | head -6
    elif [[ ${case_once[$i]} == 1 && $n != 1 ]]; then
      die "$what: the message is printed $n times"
    elif [[ ${case_once[$i]} == 0 && $n -gt $np ]]; then
      die "$what: the message is printed $n times at $np ranks"
    fi
    left=$(find "$work" -name 'out.*' -o -name '*.partial' -o -name '*.lock' ! -name live.h5.lock ! -name far.h5.lock)
    [[ -z $left ]] || { die "$what: left $left"; rm -f $left; }
    for m in full near; do
      [[ ! -d $work/$m || -z $(ls -A "$work/$m") ]] || { die "$what: left $(ls -A "$work/$m") in $m"; rm -f "$work/$m"/*; }
    done
  done
  [[ $(sums) == "$before" ]] || { die "np=$np: a case changed an existing file:"; diff <(echo "$before") <(sums); before=$(sums); }
done

ok() { # ok NP WHAT ARGS...: must exit 0
  local np=$1 what=$2 out; shift 2
  out=$(timeout 60 "${mpi[@]}" -n "$np" "$basis" "$@" 2>&1) || { die "np=$np $what: exit $?"; sed 's/^/    /' <<<"$out" | head -4; }
}
long=$work/$(printf 'd%.0s' {1..120})/$(printf 'e%.0s' {1..120})
mkdir -p "$long"
for np in 1 2 4; do
  # a lock left by a killed run of this host is stale: taken over, and released
  sleep 0.1 & dead=$!; wait $dead
  echo "basis $(hostname) $dead" >"$work/stale.h5.lock"
  ok $np "stale lock" embed -input "$work/d.h5" -model "$work/m.h5" -output "$work/stale.h5"
  [[ -f $work/stale.h5 && ! -e $work/stale.h5.lock ]] || die "np=$np stale lock: no output or the lock is left"
  # an input named like a temporary, and a user's own "<output>.partial", are untouched
  cp "$work/d.h5" "$work/X.partial" && echo mine >"$work/stale.h5.partial"
  ok $np "-input X.partial -output X" embed -input "$work/X.partial" -model "$work/m.h5" -output "$work/X"
  cmp -s "$work/d.h5" "$work/X.partial" || die "np=$np: embed changed its input X.partial"
  ok $np "own .partial" embed -input "$work/d.h5" -model "$work/m.h5" -output "$work/stale.h5" -force
  [[ $(cat "$work/stale.h5.partial") == mine ]] || die "np=$np: the user's stale.h5.partial was changed"
  rm -f "$work/X" "$work/X.partial" "$work/stale.h5" "$work/stale.h5.partial"
  # a path of ~300 characters (Open MPI's OMPIO aborted on it; basis selects ROMIO)
  ok $np "long path" generate -n 100 -d 3 -output "$long/g.h5"
  ok $np "long path input" info -input "$long/g.h5"
  rm -f "$long/g.h5"
  # PETSc's and SLEPc's own options are not "unknown"
  ok $np "PETSc options" train -input "$work/d.h5" -model "$work/p.h5" -batch 56 -anchors 20 -hidden 16,16 -dim 4 \
    -steps 2 -train_monitor 0 -ref_eps_tol 1e-9 -malloc_dump -options_left no -log_view :/dev/null \
    -options_file "$work/good.opts"
  rm -f "$work/p.h5"
  # complete chunked files whose shape is not a multiple of the chunk (edge chunks), with and
  # without a filter, are read; an options file with a comment, a quoted value and an include
  ok $np "ragged chunks" info -input "$work/ragged.h5"
  ok $np "ragged chunks, gzip" info -input "$work/ragged_gz.h5"
  ok $np "options file with comments, quotes and an include" train -input "$work/d.h5" -model "$work/p.h5" \
    -batch 56 -anchors 20 -hidden 16,16 -dim 4 -train_monitor 0 -options_file "$work/rich.opts"
  [[ $(/usr/bin/python3 -c 'import h5py, sys; print(h5py.File(sys.argv[1])["train/history"].shape[0])' "$work/p.h5") == 3 ]] ||
    die "np=$np: the options file's -steps 3 (through its include) was not applied"
  rm -f "$work/p.h5"
done

# Two runs writing one output: each is refused by the other's lock or runs after it; the
# output is one run's complete result, never a mix.
run=(timeout 60 "${mpi[@]}" -n 2 "$basis" embed -input "$work/big.h5" -force)
"${mpi[@]}" -n 1 "$basis" train -input "$work/d.h5" -model "$work/m2.h5" -batch 56 -anchors 20 -hidden 16,16 \
  -dim 4 -steps 2 -train_monitor 0 -seed 7 >/dev/null 2>&1 || die "train m2"
"${run[@]}" -model "$work/m.h5" -output "$work/ref1.h5" >/dev/null 2>&1 || die "race ref1"
"${run[@]}" -model "$work/m2.h5" -output "$work/ref2.h5" >/dev/null 2>&1 || die "race ref2"
for attempt in 1 2 3; do
  "${run[@]}" -model "$work/m.h5" -output "$work/race.h5" >"$work/r1.log" 2>&1 & p1=$!
  "${run[@]}" -model "$work/m2.h5" -output "$work/race.h5" >"$work/r2.log" 2>&1 & p2=$!
  wait $p1; r1=$?; wait $p2; r2=$?
  for r in 1 2; do
    rc=$((r == 1 ? r1 : r2))
    [[ $rc == 0 ]] || grep -q "is being written by another basis run" "$work/r$r.log" ||
      { die "race $attempt: run $r exit $rc without the lock message"; head -3 "$work/r$r.log"; }
  done
  /usr/bin/python3 - "$work" <<'PY' || die "race $attempt: race.h5 is not one run's complete output"
import sys, h5py, numpy as np
w = sys.argv[1] + "/"
with h5py.File(w + "race.h5", "r") as f:
    assert f.attrs["basis_complete"][0] == 1
    e = f["embedding"][()]
refs = [h5py.File(w + n, "r")["embedding"][()] for n in ("ref1.h5", "ref2.h5")]
sys.exit(0 if any(np.array_equal(e, r) for r in refs) else 1)
PY
  left=$(find "$work" -name '*.partial' -o -name 'race.h5.lock')
  [[ -z $left ]] || { die "race $attempt: left $left"; rm -f $left; }
done

# A stale lock (its run killed by SIGKILL: the pid is gone) is taken over, and that run's own
# temporaries go with it; a user's file named like a temporary, and another run's, stay.
echo "basis $(hostname) 999999" >"$work/st.h5.lock"
touch "$work/st.h5.999999-abcdef12.partial" "$work/st.h5.job7-999999-abcdef12.partial" "$work/st.h5.partial" \
  "$work/st.h5.1999999-abcdef12.partial"
for np in 1 2 4; do
  mpiexec --oversubscribe --allow-run-as-root -n $np "$basis" generate -n 100 -d 3 -output "$work/st.h5" -force \
    >/dev/null 2>&1 || die "stale lock at $np ranks: generate failed"
done
for f in st.h5.999999-abcdef12.partial st.h5.job7-999999-abcdef12.partial st.h5.lock; do
  [[ ! -e $work/$f ]] || die "stale lock: $f left behind"
done
for f in st.h5.partial st.h5.1999999-abcdef12.partial; do
  [[ -e $work/$f ]] || die "stale lock: $f, not the killed run's, was deleted"
done
rm -f "$work"/st.h5*

# Every option a command's -help lists is known (the unknown-option check would refuse it).
for cmd in generate train embed exact eval info; do
  for name in $("$basis" $cmd -help 2>&1 | sed -n '/^basis '$cmd'/,$p' | grep -oE '^  -[a-z_]+' | grep -v '_$' | sort -u); do
    grep -q "{\"$name\", '" "$here/../src/options.c" || die "$cmd -help lists $name, which src/options.c does not know"
  done
done
exit $fail
