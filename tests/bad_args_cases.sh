# bad_args_cases.sh - the bad inputs of issue 7 for every subcommand (train, embed, exact,
# eval), shared by tests/cli_bad_args.sh (asserts) and scripts/bad-input-table (docs).
# Sourced, not run. Two functions:
#
#   bad_args_setup BASIS WORK   make the tiny inputs in WORK (1 rank, ~10 s): data d.h5
#                               (200 x 5, labels), d7.h5 (200 x 7), same.h5 (200 identical
#                               points), dupbatch.h5 (2000 x 6, 101 copies of one point),
#                               models m.h5/m7.h5 (2 steps; m0.h5 without landmarks),
#                               embedding e.h5, exact x.h5, ms.h5 (m.h5 with a stored R),
#                               mnp.h5 (m.h5 without the reference's values at the
#                               landmarks, as written before they were kept),
#                               and damaged copies (corrupt, truncated, other format
#                               version, labels out of range) made with h5py.
#   bad_args_cases WORK         fill the arrays case_name, case_pattern, case_args, case_keep.
#
# Every case writes (if anything) to WORK/out.h5 or WORK/out.json, which must not exist
# afterwards, except case_keep (empty for most): the last sound checkpoint of a run that
# failed, which must be a complete model of the step its message names, two before the step
# that failed (a checkpoint is written once the next step has judged its weights).
# case_pattern is a grep -E pattern of the expected error message.
# case_args is one string split on spaces (WORK is a mktemp path without spaces).

bad_args_setup() {
  local basis=$1 w=$2
  local run=(mpiexec --oversubscribe --allow-run-as-root -n 1 "$basis")
  local train=(-batch 56 -anchors 20 -hidden 16,16 -dim 4 -steps 2 -train_monitor 0)
  "${run[@]}" generate -n 200 -d 5 -output "$w/d.h5" &&
    "${run[@]}" generate -n 200 -d 7 -output "$w/d7.h5" &&
    "${run[@]}" train -input "$w/d.h5" -model "$w/m.h5" "${train[@]}" &&
    "${run[@]}" train -input "$w/d7.h5" -model "$w/m7.h5" "${train[@]}" &&
    "${run[@]}" train -input "$w/d.h5" -model "$w/m0.h5" "${train[@]}" -landmarks 0 &&
    "${run[@]}" embed -model "$w/m.h5" -input "$w/d.h5" -output "$w/e.h5" &&
    cp "$w/m.h5" "$w/ms.h5" && cp "$w/m.h5" "$w/good.h5" &&
    "${run[@]}" embed -model "$w/ms.h5" -input "$w/d.h5" -output "$w/es.h5" -orthonormalize compute &&
    "${run[@]}" exact -input "$w/d.h5" -output "$w/x.h5" -dim 4 || return 1
  /usr/bin/python3 - "$w" <<'EOF' || return 1
import shutil, sys
import h5py, numpy as np
w = sys.argv[1] + "/"
open(w + "corrupt.h5", "w").write("not an HDF5 file\n" * 40)
model = open(w + "m.h5", "rb").read()
open(w + "trunc.h5", "wb").write(model[: len(model) // 2])  # superblock intact, data cut
shutil.copy(w + "m.h5", w + "mnp.h5")                        # as trained before landmark_phi was kept
with h5py.File(w + "mnp.h5", "r+") as f:
    del f["reference/landmark_phi"]
shutil.copy(w + "m.h5", w + "ver.h5")                        # another model format version
with h5py.File(w + "ver.h5", "r+") as f:
    f.attrs["format_version"] = np.array([99], np.int64)
with h5py.File(w + "same.h5", "w") as f:                     # all points identical: sigma = 0
    f["features"] = np.ones((200, 5), np.float32)
x = np.random.default_rng(5).normal(size=(2000, 6)).astype(np.float32)
x[1900:] = x[0]                                              # 101 copies of one point: the reference
with h5py.File(w + "dupbatch.h5", "w") as f:                 # copes (k_R large), some batch does not
    f["features"] = x
for name, bad in (("neglabel", -3), ("hugelabel", 2000000000)):  # labels out of range
    shutil.copy(w + "e.h5", w + name + ".h5")
    with h5py.File(w + name + ".h5", "r+") as f:
        lab = f["labels"][()]; lab[5] = bad; f["labels"][...] = lab
# checkpoints for -resume, as copies so the originals stay usable
for src, dst in (("corrupt", "ck_corrupt"), ("trunc", "ck_trunc"), ("ver", "ck_ver"), ("m7", "ck_d7"), ("m", "ck_m")):
    shutil.copy(w + src + ".h5", w + dst + ".h5")
with h5py.File(w + "d.h5", "r") as f, h5py.File(w + "doff.h5", "w") as g:  # same N x D, other data
    for name in f:
        g[name] = f[name][()] + 30 if name == "features" else f[name][()]
# storage this HDF5 cannot read: a filter without its plugin (h5py's LZF), a virtual dataset
with h5py.File(w + "d.h5", "r") as f:
    X = f["features"][()]
with h5py.File(w + "lzf.h5", "w") as g:
    g.create_dataset("features", data=X, compression="lzf")
layout = h5py.VirtualLayout(shape=X.shape, dtype=X.dtype)
layout[...] = h5py.VirtualSource(w + "d.h5", "features", shape=X.shape)
with h5py.File(w + "vds.h5", "w") as g:
    g.create_virtual_dataset("features", layout)
# a model another live run is writing: its lock names this test's (live) process
import os, socket
shutil.copy(w + "m.h5", w + "held.h5")
open(w + "held.h5.lock", "w").write("basis %s %d\n" % (socket.gethostname(), os.getppid()))
EOF
}

bad_args_cases() {
  local w=$1
  local T="train -input $w/d.h5 -batch 56 -anchors 20 -hidden 16,16 -dim 4 -steps 2 -train_monitor 0"
  local E="embed -input $w/d.h5" X="exact -input $w/d.h5 -dim 4" V="eval -input $w/e.h5"
  case_name=() case_pattern=() case_args=() case_keep=()
  add() { case_name+=("$1"); case_pattern+=("$2"); case_args+=("$3"); case_keep+=("${4:-}"); }
  # train: options
  add "train -dim >= -anchors" "-anchors 20 must be at least -dim \+ 1 = 21" "$T -model $w/out.h5 -dim 20"
  add "train -anchors > N" "-anchors 300 exceeds the 200 points" "$T -model $w/out.h5 -anchors 300 -batch 400"
  add "train -batch > N" "fewer than -batch 300 .*use -batch 200 or less" "$T -model $w/out.h5 -batch 300"
  add "train -reference_size > N" "fewer than -reference_size 300; use -reference_size 200 or less" \
    "$T -model $w/out.h5 -reference_size 300"
  add "train -landmarks -2" "-landmarks -2 must be at least 0" "$T -model $w/out.h5 -landmarks -2"
  add "train -landmarks, -laplacian rw" "-landmarks applies to -laplacian sym only .*use -landmarks 0" \
    "$T -model $w/out.h5 -landmarks 50 -laplacian rw"
  add "train -landmarks > R" "-landmarks 150 exceeds the reference set's 100 rows" \
    "$T -model $w/out.h5 -landmarks 150 -reference_size 100"
  add "train -landmarks too few" "-landmarks 1 is too few for their density-matched graph \\(k = 1\\)" \
    "$T -model $w/out.h5 -landmarks 1"
  add "train -batch <= -anchors" "-batch 20 must be larger than -anchors 20" "$T -model $w/out.h5 -batch 20"
  add "train -knn >= -batch" "-knn 56 must be smaller than -batch 56" "$T -model $w/out.h5 -knn 56"
  add "train -hidden 0" "-hidden 0 is malformed" "$T -model $w/out.h5 -hidden 0"
  add "train -hidden ," "-hidden , is malformed" "$T -model $w/out.h5 -hidden ,"
  # a value of the wrong kind: PETSc names the value only; basis names the option, once
  add "train -steps abc" "-steps abc: Input string abc has no integer value" "$T -model $w/out.h5 -steps abc"
  add "train -lr x" "-lr x: Input string x has no numeric value" "$T -model $w/out.h5 -lr x"
  add "train -train_monitor 10" "-train_monitor 10: Unknown logical value: 10" "$T -model $w/out.h5 -train_monitor 10"
  add "train -lr 0" "-lr 0.* must be positive" "$T -model $w/out.h5 -lr 0"
  add "train -lr -1" "-lr -1.* must be positive" "$T -model $w/out.h5 -lr -1"
  add "train -steps 0" "-steps 0 must be from 1 to 10000000" "$T -model $w/out.h5 -steps 0"
  add "train -laplacian foo" "Unknown option foo for -laplacian; choose one of: sym" "$T -model $w/out.h5 -laplacian foo"
  add "train -sample foo" "Unknown option foo for -sample; choose one of: global" "$T -model $w/out.h5 -sample foo"
  add "train -mlp_precision fp8" "Unknown option fp8 for -mlp_precision; choose one of: float bf16 auto" "$T -model $w/out.h5 -mlp_precision fp8"
  add "train input missing" "input file .*/none.h5 does not exist" "${T/d.h5/none.h5} -model $w/out.h5"
  add "train -model = -input" "is also an input; choose another -model" "$T -model $w/d.h5 -force"
  add "train -model exists, no -force" "m.h5 exists; pass -force" "$T -model $w/m.h5"
  add "train identical points" "zero scale .*remove duplicate points" "${T/d.h5/same.h5} -model $w/out.h5"
  add "train -resume corrupt" "ck_corrupt.h5 is not an HDF5 file" "$T -model $w/ck_corrupt.h5 -resume"
  add "train -resume truncated" "ck_trunc.h5: it is truncated or corrupt" "$T -model $w/ck_trunc.h5 -resume"
  add "train -resume other version" "ck_ver.h5 has format 99; this basis reads format" "$T -model $w/ck_ver.h5 -resume"
  add "train -resume other D" "ck_d7.h5 was trained on 200 x 7 data but -input .* is 200 x 5" "$T -model $w/ck_d7.h5 -resume"
  add "train input LZF-compressed" "lzf.h5: /features is compressed with HDF5 filter 32000 \\(lzf\\).*HDF5_PLUGIN_PATH" \
    "${T/d.h5/lzf.h5} -model $w/out.h5"
  add "train input virtual" "vds.h5: /features is a virtual dataset" "${T/d.h5/vds.h5} -model $w/out.h5"
  add "train -resume other data" "-input .*doff.h5 is not the data checkpoint .*ck_m.h5 was trained on" \
    "${T/d.h5/doff.h5} -model $w/ck_m.h5 -resume"
  add "train -resume fewer -steps" "-steps 1 is fewer than the 2 steps checkpoint .*ck_m.h5 was planned for" \
    "${T/-steps 2/-steps 1} -model $w/ck_m.h5 -resume"
  add "train -batch_eps_ncv too small" "-batch_eps_ncv 4 is too small: this solve computes 4 eigenpairs" \
    "$T -model $w/out.h5 -batch_eps_ncv 4"
  add "train -batch_eps_tol -1" "-batch_eps_tol -1.* must be positive" "$T -model $w/out.h5 -batch_eps_tol -1"
  add "train -ref_eps_max_it 0" "-ref_eps_max_it 0 must be at least 1" "$T -model $w/out.h5 -ref_eps_max_it 0"
  # one rank's batch fails (8+ copies of a point: zero scale); every rank stops, no output
  add "train batch fails on one rank" \
    "training step [0-9]+ failed on 1 rank\(s\) .*no checkpoint was written; fix what the reason names and retrain$" \
    "train -input $w/dupbatch.h5 -batch 128 -anchors 40 -hidden 16,16 -dim 4 -steps 200 -train_monitor 0 -checkpoint_every 0 -model $w/out.h5"
  # ... with a checkpoint every step: the last one the failed step had judged is kept
  add "train batch fails after checkpoints" \
    "training step [0-9]+ failed on 1 rank\(s\) .*the last good checkpoint \(step [0-9]+\) is kept in .*keep.h5; fix what the reason names and retrain with -force$" \
    "train -input $w/dupbatch.h5 -batch 128 -anchors 40 -hidden 16,16 -dim 4 -steps 200 -train_monitor 0 -checkpoint_every 1 -model $w/keep.h5" \
    "$w/keep.h5"
  # ... and the failing rank names its reason once, with the step whose batch failed
  add "train batch fails: the reason" "basis: error( \\[rank [0-9]+\\])?: the batch of step [0-9]+: .*zero" \
    "train -input $w/dupbatch.h5 -batch 128 -anchors 40 -hidden 16,16 -dim 4 -steps 200 -train_monitor 0 -checkpoint_every 0 -model $w/out.h5"
  # divergence: -lr 1e6 makes the first Adam step huge, the loss of step 2 is Inf
  add "train non-finite loss" "diverged at step 2 .*no checkpoint was written; lower -lr" \
    "${T/-steps 2/-steps 30} -model $w/out.h5 -lr 1e6 -checkpoint_every 0"
  # ... with a checkpoint due after step 1: the weights of step 1 are what diverged, so it is
  # not written, and -force's model file (good.h5, a copy of m.h5) stays as it was
  add "train non-finite loss over a model, -force" \
    "diverged at step 2 .*no checkpoint was written; lower -lr and retrain with -force" \
    "${T/-steps 2/-steps 30} -model $w/good.h5 -force -lr 1e6 -checkpoint_every 1"
  # embed
  add "embed model missing" "model file .*none.h5 does not exist" "$E -model $w/none.h5 -output $w/out.h5"
  add "embed -chunk 1.5" "-chunk 1.5: Input string 1.5 has no integer value" "$E -model $w/m.h5 -output $w/out.h5 -chunk 1.5"
  add "embed model corrupt" "corrupt.h5 is not an HDF5 file" "$E -model $w/corrupt.h5 -output $w/out.h5"
  add "embed model truncated" "trunc.h5: it is truncated or corrupt" "$E -model $w/trunc.h5 -output $w/out.h5"
  add "embed model other version" "ver.h5 has format 99; this basis reads format" "$E -model $w/ver.h5 -output $w/out.h5"
  add "embed model of another D" "has D = 5 features but model .*m7.h5 was trained on D = 7" "$E -model $w/m7.h5 -output $w/out.h5"
  add "embed input of another D" "d7.h5 has D = 7 features but model .*m.h5 was trained on D = 5" \
    "embed -input $w/d7.h5 -model $w/m.h5 -output $w/out.h5"
  add "embed -output = -input" "is also an input; choose another -output" "$E -model $w/m.h5 -output $w/d.h5 -force"
  add "embed -output = -model" "is also an input; choose another -output" "$E -model $w/m.h5 -output $w/m.h5 -force"
  add "embed output exists, no -force" "e.h5 exists; pass -force" "$E -model $w/m.h5 -output $w/e.h5"
  add "embed -orthonormalize foo" "Unknown option foo for -orthonormalize" "$E -model $w/m.h5 -output $w/out.h5 -orthonormalize foo"
  add "embed -orthonormalize compute, model in training" "held.h5 is being written by another basis run" \
    "$E -model $w/held.h5 -output $w/out.h5 -orthonormalize compute"
  add "embed -trivial foo" "Unknown option foo for -trivial" "$E -model $w/m.h5 -output $w/out.h5 -trivial foo"
  add "embed -trivial landmarks, model without" "model .*m0.h5 cannot give them: the model has no landmarks.*use -trivial network" \
    "$E -model $w/m0.h5 -output $w/out.h5 -trivial landmarks"
  add "embed -orthonormalize stored, other -trivial" "ms.h5's stored orthonormalisation was computed with -trivial landmarks, this embed uses -trivial network" \
    "$E -model $w/ms.h5 -output $w/out.h5 -orthonormalize stored -trivial network"
  add "embed -landmark_weight 2" "-landmark_weight 2.* is not in \\[0, 1\\]" "$E -model $w/m.h5 -output $w/out.h5 -landmark_weight 2"
  add "embed -landmark_values foo" "Unknown option foo for -landmark_values" "$E -model $w/m.h5 -output $w/out.h5 -landmark_values foo"
  add "embed -landmark_weight nan" "-landmark_weight nan.* is not in \\[0, 1\\]" "$E -model $w/m.h5 -output $w/out.h5 -landmark_weight nan"
  add "embed -landmark_weight, model without" "-landmark_weight 0.5: model .*m0.h5 has no usable landmarks: the model has no landmarks.*use -landmark_weight 0" \
    "$E -model $w/m0.h5 -output $w/out.h5 -landmark_weight 0.5"
  add "embed -orthonormalize stored, other -landmark_weight" "ms.h5's stored orthonormalisation was computed with -landmark_weight 0.75, this embed uses 0.5" \
    "$E -model $w/ms.h5 -output $w/out.h5 -orthonormalize stored -landmark_weight 0.5"
  add "embed -orthonormalize stored, -landmark_weight 0" "ms.h5's stored orthonormalisation was computed with -landmark_weight 0.75, this embed uses 0[.]?; embed with -landmark_weight 0.75" \
    "$E -model $w/ms.h5 -output $w/out.h5 -orthonormalize stored -landmark_weight 0"
  add "embed -orthonormalize stored, other -landmark_values" "ms.h5's stored orthonormalisation was computed with -landmark_values reference, this embed uses network" \
    "$E -model $w/ms.h5 -output $w/out.h5 -orthonormalize stored -landmark_values network"
  add "embed -landmark_values reference, model without" "-landmark_values reference: model .*mnp.h5 keeps no /reference/landmark_phi .*use -landmark_values network" \
    "$E -model $w/mnp.h5 -output $w/out.h5 -landmark_values reference"
  add "embed -mlp_precision fp8" "Unknown option fp8 for -mlp_precision" "$E -model $w/m.h5 -output $w/out.h5 -mlp_precision fp8"
  # exact
  add "exact -dim >= N" "200 points, fewer than -dim 200 \+ 1" "$X -output $w/out.h5 -dim 200"
  add "exact -knn >= N" "needs 200 neighbours per point but .* has only 200 points" "$X -output $w/out.h5 -knn 200"
  add "exact -exact_eps_ncv too small" "-exact_eps_ncv 3 is too small: this solve computes 4 eigenpairs" \
    "$X -output $w/out.h5 -exact_eps_ncv 3"
  add "exact -laplacian foo" "Unknown option foo for -laplacian" "$X -output $w/out.h5 -laplacian foo"
  add "exact -match_batch -1" "-match_batch -1 must be a batch size" "$X -output $w/out.h5 -match_batch -1"
  add "exact input corrupt" "corrupt.h5 is not an HDF5 file" "exact -input $w/corrupt.h5 -output $w/out.h5"
  add "exact -output = -input" "is also an input; choose another -output" "$X -output $w/d.h5 -force"
  add "exact output exists, no -force" "x.h5 exists; pass -force" "$X -output $w/x.h5"
  add "exact identical points" "zero scale .*remove duplicate points" "exact -input $w/same.h5 -output $w/out.h5"
  # eval
  add "eval model missing" "model file .*none.h5 does not exist" "$V -data $w/d.h5 -model $w/none.h5 -json $w/out.json"
  add "eval model corrupt" "corrupt.h5 is not an HDF5 file" "$V -data $w/d.h5 -model $w/corrupt.h5 -json $w/out.json"
  add "eval model truncated" "trunc.h5: it is truncated or corrupt" "$V -data $w/d.h5 -model $w/trunc.h5 -json $w/out.json"
  add "eval model other version" "ver.h5 has format 99" "$V -data $w/d.h5 -model $w/ver.h5 -json $w/out.json"
  add "eval model of another D" "-data .*d.h5 has D = 5 features but -model .*m7.h5 was trained on D = 7" \
    "$V -data $w/d.h5 -model $w/m7.h5 -json $w/out.json"
  add "eval embedding missing" "embedding file .*none.h5 does not exist" "eval -input $w/none.h5 -exact $w/x.h5 -json $w/out.json"
  add "eval embedding corrupt" "corrupt.h5 is not an HDF5 file" "eval -input $w/corrupt.h5 -exact $w/x.h5 -json $w/out.json"
  add "eval negative label" "contain the negative value -3" "eval -input $w/neglabel.h5 -exact $w/x.h5 -json $w/out.json"
  add "eval label too large" "contain the value 2000000000, out of range" "eval -input $w/hugelabel.h5 -exact $w/x.h5 -json $w/out.json"
  add "eval -json = -input" "is also an input; choose another -json" "$V -exact $w/x.h5 -json $w/e.h5 -force"
  add "eval -json = -exact" "is also an input; choose another -json" "$V -exact $w/x.h5 -json $w/x.h5 -force"
  add "eval -json exists, no -force" "d.h5 exists; pass -force" "$V -exact $w/x.h5 -json $w/d.h5"
  add "eval identical points" "zero scale .*remove duplicate points" "$V -data $w/same.h5 -json $w/out.json"
  add "eval -laplacian foo" "Unknown option foo for -laplacian" "$V -data $w/d.h5 -json $w/out.json -laplacian foo"
}
