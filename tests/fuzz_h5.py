#!/usr/bin/python3
"""fuzz_h5.py BASIS - fuzz the HDF5 reading paths of basis (data files and model files).

Makes a small valid data file (200 x 5, labels) and a small valid model (2 steps) with the
binary, then mutants of both with a fixed seed:
  * truncations at several offsets (inside the superblock, the metadata, the raw data);
  * random byte flips (1-8 bytes per mutant, anywhere in the file);
  * structural changes made with h5py: other shapes, ranks and types of /features,
    /labels, /network/params, /network/widths, /reference/*, missing or malformed
    attributes.
Each data mutant is run through `basis info` and `basis embed` (with the good model),
each model mutant through `basis embed` (with the good data), as one-rank runs with a
timeout. Every run must either succeed -- and then an embedding is N x K float32 with the
right N and K -- or exit with status 1 and a "basis: error" line. A signal, a hang
(timeout), another exit status or an error without our message is a failure.
Silent on success; on failure prints the failures and the mutant count
(BASIS_FUZZ_VERBOSE=1 prints every run's outcome). Two runs at a time (the machine has
2 cores); about 60 s.
"""
import atexit
import concurrent.futures
import os
import random
import shutil
import subprocess
import sys
import tempfile

import h5py
import numpy as np

basis = os.path.abspath(sys.argv[1])
work = tempfile.mkdtemp(prefix="basis-fuzz.", dir=os.environ.get("TMPDIR", "/tmp"))
atexit.register(shutil.rmtree, work, True)  # also when the set-up fails
rng = random.Random(20261201)  # fixed seed: the same mutants on every run
TIMEOUT = 60
verbose = os.environ.get("BASIS_FUZZ_VERBOSE") == "1"


def run(*args, timeout=TIMEOUT):
    """Run `basis ARGS` as a one-rank (singleton) MPI job; (status, output)."""
    try:
        p = subprocess.run([basis, *args], capture_output=True, text=True, timeout=timeout, errors="replace")
        return p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired:
        return "timeout", ""


def path(name):
    return os.path.join(work, name)


# The valid files.
for args in (["generate", "-n", "200", "-d", "5", "-output", path("data.h5")],
             ["train", "-input", path("data.h5"), "-model", path("model.h5"), "-batch", "56", "-anchors", "20",
              "-hidden", "16,16", "-dim", "4", "-steps", "2", "-train_monitor", "0"]):
    status, out = run(*args)
    if status != 0:
        print("fuzz_h5: could not make the valid inputs:", " ".join(args), "\n", out)
        sys.exit(1)
N, K = 200, 4

mutants = []  # (name, kind, file)


def mutant(kind, src, name):
    dst = path(name)
    shutil.copy(path(src), dst)
    mutants.append((name, kind, dst))
    return dst


for kind, src in (("data", "data.h5"), ("model", "model.h5")):
    raw = open(path(src), "rb").read()
    # truncations: inside the superblock, the metadata, and the raw data
    for cut in sorted({8, 96, 512, 2048, len(raw) // 2, len(raw) - 100}):
        if cut < len(raw):
            open(mutant(kind, src, "%s-cut%d.h5" % (kind, cut)), "wb").write(raw[:cut])
    # byte flips anywhere
    for i in range(14):
        b = bytearray(raw)
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        open(mutant(kind, src, "%s-flip%d.h5" % (kind, i)), "wb").write(bytes(b))


def rewrite(kind, src, name, dataset, value):
    """A copy of src with dataset replaced by value (a numpy array) or deleted (None)."""
    with h5py.File(mutant(kind, src, name), "r+") as f:
        del f[dataset]
        if value is not None:
            f[dataset] = value


def set_attr(kind, src, name, attr, value):
    with h5py.File(mutant(kind, src, name), "r+") as f:
        if value is None:
            del f.attrs[attr]
        else:
            f.attrs[attr] = value


with h5py.File(path("data.h5"), "r") as f:
    X, L = f["features"][()], f["labels"][()]
rewrite("data", "data.h5", "data-int.h5", "features", X.astype(np.int32))
rewrite("data", "data.h5", "data-f64.h5", "features", X.astype(np.float64))
rewrite("data", "data.h5", "data-1d.h5", "features", X.ravel())
rewrite("data", "data.h5", "data-3d.h5", "features", X.reshape(200, 5, 1))
rewrite("data", "data.h5", "data-transposed.h5", "features", X.T.copy())
rewrite("data", "data.h5", "data-string.h5", "features", np.array([b"abc"] * 200))
rewrite("data", "data.h5", "data-compound.h5", "features", np.zeros(200, dtype=[("a", "f4"), ("b", "i4")]))
rewrite("data", "data.h5", "data-empty.h5", "features", np.zeros((0, 5), np.float32))
rewrite("data", "data.h5", "data-nofeatures.h5", "features", None)
rewrite("data", "data.h5", "data-labels-float.h5", "labels", L.astype(np.float32))
rewrite("data", "data.h5", "data-labels-2d.h5", "labels", np.stack([L, L], 1))
rewrite("data", "data.h5", "data-labels-short.h5", "labels", L[:100])
with h5py.File(mutant("data", "data.h5", "data-group.h5"), "r+") as f:  # /features a group
    del f["features"]
    f.create_group("features")

with h5py.File(path("model.h5"), "r") as f:
    P, W, PHI = f["network/params"][()], f["network/widths"][()], f["reference/phi"][()]
rewrite("model", "model.h5", "model-params-short.h5", "network/params", P[:-1])
rewrite("model", "model.h5", "model-params-f64.h5", "network/params", P.astype(np.float64))
rewrite("model", "model.h5", "model-params-int.h5", "network/params", P.astype(np.int32))
rewrite("model", "model.h5", "model-params-2d.h5", "network/params", P.reshape(1, -1))
rewrite("model", "model.h5", "model-params-missing.h5", "network/params", None)
rewrite("model", "model.h5", "model-widths-huge.h5", "network/widths", np.array([5, 10**9, 16, 4], np.int64))
rewrite("model", "model.h5", "model-widths-negative.h5", "network/widths", np.array([5, -16, 16, 4], np.int64))
rewrite("model", "model.h5", "model-widths-long.h5", "network/widths", np.arange(1, 200, dtype=np.int64))
rewrite("model", "model.h5", "model-widths-float.h5", "network/widths", W.astype(np.float64))
rewrite("model", "model.h5", "model-phi-shape.h5", "reference/phi", PHI.T.copy())
rewrite("model", "model.h5", "model-anchors-missing.h5", "reference/anchors", None)
set_attr("model", "model.h5", "model-format-missing.h5", "format_version", None)
set_attr("model", "model.h5", "model-format-string.h5", "format_version", "2")
set_attr("model", "model.h5", "model-batch-array.h5", "batch", np.array([56, 56], np.int64))
set_attr("model", "model.h5", "model-batch-float.h5", "batch", 56.5)
set_attr("model", "model.h5", "model-dim-missing.h5", "dim", None)
set_attr("model", "model.h5", "model-laplacian-bad.h5", "laplacian", "foo")
set_attr("model", "model.h5", "model-laplacian-int.h5", "laplacian", 3)
set_attr("model", "model.h5", "model-laplacian-long.h5", "laplacian", "x" * 500)
set_attr("model", "model.h5", "model-complete-missing.h5", "basis_complete", None)
for i, (name, val) in enumerate((("train_size", -5), ("features", 0), ("features", 10**12), ("dim", 10**6),
                                 ("anchors", 3), ("nranks", 0), ("step", 10**9))):
    set_attr("model", "model.h5", "model-value%d.h5" % i, name, np.array([val], np.int64))


def check(job):
    """Run one command on a mutant; None if the outcome is acceptable, else a description."""
    name, args, out_path = job
    status, out = run(*args)
    if verbose:
        err = [line for line in out.splitlines() if line.startswith("basis: error")]
        print("%-42s %-7s %s" % (name, status, err[0][:110] if err else ""), flush=True)
    if status == 0:
        if out_path:
            try:
                with h5py.File(out_path, "r") as f:
                    e = f["embedding"]
                    n = h5py.File(args[args.index("-input") + 1], "r")["features"].shape[0]
                    if e.shape != (n, K) or e.dtype != np.float32:
                        return "%s: succeeded with an embedding of shape %s %s, expected (%d, %d) float32" % (
                            name, e.shape, e.dtype, n, K)
            except Exception as x:  # noqa: BLE001 - any failure to read the output is a failure
                return "%s: succeeded but its output is unreadable: %s" % (name, x)
        return None
    if status == 1 and "basis: error" in out:
        return None
    what = {"timeout": "hung (killed after %d s)" % TIMEOUT}.get(status, "exit status %s" % status)
    if isinstance(status, int) and status < 0:
        what = "killed by signal %d" % -status
    tail = "\n    ".join(out.strip().splitlines()[-4:])
    return "%s: %s: basis %s\n    %s" % (name, what, " ".join(args[:1]), tail)


jobs = []
for name, kind, f in mutants:
    out = path(name + ".emb.h5")
    if kind == "data":
        jobs.append((name + " (info)", ["info", "-input", f], None))
        jobs.append((name + " (embed)", ["embed", "-model", path("model.h5"), "-input", f, "-output", out], out))
    else:
        jobs.append((name + " (embed)", ["embed", "-model", f, "-input", path("data.h5"), "-output", out], out))

with concurrent.futures.ThreadPoolExecutor(2) as pool:
    failures = [r for r in pool.map(check, jobs) if r]
if failures:
    print("fuzz_h5: %d of %d runs on %d mutants failed:" % (len(failures), len(jobs), len(mutants)))
    print("\n".join(failures))
    sys.exit(1)
