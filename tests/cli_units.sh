#!/usr/bin/env bash
# cli_units.sh BASIS - results do not depend on the data's units (issue 18 item 5): the
# same data X multiplied by c give the same trained model and embedding up to rounding, at
# 1, 2 and 4 ranks. c = 2^100 and 2^-100 (exact in floating point): the network's
# parameters and the embedding bitwise identical to X's. c = 1e30, 1e-30, 3.7e25: the
# embedding within 1e-4 of X's (relative to its largest entry). c = 1e-40 (stored as
# float64, denormal once read as float32, which keeps about 16 bits of it): within 1e-4 of
# the embedding of X rounded the same way (q40). That rounding is the data's, not basis's,
# and it moves X's graph's eigenvectors by ~1e-2. Before the graph's distances and the
# network's input were made unit-free, 1e30 gave a disconnected graph and 1e-40 a
# training error. One row x 1e12 among the others sets the network's one input scale
# alone: train must warn, naming it (and not warn on X itself).
# Silent on success; prints each failure.
set -u
basis=$1
work=$(mktemp -d "${TMPDIR:-/tmp}/basis-units.XXXXXX")
trap 'rm -rf "$work"' EXIT
# shellcheck source=tests/cli_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/cli_lib.sh"

timeout 120 "${mpiexec[@]}" -n 2 "$basis" generate -n 800 -d 6 -classes 4 -data_seed 3 -output "$work/x.h5" \
  >/dev/null || { echo "FAIL: cannot generate the test data"; exit 1; }
/usr/bin/python3 - "$work" <<'PY' || { echo "FAIL: h5py could not write the scaled copies"; exit 1; }
import sys
import h5py, numpy as np
w = sys.argv[1] + "/"
f = h5py.File(w + "x.h5", "r")
X, L = f["features"][()].astype(np.float64), f["labels"][()]
for name, c, dtype in [("p100", 2.0**100, np.float32), ("m100", 2.0**-100, np.float32), ("e30", 1e30, np.float32),
                       ("em30", 1e-30, np.float32), ("e25", 3.7e25, np.float32), ("em40", 1e-40, np.float64)]:
    with h5py.File(w + name + ".h5", "w") as g:
        g["features"] = (X * c).astype(dtype)
        g["labels"] = L
with h5py.File(w + "q40.h5", "w") as g:  # X as float32 keeps it at 1e-40, brought back to X's units
    g["features"] = ((X * 1e-40).astype(np.float32).astype(np.float64) * 1e40).astype(np.float32)
    g["labels"] = L
Y = X.copy(); Y[5] *= 1e12
with h5py.File(w + "outl.h5", "w") as g:
    g["features"] = Y.astype(np.float32)
PY
for np_ in 1 2 4; do
  for d in x p100 m100 e30 em30 e25 q40 em40; do
    timeout 300 "${mpiexec[@]}" -n $np_ "$basis" train -input "$work/$d.h5" -model "$work/$d.$np_.m.h5" -steps 30 \
      -batch 256 -anchors 64 -hidden 32,32 -train_monitor 0 >"$work/$d.$np_.log" 2>&1 &&
      timeout 300 "${mpiexec[@]}" -n $np_ "$basis" embed -input "$work/$d.h5" -model "$work/$d.$np_.m.h5" \
        -output "$work/$d.$np_.e.h5" >>"$work/$d.$np_.log" 2>&1 ||
      { echo "FAIL: $d at $np_ ranks: train or embed failed:"; tail -3 "$work/$d.$np_.log"; fail=1; }
  done
  /usr/bin/python3 - "$work" "$np_" <<'PY' || fail=1
import sys
import h5py, numpy as np
w, r = sys.argv[1] + "/", sys.argv[2]
def get(d):  # the network's parameters and the embedding of data set d
    try:
        return h5py.File(f"{w}{d}.{r}.m.h5", "r")["network/params"][()], h5py.File(f"{w}{d}.{r}.e.h5", "r")["embedding"][()]
    except OSError:
        return None, None
bad = 0
for d, ref, tol in [("p100", "x", 0), ("m100", "x", 0), ("e30", "x", 1e-4), ("em30", "x", 1e-4), ("e25", "x", 1e-4),
                    ("em40", "q40", 1e-4)]:
    (p0, y0), (p, y) = get(ref), get(d)
    if y is None or y0 is None:
        continue  # reported above
    rel = np.abs(y - y0).max() / np.abs(y0).max()
    if (tol == 0 and not ((p == p0).all() and (y == y0).all())) or rel > tol:
        print(f"FAIL: {d} at {r} ranks: embedding differs from {ref}'s by {rel:.2e} (limit {tol:g})")
        bad = 1
sys.exit(bad)
PY
done
out=$(timeout 300 "${mpiexec[@]}" -n 2 "$basis" train -input "$work/outl.h5" -model "$work/outl.m.h5" -steps 5 \
  -batch 256 -anchors 64 -hidden 32,32 -train_monitor 0 2>&1)
grep -q "warning: 1 row(s) of .*outl.h5 (the first is row 5) lie more than" <<<"$out" ||
  { echo "FAIL: no warning of the outlying row:"; head -5 <<<"$out"; fail=1; }
grep -q "warning: .* row(s)" "$work"/x.*.log && { echo "FAIL: the outlier warning on data without outliers"; fail=1; }
exit $fail
