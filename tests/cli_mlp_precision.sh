#!/usr/bin/env bash
# cli_mlp_precision.sh BASIS - the network's products in bfloat16 (-mlp_precision) from the
# command line, at 1 and 2 ranks:
#  * train -mlp_precision bf16 runs, says so in its start line, records mlp_precision =
#    "bf16" in the model, and trains other weights than float (the bfloat16 path ran);
#    -mlp_precision auto, and no -mlp_precision (the default), train the same bytes as bf16;
#    float records "float";
#  * where oneDNN finds no bfloat16 instructions (DNNL_MAX_CPU_ISA=AVX2 pretends so),
#    -mlp_precision bf16 says once that the network uses float and trains a model whose
#    every dataset and whose mlp_precision are those of the float model;
#  * -resume without -mlp_precision continues in the checkpoint's precision: a float
#    checkpoint resumed (constant rate, so an extension is bitwise) gives the float model
#    of an uninterrupted run, where the default would have run bf16; a bf16 checkpoint
#    resumed where oneDNN finds no bfloat16 instructions says once that it uses float;
#  * embed -mlp_precision bf16 of the float model stamps mlp_precision = "bf16" on
#    /embedding and agrees with the float embedding to bfloat16 accuracy (3e-2 of the
#    largest entry), without being bitwise equal.
# That ranks hold bitwise identical replicas in bf16 is checked by test_train (3b): the
# model file holds rank 0's. On a CPU without bfloat16 instructions bf16 and auto run float
# and the comparisons are made accordingly. Silent on success.
set -u
basis=$1
work=$(mktemp -d "${TMPDIR:-/tmp}/basis-mlp-precision.XXXXXX")
trap 'rm -rf "$work"' EXIT
# shellcheck source=tests/cli_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/cli_lib.sh"

run 2 generate -type manifold -n 1600 -d 24 -classes 4 -data_seed 7 -output "$work/x.h5" || exit 1
train=(train -input "$work/x.h5" -steps 20 -batch 300 -anchors 64 -hidden 32,32 -train_monitor 0 -force)
native=0
for np in 1 2; do
  for p in float bf16 auto; do
    run $np "${train[@]}" -model "$work/$p.$np.h5" -mlp_precision $p || continue
    if [[ $p == bf16 ]] && grep -q "bfloat16 products" <<<"$out"; then native=1; fi
  done
  run $np "${train[@]}" -model "$work/default.$np.h5"
  out=$(DNNL_MAX_CPU_ISA=AVX2 timeout 120 "${mpiexec[@]}" -x DNNL_MAX_CPU_ISA -n $np "$basis" "${train[@]}" \
    -model "$work/fallback.$np.h5" -mlp_precision bf16 2>&1) || { echo "FAIL np=$np: fallback run failed"; fail=1; }
  if [[ $(grep -c "mlp_precision bf16: .* has no bfloat16 dot-product instructions; the network uses float" \
    <<<"$out") != 1 ]]; then
    echo "FAIL np=$np: -mlp_precision bf16 without bfloat16 instructions did not say once that it uses float:"
    sed 's/^/    /' <<<"$out" | head -5; fail=1
  fi
  if [[ $np == 1 ]]; then
    cst=(-lr_final 2e-3 -checkpoint_every 0)
    run 1 "${train[@]}" -model "$work/straight.1.h5" -mlp_precision float "${cst[@]}"
    run 1 "${train[@]}" -model "$work/resumed.1.h5" -mlp_precision float "${cst[@]}" -steps 10
    run 1 train -input "$work/x.h5" -model "$work/resumed.1.h5" -resume -steps 20 -train_monitor 0 "${cst[@]}"
    if [[ $native == 1 ]]; then
      run 1 "${train[@]}" -model "$work/bf16ck.1.h5" -mlp_precision bf16 -steps 10 "${cst[@]}"
      out=$(DNNL_MAX_CPU_ISA=AVX2 timeout 120 "${mpiexec[@]}" -x DNNL_MAX_CPU_ISA -n 1 "$basis" train -input \
        "$work/x.h5" -model "$work/bf16ck.1.h5" -resume -steps 20 -train_monitor 0 "${cst[@]}" 2>&1) \
        || { echo "FAIL: -resume of a bf16 checkpoint without bfloat16 instructions failed"; fail=1; }
      if [[ $(grep -c "has no bfloat16 dot-product instructions; the network uses float" <<<"$out") != 1 ]]; then
        echo "FAIL: -resume of a bf16 checkpoint without bfloat16 instructions did not say once that it uses float:"
        sed 's/^/    /' <<<"$out" | head -5; fail=1
      fi
    fi
    run 1 embed -model "$work/float.1.h5" -input "$work/x.h5" -output "$work/e.float.h5" -force
    run 1 embed -model "$work/float.1.h5" -input "$work/x.h5" -output "$work/e.bf16.h5" -force -mlp_precision bf16
  fi
  /usr/bin/python3 - "$work" $np $native <<'PY' || fail=1
import sys, h5py, numpy as np
w, np_, native = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
def walk(path):
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: out.__setitem__(n, o[()].tobytes()) if isinstance(o, h5py.Dataset) else None)
        prec = f.attrs.get("mlp_precision")
    return out, prec.decode() if isinstance(prec, bytes) else prec
bad = 0
def fail(msg):
    global bad
    print(f"FAIL np={np_}: {msg}")
    bad = 1
models = {p: walk(f"{w}/{p}.{np_}.h5") for p in ("float", "bf16", "auto", "default", "fallback")}
ran = "bf16" if native else "float"
want = {"float": "float", "bf16": ran, "auto": ran, "default": ran, "fallback": "float"}
for p, (_, prec) in models.items():
    if prec != want[p]:
        fail(f"-mlp_precision {p}: model attribute mlp_precision is {prec!r}, expected {want[p]!r}")
def diff(a, b):
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
ref = models["float"][0]
if diff(ref, models["fallback"][0]):
    fail(f"the fallback model differs from float's in {diff(ref, models['fallback'][0])[:4]}")
for p in ("auto", "default"):
    if diff(models["bf16"][0], models[p][0]):
        fail(f"-mlp_precision {p} model differs from bf16's in {diff(models['bf16'][0], models[p][0])[:4]}")
if native and "network/params" not in diff(ref, models["bf16"][0]):
    fail("-mlp_precision bf16 trained bitwise the float weights; the bfloat16 path did not run")
if not native and diff(ref, models["bf16"][0]):
    fail("-mlp_precision bf16 without bfloat16 instructions trained other bytes than float")
if np_ == "1":
    straight, resumed = walk(f"{w}/straight.1.h5"), walk(f"{w}/resumed.1.h5")
    if resumed[1] != "float":
        fail(f"-resume of a float checkpoint without -mlp_precision ran {resumed[1]!r}, expected 'float'")
    if diff(straight[0], resumed[0]):
        fail(f"a float run resumed without -mlp_precision differs from the uninterrupted float run in "
             f"{diff(straight[0], resumed[0])[:4]}")
    with h5py.File(f"{w}/e.float.h5", "r") as f, h5py.File(f"{w}/e.bf16.h5", "r") as g:
        ef, eb = f["embedding"][()], g["embedding"][()]
        prec = g["embedding"].attrs.get("mlp_precision")
        prec = prec.decode() if isinstance(prec, bytes) else prec
    if prec != ran:
        fail(f"embed -mlp_precision bf16: /embedding attribute mlp_precision is {prec!r}, expected {ran!r}")
    err = float(np.abs(eb - ef).max() / np.abs(ef).max())
    if err > 3e-2:
        fail(f"embed -mlp_precision bf16 differs from float by {err:.3g} of the largest entry (> 3e-2)")
    if native and err == 0:
        fail("embed -mlp_precision bf16 is bitwise the float embedding; the bfloat16 path did not run")
sys.exit(bad)
PY
done
exit $fail
