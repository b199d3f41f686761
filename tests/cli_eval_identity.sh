#!/usr/bin/env bash
# cli_eval_identity.sh BASIS - `basis eval` checks that the embedding and the reference
# describe the same data (issue 18 item 6), at 1, 2 and 4 ranks: another N or D is an error
# naming both files; another recorded input with the same N and D is a warning (moved or
# copied files) and the run succeeds; the same data passes silently. Also: an embedding
# with the positional attribute of earlier versions (model_step_l_m_R_seed_knn_scaleneighbor)
# still gives eval the model's batch size, and -seed (deprecated) still sets -kmeans_seed.
# Silent on success; prints each failing case.
set -u
basis=$1
work=$(mktemp -d "${TMPDIR:-/tmp}/basis-identity.XXXXXX")
trap 'rm -rf "$work"' EXIT
# shellcheck source=tests/cli_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/cli_lib.sh"

same() { # same NAME A B
  [[ "$2" == "$3" ]] || { echo "FAIL $1: '$2' != '$3'"; fail=1; }
}

w=$work
run 2 generate -n 200 -d 5 -classes 3 -data_seed 3 -output "$w/data.h5" >/dev/null || exit 1
run 2 generate -n 200 -d 5 -classes 3 -data_seed 4 -output "$w/other.h5" >/dev/null || exit 1
run 2 generate -n 200 -d 6 -classes 3 -data_seed 5 -output "$w/wide.h5" >/dev/null || exit 1
run 2 generate -n 300 -d 5 -classes 3 -data_seed 6 -output "$w/n300.h5" >/dev/null || exit 1
cp "$w/data.h5" "$w/copy.h5"
run 1 train -input "$w/data.h5" -model "$w/m.h5" -batch 56 -anchors 20 -hidden 16,16 -dim 4 -steps 2 \
  -train_monitor 0 >/dev/null || exit 1
run 2 embed -model "$w/m.h5" -input "$w/data.h5" -output "$w/e.h5" >/dev/null || exit 1
for d in data other n300; do
  run 2 exact -input "$w/$d.h5" -output "$w/x_$d.h5" -dim 4 >/dev/null || exit 1
done

# the embedding's attributes are named and typed: h5py reads the batch size by name
same "embedding attribute batch" "$(/usr/bin/python3 -c 'import h5py,sys; print(int(h5py.File(sys.argv[1])["embedding"].attrs["batch"][0]))' "$w/e.h5")" 56

for np in 1 2 4; do
  # the same data: no warning
  if run $np eval -input "$w/e.h5" -exact "$w/x_data.h5" -json "$w/ok.json" -force; then
    grep -q "warning" <<<"$out" && { echo "FAIL np=$np: a warning for the same data:"; grep warning <<<"$out"; fail=1; }
  fi
  # another data set of the same shape: a warning naming both files, exit 0
  if run $np eval -input "$w/e.h5" -exact "$w/x_other.h5" -json "$w/other.json" -force; then
    grep -q "warning: .*e.h5 was computed from .*data.h5 but .*x_other.h5 from .*other.h5" <<<"$out" \
      || { echo "FAIL np=$np: no warning for another data set of the same N:"; sed 's/^/    /' <<<"$out" | head -4; fail=1; }
  fi
  # a copy of the data (same N and D): a warning, exit 0
  if run $np eval -input "$w/e.h5" -data "$w/copy.h5" -json "$w/copy.json" -force -match_batch 0; then
    grep -q "warning: .*e.h5 was computed from .*data.h5 but .*copy.h5 from .*copy.h5; N = 200 and D = 5 agree" <<<"$out" \
      || { echo "FAIL np=$np: no warning for a copy of the data:"; sed 's/^/    /' <<<"$out" | head -4; fail=1; }
  fi
  # another D, another N: errors naming both files
  expect $np "e.h5 describes data with D = 5 features but .*wide.h5 data with D = 6" \
    eval -input "$w/e.h5" -data "$w/wide.h5" -json "$w/x.json"
  expect $np "exact file .*x_n300.h5 has 300 rows but embedding .*e.h5 has 200" \
    eval -input "$w/e.h5" -exact "$w/x_n300.h5" -json "$w/x.json"
  expect $np "data .*n300.h5 has 300 points but embedding .*e.h5 has 200 rows" \
    eval -input "$w/e.h5" -data "$w/n300.h5" -json "$w/x.json"
done

# an embedding as earlier versions wrote it: the positional attribute only
/usr/bin/python3 - "$w/e.h5" "$w/legacy.h5" <<'PY' || { echo "FAIL: could not write legacy.h5"; fail=1; }
import shutil, sys, h5py, numpy as np
shutil.copy(sys.argv[1], sys.argv[2])
with h5py.File(sys.argv[2], "r+") as f:
    a = f["embedding"].attrs
    v = [int(a[k][0]) for k in ("step", "anchors", "batch", "reference_size", "seed", "knn", "scale_neighbor")]
    for k in list(a.keys()):  # earlier versions wrote only these besides the positional one
        if k not in ("input", "model", "laplacian", "orthonormalize", "basis_version"):
            del a[k]
    a["model_step_l_m_R_seed_knn_scaleneighbor"] = np.array(v, dtype=np.int64)
PY
for np in 1 2; do
  run $np eval -input "$w/e.h5" -data "$w/data.h5" -json "$w/new.json" -force >/dev/null
  run $np eval -input "$w/legacy.h5" -data "$w/data.h5" -json "$w/legacy.json" -force >/dev/null
  same "np=$np legacy embedding: density-matched m" "$(json "$w/legacy.json" "d['references'][0]['match_batch']")" 56
  same "np=$np legacy embedding: density-matched k" "$(json "$w/legacy.json" "d['references'][0]['knn']")" \
    "$(json "$w/new.json" "d['references'][0]['knn']")"
done

# -seed of eval is deprecated for -kmeans_seed and still sets it
if run 2 eval -input "$w/e.h5" -exact "$w/x_data.h5" -json "$w/seed.json" -force -seed 7; then
  grep -q "option -seed is deprecated .* -kmeans_seed" <<<"$out" || { echo "FAIL: no deprecation note for -seed"; fail=1; }
  same "-seed 7 sets the k-means seed" "$(json "$w/seed.json" "d['seed']")" 7
fi
run 2 eval -input "$w/e.h5" -exact "$w/x_data.h5" -json "$w/kseed.json" -force -kmeans_seed 7 >/dev/null
same "-kmeans_seed 7" "$(json "$w/kseed.json" "d['seed']")" 7
left=$(find "$work" -name '*.partial' -o -name 'x.json')
[[ -z $left ]] || { echo "FAIL: failed runs left files: $left"; fail=1; }
exit $fail
