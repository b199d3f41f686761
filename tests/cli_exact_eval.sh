#!/usr/bin/env bash
# cli_exact_eval.sh BASIS - `basis exact` and `basis eval` end to end at 1 and 2 ranks:
# the exact file scored against itself gives d_G ~ 0 (also when eval recomputes the
# eigenvectors from the data, and across rank counts), an unrelated embedding a large d_G;
# bad inputs fail within the timeout with a clear message and leave no files behind.
# Silent on success; prints each failing case.
set -u
basis=$1
work=$(mktemp -d "${TMPDIR:-/tmp}/basis-exact.XXXXXX")
trap 'rm -rf "$work"' EXIT
# shellcheck source=tests/cli_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/cli_lib.sh"

# check NAME VALUE OP LIMIT: numeric comparison with awk
check() {
  if ! awk -v v="$2" -v l="$4" "BEGIN { exit !(v $3 l) }"; then echo "FAIL $1: $2 is not $3 $4"; fail=1; fi
}

run 2 generate -n 300 -d 5 -classes 3 -noise 0.05 -data_seed 3 -output "$work/data.h5" >/dev/null || exit 1
run 2 generate -n 200 -d 5 -data_seed 4 -output "$work/data200.h5" >/dev/null || exit 1
run 2 generate -n 300 -d 4 -type circles -data_seed 5 -output "$work/other.h5" >/dev/null || exit 1
h5copy -i "$work/other.h5" -o "$work/random.h5" -s /features -d /embedding || { echo "FAIL: h5copy"; exit 1; }

run 2 exact -input "$work/data.h5" -output "$work/ex.h5" -dim 4 >/dev/null || exit 1
run 1 exact -input "$work/data.h5" -output "$work/ex1.h5" -dim 4 >/dev/null || exit 1
run 2 exact -input "$work/data200.h5" -output "$work/ex200.h5" -dim 4 >/dev/null || exit 1
run 2 exact -input "$work/data.h5" -output "$work/exm.h5" -dim 4 -match_batch 100 >/dev/null || exit 1

# the exact file against itself, and against the same computation at another rank count
run 2 eval -input "$work/ex.h5" -exact "$work/ex.h5" -json "$work/self.json" >/dev/null
check "eval exact vs itself: d_G" "$(json "$work/self.json" "d['rows'][0]['d_G'][0]")" "<" 1e-10
check "eval exact vs itself: d_G non-trivial" "$(json "$work/self.json" "d['rows'][0]['d_G_nontrivial'][0]")" "<" 1e-10
check "eval exact vs itself: |d_G published|" "$(json "$work/self.json" "abs(d['rows'][0]['d_G_published'][0])")" "<" 1e-8
check "eval exact vs itself: 4 sin^2" "$(json "$work/self.json" "len(d['rows'][0]['sin2'][0])")" "==" 4
check "eval exact vs itself: NMI present" "$(json "$work/self.json" "d['rows'][0]['nmi']")" ">" 0
run 2 eval -input "$work/ex1.h5" -exact "$work/ex.h5" -json "$work/ranks.json" >/dev/null
check "exact at 1 vs 2 ranks: d_G" "$(json "$work/ranks.json" "d['rows'][0]['d_G'][0]")" "<" 1e-8
# default JSON name next to the first input
run 2 eval -input "$work/ex.h5" -exact "$work/ex.h5" >/dev/null
[[ -s "$work/ex.h5.eval.json" ]] || { echo "FAIL: no default JSON $work/ex.h5.eval.json"; fail=1; }

# an unrelated embedding is far from the eigenvectors (d_G is at most K = 4 here)
run 2 eval -input "$work/random.h5,$work/ex.h5" -exact "$work/ex.h5" -json "$work/random.json" >/dev/null
check "eval of an unrelated embedding: d_G" "$(json "$work/random.json" "d['rows'][0]['d_G'][0]")" ">" 0.5
check "eval of an unrelated embedding: sum of sin^2 - d_G" \
  "$(json "$work/random.json" "abs(sum(d['rows'][0]['sin2'][0]) - d['rows'][0]['d_G'][0])")" "<" 1e-8
check "eval of an unrelated embedding: d_G non-trivial" "$(json "$work/random.json" "d['rows'][0]['d_G_nontrivial'][0]")" ">" 0.3
check "eval second input: d_G" "$(json "$work/random.json" "d['rows'][1]['d_G'][0]")" "<" 1e-10

# eigenvectors recomputed from the data: same-k and density-matched graphs in one run
run 2 eval -input "$work/ex.h5,$work/exm.h5" -data "$work/data.h5" -match_batch 0,100 -json "$work/data.json" >/dev/null
check "eval -data same-k: d_G of basis exact" "$(json "$work/data.json" "d['rows'][0]['d_G'][0]")" "<" 1e-8
check "eval -data matched: d_G of basis exact -match_batch" "$(json "$work/data.json" "d['rows'][1]['d_G'][1]")" "<" 1e-8
check "eval -data matched: knn" "$(json "$work/data.json" "d['references'][1]['knn']")" "==" 30

# errors, at 2 ranks: clear messages, no hang, no files left
expect 2 "has 200 rows but embedding .* has 300" eval -input "$work/ex.h5" -exact "$work/ex200.h5" -json "$work/x.json"
expect 2 "has 300 rows but .* has 200" eval -input "$work/ex200.h5,$work/ex.h5" -exact "$work/ex200.h5" -json "$work/x.json"
expect 2 "has no dataset /embedding" eval -input "$work/data.h5" -exact "$work/ex.h5" -json "$work/x.json"
expect 2 "has no dataset /exact/vectors" eval -input "$work/ex.h5" -exact "$work/random.h5" -json "$work/x.json"
expect 2 "data .* has 200 points but embedding" eval -input "$work/ex.h5" -data "$work/data200.h5" -json "$work/x.json"
expect 2 "no reference" eval -input "$work/ex.h5" -json "$work/x.json"
expect 2 "either -exact .* or -data" eval -input "$work/ex.h5" -exact "$work/ex.h5" -data "$work/data.h5" -json "$work/x.json"
expect 2 "no embedding given" eval -exact "$work/ex.h5" -json "$work/x.json"
expect 2 "does not exist" eval -input "$work/missing.h5" -exact "$work/ex.h5" -json "$work/x.json"
expect 2 "exists; pass -force" exact -input "$work/data.h5" -output "$work/ex.h5"
expect 2 "-match_batch -1 must be" exact -input "$work/data.h5" -output "$work/x.h5" -match_batch -1
expect 2 "needs 300 neighbours" exact -input "$work/data.h5" -output "$work/x.h5" -match_batch 10
expect 2 "converged .* of the 4 eigenpairs it computes" exact -input "$work/data.h5" -output "$work/x.h5" -dim 4 -exact_eps_max_it 1 -exact_eps_ncv 6
# A graph with a component smaller than -dim + 1 (3 points far from 300, -knn 2): warned,
# naming the component count and the smallest size, at 1 and 2 ranks; the run succeeds.
/usr/bin/python3 - "$work/outlier.h5" <<'PY' || { echo "FAIL: could not write outlier.h5"; fail=1; }
import sys, h5py, numpy as np
r = np.random.default_rng(1)
x = np.vstack([r.normal(size=(300, 4)), r.normal(size=(3, 4)) * 0.01 + 100]).astype(np.float32)
with h5py.File(sys.argv[1], "w") as f:
    f["features"] = x
PY
for np in 1 2; do
  if run $np exact -input "$work/outlier.h5" -output "$work/outlier.ex.h5" -force -knn 2 -scale_neighbor 2 -dim 10; then
    grep -q "connected components .* The smallest has 3 points (fewer than -dim + 1" <<<"$out" \
      || { echo "FAIL np=$np: no warning about the 3-point component:"; sed 's/^/    /' <<<"$out" | head -5; fail=1; }
  fi
done
left=$(find "$work" -name '*.partial' -o -name 'x.h5' -o -name 'x.json')
[[ -z $left ]] || { echo "FAIL: failed runs left files: $left"; fail=1; }
exit $fail
