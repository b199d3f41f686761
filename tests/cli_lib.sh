# cli_lib.sh - helpers shared by the command-line tests (sourced, not run). Needs $basis
# (the binary) set first; defines mpiexec, fail=0 and:
#   run NP COMMAND...            must succeed within 120 s; its output is left in $out
#   expect NP PATTERN COMMAND... non-zero exit in <= 60 s, output matches PATTERN
#   json FILE EXPR               a Python expression on the parsed JSON (bound to d)
mpiexec=(mpiexec --oversubscribe --allow-run-as-root)
fail=0

run() { # run NP COMMAND...: must succeed within 120 s; its output is left in $out
  local np=$1; shift
  if ! out=$(timeout 120 "${mpiexec[@]}" -n "$np" "$basis" "$@" 2>&1); then
    echo "FAIL np=$np '$*' failed:"; sed 's/^/    /' <<<"$out" | head -8; fail=1; return 1
  fi
}

# expect NP PATTERN COMMAND... : non-zero exit in <= 60 s, output matches PATTERN
expect() {
  local np=$1 pattern=$2; shift 2
  local out rc
  out=$(timeout 60 "${mpiexec[@]}" -n "$np" "$basis" "$@" 2>&1); rc=$?
  if [[ $rc == 0 ]]; then echo "FAIL np=$np '$*': exit 0, expected an error matching '$pattern'"; fail=1
  elif [[ $rc == 124 ]]; then echo "FAIL np=$np '$*': hung (killed after 60 s)"; fail=1
  elif ! grep -q -- "$pattern" <<<"$out"; then
    echo "FAIL np=$np '$*': message does not match '$pattern':"; sed 's/^/    /' <<<"$out" | head -8; fail=1
  fi
}

# json FILE EXPR: evaluate a Python expression on the parsed JSON (bound to d)
json() { /usr/bin/python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1"; }

