#!/usr/bin/python3
"""torch_basis.py - a faithful BASiS training step in PyTorch, the peer `basis train` is
timed against (scripts/bench -vs-torch). Not part of basis: a benchmark.

Same algorithm and settings as `basis train` (DESIGN.md): a batch is the l anchors plus
m - l rows drawn uniformly from the other rows; its graph is the one graph rule (k = 10
nearest neighbours, sigma_i = distance to the 7th, W_ij = exp(-d_ij^2 / sigma_i^2),
W = (W + W^T) / 2, L = I - D^-1/2 W D^-1/2); its first K + E eigenvectors (E = --extra, as
basis's -align_extra, with the same default) come from a sparse Krylov solve (SciPy's
ARPACK eigsh on D^-1/2 W D^-1/2, largest algebraic = smallest of L), signs fixed
(largest-magnitude entry positive); an affine least-squares map (K x (K+E+1)) fitted on
the anchors aligns them to the reference eigenvectors Phi_ref (computed once, the same
way, on a reference set of m points); the network (ReLU MLP) learns the standardised
targets with MSE and Adam (lr 2e-3, as basis's default). Batch kNN and network in float32 on torch's CPU
kernels; the eigensolve in float64 as ARPACK needs. With --bf16 the network's forward and
loss run under torch.autocast("cpu", dtype=torch.bfloat16) (bfloat16 products through
torch's oneDNN kernels, float32 weights and Adam): the peer of basis's -mlp_precision bf16.

    torch_basis.py DATA.h5 [--anchors 256] [--batch 1280] [--hidden 512,512,1024]
                   [--dim 10] [--steps 100] [--warmup 10] [--threads 2] [--seed 7] [--extra -1]
                   [--bf16]

Prints one line: "torch: S steps in T s (X ms/step, Y new points/s, threads P)" and the
phases (sample, graph, eig, align, fwd+bwd+adam) in ms per step.
"""
import argparse
import time

import h5py
import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as sla
import torch

ap = argparse.ArgumentParser()
ap.add_argument("data")
ap.add_argument("--anchors", type=int, default=256)
ap.add_argument("--batch", type=int, default=1280)
ap.add_argument("--hidden", default="512,512,1024")
ap.add_argument("--dim", type=int, default=10)
ap.add_argument("--knn", type=int, default=10)
ap.add_argument("--scale_neighbor", type=int, default=7)
ap.add_argument("--steps", type=int, default=100)
ap.add_argument("--warmup", type=int, default=10)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--seed", type=int, default=7)
ap.add_argument("--extra", type=int, default=-1,
                help="batch eigenvectors beyond K in the affine fit, as basis's -align_extra "
                     "(-1: its default, min(20, anchors/8 - dim - 1), at least 0)")
ap.add_argument("--bf16", action="store_true",
                help="network forward and loss under CPU autocast to bfloat16 (weights, Adam in float32)")
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(a.seed)
rng = np.random.default_rng(a.seed)

X = torch.from_numpy(np.asarray(h5py.File(a.data, "r")["features"][()], dtype=np.float32))
N, D = X.shape
K, l, m, k = a.dim, a.anchors, a.batch, a.knn
E = a.extra if a.extra >= 0 else max(0, min(20, l // 8 - K - 1))
mean, scale = X.mean(0), X.std(0).pow(2).mean().sqrt()  # the network's input normalisation
anchors = torch.from_numpy(np.sort(rng.choice(N, l, replace=False)))
others = torch.from_numpy(np.setdiff1d(np.arange(N), anchors.numpy()))


def eigvecs(x, nev):
    """First nev eigenvectors of L_sym of the batch graph on x [n][D] (float64 [n][nev])."""
    n = x.shape[0]
    d2 = torch.cdist(x, x).pow_(2)
    d2.fill_diagonal_(float("inf"))
    dk, ik = torch.topk(d2, k, largest=False)  # ascending, self excluded
    sigma2 = dk[:, a.scale_neighbor - 1 : a.scale_neighbor].clamp_min(1e-30)
    w = torch.exp(-dk / sigma2).double().numpy().ravel()
    rows = np.repeat(np.arange(n), k)
    W = sp.csr_matrix((w, (rows, ik.numpy().ravel())), shape=(n, n))
    W = 0.5 * (W + W.T)
    dinv = 1.0 / np.sqrt(np.asarray(W.sum(1)).ravel())
    A = sp.diags(dinv) @ W @ sp.diags(dinv)
    t = time.perf_counter()
    vals, vecs = sla.eigsh(A, k=nev, which="LA", v0=np.ones(n) / np.sqrt(n))
    vecs = vecs[:, ::-1].copy()  # largest of A = smallest of L
    sign = np.sign(vecs[np.abs(vecs).argmax(0), np.arange(nev)])
    return vecs * sign, time.perf_counter() - t


def draw():
    pick = others[torch.from_numpy(rng.choice(len(others), m - l, replace=False))]
    return torch.cat([X[anchors], X[pick]])


phi_ref, _ = eigvecs(draw(), K)
phi_ref = phi_ref[:l]
shift, spread = phi_ref.mean(0), phi_ref.std(0)
widths = [D] + [int(w) for w in a.hidden.split(",")] + [K]
layers = []
for i in range(len(widths) - 1):
    layers += [torch.nn.Linear(widths[i], widths[i + 1])] + ([torch.nn.ReLU()] if i + 2 < len(widths) else [])
net = torch.nn.Sequential(*layers)
opt = torch.optim.Adam(net.parameters(), lr=2e-3)
phase = dict(sample=0.0, graph=0.0, eig=0.0, align=0.0, network=0.0)
start = None
for s in range(a.warmup + a.steps):
    if s == a.warmup:
        start = time.perf_counter()
        phase = {p: 0.0 for p in phase}
    t0 = time.perf_counter()
    xb = draw()
    t1 = time.perf_counter()
    phi_b, teig = eigvecs(xb, K + E)
    t2 = time.perf_counter()
    B = np.hstack([phi_b, np.ones((m, 1))])
    T, *_ = np.linalg.lstsq(B[:l], phi_ref, rcond=None)
    y = torch.from_numpy(((B @ T - shift) / spread).astype(np.float32))
    t3 = time.perf_counter()
    opt.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):
        out = net((xb - mean) / scale)
    loss = torch.nn.functional.mse_loss(out.float(), y)
    loss.backward()
    opt.step()
    t4 = time.perf_counter()
    phase["sample"] += t1 - t0
    phase["graph"] += t2 - t1 - teig
    phase["eig"] += teig
    phase["align"] += t3 - t2
    phase["network"] += t4 - t3
total = time.perf_counter() - start
print(f"torch: {a.steps} steps in {total:.2f} s ({1e3 * total / a.steps:.1f} ms/step, "
      f"{a.steps * (m - l) / total:.0f} new points/s, threads {a.threads}, "
      f"network {'bfloat16 autocast' if a.bf16 else 'float32'}); per step: "
      + ", ".join(f"{p} {1e3 * v / a.steps:.1f} ms" for p, v in phase.items()))
