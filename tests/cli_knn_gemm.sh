#!/usr/bin/env bash
# cli_knn_gemm.sh BASIS - the batch kNN's Gram products in bfloat16 (-knn_gemm bf16, auto)
# leave training bitwise unchanged: the kNN lists are exact in either precision, so models
# trained with float, bf16 and auto have the same bytes in every dataset, at 1 and 2 ranks,
# with batches of 1100 points (two Gram blocks: the diagonal and the off-diagonal products).
# And -knn_gemm bf16 where oneDNN finds no bfloat16 instructions (DNNL_MAX_CPU_ISA=AVX2
# pretends so) says once that it uses float, and trains the same model. On a CPU without
# them bf16 and auto run float and the comparison is trivially equal. Silent on success.
set -u
basis=$1
work=$(mktemp -d "${TMPDIR:-/tmp}/basis-knn-gemm.XXXXXX")
trap 'rm -rf "$work"' EXIT
# shellcheck source=tests/cli_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/cli_lib.sh"

run 2 generate -type manifold -n 1600 -d 24 -classes 4 -data_seed 7 -output "$work/x.h5" || exit 1
# -mlp_precision float: DNNL_MAX_CPU_ISA=AVX2 would also turn the network's default (auto)
# from bf16 to float, and this test is about the kNN
train=(train -input "$work/x.h5" -steps 12 -batch 1100 -anchors 64 -hidden 16,16 -train_monitor 0 -force
  -mlp_precision float)
for np in 1 2; do
  for g in float bf16 auto; do run $np "${train[@]}" -model "$work/$g.$np.h5" -knn_gemm $g; done
  out=$(DNNL_MAX_CPU_ISA=AVX2 timeout 120 "${mpiexec[@]}" -x DNNL_MAX_CPU_ISA -n $np "$basis" "${train[@]}" \
    -model "$work/fallback.$np.h5" -knn_gemm bf16 2>&1) || { echo "FAIL np=$np: fallback run failed"; fail=1; }
  if [[ $(grep -c "knn_gemm bf16: .* uses float" <<<"$out") != 1 ]]; then
    echo "FAIL np=$np: -knn_gemm bf16 without bfloat16 instructions did not say once that it uses float:"
    sed 's/^/    /' <<<"$out" | head -5; fail=1
  fi
  /usr/bin/python3 - "$work" $np <<'PY' || fail=1
import sys, h5py
w, np_ = sys.argv[1], sys.argv[2]
def walk(path):
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: out.__setitem__(n, o[()].tobytes()) if isinstance(o, h5py.Dataset) else None)
    return out
ref = walk(f"{w}/float.{np_}.h5")
bad = 0
for g in ("bf16", "auto", "fallback"):
    other = walk(f"{w}/{g}.{np_}.h5")
    diff = sorted(k for k in set(ref) | set(other) if ref.get(k) != other.get(k))
    if diff:
        print(f"FAIL np={np_}: -knn_gemm {g} model differs from float's in {diff[:4]}")
        bad = 1
sys.exit(bad)
PY
done
exit $fail
