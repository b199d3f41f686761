#!/usr/bin/env bash
# cli_pipeline.sh BASIS - the train/embed pipeline end to end through the binary:
#  * embed from a saved model is deterministic and equals a second embed; the model's
#    output map (standardised targets) is applied, and absent in older files;
#  * a run stopped by a signal (checkpoint written, exit 3) then resumed, and a run
#    resumed from a mid-way checkpoint, end bitwise identical to an uninterrupted run;
#  * the same seed and rank count give a bitwise identical model;
#  * a model is refused for data of another D; bad training options are refused.
# Silent on success; prints each failure.
set -u
basis=$1
work=$(mktemp -d "${TMPDIR:-/tmp}/basis-pipe.XXXXXX")
trap 'rm -rf "$work"' EXIT
run() { local np=$1; shift; timeout 300 mpiexec --oversubscribe --allow-run-as-root -n "$np" "$basis" "$@"; }
cmp=$(dirname "$0")/h5cmp.py
fail=0
die() { echo "FAIL: $*"; fail=1; }

run 2 generate -n 2400 -d 12 -classes 4 -noise 0.05 -output "$work/data.h5" >/dev/null || { echo "FAIL: generate"; exit 1; }
run 2 generate -n 300 -d 7 -output "$work/other_d.h5" >/dev/null || { echo "FAIL: generate"; exit 1; }
# A constant rate (-lr_final = -lr): the default cosine decay is planned over -steps, so a
# finished 25-step run extended to 60 cannot equal a 60-step run; interrupted runs (signal
# below, kill -9 in cli_kill_resume) resume bitwise under the default schedule too.
small=(-anchors 40 -batch 160 -hidden 32,32 -dim 4 -lr 1e-3 -lr_final 1e-3 -checkpoint_every 0 -train_monitor 0)

# Uninterrupted reference run.
run 2 train -input "$work/data.h5" -model "$work/a.h5" "${small[@]}" -steps 60 >"$work/a.log" 2>&1 || { cat "$work/a.log"; die "train"; }
# Same seed, same rank count: bitwise identical model.
run 2 train -input "$work/data.h5" -model "$work/a2.h5" "${small[@]}" -steps 60 >/dev/null 2>&1 || die "train (repeat)"
h5diff -q "$work/a.h5" "$work/a2.h5" /network/params >/dev/null || die "two runs with the same seed differ"
# Resume from a mid-way checkpoint: train 25 steps, then -resume to 60.
run 2 train -input "$work/data.h5" -model "$work/b.h5" "${small[@]}" -steps 25 >/dev/null 2>&1 || die "train 25"
run 2 train -input "$work/data.h5" -model "$work/b.h5" "${small[@]}" -steps 60 -resume >/dev/null 2>&1 || die "resume"
for d in /network/params /optimizer/adam_m /optimizer/adam_v /train/rng /reference/landmark_features; do
  h5diff -q "$work/a.h5" "$work/b.h5" "$d" >/dev/null || die "resumed run differs from the uninterrupted one in $d"
done

# Stopped by SIGUSR1 (as a Slurm job is before its time limit): checkpoint, exit 3;
# then -resume finishes with the same model as an uninterrupted run.
run 2 train -input "$work/data.h5" -model "$work/c_ref.h5" "${small[@]}" -steps 400 >/dev/null 2>&1 || die "train 400"
mpiexec --oversubscribe --allow-run-as-root -n 2 "$basis" train -input "$work/data.h5" -model "$work/c.h5" "${small[@]}" \
  -steps 400 -train_monitor 1 -monitor_every 1 >"$work/c.log" 2>&1 &
pid=$!
for _ in $(seq 600); do grep -q 'step     20 ' "$work/c.log" && break; sleep 0.05; done
kill -USR1 $pid
wait $pid; rc=$?
if [[ $rc != 3 ]]; then die "train stopped by SIGUSR1 exited $rc, expected 3"; tail -3 "$work/c.log"
else
  grep -q "stopped by signal" "$work/c.log" || die "no 'stopped by signal' message"
  run 2 train -input "$work/data.h5" -model "$work/c.h5" "${small[@]}" -steps 400 -resume >/dev/null 2>&1 || die "resume after signal"
  h5diff -q "$work/c_ref.h5" "$work/c.h5" /network/params >/dev/null || die "signal+resume differs from the uninterrupted run"
fi

# Embed twice: identical; embedding has N x K rows and labels.
run 2 embed -model "$work/a.h5" -input "$work/data.h5" -output "$work/e1.h5" >/dev/null 2>&1 || die "embed"
run 1 embed -model "$work/a.h5" -input "$work/data.h5" -output "$work/e2.h5" -chunk 100 >/dev/null 2>&1 || die "embed (1 rank)"
run 2 embed -model "$work/a.h5" -input "$work/data.h5" -output "$work/e3.h5" >/dev/null 2>&1 || die "embed (repeat)"
"$cmp" "$work/e1.h5" "$work/e3.h5" /embedding || die "two embeds with the same model and ranks differ"
# Other rank count and chunking: GEMM blocking changes float rounding, not the values.
"$cmp" "$work/e1.h5" "$work/e2.h5" /embedding 1e-5 || die "embed at 2 ranks differs from embed at 1 rank with other chunks"
h5dump -H -d /embedding "$work/e1.h5" | grep -q 'DATASPACE  SIMPLE { ( 2400, 4 )' || die "embedding shape is not 2400 x 4"
# The model maps the network's (standardised) output to the embedding: a model file without
# /network/output_shift and output_scale (as written before they existed) is read as the
# identity map, so its embedding times output_scale plus output_shift is the embedding.
/usr/bin/python3 - "$work/a.h5" "$work/old.h5" <<'PY' || die "cannot write a model without the output map"
import h5py, shutil, sys
shutil.copy(sys.argv[1], sys.argv[2])
with h5py.File(sys.argv[2], "r+") as f:
    del f["network/output_shift"], f["network/output_scale"]
PY
# (the network's columns: -trivial network -landmark_weight 0, else the landmarks give
# column 0 and a share of the others)
net=(-trivial network -landmark_weight 0)
run 2 embed -model "$work/old.h5" -input "$work/data.h5" -output "$work/eo.h5" "${net[@]}" >/dev/null 2>&1 || die "embed with a model without the output map"
run 2 embed -model "$work/a.h5" -input "$work/data.h5" -output "$work/en.h5" "${net[@]}" >/dev/null 2>&1 || die "embed -trivial network -landmark_weight 0"
/usr/bin/python3 - "$work/a.h5" "$work/en.h5" "$work/eo.h5" <<'PY' || die "the output map is not embedding = output * output_scale + output_shift"
import h5py, numpy as np, sys
with h5py.File(sys.argv[1], "r") as m:
    shift, scale = m["network/output_shift"][()], m["network/output_scale"][()]
e, raw = (h5py.File(p, "r")["embedding"][()].astype(np.float64) for p in sys.argv[2:4])
assert np.any(np.abs(scale - 1) > 1e-3), "the trained model has an identity output map"
err = np.abs(raw * scale + shift - e).max() / np.abs(e).max()
assert err < 1e-5, "relative difference %g" % err
PY
# The landmarks (the defaults): column 0 from each point's degree among them; columns 1..
# are 0.25 x the network's + 0.75 x z, z the extension of the reference's eigenvectors at
# the landmarks (train keeps them) through the point's graph weights; -landmark_values
# network extends the network's outputs there instead, and so does a model without them
# (written before they were kept), bit for bit. -landmark_weight 0 keeps the network's
# columns 1.. bit for bit, -landmark_weight 1 gives z (an affine map of it) alone. Column 0
# follows the exact trivial eigenvector D^1/2 1 of the density-matched graph (measured r =
# 0.94 here, where the network's column 0 after 60 steps has 0.18); the extension brings
# columns 1.. nearer the exact ones (d_G over the non-trivial directions measured 0.0045
# against the network's 0.325, and 0.237 extending the network's outputs); each embedding
# says where its columns came from.
# The landmark products in float and in bfloat16 (-knn_gemm; auto is bf16 on CPUs with
# bfloat16 dot products): the same embedding bit for bit.
for g in float bf16; do
  run 2 embed -model "$work/a.h5" -input "$work/data.h5" -output "$work/eg.h5" -knn_gemm $g -force >/dev/null 2>&1 || die "embed -knn_gemm $g"
  "$cmp" "$work/e1.h5" "$work/eg.h5" /embedding || die "embed -knn_gemm $g differs from the default's embedding"
done
run 2 embed -model "$work/a.h5" -input "$work/data.h5" -output "$work/ew0.h5" -landmark_weight 0 >/dev/null 2>&1 || die "embed -landmark_weight 0"
run 2 embed -model "$work/a.h5" -input "$work/data.h5" -output "$work/ew1.h5" -landmark_weight 1 >/dev/null 2>&1 || die "embed -landmark_weight 1"
run 2 embed -model "$work/a.h5" -input "$work/data.h5" -output "$work/evn.h5" -landmark_values network >/dev/null 2>&1 || die "embed -landmark_values network"
/usr/bin/python3 - "$work/a.h5" "$work/nophi.h5" <<'PY' || die "cannot write a model without the reference's values at the landmarks"
import h5py, shutil, sys
shutil.copy(sys.argv[1], sys.argv[2])
with h5py.File(sys.argv[2], "r+") as f:
    del f["reference/landmark_phi"]
PY
run 2 embed -model "$work/nophi.h5" -input "$work/data.h5" -output "$work/enp.h5" >"$work/enp.log" 2>&1 || die "embed with a model without the reference's values at the landmarks"
grep -q "keeps no reference values at its landmarks" "$work/enp.log" || die "embed does not say that the model keeps no reference values at its landmarks"
run 2 exact -input "$work/data.h5" -output "$work/x0.h5" -dim 4 -match_batch 160 >/dev/null 2>&1 || die "exact"
for e in e1 ew0 evn; do
  run 2 eval -input "$work/$e.h5" -exact "$work/x0.h5" -json "$work/$e.json" >/dev/null 2>&1 || die "eval $e"
done
/usr/bin/python3 - "$work/e1.h5" "$work/en.h5" "$work/x0.h5" "$work/ew0.h5" "$work/ew1.h5" "$work/e1.json" "$work/ew0.json" \
  "$work/evn.h5" "$work/enp.h5" "$work/a.h5" "$work/evn.json" <<'PY' || die "embed's landmark columns are not what -trivial, -landmark_weight and -landmark_values say"
import h5py, json, numpy as np, sys
a = sys.argv[1:]
fl, fn, f0, f1, fv, fp = (h5py.File(a[i], "r")["embedding"] for i in (0, 1, 3, 4, 7, 8))
el, en, e0, e1, ev = (f[()].astype(np.float64) for f in (fl, fn, f0, f1, fv))
x0 = h5py.File(a[2], "r")["exact/vectors"][:, 0]
assert fl.attrs["trivial"] == b"landmarks" and fn.attrs["trivial"] == b"network", (fl.attrs["trivial"], fn.attrs["trivial"])
assert fl.attrs["landmark_weight"][0] == 0.75 and fn.attrs["landmark_weight"][0] == 0, "landmark_weight attributes"
# what is extended: the reference's vectors at the landmarks, or the network's outputs there,
# which a model without the former gets bit for bit
assert "reference/landmark_phi" in h5py.File(a[9], "r"), "the model keeps no reference values at its landmarks"
assert [f.attrs["landmark_values"] for f in (fl, fv, fp, fn)] == [b"reference", b"network", b"network", b"network"], "landmark_values attributes"
assert np.array_equal(fp[()], fv[()]), "a model without landmark_phi does not embed as -landmark_values network"
assert np.array_equal(ev[:, 0], el[:, 0]), "-landmark_values network moved column 0"
# the two sources differ by far more than float rounding (~1e-6 of the largest entry)
assert np.abs(ev[:, 1:] - el[:, 1:]).max() > 1e-3 * np.abs(el[:, 1:]).max(), "-landmark_values network gives the reference's columns"
assert np.array_equal(e0[:, 1:], en[:, 1:]), "-landmark_weight 0: columns 1.. are not the network's"
assert np.array_equal(e0[:, 0], el[:, 0]) and np.array_equal(e1[:, 0], el[:, 0]), "column 0 moved with -landmark_weight"
err = np.abs(el[:, 1:] - (0.25 * en[:, 1:] + 0.75 * e1[:, 1:])).max() / np.abs(el[:, 1:]).max()
assert err < 1e-5, "the default is not 0.25 network + 0.75 extension (relative %g)" % err
assert not np.allclose(e1[:, 1:], en[:, 1:], atol=1e-3), "the extension equals the network's columns"
r = np.corrcoef(el[:, 0], x0)[0, 1]
assert r > 0.9, "column 0 from the landmarks does not follow the exact trivial eigenvector (r = %g)" % r
ntr = [json.load(open(p))["rows"][0]["d_G_nontrivial"][0] for p in (a[5], a[6], a[10])]
assert ntr[0] < 0.9 * ntr[1], "the extension does not bring columns 1.. nearer the exact ones: d_G %g against the network's %g" % tuple(ntr[:2])
assert ntr[0] < 0.9 * ntr[2], "the reference's values extend no better than the network's: d_G %g against %g" % (ntr[0], ntr[2])
PY
# Orthonormalised output: stored R reproduces the computed map.
run 2 embed -model "$work/a.h5" -input "$work/data.h5" -output "$work/o1.h5" -orthonormalize compute >/dev/null 2>&1 || die "embed -orthonormalize compute"
run 2 embed -model "$work/a.h5" -input "$work/data.h5" -output "$work/o2.h5" -orthonormalize stored >/dev/null 2>&1 || die "embed -orthonormalize stored"
"$cmp" "$work/o1.h5" "$work/o2.h5" /embedding || die "stored orthonormalisation differs from the computed one"

# expect NP PATTERN ARGS...: fails (non-zero, no hang) with PATTERN in the output.
expect() {
  local np=$1 pattern=$2; shift 2
  local out rc
  out=$(run "$np" "$@" 2>&1); rc=$?
  if [[ $rc == 0 || $rc == 124 ]]; then die "np=$np '$*' exited $rc, expected an error matching '$pattern'"
  elif ! grep -q -- "$pattern" <<<"$out"; then die "np=$np '$*': message does not match '$pattern':"; sed 's/^/    /' <<<"$out" | head -5
  fi
}
for np in 2 4; do
  expect $np "has D = 7 features but model" embed -model "$work/a.h5" -input "$work/other_d.h5" -output "$work/x.h5"
  expect $np "model file .*does not exist" embed -model "$work/none.h5" -input "$work/data.h5" -output "$work/x.h5"
  expect $np "is also an input" embed -model "$work/a.h5" -input "$work/data.h5" -output "$work/data.h5" -force
  expect $np "exists; pass -force" train -input "$work/data.h5" -model "$work/a.h5" "${small[@]}"
  expect $np "-anchors 8 must be at least -dim + 1 = 11" train -input "$work/data.h5" -model "$work/x.h5" -anchors 8
  expect $np "-batch 40 must be larger than -anchors 40" train -input "$work/data.h5" -model "$work/x.h5" -anchors 40 -batch 40
  expect $np "-hidden 0 is malformed" train -input "$work/data.h5" -model "$work/x.h5" -hidden 0
  expect $np "-hidden , is malformed" train -input "$work/data.h5" -model "$work/x.h5" -hidden ,
  expect $np "-lr 0.* must be positive" train -input "$work/data.h5" -model "$work/x.h5" -lr 0
  expect $np "-steps 0 must be from 1 to 10000000" train -input "$work/data.h5" -model "$work/x.h5" -steps 0
  expect $np "Unknown option foo for -laplacian" train -input "$work/data.h5" -model "$work/x.h5" -laplacian foo
  expect $np "-knn 200 must be smaller than -batch 160" train -input "$work/data.h5" -model "$work/x.h5" "${small[@]}" -knn 200
done
[[ -z $(find "$work" -name 'x.h5*') ]] || die "failed runs left output files"
exit $fail
