#!/usr/bin/env bash
# cli_generate_seed.sh BASIS - `basis generate -data_seed S` is the data's seed; the old
# name -seed still works (with PETSc's deprecation warning, once) and gives the same file;
# with both given (one options file for every command), -data_seed wins silently. The
# generator's parameters are named root attributes. Silent on success.
set -u
basis=$1
work=$(mktemp -d "${TMPDIR:-/tmp}/basis-gseed.XXXXXX")
trap 'rm -rf "$work"' EXIT
fail=0
gen() { # gen NAME OPTIONS...: 2 ranks; output in $work/NAME.h5, messages in $out
  out=$(timeout 60 mpiexec --oversubscribe --allow-run-as-root -n 2 "$basis" generate -n 97 -d 3 \
    -output "$work/$1.h5" "${@:2}" 2>&1) || { echo "FAIL generate ${*:2}:"; sed 's/^/    /' <<<"$out"; fail=1; }
}
gen new -data_seed 5
[[ $out != *DEPRECATION* ]] || { echo "FAIL: -data_seed alone warns"; fail=1; }
gen old -seed 5
[[ $(grep -c "option -seed is deprecated" <<<"$out") == 1 ]] || { echo "FAIL: -seed does not warn once:"; echo "$out"; fail=1; }
gen both -data_seed 5 -seed 9
[[ $out != *DEPRECATION* ]] || { echo "FAIL: -data_seed with -seed warns"; fail=1; }
gen other -data_seed 6
/usr/bin/python3 - "$work" <<'PY' || fail=1
import sys
import h5py, numpy as np
w = sys.argv[1] + "/"
x = {n: h5py.File(w + n + ".h5", "r")["features"][()] for n in ("new", "old", "both", "other")}
if not (np.array_equal(x["new"], x["old"]) and np.array_equal(x["new"], x["both"])):
    print("FAIL: -seed 5, -data_seed 5 and -data_seed 5 -seed 9 give different data")
    sys.exit(1)
if np.array_equal(x["new"], x["other"]):
    print("FAIL: -data_seed 6 gives the data of -data_seed 5")
    sys.exit(1)
a = h5py.File(w + "both.h5", "r").attrs
got = {k: a[k][0] for k in ("generator_n", "generator_d", "generator_data_seed")}
if got != {"generator_n": 97, "generator_d": 3, "generator_data_seed": 5} or a["generator"] != b"manifold":
    print("FAIL: generator attributes", got, a["generator"])
    sys.exit(1)
PY
exit $fail
