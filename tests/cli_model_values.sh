#!/usr/bin/env bash
# cli_model_values.sh BASIS - a model whose values are damaged but whose checksums are
# intact (rewritten by h5py) is refused before any output exists (issue 18 item 6): a NaN in
# /network/params, in /input/mean, an Inf input_scale. At 1, 2 and 4 ranks `basis embed`
# exits non-zero with a message that names the file, the dataset and the fix, and leaves no
# output (nor its temporary file). A model whose enum attributes h5py rewrote as
# variable-length UTF-8 strings, or as null-padded fixed-length ones, embeds as before. Silent on success; prints each failing case.
set -u
basis=$1
work=$(mktemp -d "${TMPDIR:-/tmp}/basis-values.XXXXXX")
trap 'rm -rf "$work"' EXIT
# shellcheck source=tests/cli_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/cli_lib.sh"

timeout 120 "${mpiexec[@]}" -n 2 "$basis" generate -n 300 -d 5 -data_seed 3 -output "$work/d.h5" >/dev/null &&
  timeout 120 "${mpiexec[@]}" -n 2 "$basis" train -input "$work/d.h5" -model "$work/m.h5" -batch 64 -anchors 16 \
    -hidden 8 -dim 3 -steps 3 -laplacian rw -scale median -train_monitor 0 >/dev/null &&
  timeout 120 "${mpiexec[@]}" -n 2 "$basis" embed -input "$work/d.h5" -model "$work/m.h5" -output "$work/ref.emb.h5" \
    >/dev/null || { echo "FAIL: cannot make the test model"; exit 1; }
/usr/bin/python3 - "$work" <<'PY' || { echo "FAIL: h5py could not write the damaged models"; exit 1; }
import shutil, sys
import h5py, numpy as np
w = sys.argv[1] + "/"
def damaged(name, change):
    shutil.copy(w + "m.h5", w + name + ".h5")
    with h5py.File(w + name + ".h5", "r+") as f:
        change(f)
def nan_at(dataset, i):
    def change(f):
        a = f[dataset][()]; a[i] = np.nan; f[dataset][...] = a
    return change
damaged("params_nan", nan_at("network/params", 3))
damaged("mean_nan", nan_at("input/mean", 1))
damaged("scale_inf", lambda f: f.attrs.modify("input_scale", np.array([np.inf])))
def utf8(f):
    for a in ("scale", "laplacian", "align", "sample"):
        f.attrs[a] = f.attrs[a].decode()  # h5py writes a str as variable-length UTF-8
damaged("utf8", utf8)
def nullpad(f):
    for a in ("scale", "laplacian", "align", "sample"):
        f.attrs[a] = np.bytes_(f.attrs[a])  # fixed length, null-padded, no terminator
damaged("nullpad", nullpad)
PY

# refused NP MODEL PATTERN: exit 1 within 60 s, the message once, no output left
refused() {
  local np=$1 model=$work/$2.h5 pattern=$3 out rc
  out=$(timeout 60 "${mpiexec[@]}" -n "$np" "$basis" embed -input "$work/d.h5" -model "$model" \
    -output "$work/out.h5" 2>&1); rc=$?
  if [[ $rc == 0 || $rc == 124 ]]; then
    echo "FAIL np=$np $2: exit status $rc, expected an error"; fail=1
  elif [[ $(grep -c -- "$pattern" <<<"$out") != 1 ]]; then
    echo "FAIL np=$np $2: the message does not match '$pattern' exactly once:"; sed 's/^/    /' <<<"$out" | head -6
    fail=1
  fi
  if compgen -G "$work/out.h5*" >/dev/null; then echo "FAIL np=$np $2: left $(ls "$work"/out.h5*)"; fail=1; fi
  rm -f "$work"/out.h5*
}

for np in 1 2 4; do
  refused "$np" params_nan \
    "model file $work/params_nan.h5: /network/params holds 1 non-finite value (NaN or Inf), the first at index 3; retrain, or restore the file"
  refused "$np" mean_nan "model file $work/mean_nan.h5: /input/mean holds 1 non-finite value .*; retrain, or restore the file"
  refused "$np" scale_inf "model file $work/scale_inf.h5: attribute input_scale is inf.*, not a positive number; retrain, or restore the file"
done
for kind in utf8 nullpad; do
  if ! out=$(timeout 60 "${mpiexec[@]}" -n 2 "$basis" embed -input "$work/d.h5" -model "$work/$kind.h5" \
    -output "$work/$kind.emb.h5" 2>&1); then
    echo "FAIL: a model with $kind enum attributes is refused:"; sed 's/^/    /' <<<"$out" | head -6; fail=1
  elif ! /usr/bin/python3 -c 'import h5py, numpy as np, sys
a, b = (h5py.File(p, "r")["embedding"][()] for p in sys.argv[1:])
sys.exit(not np.array_equal(a, b))' "$work/$kind.emb.h5" "$work/ref.emb.h5"; then
    echo "FAIL: the model with $kind enum attributes embeds differently"; fail=1
  fi
done
exit $fail
