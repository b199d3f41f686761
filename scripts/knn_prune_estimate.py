"""knn_prune_estimate.py - how much of a batch's exact kNN a ball bound could skip.

    /usr/bin/python3 scripts/knn_prune_estimate.py FILE.h5 [-m 1024,4096] [-ball 64,128]
                     [-iters 0,5] [-k 10] [-seed 1]

An offline upper estimate for the question of docs/performance.md (can the batch kNN, m^2/2
pairs by DESIGN.md's exact graph rule, skip pairs of point groups that are provably far
apart?). For a batch of m rows drawn from /features of FILE: the rows are grouped into
m / ball k-means clusters (centres: random rows, then `iters` Lloyd iterations); a pair of
clusters (I, J) is needed if some point of either is within reach of the other by the ball
bound d(x, y) >= d(x, c_J) - r_J against its *final* k-th neighbour distance. Prints the
fraction of the m^2/2 pairs in needed cluster pairs. Final lists make it optimistic: a
real pass knows only the lists so far. Uses numpy and h5py (python3-numpy, python3-h5py).
"""
import argparse

import h5py
import numpy as np


def clusters(x, nb, iters, rng):
    """Index arrays of nb k-means clusters (empty ones dropped)."""
    c = x[rng.choice(len(x), nb, replace=False)].copy()
    for it in range(iters + 1):
        a = ((c**2).sum(1)[None] - 2 * x @ c.T).argmin(1)
        if it < iters:
            for j in range(nb):
                if (a == j).any():
                    c[j] = x[a == j].mean(0)
    return [np.where(a == j)[0] for j in range(nb) if (a == j).any()]


def needed_fraction(x, k, groups):
    """Fraction of the m^2/2 pairs in cluster pairs the ball bound cannot skip."""
    n2 = (x**2).sum(1)
    d2 = n2[:, None] + n2[None] - 2 * x @ x.T
    np.fill_diagonal(d2, np.inf)
    kth = np.sqrt(np.maximum(np.partition(d2, k - 1, axis=1)[:, k - 1], 0))
    nb = len(groups)
    reach = np.zeros((nb, nb), bool)  # reach[I, J]: a point of I may have a neighbour in J
    for j, g in enumerate(groups):
        c = x[g].mean(0)
        r = np.sqrt(((x[g] - c) ** 2).sum(1)).max()
        near = np.sqrt(((x - c) ** 2).sum(1)) - r <= kth
        for i, h in enumerate(groups):
            reach[i, j] = near[h].any()
    pairs = 0.0
    for i in range(nb):
        for j in range(i, nb):
            if reach[i, j] or reach[j, i]:
                pairs += len(groups[i]) ** 2 / 2 if i == j else len(groups[i]) * len(groups[j])
    return pairs / (len(x) ** 2 / 2)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file")
    ap.add_argument("-m", default="1024,4096")
    ap.add_argument("-ball", default="64,128")
    ap.add_argument("-iters", default="0,5")
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("-seed", type=int, default=1)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    data = h5py.File(a.file, "r")["features"]
    for m in map(int, a.m.split(",")):
        rows = np.sort(rng.choice(data.shape[0], m, replace=False))
        x = data[rows].astype(np.float64)
        for ball in map(int, a.ball.split(",")):
            for iters in map(int, a.iters.split(",")):
                f = needed_fraction(x, a.k, clusters(x, max(1, m // ball), iters, rng))
                print(f"m {m} ball {ball} iters {iters}: {f:.3f} of the pairs needed", flush=True)


if __name__ == "__main__":
    main()
