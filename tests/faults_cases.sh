# faults_cases.sh - the hostile cases of issue 18 that live in the output writer, the
# options and the input opening; shared by tests/cli_faults.sh (asserts) and
# scripts/bad-input-table (docs). Sourced, not run. Functions:
#
#   faults_setup BASIS WORK   tiny inputs in WORK (1 rank, ~15 s): d.h5 (200 x 5), big.h5
#                             (20000 x 5), mid.h5 (3000 x 5), model m.h5 (D = 5, K = 4),
#                             biglabel.h5 (a label of 3e9, beyond a 32-bit integer),
#                             e.h5 (an embedding), a FIFO, a link to /dev/null, a lock
#                             file of a live run (this shell) and one of another host,
#                             an options file of garbage, and, when root, a full tmpfs
#                             WORK/full (128 KiB) and a nearly full one WORK/near (352 KiB).
#   faults_teardown WORK      unmount the tmpfs (call from an EXIT trap).
#   faults_cases WORK         fill case_name, case_pattern, case_args, case_once (1: the
#                             message must be printed exactly once; 0: once per rank is
#                             accepted for a rank-local check). Full-disk cases only when
#                             WORK/full is mounted.
#
# Every case must exit 1 and leave no out.*, *.partial or new *.lock anywhere in WORK;
# case_args is split on spaces (WORK is a mktemp path without spaces).

faults_setup() {
  local basis=$1 w=$2
  local run=(mpiexec --oversubscribe --allow-run-as-root -n 1 "$basis")
  "${run[@]}" generate -n 200 -d 5 -output "$w/d.h5" &&
    "${run[@]}" generate -n 20000 -d 5 -output "$w/big.h5" &&
    "${run[@]}" generate -n 3000 -d 5 -output "$w/mid.h5" &&
    "${run[@]}" train -input "$w/d.h5" -model "$w/m.h5" -batch 56 -anchors 20 -hidden 16,16 -dim 4 -steps 2 \
      -train_monitor 0 &&
    "${run[@]}" embed -model "$w/m.h5" -input "$w/d.h5" -output "$w/e.h5" || return 1
  mkfifo "$w/fifo" && ln -s /dev/null "$w/null" && ln "$w/d.h5" "$w/d_link.h5" && mkdir "$w/adir" || return 1
  echo "basis $(hostname) $$" >"$w/live.h5.lock"     # a live run of this host: this shell
  echo "basis otherhost.example 4242" >"$w/far.h5.lock" # a run elsewhere: cannot be checked
  /usr/bin/python3 - "$w" <<'PY' || return 1
import sys, h5py, numpy as np
w = sys.argv[1] + "/"
with h5py.File(w + "d.h5", "r") as f, h5py.File(w + "biglabel.h5", "w") as g:
    g["features"] = f["features"][()]
    lab = f["labels"][()].astype(np.int64); lab[7] = 3000000000; g["labels"] = lab  # above INT_MAX
PY
  # random bytes after a first word that no option starts with, so that line 1 is the bad
  # one (random bytes alone may open with a blank or '#' line, which the reader skips)
  { printf 'garbage'; head -c 600 /dev/urandom; } >"$w/garbage.opts"
  printf -- '-steps 3\n' >"$w/good.opts"
  if [[ $(id -u) == 0 ]]; then
    mkdir -p "$w/full" "$w/near"
    mount -t tmpfs -o size=128k tmpfs "$w/full" && mount -t tmpfs -o size=352k tmpfs "$w/near" || return 1
  fi
}

faults_teardown() {
  local w=$1
  for m in full near; do mountpoint -q "$w/$m" 2>/dev/null && umount "$w/$m"; done
  return 0
}

faults_cases() {
  local w=$1
  local T="train -input $w/d.h5 -batch 56 -anchors 20 -hidden 16,16 -dim 4 -steps 2 -train_monitor 0"
  local E="embed -input $w/d.h5 -model $w/m.h5"
  case_name=() case_pattern=() case_args=() case_once=()
  add() { case_name+=("$1"); case_pattern+=("$2"); case_args+=("$3"); case_once+=("${4:-1}"); }
  # outputs that are not regular files, and locks
  add "-output a FIFO, -force" "output .*fifo is a FIFO, not a regular file" "$E -output $w/fifo -force"
  add "-output a link to /dev/null, -force" "output .*null is a device, not a regular file" "$E -output $w/null -force"
  add "-output a directory" "output .* is a directory; give a file name" "$E -output $w/adir -force"
  add "-output locked by a live run" "is being written by another basis run \(pid [0-9]+ on host .*\); wait .* remove .*live.h5.lock" \
    "$E -output $w/live.h5"
  add "-output locked from another host" "pid 4242 on host otherhost.example.*If that run no longer exists, remove .*far.h5.lock" \
    "$E -output $w/far.h5"
  add "-output a hard link of -input" "is also an input" "embed -input $w/d_link.h5 -model $w/m.h5 -output $w/d.h5 -force"
  # inputs that are not regular files (a FIFO blocked every rank forever)
  add "-input a FIFO" "input file .*fifo is not a regular file" "info -input $w/fifo"
  add "embed -input a FIFO" "input file .*fifo is not a regular file" "embed -input $w/fifo -model $w/m.h5 -output $w/out.h5"
  add "/labels above INT_MAX" "/labels in .*biglabel.h5 holds 1 values outside the range of a 32-bit integer" \
    "info -input $w/biglabel.h5"
  add "-input a directory" "input file .* is not a regular file" "info -input $w"
  # options
  add "unknown option -ouput" "unknown option -ouput; did you mean -output\?" "$E -ouput $w/out.h5"
  add "unknown option -stpes" "unknown option -stpes; did you mean -steps\?" "$T -model $w/out.h5 -stpes 3"
  add "unknown option, nothing close" "unknown option -frobnicate;" "$T -model $w/out.h5 -frobnicate 1"
  add "-steps 4294967299" "-steps 4294967299 is out of range" "$T -model $w/out.h5 -steps 4294967299"
  add "-seed 4294967296" "-seed 4294967296 is out of range" "$T -model $w/out.h5 -seed 4294967296"
  add "-batch 2147483648" "-batch 2147483648 is out of range" "$T -model $w/out.h5 -batch 2147483648"
  add "-n -9999999999" "-n -9999999999 is out of range" "generate -n -9999999999 -output $w/out.h5"
  add "generate -noise inf" "-noise inf.? must be a number from 0 to 1e30" "generate -n 50 -noise inf -output $w/out.h5"
  add "-match_batch 56,99999999999" "-match_batch 99999999999 is out of range" \
    "exact -input $w/d.h5 -dim 4 -match_batch 56,99999999999 -output $w/out.h5"
  add "-options_file missing" "-options_file .*nothere.opts does not exist" "$T -model $w/out.h5 -options_file $w/nothere.opts"
  add "-options_file garbage" "-options_file .*garbage.opts line 1 is not an option" "$T -model $w/out.h5 -options_file $w/garbage.opts"
  add "-options_file a directory" "-options_file .* is not a regular file" "$T -model $w/out.h5 -options_file $w"
  add "-align ransac -ransac_points 2" "-ransac_points 2 must be at least -dim \+ -align_extra \+ 1 = 7" \
    "$T -model $w/out.h5 -align ransac -ransac_points 2 -align_extra 2"
  add "-align_extra -2" "-align_extra -2 is out of range; give an integer from -1" "$T -model $w/out.h5 -align_extra -2"
  add "-align_extra too large" "-align_extra 1000: the fit of .* needs at least .* anchors.*raise -anchors or lower -align_extra" \
    "$T -model $w/out.h5 -align_extra 1000"
  # rank-local (every rank checks its own memory): printed once per rank
  add "-hidden too large" "the network .* needs [0-9.]+ GiB per rank.*lower -hidden" \
    "$T -model $w/out.h5 -hidden 999999,999999" 0
  if mountpoint -q "$w/full" 2>/dev/null; then
    # a full disk: refused before any collective write, every rank, no file left
    add "embed to a full disk" "cannot write output .*full/out.h5 .*file system is full.*free space or write it elsewhere" \
      "embed -input $w/big.h5 -model $w/m.h5 -output $w/full/out.h5"
    add "embed to a nearly full disk" "cannot write output .*near/out.h5 .*file system is full" \
      "embed -input $w/big.h5 -model $w/m.h5 -output $w/near/out.h5"
    add "generate to a full disk" "cannot write output .*near/out.h5 .*file system is full" \
      "generate -n 20000 -d 5 -output $w/near/out.h5"
    add "exact to a full disk" "cannot write output .*near/out.h5 .*file system is full" \
      "exact -input $w/mid.h5 -dim 20 -output $w/near/out.h5"
    add "train checkpoint to a full disk" "writing model file .*near/out.h5 failed" \
      "${T/16,16/256,256} -model $w/near/out.h5 -checkpoint_every 1"
  fi
}
