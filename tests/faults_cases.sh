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
    X, L = f["features"][()], f["labels"][()]
with h5py.File(w + "part.h5", "w") as g:                 # its writer stopped half-way
    g.create_dataset("features", shape=X.shape, dtype="f4", chunks=(20, 5))[:100] = X[:100]
with h5py.File(w + "unwritten.h5", "w") as g:            # created, never written
    g.create_dataset("features", shape=X.shape, dtype="f4", chunks=(20, 5))
with h5py.File(w + "damaged.h5", "w") as g:              # one chunk's checksum fails
    g.create_dataset("features", data=X, chunks=(20, 5), fletcher32=True)
with h5py.File(w + "damaged.h5", "r") as g:
    off = g["features"].id.get_chunk_info_by_coord((150, 0)).byte_offset
with open(w + "damaged.h5", "r+b") as fh:
    fh.seek(off + 10); fh.write(b"\x01\x02\x03")
with h5py.File(w + "ragged.h5", "w") as g:               # complete, with edge chunks (must be read)
    g.create_dataset("features", data=X, chunks=(64, 3))
with h5py.File(w + "ragged_gz.h5", "w") as g:
    g.create_dataset("features", data=X, chunks=(64, 3), compression="gzip")
with h5py.File(w + "lab2.h5", "w") as g:
    g["features"] = X; g["labels"] = np.stack([L, L], 1)
with h5py.File(w + "tmpdata.h5", "w") as g:              # as a run killed before its rename leaves it
    g["features"] = X
    g.attrs["basis_complete"] = np.array([1], np.int64); g.attrs["basis_temporary_name"] = "tmpdata.h5"
PY
  # random bytes after a first word that no option starts with, so that line 1 is the bad
  # one (random bytes alone may open with a blank or '#' line, which the reader skips)
  { printf 'garbage'; head -c 600 /dev/urandom; } >"$w/garbage.opts"
  printf -- '-steps 3\n' >"$w/good.opts"
  printf -- '-steps 3\n-options_file %s\n' "$w/self.opts" >"$w/self.opts"
  printf -- '-options_file %s\n' "$w/loop_b.opts" >"$w/loop_a.opts"
  printf -- '# b\n-options_file %s\n' "$w/loop_a.opts" >"$w/loop_b.opts"
  printf -- '-steps 3 -input %s\n' "$w/d.h5" >"$w/two.opts"
  printf -- '-resume -force\n' >"$w/twokeys.opts"
  printf -- '-options_file %s\n' "$w/nothere.opts" >"$w/inc_missing.opts"
  printf -- '# a comment\n-monitor_every "7" # inline\n\n-options_file %s\n' "$w/good.opts" >"$w/rich.opts"
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
  # PETSc recursed until it crashed; printed its configure line for two options on a line
  add "-options_file includes itself" "-options_file .*self.opts includes .*self.opts again through -options_file; remove the loop" \
    "$T -model $w/out.h5 -options_file $w/self.opts"
  add "-options_file a -> b -> a" "includes .*loop_a.opts again through -options_file" \
    "$T -model $w/out.h5 -options_file $w/loop_a.opts"
  add "-options_file two options on a line" "-options_file .*two.opts line 1 holds more than one option" \
    "$T -model $w/out.h5 -options_file $w/two.opts"
  add "-options_file '-resume -force' on a line" "-options_file .*twokeys.opts line 1 holds more than one option" \
    "$T -model $w/out.h5 -options_file $w/twokeys.opts"
  add "-options_file including a missing file" "includes .*nothere.opts, which does not exist" \
    "$T -model $w/out.h5 -options_file $w/inc_missing.opts"
  add "-OPTIONS_FILE includes itself" "includes .*self.opts again through -options_file" \
    "$T -model $w/out.h5 -OPTIONS_FILE $w/self.opts"
  # an option without its value kept the default (or the value given before) silently
  add "-steps without a value" "option -steps is given without a value; it needs an integer" "$T -model $w/out.h5 -steps"
  add "-output without a value" "option -output is given without a value" "$E -output -force"
  add "-lr without a value" "option -lr is given without a value; it needs a number" "$T -model $w/out.h5 -lr -force"
  # eval cut a longer list to its maximum without a word
  add "eval of 17 embeddings" "-input lists 17 entries; at most 16" \
    "eval -input $(printf "$w/e.h5,%.0s" {1..16})$w/e.h5 -data $w/d.h5 -json $w/out.json"
  add "eval -match_batch of 5" "-match_batch lists 5 entries; at most 4" \
    "eval -input $w/e.h5 -data $w/d.h5 -match_batch 0,56,60,70,80 -json $w/out.json"
  add "-steps 2000000000" "-steps 2000000000 must be from 1 to 10000000" "$T -model $w/out.h5 -steps 2000000000"
  # data files: chunks never written (hung at 2 ranks), a damaged chunk, odd labels, a file
  # still under the temporary name its writer recorded
  add "/features partly written" "input .*part.h5: /features was only partly written" "info -input $w/part.h5"
  add "/features never written" "input .*unwritten.h5: /features was never written" "info -input $w/unwritten.h5"
  add "/features damaged chunk" "HDF5 read of rows /features in .*damaged.h5 failed: the file is damaged" \
    "info -input $w/damaged.h5"
  add "/labels N x 2" "/labels is a 200 x 2 array but /features has 200 rows; labels must be 200 integers" \
    "info -input $w/lab2.h5"
  add "data under its temporary name" "input file .*tmpdata.h5 is the temporary file of a run that was stopped" \
    "info -input $w/tmpdata.h5"
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
    add "embed to a full disk" "cannot write output .*full/out.h5 .*file system (is full|has [0-9.]+ MiB free); free space or write it elsewhere" \
      "embed -input $w/big.h5 -model $w/m.h5 -output $w/full/out.h5"
    add "embed to a nearly full disk" "cannot write output .*near/out.h5 .*file system (is full|has [0-9.]+ MiB free)" \
      "embed -input $w/big.h5 -model $w/m.h5 -output $w/near/out.h5"
    add "generate to a full disk" "cannot write output .*near/out.h5 .*file system (is full|has [0-9.]+ MiB free)" \
      "generate -n 20000 -d 5 -output $w/near/out.h5"
    add "exact to a full disk" "cannot write output .*near/out.h5 .*file system (is full|has [0-9.]+ MiB free)" \
      "exact -input $w/mid.h5 -dim 20 -output $w/near/out.h5"
    add "train checkpoint to a full disk" "writing model file .*near/out.h5 failed" \
      "${T/16,16/256,256} -model $w/near/out.h5 -checkpoint_every 1"
  fi
}
