#!/usr/bin/python3
"""h5cmp.py A.h5 B.h5 DATASET [RTOL] - exit 0 when the two datasets have the same shape
and values: bitwise equal when RTOL is omitted, else max |a - b| <= RTOL * max |a|.
Attributes are not compared (they record provenance such as the command's options)."""
import sys
import h5py
import numpy as np

a = h5py.File(sys.argv[1], "r")[sys.argv[3]][()]
b = h5py.File(sys.argv[2], "r")[sys.argv[3]][()]
if a.shape != b.shape:
    print("h5cmp: shapes differ: %s vs %s" % (a.shape, b.shape))
    sys.exit(1)
if len(sys.argv) < 5:
    same = a.tobytes() == b.tobytes()
else:
    same = np.abs(a - b).max() <= float(sys.argv[4]) * max(np.abs(a).max(), 1e-300)
if not same:
    print("h5cmp: %s differs: max |a - b| = %g, max |a| = %g" % (sys.argv[3], np.abs(a - b).max(), np.abs(a).max()))
sys.exit(0 if same else 1)
