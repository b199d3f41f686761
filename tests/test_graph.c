/*
  test_graph - the graph rule against independent references:
    (a) BasisKnnUpdate, block by block in shuffled order, equals a brute-force double
        kNN, exact ties (integer grid, duplicates), large offsets and norms too large for
        the float filter included, within one tile and across several; so does
        BasisKnnSelf (the batch graph's symmetric kNN), over up to three blocks, and with
        its Gram products in bfloat16 (-knn_gemm bf16) the very same lists as in float
        (indices and distances bitwise): Gaussian, exact ties and duplicates, and points
        c + small noise with ||c|| >> noise (the hard case for the margin), D = 1, 3, 50, 784;
    (b) the batch eigensolver equals a dense LAPACK solve of a W built here independently,
        all 3 Laplacians and both scales, eigenvectors with the sign convention;
    (c) two far clusters give two zero eigenvalues and piecewise-constant vectors;
    (d) BasisGraphAssemble + BasisEigensolverSolve (Krylov-Schur and ScaLAPACK) equal the batch
        path on the same points at any rank count;
    (e) duplicate points, too few points, -knn too large and an unconverged solve are
        errors on every rank, not NaNs or hangs;
    (f) a batch graph and an eigensolver reused over several point sets give bitwise what
        fresh objects give, and a disconnected batch is warned about once per object;
    (g) X and c X (c = 1e30, 1e-30, 3.7e25, 2^100, 2^-100) give the same kNN lists and
        eigenpairs, batch and distributed (bitwise for powers of two).
  The serial parts run on every rank; every verdict is agreed over PETSC_COMM_WORLD and
  printed once by rank 0.
*/
#include <basis/eigensolver.h>
#include <basis/exact.h>
#include <basis/graph.h>
#include <basis/h5io.h>
#include <basis/rng.h>
#include "check.h"
#include <petscblaslapack.h>
#include <slepcsys.h>
#include <stdio.h>
#include <string.h>

static PetscReal MaxAll(PetscReal v)
{
  PetscReal all = v;
  MPI_Allreduce(&v, &all, 1, MPIU_REAL, MPIU_MAX, PETSC_COMM_WORLD);
  return all;
}

static void Gaussian(BasisRng *rng, PetscInt n, PetscInt D, PetscReal offset, float x[])
{
  for (PetscInt i = 0; i < n * D; i++) x[i] = (float)(offset + BasisRngNormal(rng));
}

/* Brute force: the k nearest of every point (double, self excluded, ties to the smaller index). */
static PetscErrorCode BruteKnn(PetscInt n, PetscInt D, const float x[], PetscInt k, PetscInt idx[],
                               PetscReal d2[])
{
  PetscFunctionBeginUser;
  for (PetscInt i = 0; i < n; i++) {
    PetscInt  *li = idx + i * k;
    PetscReal *di = d2 + i * k;
    for (PetscInt t = 0; t < k; t++) li[t] = -1, di[t] = PETSC_MAX_REAL;
    for (PetscInt j = 0; j < n; j++) {
      PetscReal d = 0;
      PetscInt  pos;
      if (j == i) continue;
      for (PetscInt c = 0; c < D; c++)
        d += ((double)x[i * D + c] - x[j * D + c]) * ((double)x[i * D + c] - x[j * D + c]);
      if (!(d < di[k - 1] || (d == di[k - 1] && j < li[k - 1]))) continue;
      for (pos = k - 1; pos > 0 && (d < di[pos - 1] || (d == di[pos - 1] && j < li[pos - 1])); pos--)
        di[pos] = di[pos - 1], li[pos] = li[pos - 1];
      di[pos] = d, li[pos] = j;
    }
  }
  PetscFunctionReturn(0);
}

/* The lists of knn (queries q0 .. q0 + knn->nq) against the brute-force lists idx, d2 of all
   points: same indices, distances to 1e-12 relative (zero exactly). */
static PetscErrorCode CheckLists(const char *what, const char *name, const BasisKnn *knn, PetscInt q0,
                                 const PetscInt idx[], const PetscReal d2[])
{
  const PetscInt k       = knn->k;
  PetscInt       bad_idx = 0;
  PetscReal      bad_d2  = 0;

  PetscFunctionBeginUser;
  for (PetscInt i = 0; i < knn->nq; i++)
    for (PetscInt t = 0; t < k; t++) {
      PetscInt  a = knn->idx[i * k + t], b = idx[(q0 + i) * k + t];
      PetscReal da = knn->d2[i * k + t], db = d2[(q0 + i) * k + t];
      if (a != b) bad_idx++;
      bad_d2 = PetscMax(bad_d2, PetscAbsReal(da - db) / PetscMax(1e-300, PetscAbsReal(db)));
      if (db == 0 && da != 0) bad_d2 = 1;
    }
  PetscCall(BasisTestCheck(PETSC_COMM_WORLD, bad_idx == 0,
                           "%s %s: %d neighbour indices differ from brute force", what, name, (int)bad_idx));
  PetscCall(BasisTestCheck(PETSC_COMM_WORLD, bad_d2 < 1e-12,
                           "%s %s: squared distances differ from brute force by %g (relative)", what, name,
                           (double)bad_d2));
  PetscFunctionReturn(0);
}

/*
  (a) queries [q0, q0 + nq) of x against all n points, merged in nblocks blocks of uneven
  sizes in a shuffled order; compared with BruteKnn.
*/
static PetscErrorCode TestKnn(const char *name, PetscInt n, PetscInt D, const float x[], PetscInt k,
                              PetscInt q0, PetscInt nq, PetscInt nblocks, BasisRng *rng)
{
  BasisKnn   knn;
  PetscInt  *idx, *cut, *order;
  PetscReal *d2;

  PetscFunctionBeginUser;
  PetscCall(PetscMalloc4((size_t)n * k, &idx, (size_t)n * k, &d2, nblocks + 1, &cut, nblocks, &order));
  PetscCall(BruteKnn(n, D, x, k, idx, d2));
  /* uneven cuts: sorted random positions */
  cut[0] = 0, cut[nblocks] = n;
  for (PetscInt b = 1; b < nblocks; b++) cut[b] = BasisRngInt(rng, n + 1);
  PetscCall(PetscSortInt(nblocks + 1, cut));
  for (PetscInt b = 0; b < nblocks; b++) order[b] = b;
  for (PetscInt b = nblocks - 1; b > 0; b--) { /* Fisher-Yates */
    PetscInt r = BasisRngInt(rng, b + 1), t = order[b];
    order[b] = order[r], order[r] = t;
  }
  PetscCall(BasisKnnCreate(nq, k, &knn));
  for (PetscInt b = 0; b < nblocks; b++) {
    PetscInt s = cut[order[b]], e = cut[order[b] + 1];
    PetscCall(BasisKnnUpdate(&knn, D, x + (size_t)q0 * D, q0, e - s, x + (size_t)s * D, s));
  }
  PetscCall(CheckLists("knn", name, &knn, q0, idx, d2));
  PetscCall(BasisKnnDestroy(&knn));
  if (q0 == 0 && nq == n) { /* all points: the batch graph's symmetric kNN must agree too */
    PetscCall(BasisKnnCreate(n, k, &knn));
    PetscCall(BasisKnnSelf(&knn, D, x));
    PetscCall(CheckLists("knn self", name, &knn, 0, idx, d2));
    PetscCall(BasisKnnDestroy(&knn));
  }
  PetscCall(PetscFree4(idx, d2, cut, order));
  PetscFunctionReturn(0);
}

/* The side^3 integer grid in 3-D, then ndup copies of grid points first, first + step, ...:
   exact ties at every distance. Returns the number of points written to x. */
static PetscInt GridWithDuplicates(int side, int ndup, int first, int step, float x[])
{
  PetscInt n = 0;

  for (int a = 0; a < side; a++)
    for (int b = 0; b < side; b++)
      for (int c = 0; c < side; c++)
        x[3 * n] = (float)a, x[3 * n + 1] = (float)b, x[3 * n + 2] = (float)c, n++;
  for (int t = 0; t < ndup; t++, n++)
    for (int c = 0; c < 3; c++) x[3 * n + c] = x[3 * (first + step * t) + c];
  return n;
}

static PetscErrorCode TestKnnAll(void)
{
  BasisRng rng;
  float   *x;
  PetscInt n;

  PetscFunctionBeginUser;
  BasisRngSeed(&rng, 11, 0);
  /* random points, many blocks */
  n = 157;
  PetscCall(PetscMalloc1(1100 * 131, &x)); /* the largest n x D below */
  Gaussian(&rng, n, 7, 0.0, x);
  PetscCall(TestKnn("random", n, 7, x, 10, 0, n, 6, &rng));
  PetscCall(TestKnn("random sub-range", n, 7, x, 10, 40, 77, 5, &rng));
  /* far from the origin: float GEMM cancels badly, the exact recomputation must not */
  Gaussian(&rng, n, 7, 1000.0, x);
  PetscCall(TestKnn("offset 1000", n, 7, x, 10, 0, n, 4, &rng));
  /* integer grid 5 x 5 x 5 plus duplicates: exact ties at every distance */
  n = GridWithDuplicates(5, 6, 17, 5, x);
  PetscCall(TestKnn("grid ties", n, 3, x, 10, 0, n, 7, &rng));
  PetscCall(TestKnn("grid ties k=1", n, 3, x, 1, 3, n - 3, 3, &rng));
  PetscCall(TestKnn("grid ties k=1, all points", n, 3, x, 1, 0, n, 3, &rng)); /* BasisKnnSelf at k = 1 */
  /* long lists take the selection + sort-merge path (k > BASIS_KNN_SMALL_K = 32) */
  PetscCall(TestKnn("grid ties k=60", n, 3, x, 60, 0, n, 5, &rng));
  /* larger than one GEMM tile in both directions */
  n = 2300;
  Gaussian(&rng, n, 3, 0.0, x);
  PetscCall(TestKnn("tiles", n, 3, x, 10, 0, n, 2, &rng));
  PetscCall(TestKnn("tiles k=150", n, 3, x, 150, 0, n, 3, &rng));
  Gaussian(&rng, n, 1, 0.0, x);
  PetscCall(TestKnn("tiles D=1", n, 1, x, 10, 0, n, 2, &rng));
  /* ties across tiles: a 14^3 integer grid (2744 points) plus duplicates */
  n = GridWithDuplicates(14, 40, 0, 61, x);
  PetscCall(TestKnn("grid ties, tiles", n, 3, x, 10, 0, n, 3, &rng));
  /* BasisKnnSelf's last tile holding fewer than k + 1 points (its lists start partial) */
  n = 2 * 1024 + 4;
  Gaussian(&rng, n, 6, 100.0, x);
  PetscCall(TestKnn("small last tile, offset 100", n, 6, x, 10, 0, n, 2, &rng));
  /* three blocks of BasisKnnSelf (pairs of blocks read from both sides) */
  n = 3000;
  Gaussian(&rng, n, 5, 0.0, x);
  PetscCall(TestKnn("three blocks", n, 5, x, 10, 0, n, 2, &rng));
  /* squared norms above 1e30: the float filter is off, every pair gets the double bound */
  n = 300;
  for (PetscInt i = 0; i < n * 4; i++) x[i] = (float)(1e15 * BasisRngNormal(&rng));
  PetscCall(TestKnn("norms above 1e30", n, 4, x, 10, 0, n, 2, &rng));
  /* D >= BASIS_DIST2_WIDE (128): the exact distances in eight lanes, D mod 8 = 3 left over;
     two blocks of BasisKnnSelf, far from the origin */
  n = 1100;
  Gaussian(&rng, n, 131, 100.0, x);
  PetscCall(TestKnn("D=131, offset 100", n, 131, x, 10, 0, n, 2, &rng));
  /* and exact ties there: coordinates in {0, 1, 2}, integer squared distances */
  n = 400;
  for (PetscInt i = 0; i < n * 131; i++) x[i] = (float)(BasisRngUniform(&rng) < 0.5 ? 0 : 1 + (i % 2));
  PetscCall(TestKnn("D=131, integer ties", n, 131, x, 10, 0, n, 3, &rng));
  PetscCall(PetscFree(x));
  PetscFunctionReturn(0);
}

/*
  (a) with bfloat16: BasisKnnSelf of the n points x [n][D] with float and with bfloat16 Gram
  products; both must equal brute force and each other bitwise (idx and d2). Where oneDNN
  has no bfloat16 matmul the second run is float again (nothing more to check).
*/
static PetscErrorCode TestKnnBf16(const char *name, PetscInt n, PetscInt D, const float x[], PetscInt k)
{
  BasisKnn         kf, kb;
  BasisKnnGemmType used;
  PetscInt        *idx;
  PetscReal       *d2;
  PetscBool        same;

  PetscFunctionBeginUser;
  PetscCall(PetscMalloc2((size_t)n * k, &idx, (size_t)n * k, &d2));
  PetscCall(BruteKnn(n, D, x, k, idx, d2));
  PetscCall(BasisKnnCreate(n, k, &kf));
  PetscCall(BasisKnnCreate(n, k, &kb));
  PetscCall(BasisKnnSelf(&kf, D, x));
  PetscCall(CheckLists("knn self float", name, &kf, 0, idx, d2));
  PetscCall(BasisKnnSetGemm(&kb, BASIS_KNN_GEMM_BF16, &used));
  PetscCall(BasisKnnSelf(&kb, D, x));
  PetscCall(CheckLists("knn self bf16", name, &kb, 0, idx, d2));
  same = (PetscBool)(!memcmp(kf.idx, kb.idx, sizeof(PetscInt) * n * k) &&
                     !memcmp(kf.d2, kb.d2, sizeof(PetscReal) * n * k));
  PetscCall(BasisTestCheck(PETSC_COMM_WORLD, same, "knn self %s: bf16 and float lists are not bitwise equal",
                           name));
  PetscCall(BasisKnnDestroy(&kf));
  PetscCall(BasisKnnDestroy(&kb));
  PetscCall(PetscFree2(idx, d2));
  PetscFunctionReturn(0);
}

/* c + noise: a common centre c (Gaussian times scale) plus unit Gaussian noise per point. */
static void CentredNoise(BasisRng *rng, PetscInt n, PetscInt D, PetscReal scale, float x[])
{
  for (PetscInt d = 0; d < D; d++) x[d] = (float)(scale * BasisRngNormal(rng));
  for (PetscInt i = n - 1; i >= 0; i--)
    for (PetscInt d = 0; d < D; d++) x[i * D + d] = (float)(x[d] + BasisRngNormal(rng));
}

static PetscErrorCode TestKnnBf16All(void)
{
  BasisRng rng;
  float   *x;
  PetscInt n;

  PetscFunctionBeginUser;
  BasisRngSeed(&rng, 23, 0);
  PetscCall(PetscMalloc1(2800 * 3 + 1100 * 50 + 700 * 784, &x)); /* more than the largest below */
  /* Gaussian, one block and two (the off-diagonal strips) */
  Gaussian(&rng, 1500, 1, 0.0, x);
  PetscCall(TestKnnBf16("Gaussian D=1", 1500, 1, x, 10));
  Gaussian(&rng, 1100, 50, 0.0, x);
  PetscCall(TestKnnBf16("Gaussian D=50", 1100, 50, x, 10));
  Gaussian(&rng, 700, 784, 0.0, x);
  PetscCall(TestKnnBf16("Gaussian D=784", 700, 784, x, 10));
  /* exact ties at every distance and duplicates, three blocks */
  n = GridWithDuplicates(14, 40, 0, 61, x);
  PetscCall(TestKnnBf16("grid ties and duplicates D=3", n, 3, x, 10));
  /* integer coordinates: ties; then every point duplicated */
  for (PetscInt i = 0; i < 1100 * 50; i++) x[i] = (float)(BasisRngUniform(&rng) < 0.5 ? 0 : 1 + (i % 3));
  PetscCall(TestKnnBf16("integer ties D=50", 1100, 50, x, 10));
  for (PetscInt i = 0; i < 300 * 784; i++) x[i] = (float)(BasisRngUniform(&rng) < 0.8 ? 0 : 1);
  PetscCall(PetscArraycpy(x + 300 * 784, x, 300 * 784));
  PetscCall(TestKnnBf16("binary with duplicates D=784", 600, 784, x, 10));
  /* ||c|| >> noise: bfloat16 rounds c + noise by more than the distances between the
     points; only the margin keeps the true neighbours (the float products too, at
     1000 on D = 1) */
  CentredNoise(&rng, 1500, 1, 1000.0, x);
  PetscCall(TestKnnBf16("c + noise, |c| ~ 1000, D=1", 1500, 1, x, 10));
  CentredNoise(&rng, 1100, 50, 30.0, x);
  PetscCall(TestKnnBf16("c + noise, |c| ~ 30, D=50", 1100, 50, x, 10));
  CentredNoise(&rng, 700, 784, 30.0, x);
  PetscCall(TestKnnBf16("c + noise, |c| ~ 30, D=784", 700, 784, x, 10));
  /* duplicates far from the origin: c + integer offsets in {0, 1} */
  for (PetscInt i = 0; i < 1100 * 50; i++) x[i] = (float)(100.0 + (BasisRngUniform(&rng) < 0.5 ? 0 : 1));
  PetscCall(TestKnnBf16("c + binary offsets, |c| ~ 700, D=50", 1100, 50, x, 10));
  PetscCall(PetscFree(x));
  PetscFunctionReturn(0);
}

/* Reference eigenpairs of the graph of x built here from the brute-force kNN: lam [m]
   ascending, V [m][m] column-major, unit columns, sign convention. */
static PetscErrorCode DenseReference(const BasisGraphParams *p, PetscInt m, PetscInt D, const float x[],
                                     PetscReal lam[], PetscReal V[])
{
  PetscInt     k = p->knn, s = p->scale_neighbor;
  PetscInt    *idx;
  PetscReal   *d2, *sigma, *W, *deg, *B, *work;
  PetscBLASInt n, lwork, info, one = 1;

  PetscFunctionBeginUser;
  PetscCall(PetscMalloc7((size_t)m * k, &idx, (size_t)m * k, &d2, m, &sigma, (size_t)m * m, &W, m, &deg,
                         (size_t)m * m, &B, 10 * (size_t)m, &work));
  PetscCall(BruteKnn(m, D, x, k, idx, d2));
  for (PetscInt i = 0; i < m; i++) sigma[i] = PetscSqrtReal(d2[i * k + s - 1]);
  if (p->scale == BASIS_SCALE_MEDIAN) {
    PetscReal *sorted = deg, med;
    PetscCall(PetscArraycpy(sorted, sigma, m));
    PetscCall(PetscSortReal(m, sorted));
    med = m % 2 ? sorted[m / 2] : 0.5 * (sorted[m / 2 - 1] + sorted[m / 2]);
    for (PetscInt i = 0; i < m; i++) sigma[i] = med;
  }
  /* W_ij = (w_ij + w_ji) / 2, each term present when j in kNN(i) (resp. i in kNN(j)) */
  for (PetscInt i = 0; i < m; i++)
    for (PetscInt j = 0; j < m; j++) {
      PetscReal wij = 0, wji = 0;
      for (PetscInt t = 0; t < k; t++) {
        if (idx[i * k + t] == j) wij = PetscExpReal(-d2[i * k + t] / (sigma[i] * sigma[i]));
        if (idx[j * k + t] == i) wji = PetscExpReal(-d2[j * k + t] / (sigma[j] * sigma[j]));
      }
      W[i * m + j] = 0.5 * (wij + wji);
    }
  for (PetscInt i = 0; i < m; i++) {
    deg[i] = 0;
    for (PetscInt j = 0; j < m; j++) deg[i] += W[i * m + j];
  }
  n = (PetscBLASInt)m, lwork = 10 * n;
  if (p->laplacian == BASIS_LAPLACIAN_SYM) {
    for (PetscInt i = 0; i < m; i++)
      for (PetscInt j = 0; j < m; j++)
        V[i * m + j] = (i == j) - W[i * m + j] / PetscSqrtReal(deg[i] * deg[j]);
    LAPACKsyev_("V", "U", &n, V, &n, lam, work, &lwork, &info);
  } else {
    /* D - W, and for rw the generalised problem (D - W) v = lambda D v */
    for (PetscInt i = 0; i < m; i++)
      for (PetscInt j = 0; j < m; j++) {
        V[i * m + j] = (i == j ? deg[i] : 0) - W[i * m + j];
        B[i * m + j] = i == j ? deg[i] : 0;
      }
    if (p->laplacian == BASIS_LAPLACIAN_UNNORMALIZED)
      LAPACKsyev_("V", "U", &n, V, &n, lam, work, &lwork, &info);
    else
      LAPACKsygv_(&one, "V", "U", &n, V, &n, B, &n, lam, work, &lwork, &info);
  }
  PetscCheck(info == 0, PETSC_COMM_SELF, PETSC_ERR_LIB, "reference LAPACK failed: info %d", (int)info);
  for (PetscInt j = 0; j < m; j++) {
    PetscReal *v = V + j * m, nrm = 0, best = -1;
    PetscInt   arg = 0;
    for (PetscInt i = 0; i < m; i++) nrm += v[i] * v[i];
    nrm = PetscSqrtReal(nrm);
    for (PetscInt i = 0; i < m; i++) {
      v[i] /= nrm;
      if (PetscAbsReal(v[i]) > best) best = PetscAbsReal(v[i]), arg = i;
    }
    if (v[arg] < 0)
      for (PetscInt i = 0; i < m; i++) v[i] = -v[i];
  }
  PetscCall(PetscFree7(idx, d2, sigma, W, deg, B, work));
  PetscFunctionReturn(0);
}

/* (b) batch path against the dense reference, every Laplacian and scale, K = 10 and 20 (the
   Krylov subspace is then K + 15, below SLEPc's 2 K: graph.c). */
static PetscErrorCode TestBatchDense(void)
{
  const PetscInt   m = 60, D = 4, Kmax = 20;
  BasisGraphParams p;
  BasisBatchGraph  bg;
  BasisRng         rng;
  float           *x;
  PetscReal       *phi, *lambda, *lam, *V;

  PetscFunctionBeginUser;
  BasisRngSeed(&rng, 12, 0);
  BasisGraphParamsDefault(&p);
  PetscCall(
      PetscMalloc5((size_t)m * D, &x, (size_t)m * Kmax, &phi, Kmax, &lambda, m, &lam, (size_t)m * m, &V));
  Gaussian(&rng, m, D, 0.0, x);
  /* the sparse Krylov route, solved tightly, must give the dense answer too */
  PetscCall(PetscOptionsSetValue(NULL, "-batch_eps_tol", "1e-13"));
  for (PetscInt K = 10; K <= Kmax; K += 10)
    for (int solver = BASIS_BATCH_DENSE; solver <= BASIS_BATCH_KRYLOV; solver++)
      for (int sc = 0; sc < 2; sc++)
        for (int lt = 0; lt < 3; lt++) {
          PetscReal elam = 0, evec = 0, gap = PETSC_MAX_REAL;
          p.K            = K;
          p.batch_solver = (BasisBatchSolverType)solver;
          p.scale        = (BasisScaleType)sc;
          p.laplacian    = (BasisLaplacianType)lt;
          PetscCall(BasisBatchGraphCreate(&p, m, D, &bg));
          /* twice: the second call reuses the workspace and must give the same answer */
          PetscCall(BasisBatchGraphEmbed(bg, x, phi, lambda));
          PetscCall(BasisBatchGraphEmbed(bg, x, phi, lambda));
          PetscCall(BasisBatchGraphDestroy(&bg));
          PetscCall(DenseReference(&p, m, D, x, lam, V));
          for (PetscInt j = 0; j < p.K; j++) {
            elam = PetscMax(elam, PetscAbsReal(lambda[j] - lam[j]));
            gap  = PetscMin(gap, lam[j + 1] - lam[j]);
            for (PetscInt i = 0; i < m; i++)
              evec = PetscMax(evec, PetscAbsReal(phi[i * p.K + j] - V[j * m + i]));
          }
          PetscCall(BasisTestCheck(PETSC_COMM_WORLD, elam < 1e-10,
                                   "batch %s/%s/%s K %d: eigenvalues differ from dense LAPACK by %g",
                                   BasisBatchSolverTypes[solver], BasisScaleTypes[sc],
                                   BasisLaplacianTypes[lt], (int)K, (double)elam));
          /* eigenvectors are defined only where the spectrum is simple; this data set's is */
          PetscCall(BasisTestCheck(PETSC_COMM_WORLD, gap > 1e-4,
                                   "batch %s/%s K %d: test data has a near-multiple eigenvalue (gap %g)",
                                   BasisScaleTypes[sc], BasisLaplacianTypes[lt], (int)K, (double)gap));
          PetscCall(BasisTestCheck(PETSC_COMM_WORLD, evec < 1e-8,
                                   "batch %s/%s/%s K %d: eigenvectors differ from dense LAPACK by %g",
                                   BasisBatchSolverTypes[solver], BasisScaleTypes[sc],
                                   BasisLaplacianTypes[lt], (int)K, (double)evec));
        }
  PetscCall(PetscOptionsClearValue(NULL, "-batch_eps_tol"));
  PetscCall(PetscFree5(x, phi, lambda, lam, V));
  PetscFunctionReturn(0);
}

/* PETSc's printing, replaced while a test expects a warning: counts the lines that
   mention connected components and prints nothing. */
static int warnings = 0;

static PetscErrorCode CountWarnings(FILE *fd, const char *format, va_list ap)
{
  char line[1024];

  vsnprintf(line, sizeof(line), format, ap);
  if (strstr(line, "connected components")) warnings++;
  return 0;
}

/* (c) two clusters 100 apart: two connected components. */
static PetscErrorCode TestTwoClusters(void)
{
  const PetscInt m = 60, D = 3, half = 30;
  PetscErrorCode (*print)(FILE *, const char *, va_list) = PetscVFPrintf;
  BasisGraphParams p;
  BasisBatchGraph  bg;
  BasisRng         rng;
  float           *x;
  PetscReal       *phi, lambda[4];

  PetscFunctionBeginUser;
  BasisRngSeed(&rng, 13, 0);
  BasisGraphParamsDefault(&p);
  p.K = 4;
  PetscCall(PetscMalloc2((size_t)m * D, &x, (size_t)m * p.K, &phi));
  Gaussian(&rng, m, D, 0.0, x);
  for (PetscInt i = half; i < m; i++) x[i * D] += 100.0f;
  PetscCall(PetscOptionsSetValue(NULL, "-batch_eps_tol", "1e-12"));
  for (int solver = BASIS_BATCH_DENSE; solver <= BASIS_BATCH_KRYLOV; solver++)
    for (int sc = 0; sc < 2; sc++)
      for (int lt = 0; lt < 3; lt++) {
        PetscReal spread = 0;
        p.batch_solver   = (BasisBatchSolverType)solver;
        p.scale          = (BasisScaleType)sc;
        p.laplacian      = (BasisLaplacianType)lt;
        PetscCall(BasisBatchGraphCreate(&p, m, D, &bg));
        /* twice: both routes warn about the two components, and one object only once */
        warnings      = 0;
        PetscVFPrintf = CountWarnings;
        PetscCall(BasisBatchGraphEmbed(bg, x, phi, lambda));
        PetscCall(BasisBatchGraphEmbed(bg, x, phi, lambda));
        PetscVFPrintf = print;
        PetscCall(BasisBatchGraphDestroy(&bg));
        PetscCall(BasisTestCheck(PETSC_COMM_WORLD, warnings == 1,
                                 "two clusters %s/%s/%s: %d warnings about connected components, expected 1",
                                 BasisBatchSolverTypes[solver], BasisScaleTypes[sc], BasisLaplacianTypes[lt],
                                 warnings));
        PetscCall(BasisTestCheck(PETSC_COMM_WORLD,
                                 PetscAbsReal(lambda[0]) < 1e-10 && PetscAbsReal(lambda[1]) < 1e-10,
                                 "two clusters %s/%s/%s: "
                                 "lambda_0 = %g, lambda_1 = %g, expected 0 (two components)",
                                 BasisBatchSolverTypes[solver], BasisScaleTypes[sc], BasisLaplacianTypes[lt],
                                 (double)lambda[0], (double)lambda[1]));
        PetscCall(BasisTestCheck(PETSC_COMM_WORLD, lambda[2] > 1e-3,
                                 "two clusters %s/%s/%s: lambda_2 = %g should be clearly positive",
                                 BasisBatchSolverTypes[solver], BasisScaleTypes[sc], BasisLaplacianTypes[lt],
                                 (double)lambda[2]));
        if (p.laplacian == BASIS_LAPLACIAN_SYM) continue;
        /* D - W and rw: the null space is spanned by the cluster indicators */
        for (PetscInt j = 0; j < 2; j++)
          for (PetscInt i = 0; i < m; i++) {
            PetscInt r = i < half ? 0 : half;
            spread     = PetscMax(spread, PetscAbsReal(phi[i * p.K + j] - phi[r * p.K + j]));
          }
        PetscCall(BasisTestCheck(PETSC_COMM_WORLD, spread < 1e-8,
                                 "two clusters %s/%s/%s: null vectors vary by %g within a cluster",
                                 BasisBatchSolverTypes[solver], BasisScaleTypes[sc], BasisLaplacianTypes[lt],
                                 (double)spread));
      }
  PetscCall(PetscOptionsClearValue(NULL, "-batch_eps_tol"));
  PetscCall(PetscFree2(x, phi));
  PetscFunctionReturn(0);
}

/* The distributed solve of W with a fresh eigensolver of options prefix prefix. */
static PetscErrorCode GraphSolve(const char *prefix, const BasisGraphParams *p, Mat W, PetscReal phi[],
                                 PetscReal lambda[], PetscReal residual[])
{
  BasisEigensolver es;

  PetscFunctionBeginUser;
  PetscCall(BasisEigensolverCreate(PETSC_COMM_WORLD, prefix, &es));
  PetscCall(BasisEigensolverSetProblem(es, p));
  PetscCall(BasisEigensolverSetFromOptions(es));
  PetscCall(BasisEigensolverSolve(es, W, phi, lambda, residual));
  PetscCall(BasisEigensolverDestroy(&es));
  PetscFunctionReturn(0);
}

/* This rank's kNN lists of x [n][D], merged block by block starting at a rank-dependent
   block, as in a ring exchange. */
static PetscErrorCode DistributedKnn(PetscInt n, PetscInt D, const float x[], PetscInt k, PetscInt *rstart,
                                     BasisKnn *knn)
{
  PetscMPIInt size, rank;
  PetscInt    nlocal;

  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_size(PETSC_COMM_WORLD, &size));
  PetscCallMPI(MPI_Comm_rank(PETSC_COMM_WORLD, &rank));
  BasisBlockRange(n, size, rank, rstart, &nlocal);
  PetscCall(BasisKnnCreate(nlocal, k, knn));
  for (PetscMPIInt b = 0; b < size; b++) {
    PetscInt s, nb;
    BasisBlockRange(n, size, (rank + b) % size, &s, &nb);
    PetscCall(BasisKnnUpdate(knn, D, x + (size_t)*rstart * D, *rstart, nb, x + (size_t)s * D, s));
  }
  PetscFunctionReturn(0);
}

/* (d) distributed assembly and SLEPc solve equal the batch dense path. */
static PetscErrorCode TestDistributed(void)
{
  const PetscInt   n = 300, D = 5;
  const char      *solvers[] = {"krylovschur", "scalapack"};
  BasisGraphParams p;
  BasisBatchGraph  bg;
  BasisKnn         knn;
  BasisRng         rng;
  Mat              W;
  float           *x;
  PetscReal       *phi_b, *phi, lambda_b[10], lambda[10], residual[10];
  PetscInt         rstart;

  PetscFunctionBeginUser;
  BasisRngSeed(&rng, 14, 0);
  BasisGraphParamsDefault(&p);
  PetscCall(PetscMalloc3((size_t)n * D, &x, (size_t)n * p.K, &phi_b, (size_t)n * p.K, &phi));
  Gaussian(&rng, n, D, 0.0, x);
  PetscCall(DistributedKnn(n, D, x, p.knn, &rstart, &knn));
  /* tight solves on both paths (the batch path's code default is 1e-5, graph.c), so that
     eigenvectors can be compared at 1e-6 */
  PetscCall(PetscOptionsSetValue(NULL, "-tg_eps_tol", "1e-12"));
  PetscCall(PetscOptionsSetValue(NULL, "-batch_eps_tol", "1e-12"));
  for (int sc = 0; sc < 2; sc++)
    for (int lt = 0; lt < 3; lt++) {
      p.scale     = (BasisScaleType)sc;
      p.laplacian = (BasisLaplacianType)lt;
      PetscCall(BasisBatchGraphCreate(&p, n, D, &bg));
      PetscCall(BasisBatchGraphEmbed(bg, x, phi_b, lambda_b));
      PetscCall(BasisBatchGraphDestroy(&bg));
      PetscCall(BasisGraphAssemble(PETSC_COMM_WORLD, &p, &knn, rstart, n, &W));
      for (int sv = 0; sv < 2; sv++) {
        PetscReal elam = 0, evec = 0, eres = 0;
        if (sv) PetscCall(PetscOptionsSetValue(NULL, "-tg_eps_type", solvers[sv]));
        PetscCall(GraphSolve("tg_", &p, W, phi, lambda, residual));
        if (sv) PetscCall(PetscOptionsClearValue(NULL, "-tg_eps_type"));
        for (PetscInt j = 0; j < p.K; j++) {
          elam = PetscMax(elam, PetscAbsReal(lambda[j] - lambda_b[j]));
          eres = PetscMax(eres, residual[j]);
          for (PetscInt i = 0; i < knn.nq; i++)
            evec = PetscMax(evec, PetscAbsReal(phi[i * p.K + j] - phi_b[(rstart + i) * p.K + j]));
        }
        evec = MaxAll(evec);
        PetscCall(BasisTestCheck(PETSC_COMM_WORLD, elam < 1e-8,
                                 "distributed %s/%s %s: eigenvalues differ from the batch path by %g",
                                 BasisScaleTypes[sc], BasisLaplacianTypes[lt], solvers[sv], (double)elam));
        PetscCall(BasisTestCheck(PETSC_COMM_WORLD, evec < 1e-6,
                                 "distributed %s/%s %s: eigenvectors differ from the batch path by %g",
                                 BasisScaleTypes[sc], BasisLaplacianTypes[lt], solvers[sv], (double)evec));
        PetscCall(BasisTestCheck(PETSC_COMM_WORLD, eres < 1e-8,
                                 "distributed %s/%s %s: residual %g too large for eps_tol 1e-12",
                                 BasisScaleTypes[sc], BasisLaplacianTypes[lt], solvers[sv], (double)eres));
      }
      PetscCall(MatDestroy(&W));
    }
  PetscCall(PetscOptionsClearValue(NULL, "-tg_eps_tol"));
  PetscCall(PetscOptionsClearValue(NULL, "-batch_eps_tol"));
  PetscCall(BasisKnnDestroy(&knn));
  PetscCall(PetscFree3(x, phi_b, phi));
  PetscFunctionReturn(0);
}

/* (e) errors, caught without printing; every rank must see the error. */
/* The distributed graph of the n points x must be refused on every rank; what names the
   fault in the failure message. */
static PetscErrorCode ExpectAssembleError(const BasisGraphParams *p, PetscInt n, PetscInt D, const float x[],
                                          const char *what)
{
  BasisKnn       knn;
  Mat            W = NULL;
  PetscInt       rstart;
  PetscErrorCode ierr;

  PetscFunctionBeginUser;
  PetscCall(DistributedKnn(n, D, x, p->knn, &rstart, &knn));
  PetscCall(PetscPushErrorHandler(PetscReturnErrorHandler, NULL));
  ierr = BasisGraphAssemble(PETSC_COMM_WORLD, p, &knn, rstart, n, &W);
  PetscCall(PetscPopErrorHandler());
  PetscCall(BasisTestCheck(PETSC_COMM_WORLD, ierr != 0,
                           "%s in the distributed graph did not give an error on every rank", what));
  PetscCall(MatDestroy(&W));
  PetscCall(BasisKnnDestroy(&knn));
  PetscFunctionReturn(0);
}

static PetscErrorCode TestErrors(void)
{
  const PetscInt   m = 40, D = 3, n = 100;
  BasisGraphParams p;
  BasisBatchGraph  bg = NULL;
  BasisKnn         knn;
  BasisRng         rng;
  Mat              W = NULL;
  float           *x;
  PetscReal       *phi, lambda[10], residual[10];
  PetscInt         rstart;
  PetscErrorCode   ierr;

  PetscFunctionBeginUser;
  BasisRngSeed(&rng, 15, 0);
  BasisGraphParamsDefault(&p);
  PetscCall(PetscMalloc2((size_t)n * D, &x, (size_t)n * p.K, &phi));
  PetscCall(PetscPushErrorHandler(PetscReturnErrorHandler, NULL));

  ierr = BasisBatchGraphCreate(&p, p.K, D, &bg);
  PetscCall(BasisTestCheck(PETSC_COMM_WORLD, ierr != 0 && !bg, "m = K did not give an error"));
  p.knn = 12;
  ierr  = BasisBatchGraphCreate(&p, 12, D, &bg);
  PetscCall(BasisTestCheck(PETSC_COMM_WORLD, ierr != 0 && !bg,
                           "-knn 12 with a batch of 12 points did not give an error"));
  p.knn = 10;

  /* 8 copies of one point: 7 duplicates each, so the 7th neighbour is at distance 0 */
  Gaussian(&rng, m, D, 0.0, x);
  for (PetscInt i = 1; i < 8; i++)
    for (PetscInt c = 0; c < D; c++) x[(5 * i) * D + c] = x[c];
  PetscCall(PetscPopErrorHandler());
  PetscCall(BasisBatchGraphCreate(&p, m, D, &bg));
  PetscCall(PetscPushErrorHandler(PetscReturnErrorHandler, NULL));
  ierr = BasisBatchGraphEmbed(bg, x, phi, lambda);
  PetscCall(BasisTestCheck(PETSC_COMM_WORLD, ierr != 0, "duplicate points in a batch did not give an error"));
  PetscCall(PetscPopErrorHandler());
  PetscCall(BasisBatchGraphDestroy(&bg));

  /* duplicates in the last rank's rows only: every rank must raise the error */
  Gaussian(&rng, n, D, 0.0, x);
  for (PetscInt i = n - 9; i < n; i++)
    for (PetscInt c = 0; c < D; c++) x[i * D + c] = x[(n - 10) * D + c];
  PetscCall(ExpectAssembleError(&p, n, D, x, "duplicate points"));

  /* an eigensolver stopped after one iteration must be refused */
  Gaussian(&rng, n, D, 0.0, x);
  PetscCall(DistributedKnn(n, D, x, p.knn, &rstart, &knn));
  PetscCall(BasisGraphAssemble(PETSC_COMM_WORLD, &p, &knn, rstart, n, &W));
  PetscCall(PetscOptionsSetValue(NULL, "-te_eps_max_it", "1"));
  PetscCall(PetscOptionsSetValue(NULL, "-te_eps_tol", "1e-14"));
  PetscCall(PetscPushErrorHandler(PetscReturnErrorHandler, NULL));
  ierr = GraphSolve("te_", &p, W, phi, lambda, residual);
  PetscCall(PetscPopErrorHandler());
  PetscCall(BasisTestCheck(PETSC_COMM_WORLD, ierr != 0,
                           "an unconverged eigensolve did not give an error on every rank"));
  PetscCall(PetscOptionsClearValue(NULL, "-te_eps_max_it"));
  PetscCall(PetscOptionsClearValue(NULL, "-te_eps_tol"));
  PetscCall(MatDestroy(&W));
  PetscCall(BasisKnnDestroy(&knn));

  /* a point 10^4 away under -scale median: every affinity of its row underflows (degree
     0), an error on both batch routes and, on every rank, in the distributed graph */
  p.scale = BASIS_SCALE_MEDIAN;
  Gaussian(&rng, n, D, 0.0, x);
  for (PetscInt c = 0; c < D; c++) x[(m / 2) * D + c] += 1e4f;
  for (int solver = BASIS_BATCH_DENSE; solver <= BASIS_BATCH_KRYLOV; solver++) {
    p.batch_solver = (BasisBatchSolverType)solver;
    PetscCall(BasisBatchGraphCreate(&p, m, D, &bg));
    PetscCall(PetscPushErrorHandler(PetscReturnErrorHandler, NULL));
    ierr = BasisBatchGraphEmbed(bg, x, phi, lambda);
    PetscCall(PetscPopErrorHandler());
    PetscCall(BasisTestCheck(PETSC_COMM_WORLD, ierr != 0,
                             "an isolated point in a batch (%s route) did not give an error",
                             BasisBatchSolverTypes[solver]));
    PetscCall(BasisBatchGraphDestroy(&bg));
  }
  PetscCall(ExpectAssembleError(&p, n, D, x, "an isolated point"));
  PetscCall(PetscFree2(x, phi));
  PetscFunctionReturn(0);
}

/* (f) one object reused over several different point sets gives bitwise what fresh
   objects give: the batch graph of both routes (its kept W, EPS and workspace; the EPS's
   start vector reseeded per solve), and one distributed eigensolver. */
static PetscErrorCode TestReuse(void)
{
  const PetscInt   m = 300, D = 5, nsets = 3;
  BasisGraphParams p;
  BasisBatchGraph  kept, fresh;
  BasisEigensolver es_kept, es_fresh;
  BasisKnn         knn;
  BasisRng         rng;
  Mat              W;
  float           *x;
  PetscReal       *phi, *phi1, lambda[10], lambda1[10], residual[10], residual1[10];
  PetscInt         rstart;

  PetscFunctionBeginUser;
  BasisRngSeed(&rng, 16, 0);
  BasisGraphParamsDefault(&p);
  PetscCall(PetscMalloc3((size_t)nsets * m * D, &x, (size_t)m * p.K, &phi, (size_t)m * p.K, &phi1));
  Gaussian(&rng, nsets * m, D, 0.0, x);
  for (int solver = BASIS_BATCH_DENSE; solver <= BASIS_BATCH_KRYLOV; solver++)
    for (int lt = 0; lt < 3; lt++) { /* sym, unnormalized (the degree on the kept diagonal), rw */
      p.batch_solver = (BasisBatchSolverType)solver;
      p.laplacian    = (BasisLaplacianType)lt;
      PetscCall(BasisBatchGraphCreate(&p, m, D, &kept));
      for (PetscInt s = 0; s < nsets; s++) {
        PetscCall(BasisBatchGraphEmbed(kept, x + (size_t)s * m * D, phi, lambda));
        PetscCall(BasisBatchGraphCreate(&p, m, D, &fresh));
        PetscCall(BasisBatchGraphEmbed(fresh, x + (size_t)s * m * D, phi1, lambda1));
        PetscCall(BasisBatchGraphDestroy(&fresh));
        PetscCall(
            BasisTestCheck(PETSC_COMM_WORLD,
                           !memcmp(phi, phi1, sizeof(PetscReal) * m * p.K) &&
                               !memcmp(lambda, lambda1, sizeof(PetscReal) * p.K),
                           "batch %s/%s: a reused batch graph's pairs of set %d differ from a fresh one's",
                           BasisBatchSolverTypes[solver], BasisLaplacianTypes[lt], (int)s));
      }
      PetscCall(BasisBatchGraphDestroy(&kept));
    }
  p.laplacian = BASIS_LAPLACIAN_SYM;
  PetscCall(BasisEigensolverCreate(PETSC_COMM_WORLD, "tr_", &es_kept));
  PetscCall(BasisEigensolverSetProblem(es_kept, &p));
  PetscCall(BasisEigensolverSetFromOptions(es_kept));
  for (PetscInt s = 0; s < nsets; s++) {
    PetscCall(DistributedKnn(m, D, x + (size_t)s * m * D, p.knn, &rstart, &knn));
    PetscCall(BasisGraphAssemble(PETSC_COMM_WORLD, &p, &knn, rstart, m, &W));
    PetscCall(BasisEigensolverSolve(es_kept, W, phi, lambda, residual));
    PetscCall(BasisEigensolverCreate(PETSC_COMM_WORLD, "tr_", &es_fresh));
    PetscCall(BasisEigensolverSetProblem(es_fresh, &p));
    PetscCall(BasisEigensolverSetFromOptions(es_fresh));
    PetscCall(BasisEigensolverSolve(es_fresh, W, phi1, lambda1, residual1));
    PetscCall(BasisEigensolverDestroy(&es_fresh));
    PetscCall(BasisTestCheck(PETSC_COMM_WORLD,
                             !memcmp(phi, phi1, sizeof(PetscReal) * knn.nq * p.K) &&
                                 !memcmp(lambda, lambda1, sizeof(PetscReal) * p.K) &&
                                 !memcmp(residual, residual1, sizeof(PetscReal) * p.K),
                             "distributed: a reused eigensolver's pairs of set %d differ from a fresh one's",
                             (int)s));
    PetscCall(MatDestroy(&W));
    PetscCall(BasisKnnDestroy(&knn));
  }
  PetscCall(BasisEigensolverDestroy(&es_kept));
  PetscCall(BasisEigensolverDestroy(&es_fresh)); /* NULL-tolerant */
  PetscCall(PetscFree3(x, phi, phi1));
  PetscFunctionReturn(0);
}

/* The graph of the n points x [n][D] (all on every rank) in every form the tools build:
   the batch graph (phib [n][K], lamb [K]; dense route), and the distributed one of this
   rank's rows by the exact ring kNN (idx, d2 [nlocal][k]) and the eigensolver with prefix
   tu_ (phi [nlocal][K], lam [K]). */
static PetscErrorCode UnitsGraph(const BasisGraphParams *p, PetscInt n, PetscInt D, float x[],
                                 PetscReal phib[], PetscReal lamb[], PetscInt idx[], PetscReal d2[],
                                 PetscReal phi[], PetscReal lam[])
{
  BasisBatchGraph  bg;
  BasisEigensolver es;
  BasisShard       shard;
  BasisKnn         knn;
  Mat              W;
  PetscReal        residual[10];
  PetscMPIInt      size, rank;

  PetscFunctionBeginUser;
  PetscCall(BasisBatchGraphCreate(p, n, D, &bg));
  PetscCall(BasisBatchGraphEmbed(bg, x, phib, lamb));
  PetscCall(BasisBatchGraphDestroy(&bg));
  PetscCallMPI(MPI_Comm_size(PETSC_COMM_WORLD, &size));
  PetscCallMPI(MPI_Comm_rank(PETSC_COMM_WORLD, &rank));
  shard.N = n, shard.D = D, shard.labels = NULL;
  BasisBlockRange(n, size, rank, &shard.rstart, &shard.n);
  shard.x = x + (size_t)shard.rstart * D;
  PetscCall(BasisExactKnn(PETSC_COMM_WORLD, &shard, p->knn, &knn));
  PetscCall(PetscArraycpy(idx, knn.idx, (size_t)knn.nq * knn.k));
  PetscCall(PetscArraycpy(d2, knn.d2, (size_t)knn.nq * knn.k));
  PetscCall(BasisGraphAssemble(PETSC_COMM_WORLD, p, &knn, shard.rstart, n, &W));
  PetscCall(BasisEigensolverCreate(PETSC_COMM_WORLD, "tu_", &es));
  PetscCall(BasisEigensolverSetProblem(es, p));
  PetscCall(BasisEigensolverSetFromOptions(es));
  PetscCall(BasisEigensolverSolve(es, W, phi, lam, residual));
  PetscCall(BasisEigensolverDestroy(&es));
  PetscCall(MatDestroy(&W));
  PetscCall(BasisKnnDestroy(&knn));
  PetscFunctionReturn(0);
}

/* (g) units (issue 18): the graph rule is invariant to a global scale c, and so must the
   computed graph be: X and c X give the same kNN lists (squared distances times c^2) and
   the same eigenpairs of the batch and the distributed graph, for c far beyond float's
   squared range; bitwise for a power of two, within the rounding of c X otherwise. */
static PetscErrorCode TestUnits(void)
{
  const PetscInt   n = 240, D = 6;
  const double     cs[] = {1e30, 1e-30, 3.7e25, 0x1p100, 0x1p-100};
  BasisGraphParams p;
  BasisRng         rng;
  float           *x, *xc;
  PetscInt        *idx0, *idx, nk;
  PetscReal       *d20, *d2, *phib0, *phib, *phi0, *phi, lamb0[10], lamb[10], lam0[10], lam[10];
  PetscMPIInt      size, rank;
  PetscInt         rstart, nlocal;

  PetscFunctionBeginUser;
  BasisRngSeed(&rng, 17, 0);
  BasisGraphParamsDefault(&p);
  PetscCallMPI(MPI_Comm_size(PETSC_COMM_WORLD, &size));
  PetscCallMPI(MPI_Comm_rank(PETSC_COMM_WORLD, &rank));
  BasisBlockRange(n, size, rank, &rstart, &nlocal);
  nk = PetscMax(nlocal, 1) * p.knn;
  PetscCall(PetscMalloc6((size_t)n * D, &x, (size_t)n * D, &xc, nk, &idx0, nk, &idx, nk, &d20, nk, &d2));
  PetscCall(PetscMalloc4((size_t)n * p.K, &phib0, (size_t)n * p.K, &phib, (size_t)PetscMax(nlocal, 1) * p.K,
                         &phi0, (size_t)PetscMax(nlocal, 1) * p.K, &phi));
  Gaussian(&rng, n, D, 0.0, x);
  PetscCall(PetscOptionsSetValue(NULL, "-tu_eps_tol", "1e-12"));
  PetscCall(UnitsGraph(&p, n, D, x, phib0, lamb0, idx0, d20, phi0, lam0));
  for (size_t c = 0; c < sizeof(cs) / sizeof(cs[0]); c++) {
    const PetscBool pow2    = frexp(cs[c], &(int){0}) == 0.5 ? PETSC_TRUE : PETSC_FALSE;
    PetscInt        bad_idx = 0;
    PetscReal       ed2 = 0, evb = 0, elb = 0, ev = 0, el = 0;

    for (PetscInt i = 0; i < n * D; i++) xc[i] = (float)(cs[c] * x[i]);
    PetscCall(UnitsGraph(&p, n, D, xc, phib, lamb, idx, d2, phi, lam));
    for (PetscInt i = 0; i < nlocal * p.knn; i++) {
      bad_idx += idx[i] != idx0[i];
      ed2 = PetscMax(ed2, PetscAbsReal(d2[i] / (cs[c] * cs[c]) - d20[i]) / d20[i]);
    }
    for (PetscInt j = 0; j < p.K; j++) {
      elb = PetscMax(elb, PetscAbsReal(lamb[j] - lamb0[j]));
      el  = PetscMax(el, PetscAbsReal(lam[j] - lam0[j]));
      for (PetscInt i = 0; i < n; i++)
        evb = PetscMax(evb, PetscAbsReal(phib[i * p.K + j] - phib0[i * p.K + j]));
      for (PetscInt i = 0; i < nlocal; i++)
        ev = PetscMax(ev, PetscAbsReal(phi[i * p.K + j] - phi0[i * p.K + j]));
    }
    ev = MaxAll(ev);
    PetscCall(BasisTestCheck(PETSC_COMM_WORLD, bad_idx == 0,
                             "units c = %g: %d exact kNN neighbours differ from those of X", cs[c],
                             (int)bad_idx));
    /* the rounding of c X (float, 6e-8 relative) moves squared distances by ~1e-6 at most */
    PetscCall(BasisTestCheck(PETSC_COMM_WORLD, pow2 ? ed2 == 0 : ed2 < 1e-5,
                             "units c = %g: squared distances / c^2 differ by %g (relative)", cs[c],
                             (double)ed2));
    PetscCall(
        BasisTestCheck(PETSC_COMM_WORLD, pow2 ? (elb == 0 && evb == 0) : (elb < 1e-6 && evb < 1e-5),
                       "units c = %g: batch eigenpairs differ from those of X by %g (values), %g (vectors)",
                       cs[c], (double)elb, (double)evb));
    PetscCall(BasisTestCheck(
        PETSC_COMM_WORLD, pow2 ? (el == 0 && ev == 0) : (el < 1e-6 && ev < 1e-5),
        "units c = %g: distributed eigenpairs differ from those of X by %g (values), %g (vectors)", cs[c],
        (double)el, (double)ev));
  }
  PetscCall(PetscOptionsClearValue(NULL, "-tu_eps_tol"));
  PetscCall(PetscFree6(x, xc, idx0, idx, d20, d2));
  PetscCall(PetscFree4(phib0, phib, phi0, phi));
  PetscFunctionReturn(0);
}

static PetscErrorCode TestMatched(void)
{
  BasisGraphParams p, q;

  PetscFunctionBeginUser;
  BasisGraphParamsDefault(&p);
  BasisGraphParamsMatched(&p, 10000, 512, &q);
  PetscCall(BasisTestCheck(PETSC_COMM_WORLD, q.knn == 195 && q.scale_neighbor == 137 && q.K == p.K,
                           "matched graph for n 10000, m 512: knn %d scale_neighbor %d, expected 195 and 137",
                           (int)q.knn, (int)q.scale_neighbor));
  BasisGraphParamsMatched(&p, 30, 512, &q);
  PetscCall(BasisTestCheck(PETSC_COMM_WORLD, q.knn == 1 && q.scale_neighbor == 1,
                           "matched graph for n 30, m 512: knn %d scale_neighbor %d, "
                           "expected 1 and 1",
                           (int)q.knn, (int)q.scale_neighbor));
  BasisGraphParamsMatched(&p, 10000, 0, &q);
  PetscCall(BasisTestCheck(PETSC_COMM_WORLD, q.knn == p.knn && q.scale_neighbor == p.scale_neighbor,
                           "matched graph with m 0 is not a copy"));
  PetscFunctionReturn(0);
}

int main(int argc, char **argv)
{
  PetscCall(SlepcInitialize(&argc, &argv, NULL, NULL));
  PetscCall(BasisInitialize());
  PetscCall(TestMatched());
  PetscCall(TestKnnAll());
  PetscCall(TestKnnBf16All());
  PetscCall(TestBatchDense());
  PetscCall(TestTwoClusters());
  PetscCall(TestDistributed());
  PetscCall(TestErrors());
  PetscCall(TestReuse());
  PetscCall(TestUnits());
  PetscCall(SlepcFinalize());
  return BasisTestFailures() ? 1 : 0;
}
