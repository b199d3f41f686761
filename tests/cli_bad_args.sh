#!/usr/bin/env bash
# cli_bad_args.sh BASIS - every bad input of issue 7 (tests/bad_args_cases.sh) for train,
# embed, exact and eval, at 1, 2 and 4 ranks. Each case must, within 60 s:
#  * exit with status 1 (not 0, not a hang, not a signal or an MPI abort);
#  * print its expected message, once (not once per rank);
#  * leave no output: neither WORK/out.* nor any *.partial (except a case's case_keep, the
#    last sound checkpoint of a failed run, which must be the one its message names);
#  * leave every file that existed before byte-for-byte unchanged.
# Silent on success; prints each failing case.
set -u
basis=$1
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/basis-badargs.XXXXXX")
trap 'rm -rf "$work"' EXIT
source "$here/bad_args_cases.sh"
fail=0
# After a rank exits non-zero Open MPI waits 1 s before SIGKILL-ing the others, twice: 2 s
# per case. Every rank of these cases has already exited with the same status by then.
export OMPI_MCA_odls_base_sigkill_timeout=0

bad_args_setup "$basis" "$work" >"$work/setup.log" 2>&1 || { echo "FAIL: setup"; cat "$work/setup.log"; exit 1; }
bad_args_cases "$work"
sums() { (cd "$work" && sha256sum -- *.h5 | sort); }
before=$(sums)

for np in 1 2 4; do
  for i in "${!case_name[@]}"; do
    read -ra args <<<"${case_args[$i]}"
    what="np=$np '${case_name[$i]}'"
    out=$(timeout 60 mpiexec --oversubscribe --allow-run-as-root -n "$np" "$basis" "${args[@]}" 2>&1)
    rc=$?
    if [[ $rc != 1 ]]; then
      echo "FAIL $what: exit status $rc, expected 1 (124 = hung, >= 128 = signal)"; fail=1
    elif ! grep -Eq -- "${case_pattern[$i]}" <<<"$out"; then
      echo "FAIL $what: message does not match '${case_pattern[$i]}':"; sed 's/^/    /' <<<"$out" | head -6; fail=1
    elif [[ $(grep -Ec -- "${case_pattern[$i]}" <<<"$out") != 1 ]]; then
      echo "FAIL $what: the message is printed more than once:"; grep -E -- "${case_pattern[$i]}" <<<"$out"; fail=1
    fi
    keep=${case_keep[$i]}
    if [[ -n $keep ]]; then # the last sound checkpoint: complete, of the step named, two before the failed one
      failed=$(grep -Eo 'training step [0-9]+' <<<"$out" | head -1 | grep -Eo '[0-9]+')
      named=$(grep -Eo 'checkpoint \(step [0-9]+\)' <<<"$out" | head -1 | grep -Eo '[0-9]+')
      got=$(/usr/bin/python3 -c 'import h5py, sys
f = h5py.File(sys.argv[1], "r")
print(f.attrs["basis_complete"][0], f.attrs["step"][0])' "$keep" 2>&1)
      [[ $got == "1 $named" && $named == $((failed - 2)) ]] ||
        { echo "FAIL $what: $keep ($got) is not the complete checkpoint of step $named = $failed - 2"; fail=1; }
      rm -f "$keep"
    fi
    left=$(find "$work" -name 'out.*' -o -name '*.partial')
    [[ -z $left ]] || { echo "FAIL $what: left $left"; rm -f $left; fail=1; }
  done
  [[ $(sums) == "$before" ]] || { echo "FAIL np=$np: a case changed an existing file:"; diff <(echo "$before") <(sums); before=$(sums); fail=1; }
done
exit $fail
