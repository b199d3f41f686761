#!/usr/bin/python3
"""bruteforce_exact.py - an independent brute-force route to the exact embedding, to time
`basis exact` against and to cross-check its eigenvectors (issue 4). Run by
scripts/exact-vs-bruteforce; not part of basis.

    bruteforce_exact.py DATA.h5 [-k 10] [-K 10] [-scale_neighbor 7] [-compare EXACT.h5]

The DESIGN.md graph rule written the textbook way: all squared distances by NumPy GEMM in
float64 blocks of rows, the k nearest by argpartition (self excluded), sigma_i = distance
to the scale_neighbor-th neighbour, W = (w + w^T)/2, and the K smallest eigenpairs of
L = I - D^-1/2 W D^-1/2 as the largest of D^-1/2 W D^-1/2 with SciPy's ARPACK (eigsh).
Prints the wall time of each phase; with -compare, the Grassmann distance (DESIGN.md d_G,
centred) between its eigenvectors and /exact/vectors of EXACT.h5, and the largest
eigenvalue difference. NumPy's BLAS is the system's (the serial OpenBLAS after
scripts/setup), so both routes use one core per process; this one runs as one process.
"""
import argparse
import time

import h5py
import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import eigsh


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("-K", type=int, default=10)
    ap.add_argument("-scale_neighbor", type=int, default=7)
    ap.add_argument("-compare")
    a = ap.parse_args()

    t0 = time.time()
    x = h5py.File(a.data, "r")["features"][:].astype(np.float64)
    n = x.shape[0]
    t_read = time.time() - t0

    t0 = time.time()
    sq = np.einsum("ij,ij->i", x, x)
    idx = np.empty((n, a.k), dtype=np.int64)
    d2 = np.empty((n, a.k))
    block = 2048
    for i0 in range(0, n, block):
        i1 = min(n, i0 + block)
        g = sq[i0:i1, None] + sq[None, :] - 2.0 * (x[i0:i1] @ x.T)
        g[np.arange(i1 - i0), np.arange(i0, i1)] = np.inf  # self excluded
        part = np.argpartition(g, a.k, axis=1)[:, : a.k]
        pd = np.take_along_axis(g, part, axis=1)
        order = np.argsort(pd, axis=1, kind="stable")
        idx[i0:i1] = np.take_along_axis(part, order, axis=1)
        d2[i0:i1] = np.maximum(np.take_along_axis(pd, order, axis=1), 0.0)
    t_knn = time.time() - t0

    t0 = time.time()
    sigma2 = d2[:, a.scale_neighbor - 1]
    w = np.exp(-d2 / sigma2[:, None])
    rows = np.repeat(np.arange(n), a.k)
    W = sp.csr_matrix((w.ravel(), (rows, idx.ravel())), shape=(n, n))
    W = 0.5 * (W + W.T)
    deg = np.asarray(W.sum(axis=1)).ravel()
    dm = sp.diags(1.0 / np.sqrt(deg))
    mu, u = eigsh(dm @ W @ dm, k=a.K, which="LA", tol=1e-8)
    order = np.argsort(-mu)
    lam, u = 1.0 - mu[order], u[:, order]
    t_eig = time.time() - t0
    print(f"bruteforce: N {n} D {x.shape[1]} k {a.k}: read {t_read:.1f} s, kNN {t_knn:.1f} s, "
          f"graph + eigsh {t_eig:.1f} s, total {t_read + t_knn + t_eig:.1f} s")
    print("bruteforce: eigenvalues " + " ".join(f"{v:.6g}" for v in lam))

    if a.compare:
        f = h5py.File(a.compare, "r")
        v = f["exact/vectors"][:]
        vals = f["exact/values"][:]

        def basis_of(m):
            q, _ = np.linalg.qr(m - m.mean(axis=0))
            return q

        s = np.linalg.svd(basis_of(u).T @ basis_of(v), compute_uv=False)
        print(f"bruteforce vs {a.compare}: d_G {np.sum(1 - np.minimum(s, 1) ** 2):.2e}, "
              f"max |lambda difference| {np.max(np.abs(vals - lam)):.2e}")


if __name__ == "__main__":
    main()
