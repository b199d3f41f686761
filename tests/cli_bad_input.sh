#!/usr/bin/env bash
# cli_bad_input.sh BASIS - every malformed input of the foundation issue, at 2 and 4
# ranks: a non-zero exit within the timeout and the expected message; no output left.
# Silent on success; prints each failing case.
set -u
basis=$1
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/basis-bad.XXXXXX")
trap 'rm -rf "$work"' EXIT
# shellcheck source=tests/cli_lib.sh
source "$here/cli_lib.sh"

"$(dirname "$basis")/tests/make_bad_inputs" "$work" || { echo "FAIL: make_bad_inputs"; exit 1; }
"${mpiexec[@]}" -n 2 "$basis" generate -n 50 -d 4 -output "$work/good.h5" >/dev/null || { echo "FAIL: generate"; exit 1; }

for np in 2 4; do
  expect $np "does not exist" info -input "$work/missing.h5"
  expect $np "is not an HDF5 file" info -input "$work/not_hdf5.h5"
  expect $np "has no dataset /features" info -input "$work/no_features.h5"
  expect $np "must be 2-D" info -input "$work/features_1d.h5"
  expect $np "is not numeric" info -input "$work/features_string.h5"
  expect $np "needs at least one point and one feature" info -input "$work/zero_rows.h5"
  expect $np "needs at least one point and one feature" info -input "$work/zero_cols.h5"
  expect $np "/labels has 39 entries but /features has 40 rows" info -input "$work/labels_short.h5"
  expect $np "2 non-finite values .* the first in row 7" info -input "$work/nan.h5"
  expect $np "has 1 point but the run has $np ranks; use at most 1 rank$" info -input "$work/one_row.h5"
  expect $np "directory .* is missing" generate -n 10 -d 2 -output "$work/no/such/dir/out.h5"
  expect $np "exists; pass -force" generate -n 10 -d 2 -output "$work/good.h5"
  expect $np "option -output is given without a value" generate -n 10 -d 2 -output ""
  expect $np "Unknown.*manifol" generate -n 10 -type manifol -output "$work/x.h5"
done
# Nothing was left under a final or temporary name by the failed runs.
left=$(find "$work" -name '*.partial' -o -name 'x.h5' -o -name 'out.h5')
[[ -z $left ]] || { echo "FAIL: failed runs left files: $left"; fail=1; }
# The existing output is untouched.
"${mpiexec[@]}" -n 1 "$basis" info -input "$work/good.h5" >/dev/null || { echo "FAIL: good.h5 damaged"; fail=1; }
exit $fail
