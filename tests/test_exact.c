/*
  test_exact - the exact baseline (exact.c) at any rank count:
   1. the ring-exchange kNN equals a brute-force search done here in double (ties broken by
      the smaller index), on data with massive exact ties (small integer coordinates), on
      continuous data, with k larger than a rank's block, and with uneven splits that leave
      a rank empty;
   2. two far-apart clusters: eigenvalues 0, 0, then > 0, and the first two eigenvectors
      span the cluster indicators (times D^1/2 for sym), for every Laplacian; also three
      clusters, a repeated eigenvalue that single-vector Krylov-Schur alone misses (eigensolver.c
      recovers it with a deflated re-solve);
   3. on a noisy path, the distributed SLEPc solve agrees with a dense LAPACK solve of the
      same graph (BasisBatchGraphEmbed on all points): eigenvalues, vectors entry by entry,
      and d_G ~ 0, for every Laplacian;
   4. an unconverged solve (-exact_eps_max_it 1) is refused with PETSC_ERR_NOT_CONVERGED.
  Silent on success; FAIL lines are printed once, from values agreed over all ranks.
*/
#include <basis/exact.h>
#include <basis/metrics.h>
#include <basis/rng.h>
#include "check.h"
#include <petscblaslapack.h>
#include <slepcsys.h>

typedef enum { DATA_INTEGER, DATA_GAUSSIAN, DATA_PATH } DataType;

/* The whole data set, the same on every rank: x [N][D]. */
static void MakeData(DataType type, PetscInt N, PetscInt D, PetscInt seed, float x[])
{
  BasisRng rng;

  BasisRngSeed(&rng, (uint64_t)seed, 7);
  for (PetscInt i = 0; i < N; i++) {
    float *xi = x + (size_t)i * D;
    for (PetscInt d = 0; d < D; d++) {
      switch (type) {
      case DATA_INTEGER: /* 4^D cells for N points: many duplicates and equal distances */
        xi[d] = (float)BasisRngInt(&rng, 4);
        break;
      case DATA_GAUSSIAN:
        xi[d] = (float)BasisRngNormal(&rng);
        break;
      case DATA_PATH: /* unevenly spaced points along a line, small jitter across it */
        xi[d] = d == 0 ? (float)(i + 0.4 * BasisRngUniform(&rng)) : (float)(0.05 * BasisRngNormal(&rng));
        break;
      }
    }
  }
}

/* This rank's rows [rstart, rstart + n) of N; uneven: rank r gets a share ~ r (rank 0 none
   when there are several ranks). */
static PetscErrorCode Split(MPI_Comm comm, PetscInt N, PetscBool uneven, PetscInt *rstart, PetscInt *n)
{
  PetscMPIInt size, rank;

  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  if (!uneven || size == 1)
    BasisBlockRange(N, size, rank, rstart, n);
  else {
    PetscInt total = size * (size - 1) / 2, s = 0;
    for (PetscMPIInt r = 0; r < rank; r++) s += N * r / total;
    *rstart = s;
    *n      = rank == size - 1 ? N - s : N * rank / total;
  }
  PetscFunctionReturn(0);
}

typedef struct {
  PetscReal d;
  PetscInt  j;
} Pair;

static int PairCompare(const void *a, const void *b)
{
  const Pair *p = (const Pair *)a, *q = (const Pair *)b;
  if (p->d != q->d) return p->d < q->d ? -1 : 1;
  return p->j < q->j ? -1 : (p->j > q->j ? 1 : 0);
}

/* Test 1: ring kNN against brute force. */
static PetscErrorCode TestKnn(MPI_Comm comm, DataType type, PetscInt N, PetscInt D, PetscInt k,
                              PetscBool uneven)
{
  float     *x;
  Pair      *pairs;
  BasisShard shard;
  BasisKnn   knn;
  PetscInt   bad_idx = 0, bad_d = 0;

  PetscFunctionBeginUser;
  PetscCall(PetscMalloc2((size_t)N * D, &x, N, &pairs));
  MakeData(type, N, D, 11, x);
  PetscCall(PetscMemzero(&shard, sizeof(shard)));
  shard.N = N, shard.D = D;
  PetscCall(Split(comm, N, uneven, &shard.rstart, &shard.n));
  shard.x = x + (size_t)shard.rstart * D;
  PetscCall(BasisExactKnn(comm, &shard, k, &knn));
  for (PetscInt i = 0; i < shard.n; i++) {
    PetscInt gi = shard.rstart + i, np = 0;
    for (PetscInt j = 0; j < N; j++) {
      PetscReal s = 0;
      if (j == gi) continue;
      for (PetscInt d = 0; d < D; d++) {
        PetscReal t = (PetscReal)x[(size_t)gi * D + d] - x[(size_t)j * D + d];
        s += t * t;
      }
      pairs[np].d   = s;
      pairs[np++].j = j;
    }
    qsort(pairs, (size_t)np, sizeof(Pair), PairCompare);
    for (PetscInt t = 0; t < k; t++) {
      /* integer data: every distance is exact, so equal; continuous: summation order may
         move the last bits */
      PetscReal d = knn.d2[i * k + t], tol = type == DATA_INTEGER ? 0 : 1e-12 * PetscMax(pairs[t].d, 1e-300);
      if (knn.idx[i * k + t] != pairs[t].j) bad_idx++;
      if (PetscAbsReal(d - pairs[t].d) > tol) bad_d++;
    }
  }
  PetscCall(BasisTestCheck(comm, (PetscBool)(bad_idx == 0),
                           "ring kNN (%s data, N %d, D %d, k %d, %s split): neighbour lists differ",
                           type == DATA_INTEGER ? "integer" : "gaussian", (int)N, (int)D, (int)k,
                           uneven ? "uneven" : "block"));
  PetscCall(BasisTestCheck(comm, (PetscBool)(bad_d == 0),
                           "ring kNN (N %d, k %d): distances differ from brute force", (int)N, (int)k));
  PetscCall(BasisKnnDestroy(&knn));
  PetscCall(PetscFree2(x, pairs));
  PetscFunctionReturn(0);
}

/* ||s - P c|| / ||s|| with c the least-squares coefficients of the distributed vector
   s [n] on the first q columns of P [n][K] (the columns need not be orthogonal: rw
   eigenvectors are D-orthogonal). Collective. */
static PetscErrorCode OutOfSpan(MPI_Comm comm, PetscInt n, PetscInt K, PetscInt q, const PetscReal P[],
                                const PetscReal s[], PetscReal *rel)
{
  PetscReal    G[16 + 4 + 2] = {0}, *b = G + 16, r2 = 0, s2 = 0;
  PetscBLASInt bq, one = 1, info;

  PetscFunctionBeginUser;
  PetscCheck(q <= 4, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "at most 4 columns");
  for (PetscInt i = 0; i < n; i++)
    for (PetscInt a = 0; a < q; a++) {
      b[a] += P[i * K + a] * s[i];
      for (PetscInt c = 0; c < q; c++) G[a * q + c] += P[i * K + a] * P[i * K + c];
    }
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, G, 20, MPIU_REAL, MPIU_SUM, comm));
  PetscCall(PetscBLASIntCast(q, &bq));
  LAPACKpotrf_("L", &bq, G, &bq, &info);
  PetscCheck(info == 0, PETSC_COMM_SELF, PETSC_ERR_LIB, "eigenvectors are linearly dependent");
  LAPACKpotrs_("L", &bq, &one, G, &bq, b, &bq, &info);
  for (PetscInt i = 0; i < n; i++) {
    PetscReal r = s[i];
    for (PetscInt a = 0; a < q; a++) r -= P[i * K + a] * b[a];
    r2 += r * r;
    s2 += s[i] * s[i];
  }
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &r2, 1, MPIU_REAL, MPIU_SUM, comm));
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &s2, 1, MPIU_REAL, MPIU_SUM, comm));
  *rel = PetscSqrtReal(r2 / s2);
  PetscFunctionReturn(0);
}

/* Test 2: c far-apart clusters of 45 points: a disconnected graph. */
static PetscErrorCode TestClusters(MPI_Comm comm, PetscInt c, BasisLaplacianType lap)
{
  const PetscInt     N = 45 * c, D = 3, K = c + 2;
  float             *x;
  BasisShard         shard;
  BasisGraphParams   p;
  BasisKnn           knn;
  Mat                W;
  Vec                deg;
  const PetscScalar *dg;
  PetscReal         *phi, *lambda, *residual, *ind, worst = 0, zero = 0;

  PetscFunctionBeginUser;
  PetscCall(PetscMalloc1((size_t)N * D, &x));
  MakeData(DATA_GAUSSIAN, N, D, 5, x);
  for (PetscInt i = 0; i < N; i++) x[(size_t)i * D] += 1000.0f * (float)(i * c / N);
  PetscCall(PetscMemzero(&shard, sizeof(shard)));
  shard.N = N, shard.D = D;
  PetscCall(Split(comm, N, PETSC_FALSE, &shard.rstart, &shard.n));
  shard.x = x + (size_t)shard.rstart * D;
  BasisGraphParamsDefault(&p);
  p.K         = K;
  p.laplacian = lap;
  PetscCall(PetscMalloc4((size_t)PetscMax(shard.n, 1) * K, &phi, K, &lambda, K, &residual,
                         PetscMax(shard.n, 1), &ind));
  PetscCall(BasisExactCompute(comm, BASIS_EXACT_PREFIX, &shard, &p, phi, lambda, residual, NULL));

  /* the null space: cluster indicators, times D^1/2 for sym */
  PetscCall(BasisExactKnn(comm, &shard, p.knn, &knn));
  PetscCall(BasisGraphAssemble(comm, &p, &knn, shard.rstart, N, &W));
  PetscCall(MatCreateVecs(W, &deg, NULL));
  PetscCall(MatGetRowSum(W, deg));
  PetscCall(VecGetArrayRead(deg, &dg));
  for (PetscInt a = 0; a < c; a++) {
    PetscReal rel = 0;
    for (PetscInt i = 0; i < shard.n; i++) {
      PetscReal w = lap == BASIS_LAPLACIAN_SYM ? PetscSqrtReal(PetscRealPart(dg[i])) : 1.0;
      ind[i]      = (shard.rstart + i) * c / N == a ? w : 0.0;
    }
    PetscCall(OutOfSpan(comm, shard.n, K, c, phi, ind, &rel));
    worst = PetscMax(worst, rel);
  }
  PetscCall(VecRestoreArrayRead(deg, &dg));
  for (PetscInt a = 0; a < c; a++) zero = PetscMax(zero, PetscAbsReal(lambda[a]));
  /* eps_tol 1e-8 (SLEPc default) on a degenerate eigenvalue: the span is accurate to ~1e-8 */
  PetscCall(BasisTestCheck(comm, (PetscBool)(worst < 1e-6),
                           "%d clusters (%s): indicators not in the span of the first %d eigenvectors (%g)",
                           (int)c, BasisLaplacianTypes[lap], (int)c, (double)worst));
  /* a disconnected graph has lambda = 0 once per component; the next one is bounded away (a
     blob of 45 points with 10 neighbours is well connected) */
  PetscCall(BasisTestCheck(
      comm, (PetscBool)(zero < 1e-8 && lambda[c] > 1e-3),
      "%d clusters (%s): largest of the first %d eigenvalues %g, next %g; expected 0, then > 0", (int)c,
      BasisLaplacianTypes[lap], (int)c, (double)zero, (double)lambda[c]));
  PetscCall(VecDestroy(&deg));
  PetscCall(MatDestroy(&W));
  PetscCall(BasisKnnDestroy(&knn));
  PetscCall(PetscFree4(phi, lambda, residual, ind));
  PetscCall(PetscFree(x));
  PetscFunctionReturn(0);
}

/* Test 3: distributed SLEPc vs dense LAPACK on the same graph. */
static PetscErrorCode TestDense(MPI_Comm comm, BasisLaplacianType lap)
{
  const PetscInt   N = 150, D = 3, K = 5;
  float           *x;
  BasisShard       shard;
  BasisGraphParams p;
  BasisBatchGraph  bg;
  PetscReal       *phi, *dense, lambda[5], dlambda[5], residual[5], dl = 0, dv = 0, dG;

  PetscFunctionBeginUser;
  PetscCall(PetscMalloc1((size_t)N * D, &x));
  MakeData(DATA_PATH, N, D, 3, x);
  PetscCall(PetscMemzero(&shard, sizeof(shard)));
  shard.N = N, shard.D = D;
  PetscCall(Split(comm, N, PETSC_FALSE, &shard.rstart, &shard.n));
  shard.x = x + (size_t)shard.rstart * D;
  BasisGraphParamsDefault(&p);
  p.K         = K;
  p.laplacian = lap;
  PetscCall(PetscMalloc2((size_t)shard.n * K, &phi, (size_t)N * K, &dense));
  /* tight tolerance: eigenvector error ~ tol / gap, and the path's gaps are ~1e-4 */
  PetscCall(PetscOptionsSetValue(NULL, "-exact_eps_tol", "1e-12"));
  PetscCall(BasisExactCompute(comm, BASIS_EXACT_PREFIX, &shard, &p, phi, lambda, residual, NULL));
  PetscCall(PetscOptionsClearValue(NULL, "-exact_eps_tol"));
  PetscCall(BasisBatchGraphCreate(&p, N, D, &bg));
  PetscCall(BasisBatchGraphEmbed(bg, x, dense, dlambda));
  PetscCall(BasisBatchGraphDestroy(&bg));
  for (PetscInt j = 0; j < K; j++) dl = PetscMax(dl, PetscAbsReal(lambda[j] - dlambda[j]));
  for (PetscInt i = 0; i < shard.n; i++)
    for (PetscInt j = 0; j < K; j++)
      dv = PetscMax(dv, PetscAbsReal(phi[i * K + j] - dense[(shard.rstart + i) * K + j]));
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &dv, 1, MPIU_REAL, MPIU_MAX, comm));
  PetscCall(BasisMetricGrassmann(comm, shard.n, K, phi, K, dense + (size_t)shard.rstart * K, &dG, NULL));
  /* unnormalized: eigenvalues scale with the degrees (up to ~2 k), the rest are <= 2 */
  PetscCall(BasisTestCheck(comm, (PetscBool)(dl < 1e-9 * (lap == BASIS_LAPLACIAN_UNNORMALIZED ? 20 : 1)),
                           "path (%s): SLEPc and LAPACK eigenvalues differ by %g", BasisLaplacianTypes[lap],
                           (double)dl));
  PetscCall(BasisTestCheck(comm, (PetscBool)(dv < 1e-6),
                           "path (%s): SLEPc and LAPACK eigenvectors differ by %g (entry)",
                           BasisLaplacianTypes[lap], (double)dv));
  PetscCall(BasisTestCheck(comm, (PetscBool)(dG < 1e-10), "path (%s): d_G(SLEPc, LAPACK) = %g",
                           BasisLaplacianTypes[lap], (double)dG));
  PetscCall(PetscFree2(phi, dense));
  PetscCall(PetscFree(x));
  PetscFunctionReturn(0);
}

/* Test 4: an eigensolver stopped after one iteration must be refused, not returned. */
static PetscErrorCode TestUnconverged(MPI_Comm comm)
{
  const PetscInt   N = 300, D = 3, K = 6;
  float           *x;
  BasisShard       shard;
  BasisGraphParams p;
  PetscReal       *phi, lambda[6], residual[6];
  PetscErrorCode   ierr;

  PetscFunctionBeginUser;
  PetscCall(PetscMalloc1((size_t)N * D, &x));
  MakeData(DATA_PATH, N, D, 9, x);
  PetscCall(PetscMemzero(&shard, sizeof(shard)));
  shard.N = N, shard.D = D;
  PetscCall(Split(comm, N, PETSC_FALSE, &shard.rstart, &shard.n));
  shard.x = x + (size_t)shard.rstart * D;
  BasisGraphParamsDefault(&p);
  p.K = K;
  PetscCall(PetscMalloc1((size_t)shard.n * K, &phi));
  /* one restart of a basis of K + 2 vectors cannot converge 6 pairs of a path graph */
  PetscCall(PetscOptionsSetValue(NULL, "-exact_eps_max_it", "1"));
  PetscCall(PetscOptionsSetValue(NULL, "-exact_eps_ncv", "8"));
  PetscCall(PetscPushErrorHandler(PetscReturnErrorHandler, NULL));
  ierr = BasisExactCompute(comm, BASIS_EXACT_PREFIX, &shard, &p, phi, lambda, residual, NULL);
  PetscCall(PetscPopErrorHandler());
  PetscCall(PetscOptionsClearValue(NULL, "-exact_eps_max_it"));
  PetscCall(PetscOptionsClearValue(NULL, "-exact_eps_ncv"));
  PetscCall(BasisTestCheck(comm, (PetscBool)(ierr == PETSC_ERR_NOT_CONVERGED),
                           "unconverged solve: error code %d, expected %d (not converged)", (int)ierr,
                           (int)PETSC_ERR_NOT_CONVERGED));
  PetscCall(PetscFree(phi));
  PetscCall(PetscFree(x));
  PetscFunctionReturn(0);
}

int main(int argc, char **argv)
{
  MPI_Comm comm;

  PetscCall(SlepcInitialize(&argc, &argv, NULL, NULL));
  PetscCall(BasisInitialize());
  comm = PETSC_COMM_WORLD;
  PetscCall(TestKnn(comm, DATA_INTEGER, 200, 3, 7, PETSC_FALSE));
  PetscCall(TestKnn(comm, DATA_INTEGER, 203, 2, 12, PETSC_TRUE));
  PetscCall(TestKnn(comm, DATA_GAUSSIAN, 257, 9, 10, PETSC_FALSE));
  PetscCall(TestKnn(comm, DATA_GAUSSIAN, 13, 4, 10, PETSC_FALSE)); /* k > block size */
  PetscCall(TestKnn(comm, DATA_GAUSSIAN, 61, 5, 6, PETSC_TRUE));
  PetscCall(TestClusters(comm, 2, BASIS_LAPLACIAN_SYM));
  PetscCall(TestClusters(comm, 2, BASIS_LAPLACIAN_RW));
  /* Repeated eigenvalues: 3 components (any Laplacian), 2 with the unnormalized one.
     Krylov-Schur alone returned lambda = 0, 0, 0.10 instead of 0, 0, 0 here. */
  PetscCall(TestClusters(comm, 2, BASIS_LAPLACIAN_UNNORMALIZED));
  for (int l = 0; l < 3; l++) PetscCall(TestClusters(comm, 3, (BasisLaplacianType)l));
  for (int l = 0; l < 3; l++) PetscCall(TestDense(comm, (BasisLaplacianType)l));
  PetscCall(TestUnconverged(comm));
  PetscCall(SlepcFinalize());
  return BasisTestFailures() ? 1 : 0;
}
