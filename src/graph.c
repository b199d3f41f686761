/*
  graph.c - the one graph rule of DESIGN.md "The algorithm": kNN, sigma, affinity,
  symmetrisation, Laplacian and its first K eigenvectors, used by the batch graph (step 3),
  the reference graph (step 2) and the exact baseline.

  kNN (BasisKnnUpdate): squared distances by single-precision GEMM, ||q||^2 + ||p||^2 -
  2 q.p, in bounded tiles; for each query row the GEMM values only select candidates, with
  a rigorous error margin, and every candidate kept is recomputed exactly in double from
  the coordinates. The lists are therefore exactly those of a double-precision brute-force
  search (ties broken by the smaller global index), whatever the order of the point blocks:
  float GEMM cancellation would otherwise corrupt small distances and with them sigma.

  Batch path (BasisBatchGraph, one rank, every training step): all workspace allocated once
  at Create; dense W and Laplacian, LAPACK dsyevr for only the K wanted pairs.
  Distributed path (BasisGraphAssemble/Solve, collective): MATMPIAIJ W with exact
  preallocation (MATPREALLOCATOR), SLEPc Krylov-Schur on the LARGEST eigenvalues of
  D^-1/2 W D^-1/2 for sym and rw (measured fastest, notes/anchors.md; shift-invert avoided),
  smallest of D - W for unnormalized; -<prefix>eps_type scalapack converts to MATSCALAPACK.
  Both paths apply the same rw transform and sign convention, so they agree entry by entry.
*/
#include <basis/graph.h>
#include <basis/log.h>
#include <basis/options.h>
#include <cblas.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <slepceps.h>

const char *const BasisScaleTypes[]     = {"local", "median", "BasisScaleType", "BASIS_SCALE_", NULL};
const char *const BasisLaplacianTypes[] = {
    "sym", "unnormalized", "rw", "BasisLaplacianType", "BASIS_LAPLACIAN_", NULL};

/* LAPACK (Fortran symbol of OpenBLAS); PETSc 3.18's petscblaslapack.h has no syevr. */
extern void dsyevr_(const char *jobz, const char *range, const char *uplo, const PetscBLASInt *n,
                    PetscReal *a, const PetscBLASInt *lda, const PetscReal *vl, const PetscReal *vu,
                    const PetscBLASInt *il, const PetscBLASInt *iu, const PetscReal *abstol, PetscBLASInt *m,
                    PetscReal *w, PetscReal *z, const PetscBLASInt *ldz, PetscBLASInt *isuppz,
                    PetscReal *work, const PetscBLASInt *lwork, PetscBLASInt *iwork,
                    const PetscBLASInt *liwork, PetscBLASInt *info);

/* BasisKnnUpdate's GEMM tile: at most 1024 query rows x 2048 points = 8 MiB of float,
   whatever nq and np. */
#define BASIS_KNN_TILE_ROWS 1024
#define BASIS_KNN_TILE_COLS 2048
/* Columns per block when a list is seeded (SeedRow): the column of smallest filter value
   of each of the k best blocks is a seed. */
#define BASIS_KNN_SEED_BLOCK 16
/* KnnSelf (the batch kNN): points per block of the symmetric Gram matrix, and rows per
   GEMM strip: a strip of 128 x 1024 floats (512 KiB) stays in the L2 cache between the
   GEMM that writes it and the filter that reads it. */
#define BASIS_KNN_SELF_BLOCK 1024
#define BASIS_KNN_STRIP      128
/* Row stride of KnnSelf's diagonal Gram block: n + 16 floats. A power-of-two stride puts
   every element of a column in the same cache set, and MirrorLower reads columns (1024 x
   1024: 0.63 ms per block with stride 1024, 0.19 ms with 1040). */
#define BASIS_KNN_SELF_PAD 16
/* Dist2 sums in 8 lanes from this many coordinates on, in 4 below. */
#define BASIS_DIST2_WIDE 128

/* Offer and Dist2Lanes, called per exact distance from every kNN routine, stay inlined
   there: with Dist2's two paths GCC moved them out of line and the batch kNN at D = 50
   became 3-7% slower. */
#if PetscHasAttribute(always_inline)
#  define BASIS_ALWAYS_INLINE __attribute__((always_inline))
#else
#  define BASIS_ALWAYS_INLINE
#endif

/* WarnComponents keeps a row of the zero eigenvectors on the stack; larger -dim skip it. */
#define BASIS_MAX_ZERO_COMPONENTS 64

/*
  BasisGraphParamsDefault - the defaults of the authors' code: knn 10, scale_neighbor 7,
  local scale, sym Laplacian, K 10. Not collective.
*/
void BasisGraphParamsDefault(BasisGraphParams *p)
{
  p->knn            = 10;
  p->scale_neighbor = 7;
  p->scale          = BASIS_SCALE_LOCAL;
  p->laplacian      = BASIS_LAPLACIAN_SYM;
  p->K              = 10;
  p->batch_solver   = BASIS_BATCH_AUTO;
  p->eps_tol        = 0;
}

/*
  BasisGraphParamsSetFromOptions - read the graph rule from the options database.

  Collective on comm (every rank reads the same options and reaches the same verdict).

  Options: -dim K, -knn k, -scale_neighbor s, -scale local|median, -laplacian sym|unnormalized|rw

  Notes:
    Call it inside the caller's PetscOptionsBegin/End; it opens its own (nested) section so
    that -help lists these options under one heading.
*/
/* Batches larger than this use the sparse Krylov route by default. Measured per step
   (graph + eigensolve, MNIST-10k, D = 784, K = 10, docs/performance.md): dense/Krylov
   4.2/4.1 ms at m = 256, 8.7/6.8 at 384, 17.2/10.7 at 512, 75.8/26.1 at 1024,
   699/115 at 2048. */
#define BASIS_BATCH_DENSE_MAX 256

const char *const BasisBatchSolverTypes[] = {"auto",         "dense", "krylov", "BasisBatchSolverType",
                                             "BASIS_BATCH_", NULL};

PetscErrorCode BasisGraphParamsSetFromOptions(MPI_Comm comm, BasisGraphParams *p)
{
  PetscFunctionBeginUser;
  PetscOptionsBegin(comm, NULL, "Graph rule: kNN, scale, Laplacian, embedding dimension", NULL);
  PetscCall(
      PetscOptionsInt("-dim", "K: number of eigenvectors (embedding dimension)", NULL, p->K, &p->K, NULL));
  PetscCall(PetscOptionsInt("-knn", "k: neighbours per point", NULL, p->knn, &p->knn, NULL));
  PetscCall(PetscOptionsInt("-scale_neighbor", "sigma_i = distance to this neighbour (1-based)", NULL,
                            p->scale_neighbor, &p->scale_neighbor, NULL));
  PetscCall(BasisOptionsCheckEnum(comm, "-scale", BasisScaleTypes));
  PetscCall(BasisOptionsCheckEnum(comm, "-laplacian", BasisLaplacianTypes));
  PetscCall(BasisOptionsCheckEnum(comm, "-batch_solver", BasisBatchSolverTypes));
  PetscCall(PetscOptionsEnum("-scale", "Affinity scale: per point (local) or one median", NULL,
                             BasisScaleTypes, (PetscEnum)p->scale, (PetscEnum *)&p->scale, NULL));
  PetscCall(PetscOptionsEnum("-laplacian", "Graph Laplacian", NULL, BasisLaplacianTypes,
                             (PetscEnum)p->laplacian, (PetscEnum *)&p->laplacian, NULL));
  PetscCall(PetscOptionsEnum(
      "-batch_solver", "Batch eigensolver: dense LAPACK or sparse Krylov (SLEPc, -batch_eps_*)", NULL,
      BasisBatchSolverTypes, (PetscEnum)p->batch_solver, (PetscEnum *)&p->batch_solver, NULL));
  PetscOptionsEnd();
  PetscCheck(p->K >= 1, comm, PETSC_ERR_ARG_OUTOFRANGE, "-dim %d must be at least 1", (int)p->K);
  PetscCheck(p->knn >= 1, comm, PETSC_ERR_ARG_OUTOFRANGE, "-knn %d must be at least 1", (int)p->knn);
  PetscCheck(p->scale_neighbor >= 1 && p->scale_neighbor <= p->knn, comm, PETSC_ERR_ARG_OUTOFRANGE,
             "-scale_neighbor %d must be between 1 and -knn %d", (int)p->scale_neighbor, (int)p->knn);
  PetscFunctionReturn(0);
}

/*
  BasisGraphParamsMatched - the density-matched graph rule for a set of n points when the
  batches have m points (DESIGN.md "Metrics"): knn = round(k n / m), scale_neighbor =
  round(s n / m), both at least 1 and scale_neighbor <= knn. m <= 0 means the same-k graph
  (a copy). Not collective. matched may be p.
*/
void BasisGraphParamsMatched(const BasisGraphParams *p, PetscInt n, PetscInt m, BasisGraphParams *matched)
{
  BasisGraphParams q = *p;

  if (m > 0) {
    /* round half up, as round() */
    q.knn = (PetscInt)PetscMax(1.0, PetscFloorReal((PetscReal)p->knn * (PetscReal)n / (PetscReal)m + 0.5));
    q.scale_neighbor = (PetscInt)PetscMax(
        1.0, PetscFloorReal((PetscReal)p->scale_neighbor * (PetscReal)n / (PetscReal)m + 0.5));
    q.scale_neighbor = PetscMin(q.scale_neighbor, q.knn);
  }
  *matched = q;
}

static inline void KnnReset(BasisKnn *knn)
{
  for (size_t i = 0; i < (size_t)knn->nq * knn->k; i++) {
    knn->idx[i] = -1;
    knn->d2[i]  = PETSC_MAX_REAL;
  }
}

/*
  BasisKnnCreate - empty neighbour lists for nq query points, k per point.

  Not collective. Output: knn with idx = -1 and d2 = PETSC_MAX_REAL everywhere.
*/
PetscErrorCode BasisKnnCreate(PetscInt nq, PetscInt k, BasisKnn *knn)
{
  PetscFunctionBeginUser;
  PetscCheck(nq >= 0, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "number of query points %d is negative",
             (int)nq);
  PetscCheck(k >= 1, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "-knn %d must be at least 1", (int)k);
  knn->nq = nq;
  knn->k  = k;
  PetscCall(PetscMalloc5((size_t)nq * k, &knn->idx, (size_t)nq * k, &knn->d2,
                         2 * PetscMax(BASIS_KNN_TILE_COLS, BASIS_KNN_SELF_BLOCK) + k, &knn->fwork,
                         PetscMax(BASIS_KNN_TILE_COLS, BASIS_KNN_SELF_BLOCK) + k, &knn->iwork,
                         PetscMax(BASIS_KNN_TILE_COLS, BASIS_KNN_SELF_BLOCK), &knn->mark));
  KnnReset(knn);
  PetscFunctionReturn(0);
}

/*
  BasisKnnDestroy - free the lists. Not collective; safe on a zeroed or destroyed struct.
*/
PetscErrorCode BasisKnnDestroy(BasisKnn *knn)
{
  PetscFunctionBeginUser;
  PetscCall(PetscFree5(knn->idx, knn->d2, knn->fwork, knn->iwork, knn->mark));
  knn->nq = knn->k = 0;
  PetscFunctionReturn(0);
}

/* Squared distance in double in L (4 or 8) partial sums: lane l adds the coordinates d = l
   mod L of the first L * floor(D / L) in order, lane 0 then the rest, and the lanes are
   summed in adjacent pairs ((s0 + s1) + (s2 + s3) for L = 4). A fixed order for given L,
   whatever vector width the compiler picks and wherever a and b sit in memory. */
BASIS_ALWAYS_INLINE static inline PetscReal Dist2Lanes(PetscInt D, const float a[], const float b[],
                                                       const PetscInt L)
{
  PetscReal s[8] = {0};
  PetscInt  d    = 0;

  for (; d + L <= D; d += L)
    for (PetscInt l = 0; l < L; l++) {
      const PetscReal t = (PetscReal)a[d + l] - b[d + l];
      s[l] += t * t;
    }
  for (; d < D; d++) {
    const PetscReal t = (PetscReal)a[d] - b[d];
    s[0] += t * t;
  }
  for (PetscInt w = L; w > 1; w /= 2)
    for (PetscInt l = 0; l < w / 2; l++) s[l] = s[2 * l] + s[2 * l + 1];
  return s[0];
}

/* Exact squared distance in double; symmetric in (a, b) because (a - b)^2 == (b - a)^2
   exactly and the order of the sum depends on D only, not on the pair or where its rows
   sit in memory. Eight lanes from BASIS_DIST2_WIDE coordinates on (the exact distances of
   a batch kNN at D = 784: 10-15% faster), four below (cheaper per call at D = 50);
   docs/performance.md. */
static inline PetscReal Dist2(PetscInt D, const float a[], const float b[])
{
  return D >= BASIS_DIST2_WIDE ? Dist2Lanes(D, a, b, 8) : Dist2Lanes(D, a, b, 4);
}

/* (d, g) orders before (e, h): smaller distance, then smaller global index. */
static inline PetscBool Before(PetscReal d, PetscInt g, PetscReal e, PetscInt h)
{
  return (d < e || (d == e && g < h)) ? PETSC_TRUE : PETSC_FALSE;
}

/* Insert (d, g), known to order before the last entry, into a sorted list of k. */
static inline void ListInsert(PetscInt k, PetscInt idx[], PetscReal d2[], PetscReal d, PetscInt g)
{
  PetscInt pos = k - 1;

  while (pos > 0 && Before(d, g, d2[pos - 1], idx[pos - 1])) {
    d2[pos]  = d2[pos - 1];
    idx[pos] = idx[pos - 1];
    pos--;
  }
  d2[pos]  = d;
  idx[pos] = g;
}

/* Offer point b (global index g) to the sorted list idx, d2 [k] of point a: its exact
   distance, merged if it orders before the list's last entry; counted in exact. */
BASIS_ALWAYS_INLINE static inline void Offer(PetscInt D, const float a[], const float b[], PetscInt g,
                                             PetscInt k, PetscInt idx[], PetscReal d2[],
                                             PetscLogDouble *exact)
{
  const PetscReal d = Dist2(D, a, b);

  *exact += 1;
  if (Before(d, g, d2[k - 1], idx[k - 1])) ListInsert(k, idx, d2, d, g);
}

/* The margins of the candidate bound below: c for the double bound, c2 for the float filter. */
static inline PetscReal BoundMargin(PetscInt D)
{
  return (PetscReal)(D + 2) * FLT_EPSILON;
}

static inline PetscReal FilterMargin(PetscInt D)
{
  return BoundMargin(D) + 4 * FLT_EPSILON;
}

/* The float pre-filter: with a threshold tau that k points are known to meet (the list's
   k-th exact distance, once full), a point j can enter the list of point i only if
   FilterNorm(pn_j) + g_ij <= FilterThreshold(tau, qn_i), both sides in float. */
static inline float FilterNorm(PetscReal xn, PetscReal c2)
{
  return xn < 1e30 ? (float)((1 - c2) * xn) : -INFINITY; /* the filter is off there anyway */
}

static inline float FilterThreshold(PetscReal tau, PetscReal xn, PetscReal c2)
{
  const PetscReal thr = tau - (1 - c2) * xn;
  const float     T   = (float)thr;

  return (PetscReal)T < thr ? nextafterf(T, FLT_MAX) : T; /* rounded up; a list not full: inf */
}

static void SquaredNorms(PetscInt n, PetscInt D, const float x[], PetscReal nrm[])
{
  for (PetscInt i = 0; i < n; i++) {
    const float *xi = x + (size_t)i * D;
    PetscReal    s  = 0;
    for (PetscInt d = 0; d < D; d++) s += (PetscReal)xi[d] * xi[d];
    nrm[i] = s;
  }
}

/* mark [j] = (pf [j] + g [j] <= T) for a tile row, as bytes: one vector pass. */
static inline void MarkRow(PetscInt cols, const float pf[], const float g[], float T, unsigned char mark[])
{
#pragma omp simd
  for (PetscInt j = 0; j < cols; j++) mark[j] = pf[j] + g[j] <= T;
}

/* The next marked column at or after j, or cols: eight marks per test. */
static inline PetscInt NextMark(PetscInt j, PetscInt cols, const unsigned char mark[])
{
  for (; j + 8 <= cols; j += 8) {
    uint64_t w;
    memcpy(&w, mark + j, 8);
    if (w) break;
  }
  for (; j < cols; j++)
    if (mark[j]) return j;
  return cols;
}

static inline PetscBool InList(PetscInt k, const PetscInt idx[], PetscInt g)
{
  for (PetscInt t = 0; t < k; t++)
    if (idx[t] == g) return PETSC_TRUE;
  return PETSC_FALSE;
}

/*
  The candidate bound, shared by every kNN routine below. From GEMM, a_j = qn + pn_j +
  g_j with g_j = -2 q.p_j in float differs from the exact d2_j by at most margin_j = c (qn
  + pn_j), c = (D + 2) FLT_EPSILON (the float dot-product error bound gamma_D ||q|| ||p||
  <= D u (qn + pn_j)/2, doubled by the factor 2, plus the final rounding; FLT_EPSILON = 2u
  leaves another factor 2 of safety). A point whose lower bound a_j - margin_j exceeds a
  threshold tau that k other points are known to meet cannot enter the list; every other
  one is recomputed exactly (Dist2) and merged. Ties are kept (<=), so the lists are those
  of a double-precision brute force. The double bound is computed only for the survivors
  of a float pre-filter, ((1 - c2) pn_j + g_j <= tau - (1 - c2) qn in float, c2 = c + 4
  FLT_EPSILON): the wider margin covers the filter's own three roundings of at most u (qn
  + pn_j) each. The filter marks a whole tile row in one vector pass (a byte per column)
  and the marks are scanned eight at a time, so with a good threshold the per-column
  scalar work is done for a few columns of a row. Norms of 1e30 or more (float could
  overflow) switch the filter off: every column gets the double bound.
*/

/*
  FilterRow - offer to the list idx, d2 [k] of query q_i (global index gi, squared norm
  qni) the columns of one tile row g [cols] that may enter it: points p [cols][D], global
  indices g0 + j, squared norms pn [cols], FilterNorm values pf [cols]. The threshold is
  the list's k-th distance (every column is examined while it is not full) and tightens
  with every insertion; the float filter marks the columns against the threshold at the
  start (mark [cols] scratch), the double bound uses the current one. seeded: the list
  holds seeds from this tile row (SeedRow), which are not offered twice.
*/
static void FilterRow(PetscInt D, const float qi[], PetscInt gi, PetscReal qni, const float p[], PetscInt g0,
                      const PetscReal pn[], const float pf[], const float g[], PetscInt cols,
                      PetscBool filter, PetscBool seeded, PetscInt k, PetscInt idx[], PetscReal d2[],
                      unsigned char mark[], PetscLogDouble *exact)
{
  const PetscReal c = BoundMargin(D), c2 = FilterMargin(D);
  PetscReal       tau = d2[k - 1];

  if (filter)
    MarkRow(cols, pf, g, FilterThreshold(tau, qni, c2), mark);
  else
    memset(mark, 1, (size_t)cols);
  for (PetscInt j = NextMark(0, cols, mark); j < cols; j = NextMark(j + 1, cols, mark)) {
    const PetscReal s = qni + pn[j];

    if (g0 + j == gi || s + (PetscReal)g[j] - c * s > tau) continue;
    if (seeded && InList(k, idx, g0 + j)) continue;
    Offer(D, qi, p + (size_t)j * D, g0 + j, k, idx, d2, exact);
    tau = d2[k - 1];
  }
}

/*
  SeedRow - the first tile row of a list that is not full: offer it k good columns, so that
  FilterRow starts from a threshold near the final one instead of examining every column.
  The columns are dealt into nb blocks, k + 1 or more if the row is that long (block b:
  columns b, b + nb, ..., so that the minima of all blocks and where they are come from
  one vertical vector pass); the column of smallest filter value in each of the k blocks
  of smallest minimum is offered (the query itself excluded). Scratch: fm [nb], fa [nb],
  best [k], bestv [k].
*/
static void SeedRow(PetscInt D, const float qi[], PetscInt gi, const float p[], PetscInt g0, const float pf[],
                    const float g[], PetscInt cols, PetscInt k, PetscInt idx[], PetscReal d2[], float fm[],
                    PetscInt fa[], PetscInt best[], float bestv[], PetscLogDouble *exact)
{
  const PetscInt nb = PetscMin(cols, PetscMax(k + 1, cols / BASIS_KNN_SEED_BLOCK)), self = gi - g0;
  PetscInt       nbest = 0;

  for (PetscInt b = 0; b < nb; b++) {
    fm[b] = FLT_MAX;
    fa[b] = -1;
  }
  for (PetscInt jt = 0; jt < cols; jt += nb) {
    const PetscInt nbt = PetscMin(nb, cols - jt);
#pragma omp simd
    for (PetscInt b = 0; b < nbt; b++) {
      const float v = pf[jt + b] + g[jt + b];
      fa[b]         = v < fm[b] && jt + b != self ? jt + b : fa[b];
      fm[b]         = v < fm[b] && jt + b != self ? v : fm[b];
    }
  }
  for (PetscInt b = 0; b < nb; b++) { /* the k smallest block minima, ascending */
    const float v = fm[b];
    PetscInt    pos;

    if (fa[b] < 0 || (nbest == k && !(v < bestv[k - 1]))) continue;
    pos = nbest < k ? nbest++ : k - 1;
    for (; pos > 0 && bestv[pos - 1] > v; pos--) {
      bestv[pos] = bestv[pos - 1];
      best[pos]  = best[pos - 1];
    }
    bestv[pos] = v;
    best[pos]  = fa[b];
  }
  for (PetscInt s = 0; s < nbest; s++) Offer(D, qi, p + (size_t)best[s] * D, g0 + best[s], k, idx, d2, exact);
}

/*
  MergeTile - merge the candidates of one GEMM tile into the lists of its query rows.

  Rows i0 .. i0 + rows of q against points j0 .. j0 + cols of p; G [rows][ldg] holds
  -2 q_i.p_j in float in its first cols columns; qn [nq], pn [np] are squared norms in
  double. A row whose list is
  not full yet (its first tile) is seeded first (SeedRow), then filtered (FilterRow).
*/
static void MergeTile(BasisKnn *knn, PetscInt D, const float q[], PetscInt qstart, const PetscReal qn[],
                      PetscInt i0, PetscInt rows, const float p[], PetscInt pstart, const PetscReal pn[],
                      PetscInt j0, PetscInt cols, const float G[], PetscInt ldg, PetscLogDouble *exact)
{
  const PetscInt   k = knn->k, g0 = pstart + j0;
  const PetscReal  c2  = FilterMargin(D);
  const PetscReal *pnj = pn + j0;
  const float     *pj  = p + (size_t)j0 * D;
  /* scratch (BasisKnnCreate): pf [cols], fm [cols], bestv [k]; fa [cols], best [k]; mark [cols] */
  float *restrict pf = knn->fwork, *restrict fm = pf + cols, *restrict bestv = fm + cols;
  PetscInt *restrict fa = knn->iwork, *restrict best = fa + cols;
  PetscReal pnmax = 0;

  for (PetscInt j = 0; j < cols; j++) {
    pf[j] = FilterNorm(pnj[j], c2);
    pnmax = PetscMax(pnmax, pnj[j]);
  }
  for (PetscInt r = 0; r < rows; r++) {
    const PetscInt  i = i0 + r, gi = qstart + i;
    const float    *g = G + (size_t)r * ldg, *qi = q + (size_t)i * D;
    PetscInt       *idx    = knn->idx + (size_t)i * k;
    PetscReal      *d2     = knn->d2 + (size_t)i * k;
    const PetscBool seeded = d2[k - 1] == PETSC_MAX_REAL ? PETSC_TRUE : PETSC_FALSE;

    if (seeded) SeedRow(D, qi, gi, pj, g0, pf, g, cols, k, idx, d2, fm, fa, best, bestv, exact);
    FilterRow(D, qi, gi, qn[i], pj, g0, pnj, pf, g, cols, (PetscBool)(pnmax < 1e30 && qn[i] < 1e30), seeded,
              k, idx, d2, knn->mark, exact);
  }
}

/*
  FilterPairs - one strip of an off-diagonal block of KnnSelf: rows i0 .. i0 + rows of x
  against columns j0 .. j0 + cols, G [rows][cols] = -2 x_i.x_j, every list full. Each row
  of G is read once for both lists of its pairs: mark bit 1, row i's list (threshold from
  its k-th distance), bit 2, column j's (threshold T [j], set by the caller for the block
  of columns and kept current here as j's list improves). pf [m]: FilterNorm of every
  point; filter: no norm of 1e30 or more.
*/
static void FilterPairs(BasisKnn *knn, PetscInt D, const float x[], const PetscReal xn[], const float pf[],
                        PetscInt i0, PetscInt rows, PetscInt j0, PetscInt cols, const float G[], float T[],
                        PetscBool filter, PetscLogDouble *exact)
{
  const PetscInt  k = knn->k;
  const PetscReal c = BoundMargin(D), c2 = FilterMargin(D);
  unsigned char  *mark = knn->mark;
  const float    *pfj  = pf + j0;

  for (PetscInt r = 0; r < rows; r++) {
    const PetscInt  i = i0 + r;
    const float    *g = G + (size_t)r * cols, *xi = x + (size_t)i * D, pfi = pf[i];
    const PetscReal xni = xn[i];
    PetscInt       *idx = knn->idx + (size_t)i * k;
    PetscReal      *d2  = knn->d2 + (size_t)i * k;
    const float     TR  = FilterThreshold(d2[k - 1], xni, c2);

    if (filter) {
#pragma omp simd
      for (PetscInt j = 0; j < cols; j++) mark[j] = (pfj[j] + g[j] <= TR) | (pfi + g[j] <= T[j]) << 1;
    } else
      memset(mark, 3, (size_t)cols);
    for (PetscInt j = NextMark(0, cols, mark); j < cols; j = NextMark(j + 1, cols, mark)) {
      const PetscReal s = xni + xn[j0 + j], a = s + (PetscReal)g[j] - c * s;
      PetscReal      *d2j = knn->d2 + (size_t)(j0 + j) * k;

      if ((mark[j] & 1) && !(a > d2[k - 1]))
        Offer(D, xi, x + (size_t)(j0 + j) * D, j0 + j, k, idx, d2, exact);
      if ((mark[j] & 2) && !(a > d2j[k - 1])) {
        Offer(D, x + (size_t)(j0 + j) * D, xi, i, k, knn->idx + (size_t)(j0 + j) * k, d2j, exact);
        T[j] = FilterThreshold(d2j[k - 1], xn[j0 + j], c2);
      }
    }
  }
}

/* Copy the lower triangle of the n x n row-major G (row stride ld) to the upper one, in
   32 x 32 blocks so that the column-wise reads stay in cache (element by element it cost
   more than the SYRK). */
static void MirrorLower(PetscInt n, PetscInt ld, float G[])
{
  const PetscInt S = 32;

  for (PetscInt ib = 0; ib < n; ib += S)
    for (PetscInt jb = ib; jb < n; jb += S) /* block (ib, jb) of the upper part from (jb, ib) */
      for (PetscInt i = ib; i < PetscMin(ib + S, n); i++)
        for (PetscInt j = PetscMax(jb, i + 1); j < PetscMin(jb + S, n); j++)
          G[(size_t)i * ld + j] = G[(size_t)j * ld + i];
}

/*
  KnnSelf - the kNN lists of m points among themselves (the batch graph), with workspace
  xn [m] (squared norms), pf [m] (their FilterNorm) and G [KnnSelfGramSize(m)].

  The points are cut into blocks of BASIS_KNN_SELF_BLOCK. First each block against itself
  (SYRK, half the flops of a GEMM, mirrored), which seeds and fills every list from its
  own block (MergeTile); then each pair of blocks once, in strips of BASIS_KNN_STRIP rows
  (FilterPairs), each strip of G read once for both lists of every pair in it. Same lists
  as BasisKnnUpdate of x against itself, ties included.
*/
static inline size_t KnnSelfGramSize(PetscInt m)
{
  const PetscInt n = PetscMin(BASIS_KNN_SELF_BLOCK, m);

  return (size_t)n * (n + BASIS_KNN_SELF_PAD);
}

static void KnnSelf(BasisKnn *knn, PetscInt D, const float x[], PetscReal xn[], float pf[], float G[])
{
  const PetscInt  m = knn->nq, B = BASIS_KNN_SELF_BLOCK, S = BASIS_KNN_STRIP;
  const PetscReal c2     = FilterMargin(D);
  float          *T      = knn->fwork; /* [B]: FilterPairs' column thresholds */
  PetscBool       filter = PETSC_TRUE;
  PetscLogDouble  exact = 0, flops = 0;

  KnnReset(knn);
  SquaredNorms(m, D, x, xn);
  for (PetscInt i = 0; i < m; i++) {
    pf[i] = FilterNorm(xn[i], c2);
    if (!(xn[i] < 1e30)) filter = PETSC_FALSE;
  }
  for (PetscInt b0 = 0; b0 < m; b0 += B) {
    const PetscInt n = PetscMin(B, m - b0), ld = n + BASIS_KNN_SELF_PAD;
    cblas_ssyrk(CblasRowMajor, CblasLower, CblasNoTrans, (int)n, (int)D, -2.0f, x + (size_t)b0 * D, (int)D,
                0.0f, G, (int)ld);
    MirrorLower(n, ld, G);
    MergeTile(knn, D, x, 0, xn, b0, n, x, 0, xn, b0, n, G, ld, &exact);
    flops += (PetscLogDouble)n * (n + 1) * D;
  }
  for (PetscInt b0 = 0; b0 < m; b0 += B)
    for (PetscInt c0 = b0 + B; c0 < m; c0 += B) {
      const PetscInt cols = PetscMin(B, m - c0);
      for (PetscInt j = 0; j < cols; j++)
        T[j] = FilterThreshold(knn->d2[(size_t)(c0 + j) * knn->k + knn->k - 1], xn[c0 + j], c2);
      for (PetscInt i0 = b0; i0 < b0 + B; i0 += S) { /* block b0 is full: c0 follows it */
        const PetscInt rows = PetscMin(S, b0 + B - i0);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)cols, (int)D, -2.0f,
                    x + (size_t)i0 * D, (int)D, x + (size_t)c0 * D, (int)D, 0.0f, G, (int)cols);
        FilterPairs(knn, D, x, xn, pf, i0, rows, c0, cols, G, T, filter, &exact);
        flops += 2.0 * rows * cols * D;
      }
    }
  (void)PetscLogFlops(flops + 3.0 * D * exact);
}

/* Lists longer than this use selection + sort-merge (MergeTileLargeK): insertion into a
   sorted list costs O(k) per candidate, fine for k ~ 10, quadratic for the k ~ 10^3 of a
   density-matched graph on 10^5 points (measured: Fashion-MNIST-70k at k = 1367 projected
   40 min with insertion). */
#define BASIS_KNN_SMALL_K 32

typedef struct {
  PetscReal d;
  PetscInt  g;
} Cand;

/* Workspace of the large-k path, for one tile row: u [cols], cand [cols], merged [k]. */
typedef struct {
  PetscReal *u;
  Cand      *cand, *merged;
} LargeKWork;

static int CandCompare(const void *a, const void *b)
{
  const Cand *x = (const Cand *)a, *y = (const Cand *)b;
  if (x->d != y->d) return x->d < y->d ? -1 : 1;
  return (x->g > y->g) - (x->g < y->g);
}

/* The k-th smallest (1-based) of a[0..n), n >= k >= 1, by quickselect; reorders a. */
static PetscReal SelectKth(PetscReal a[], PetscInt n, PetscInt k)
{
  PetscInt lo = 0, hi = n - 1, want = k - 1;

  while (lo < hi) {
    PetscReal pivot = a[lo + (hi - lo) / 2];
    PetscInt  i = lo, j = hi;
    while (i <= j) {
      while (a[i] < pivot) i++;
      while (a[j] > pivot) j--;
      if (i <= j) {
        PetscReal t = a[i];
        a[i++]      = a[j];
        a[j--]      = t;
      }
    }
    if (want <= j)
      hi = j;
    else if (want >= i)
      lo = i;
    else
      break;
  }
  return a[want];
}

/*
  MergeTileLargeK - MergeTile for long lists: the same candidate bound (see MergeTile),
  with the k-th smallest upper bound found by quickselect and the surviving candidates
  sorted once and merged with the list, O(cols + c log c + k) per row instead of O(cols k).
  Same result as MergeTile, ties included.
*/
static void MergeTileLargeK(BasisKnn *knn, PetscInt D, const float q[], PetscInt qstart, const PetscReal qn[],
                            PetscInt i0, PetscInt rows, const float p[], PetscInt pstart,
                            const PetscReal pn[], PetscInt j0, PetscInt cols, const float G[], LargeKWork *w,
                            PetscLogDouble *exact)
{
  const PetscInt  k = knn->k;
  const PetscReal c = BoundMargin(D);

  for (PetscInt r = 0; r < rows; r++) {
    const PetscInt  i = i0 + r, gi = qstart + i;
    const float    *g = G + (size_t)r * cols, *qi = q + (size_t)i * D;
    const PetscReal qni = qn[i];
    PetscInt       *idx = knn->idx + (size_t)i * k, nu = 0, nc = 0;
    PetscReal      *d2 = knn->d2 + (size_t)i * k, tau = d2[k - 1];

    for (PetscInt j = 0; j < cols; j++) {
      PetscReal s = qni + pn[j0 + j];
      if (pstart + j0 + j == gi) continue;
      w->u[nu++] = s + (PetscReal)g[j] + c * s;
    }
    if (nu >= k) tau = PetscMin(tau, SelectKth(w->u, nu, k));
    for (PetscInt j = 0; j < cols; j++) {
      PetscReal s  = qni + pn[j0 + j], d;
      PetscInt  gj = pstart + j0 + j;
      if (gj == gi || s + (PetscReal)g[j] - c * s > tau) continue;
      d = Dist2(D, qi, p + (size_t)(j0 + j) * D);
      *exact += 1;
      if (Before(d, gj, d2[k - 1], idx[k - 1])) w->cand[nc].d = d, w->cand[nc++].g = gj;
    }
    if (!nc) continue;
    qsort(w->cand, (size_t)nc, sizeof(Cand), CandCompare);
    for (PetscInt a = 0, b = 0, o = 0; o < k; o++) { /* merge two sorted sequences, keep k */
      if (b < nc && (a >= k || Before(w->cand[b].d, w->cand[b].g, d2[a], idx[a])))
        w->merged[o] = w->cand[b++];
      else
        w->merged[o].d = d2[a], w->merged[o].g = idx[a], a++;
    }
    for (PetscInt o = 0; o < k; o++) d2[o] = w->merged[o].d, idx[o] = w->merged[o].g;
  }
}

/*
  KnnMerge - the kernel of BasisKnnUpdate with caller-provided workspace: qn [nq], pn [np]
  squared norms (double); G a tile of min(nq, BASIS_KNN_TILE_ROWS) x min(np,
  BASIS_KNN_TILE_COLS) floats.
*/
static PetscErrorCode KnnMerge(BasisKnn *knn, PetscInt D, const float q[], PetscInt qstart,
                               const PetscReal qn[], PetscInt np, const float p[], PetscInt pstart,
                               const PetscReal pn[], float G[], LargeKWork *lw)
{
  PetscLogDouble exact = 0;

  PetscFunctionBeginUser;
  for (PetscInt i0 = 0; i0 < knn->nq; i0 += BASIS_KNN_TILE_ROWS) {
    PetscInt rows = PetscMin(BASIS_KNN_TILE_ROWS, knn->nq - i0);
    for (PetscInt j0 = 0; j0 < np; j0 += BASIS_KNN_TILE_COLS) {
      PetscInt cols = PetscMin(BASIS_KNN_TILE_COLS, np - j0);

      /* G = -2 Q P^T for this tile, row-major rows x cols */
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)cols, (int)D, -2.0f,
                  q + (size_t)i0 * D, (int)D, p + (size_t)j0 * D, (int)D, 0.0f, G, (int)cols);
      PetscCall(PetscLogFlops(2.0 * rows * cols * D));
      if (lw)
        MergeTileLargeK(knn, D, q, qstart, qn, i0, rows, p, pstart, pn, j0, cols, G, lw, &exact);
      else
        MergeTile(knn, D, q, qstart, qn, i0, rows, p, pstart, pn, j0, cols, G, cols, &exact);
    }
  }
  PetscCall(PetscLogFlops(3.0 * D * exact));
  PetscFunctionReturn(0);
}

/*
  BasisKnnUpdate - merge a block of candidate points into the running kNN lists.

  Not collective.

  Input:
    D      - dimension
    q      - [knn->nq][D] query points, row-major; query row i has global index qstart + i
    np     - number of candidate points in this block
    p      - [np][D] candidate points; point j has global index pstart + j

  Notes:
    Euclidean distance, a point never neighbours itself (same global index), ties are
    broken by the smaller global index, so after all blocks have been merged the lists do
    not depend on the block order or sizes. Each candidate block must be merged once (a
    point merged twice would appear twice). Work space is bounded (one GEMM tile, see
    BASIS_KNN_TILE_*) whatever nq and np; flops are logged.
*/
PetscErrorCode BasisKnnUpdate(BasisKnn *knn, PetscInt D, const float q[], PetscInt qstart, PetscInt np,
                              const float p[], PetscInt pstart)
{
  PetscReal *qn, *pn;
  float     *G;
  PetscInt   rows = PetscMin(BASIS_KNN_TILE_ROWS, knn->nq), cols = PetscMin(BASIS_KNN_TILE_COLS, np);

  PetscFunctionBeginUser;
  PetscCheck(D >= 1, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "dimension D = %d must be at least 1",
             (int)D);
  PetscCheck(np >= 0, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "number of points %d is negative", (int)np);
  if (np == 0 || knn->nq == 0) PetscFunctionReturn(0);
  PetscCall(PetscMalloc3(knn->nq, &qn, np, &pn, (size_t)rows * cols, &G));
  SquaredNorms(knn->nq, D, q, qn);
  SquaredNorms(np, D, p, pn);
  if (knn->k > BASIS_KNN_SMALL_K) {
    LargeKWork lw;
    PetscCall(PetscMalloc3(cols, &lw.u, cols, &lw.cand, knn->k, &lw.merged));
    PetscCall(KnnMerge(knn, D, q, qstart, qn, np, p, pstart, pn, G, &lw));
    PetscCall(PetscFree3(lw.u, lw.cand, lw.merged));
  } else
    PetscCall(KnnMerge(knn, D, q, qstart, qn, np, p, pstart, pn, G, NULL));
  PetscCall(PetscFree3(qn, pn, G));
  PetscFunctionReturn(0);
}

/*
  BasisKnnSelf - the kNN lists of the m = knn->nq points x among themselves (global index =
  row of x), from empty lists: the batch graph's kNN, half the GEMM flops of
  BasisKnnUpdate(knn, D, x, 0, m, x, 0) and the same lists, ties included.

  Not collective. Allocates its workspace (norms, one Gram block) per call; the batch path
  keeps its own.
  Lists are kept by insertion, O(k) per candidate: meant for the batch's k (~10); the long
  lists of density-matched graphs go through BasisKnnUpdate.
*/
PetscErrorCode BasisKnnSelf(BasisKnn *knn, PetscInt D, const float x[])
{
  PetscReal *xn;
  float     *pf, *G;

  PetscFunctionBeginUser;
  PetscCheck(D >= 1, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "dimension D = %d must be at least 1",
             (int)D);
  if (knn->nq == 0) PetscFunctionReturn(0);
  PetscCall(PetscMalloc3(knn->nq, &xn, knn->nq, &pf, KnnSelfGramSize(knn->nq), &G));
  KnnSelf(knn, D, x, xn, pf, G);
  PetscCall(PetscFree3(xn, pf, G));
  PetscFunctionReturn(0);
}

/*
  SigmaCompute - BasisGraphSigma with an optional workspace work [knn->nq] for the median
  on one rank (the batch path allocates nothing per step); what names a row in the
  messages ("point", or "batch row" for a training batch, whose rows are not data rows).
*/
static PetscErrorCode SigmaCompute(MPI_Comm comm, const BasisGraphParams *p, const BasisKnn *knn,
                                   const char *what, PetscReal sigma[], PetscReal work[])
{
  const PetscInt s = p->scale_neighbor, k = knn->k, nq = knn->nq;
  PetscInt       rstart = 0, nq_sum = 0, count[2] = {0, 0}, first[2] = {PETSC_MAX_INT, PETSC_MAX_INT};
  PetscMPIInt    size, rank;

  PetscFunctionBeginUser;
  PetscCheck(s >= 1 && s <= k, comm, PETSC_ERR_ARG_OUTOFRANGE,
             "-scale_neighbor %d must be between 1 and the %d neighbours kept (-knn)", (int)s, (int)k);
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  /* rows are numbered in rank order (as in a PETSc layout) for the messages */
  PetscCallMPI(MPI_Exscan(&nq, &rstart, 1, MPIU_INT, MPI_SUM, comm));
  if (rank == 0) rstart = 0;
  for (PetscInt i = 0; i < nq; i++) {
    PetscInt j = i * k + s - 1;
    if (knn->idx[j] < 0) {
      count[0]++;
      first[0] = PetscMin(first[0], rstart + i);
      sigma[i] = 0;
    } else {
      sigma[i] = PetscSqrtReal(knn->d2[j]);
      if (sigma[i] == 0 && p->scale == BASIS_SCALE_LOCAL) {
        count[1]++;
        first[1] = PetscMin(first[1], rstart + i);
      }
    }
  }
  /* agree over comm, so every rank raises the same error with the same numbers */
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, count, 2, MPIU_INT, MPI_SUM, comm));
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, first, 2, MPIU_INT, MPI_MIN, comm));
  PetscCallMPI(MPI_Allreduce(&nq, &nq_sum, 1, MPIU_INT, MPI_SUM, comm));
  PetscCheck(
      count[0] == 0, comm, PETSC_ERR_ARG_OUTOFRANGE,
      "%d points have fewer than -scale_neighbor %d neighbours (first: %s %d of a set of %d points); the "
      "set is too small for this -scale_neighbor",
      (int)count[0], (int)s, what, (int)first[0], (int)nq_sum);
  PetscCheck(
      count[1] == 0, comm, PETSC_ERR_ARG_WRONG,
      "%d points have a zero scale (at least %d duplicates of %s %d); remove duplicate points or raise "
      "-scale_neighbor",
      (int)count[1], (int)s, what, (int)first[1]);
  if (p->scale == BASIS_SCALE_MEDIAN) {
    PetscReal    med = 0, *all = NULL;
    PetscInt     n      = nq_sum;
    PetscMPIInt *counts = NULL, *displs = NULL, nqm;

    /* gather the scale_neighbor-th distances to rank 0: the median is exact */
    if (size == 1) {
      all = work;
      if (!all) PetscCall(PetscMalloc1(n, &all));
      PetscCall(PetscArraycpy(all, sigma, nq));
    } else {
      PetscCall(PetscMPIIntCast(nq, &nqm));
      if (rank == 0) PetscCall(PetscMalloc3(n, &all, size, &counts, size, &displs));
      PetscCallMPI(MPI_Gather(&nqm, 1, MPI_INT, counts, 1, MPI_INT, 0, comm));
      if (rank == 0) {
        displs[0] = 0;
        for (PetscMPIInt r = 1; r < size; r++) displs[r] = displs[r - 1] + counts[r - 1];
      }
      PetscCallMPI(MPI_Gatherv(sigma, nqm, MPIU_REAL, all, counts, displs, MPIU_REAL, 0, comm));
    }
    if (rank == 0 && n > 0) {
      PetscCall(PetscSortReal(n, all));
      /* median of an even count: the mean of the two middle values (as numpy) */
      med = n % 2 ? all[n / 2] : 0.5 * (all[n / 2 - 1] + all[n / 2]);
    }
    PetscCallMPI(MPI_Bcast(&med, 1, MPIU_REAL, 0, comm));
    if (size == 1 && all != work) PetscCall(PetscFree(all));
    if (size > 1 && rank == 0) PetscCall(PetscFree3(all, counts, displs));
    PetscCheck(
        med > 0, comm, PETSC_ERR_ARG_WRONG,
        "the median scale is 0: at least half of the %d points have %d or more duplicates; remove duplicate "
        "points, raise -scale_neighbor or use -scale local",
        (int)n, (int)s);
    for (PetscInt i = 0; i < nq; i++) sigma[i] = med;
  }
  PetscFunctionReturn(0);
}

/*
  BasisGraphSigma - the affinity scale of every query row.

  Collective on comm (PETSC_COMM_SELF for a batch).

  Input:
    p   - scale (local | median) and scale_neighbor s
    knn - this rank's rows; s <= knn->k
  Output:
    sigma - [knn->nq] local: distance to the s-th neighbour (1-based); median: the median
            of that distance over all rows of all ranks of comm (the same on every row)

  Errors (the same on every rank): a row with fewer than s neighbours; a zero local scale
  (s or more duplicates of a point); a zero median scale.
*/
PetscErrorCode BasisGraphSigma(MPI_Comm comm, const BasisGraphParams *p, const BasisKnn *knn,
                               PetscReal sigma[])
{
  PetscFunctionBeginUser;
  PetscCall(SigmaCompute(comm, p, knn, "point", sigma, NULL));
  PetscFunctionReturn(0);
}

/* Sign convention on a column-major [n][K] block (column j at v + j*ld): the entry of
   largest magnitude is positive, ties to the lowest index. */
static void SignColumnsColMajor(PetscInt n, PetscInt K, PetscInt ld, PetscReal v[])
{
  for (PetscInt j = 0; j < K; j++) {
    PetscReal *col = v + (size_t)j * ld, best = -1;
    PetscInt   arg = 0;
    for (PetscInt i = 0; i < n; i++)
      if (PetscAbsReal(col[i]) > best) {
        best = PetscAbsReal(col[i]);
        arg  = i;
      }
    if (col[arg] < 0)
      for (PetscInt i = 0; i < n; i++) col[i] = -col[i];
  }
}

struct _p_BasisBatchGraph {
  BasisGraphParams p;
  PetscInt         m, D;
  BasisKnn         knn;
  PetscReal       *norm;   /* [m] squared norms of the points */
  float           *fnorm;  /* [m] their float filter values (KnnSelf) */
  float           *G;      /* KnnSelf's Gram block */
  PetscReal       *sigma;  /* [m] */
  PetscReal       *sorted; /* [m] median workspace */
  PetscReal       *A;      /* [m][m] W, then the Laplacian (destroyed by dsyevr) */
  PetscReal       *dinv;   /* [m] D^-1/2 */
  PetscReal       *w;      /* [m] eigenvalues found by dsyevr */
  PetscReal       *Z;      /* [K][m] column-major eigenvectors */
  PetscBLASInt    *isuppz; /* [2K] */
  PetscReal       *work;
  PetscBLASInt    *iwork, lwork, liwork;
  PetscBool        krylov;   /* sparse SLEPc route instead of the dense arrays above */
  PetscReal       *residual; /* [K] (Krylov route) */
};

/*
  BasisBatchGraphCreate - workspace for embedding batches of m points of dimension D.

  Not collective. All memory is allocated here; BasisBatchGraphEmbed allocates nothing.

  Errors: m < K + 1 (DESIGN.md: a graph needs at least K + 1 points), knn >= m,
  scale_neighbor outside 1..knn.
*/
PetscErrorCode BasisBatchGraphCreate(const BasisGraphParams *p, PetscInt m, PetscInt D, BasisBatchGraph *bg)
{
  BasisBatchGraph b;
  PetscInt        K = p->K;
  PetscBLASInt    n, il = 1, iu, nfound, info, lwq = -1, liwq = -1, iwopt;
  PetscReal       wopt, zero = 0, dummy = 0;

  PetscFunctionBeginUser;
  *bg = NULL;
  PetscCheck(K >= 1, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "-dim %d must be at least 1", (int)K);
  PetscCheck(m >= K + 1, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE,
             "a graph of %d points cannot have K+1 = %d points, as -dim %d needs; raise -batch or lower -dim",
             (int)m, (int)(K + 1), (int)K);
  PetscCheck(p->knn >= 1 && p->knn < m, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE,
             "-knn %d must be between 1 and the number of points in the graph minus one (%d)", (int)p->knn,
             (int)(m - 1));
  PetscCheck(p->scale_neighbor >= 1 && p->scale_neighbor <= p->knn, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE,
             "-scale_neighbor %d must be between 1 and -knn %d", (int)p->scale_neighbor, (int)p->knn);
  PetscCheck(D >= 1, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "dimension D = %d must be at least 1",
             (int)D);
  PetscCall(PetscNew(&b));
  b->p = *p;
  b->m = m;
  b->D = D;
  PetscCall(BasisKnnCreate(m, p->knn, &b->knn));
  PetscCall(PetscMalloc4(m, &b->norm, m, &b->fnorm, KnnSelfGramSize(m), &b->G, m, &b->sigma));
  b->krylov = (PetscBool)(p->batch_solver == BASIS_BATCH_KRYLOV ||
                          (p->batch_solver == BASIS_BATCH_AUTO && m > BASIS_BATCH_DENSE_MAX));
  PetscCall(PetscMalloc1(K, &b->residual));
  if (b->krylov) { /* no dense arrays: an m x m matrix is what this route avoids */
    /* The batch solve's tolerance, 1e-5 instead of SLEPc's 1e-8: a batch's eigenvectors
       are training targets whose batch-to-batch noise is orders larger. On MNIST-10k,
       1000 steps gave d_G 0.2396 (1e-5) against 0.2398 (1e-8) for fewer Krylov
       iterations (docs/performance.md). -batch_eps_tol still wins. */
    b->p.eps_tol = 1e-5;
    *bg          = b;
    PetscFunctionReturn(0);
  }
  PetscCall(PetscMalloc5(m, &b->sorted, (size_t)m * m, &b->A, m, &b->dinv, m, &b->w, (size_t)m * K, &b->Z));
  PetscCall(PetscMalloc1(2 * K, &b->isuppz));
  PetscCall(PetscBLASIntCast(m, &n));
  PetscCall(PetscBLASIntCast(K, &iu));
  /* workspace query: lwork = liwork = -1 */
  dsyevr_("V", "I", "L", &n, &dummy, &n, &zero, &zero, &il, &iu, &zero, &nfound, b->w, b->Z, &n, b->isuppz,
          &wopt, &lwq, &iwopt, &liwq, &info);
  BasisCheckLapack("dsyevr (workspace query)", info);
  b->lwork  = (PetscBLASInt)wopt;
  b->liwork = iwopt;
  PetscCall(PetscMalloc2(b->lwork, &b->work, b->liwork, &b->iwork));
  *bg = b;
  PetscFunctionReturn(0);
}

/*
  BasisBatchGraphEmbed - the first K eigenpairs of the graph of one batch (DESIGN.md step 3).

  Not collective.

  Input:
    x - [m][D] the batch, row-major float
  Output:
    phi    - [m][K] row-major: eigenvectors of the K smallest eigenvalues (trivial included),
             unit 2-norm columns, entry of largest magnitude positive
    lambda - [K] the eigenvalues, ascending

  Notes:
    sym: K largest of N = D^-1/2 W D^-1/2, lambda = 1 - mu (computed as the K smallest of
    I - N); unnormalized: K smallest of D - W; rw: the sym pairs with v = D^-1/2 u, each
    column renormalised. Dense LAPACK dsyevr with an index range: only K vectors computed.
    Errors (never NaN): sigma 0 (duplicates), a point of degree 0.
*/
PetscErrorCode BasisBatchGraphEmbed(BasisBatchGraph bg, const float x[], PetscReal phi[], PetscReal lambda[])
{
  const PetscInt  m = bg->m, D = bg->D, K = bg->p.K, k = bg->p.knn;
  const BasisKnn *knn = &bg->knn;
  PetscReal      *A = bg->A, zero = 0;
  PetscInt        nzero = 0, firstzero = -1;
  PetscBLASInt    n, il                = 1, iu, nfound, info;

  PetscFunctionBeginUser;
  PetscCall(PetscLogEventBegin(BASIS_BatchGraph, 0, 0, 0, 0));
  KnnSelf(&bg->knn, D, x, bg->norm, bg->fnorm, bg->G);
  if (bg->krylov) { /* the distributed route on one rank: sparse W, SLEPc with prefix batch_ */
    Mat W;
    PetscCall(BasisGraphAssemble(PETSC_COMM_SELF, &bg->p, knn, 0, m, &W));
    PetscCall(PetscLogEventEnd(BASIS_BatchGraph, 0, 0, 0, 0));
    PetscCall(PetscLogEventBegin(BASIS_BatchEig, 0, 0, 0, 0));
    PetscCall(BasisGraphSolve(PETSC_COMM_SELF, "batch_", &bg->p, W, phi, lambda, bg->residual));
    PetscCall(MatDestroy(&W));
    PetscCall(PetscLogEventEnd(BASIS_BatchEig, 0, 0, 0, 0));
    PetscFunctionReturn(0);
  }
  PetscCall(SigmaCompute(PETSC_COMM_SELF, &bg->p, knn, "batch row", bg->sigma, bg->sorted));
  PetscCall(PetscArrayzero(A, (size_t)m * m));
  for (PetscInt i = 0; i < m; i++) {
    PetscReal s2 = bg->sigma[i] * bg->sigma[i];
    for (PetscInt t = 0; t < k; t++) {
      PetscInt  j = knn->idx[i * k + t];
      PetscReal h = 0.5 * PetscExpReal(-knn->d2[i * k + t] / s2);
      A[(size_t)i * m + j] += h;
      A[(size_t)j * m + i] += h;
    }
  }
  PetscCall(PetscLogFlops(6.0 * m * k));
  for (PetscInt i = 0; i < m; i++) {
    PetscReal deg = 0;
    for (PetscInt j = 0; j < m; j++) deg += A[(size_t)i * m + j];
    if (!(deg > 0)) {
      if (!nzero++) firstzero = i;
      bg->dinv[i] = 0;
    } else
      bg->dinv[i] = bg->p.laplacian == BASIS_LAPLACIAN_UNNORMALIZED ? deg : 1.0 / PetscSqrtReal(deg);
  }
  PetscCheck(!nzero, PETSC_COMM_SELF, PETSC_ERR_ARG_WRONG,
             "%d points of the batch have degree 0 (first: point %d): their affinities underflow; use -scale "
             "local or "
             "raise -knn",
             (int)nzero, (int)firstzero);
  /* the Laplacian: I - D^-1/2 W D^-1/2 (sym, rw) or D - W (unnormalized; dinv holds D) */
  if (bg->p.laplacian == BASIS_LAPLACIAN_UNNORMALIZED) {
    for (size_t ij = 0; ij < (size_t)m * m; ij++) A[ij] = -A[ij];
    for (PetscInt i = 0; i < m; i++) A[(size_t)i * m + i] = bg->dinv[i];
  } else {
    for (PetscInt i = 0; i < m; i++) {
      PetscReal *a = A + (size_t)i * m, di = -bg->dinv[i];
      for (PetscInt j = 0; j < m; j++) a[j] *= di * bg->dinv[j];
      a[i] = 1.0;
    }
  }
  PetscCall(PetscLogFlops(2.0 * m * m));
  PetscCall(PetscLogEventEnd(BASIS_BatchGraph, 0, 0, 0, 0));

  PetscCall(PetscLogEventBegin(BASIS_BatchEig, 0, 0, 0, 0));
  PetscCall(PetscBLASIntCast(m, &n));
  PetscCall(PetscBLASIntCast(K, &iu));
  /* abstol 0: LAPACK's default eps ||T||, full accuracy with the MRRR path */
  dsyevr_("V", "I", "L", &n, A, &n, &zero, &zero, &il, &iu, &zero, &nfound, bg->w, bg->Z, &n, bg->isuppz,
          bg->work, &bg->lwork, bg->iwork, &bg->liwork, &info);
  BasisCheckLapack("dsyevr", info);
  PetscCheck(nfound == K, PETSC_COMM_SELF, PETSC_ERR_LIB, "LAPACK dsyevr found %d of %d eigenpairs",
             (int)nfound, (int)K);
  /* tridiagonalisation dominates: about 4/3 m^3 */
  PetscCall(PetscLogFlops(4.0 / 3.0 * m * m * m + 2.0 * m * m * K));
  if (bg->p.laplacian == BASIS_LAPLACIAN_RW) {
    for (PetscInt j = 0; j < K; j++) {
      PetscReal *z = bg->Z + (size_t)j * m, nrm = 0;
      for (PetscInt i = 0; i < m; i++) {
        z[i] *= bg->dinv[i];
        nrm += z[i] * z[i];
      }
      nrm = 1.0 / PetscSqrtReal(nrm);
      for (PetscInt i = 0; i < m; i++) z[i] *= nrm;
    }
  }
  SignColumnsColMajor(m, K, m, bg->Z);
  for (PetscInt j = 0; j < K; j++) {
    lambda[j] = bg->w[j];
    for (PetscInt i = 0; i < m; i++) phi[(size_t)i * K + j] = bg->Z[(size_t)j * m + i];
  }
  PetscCall(PetscLogEventEnd(BASIS_BatchEig, 0, 0, 0, 0));
  PetscFunctionReturn(0);
}

/*
  BasisBatchGraphDestroy - free the workspace. Not collective; NULL-tolerant.
*/
PetscErrorCode BasisBatchGraphDestroy(BasisBatchGraph *bg)
{
  BasisBatchGraph b;

  PetscFunctionBeginUser;
  if (!bg || !*bg) PetscFunctionReturn(0);
  b = *bg;
  PetscCall(BasisKnnDestroy(&b->knn));
  PetscCall(PetscFree4(b->norm, b->fnorm, b->G, b->sigma));
  PetscCall(PetscFree(b->residual));
  if (!b->krylov) PetscCall(PetscFree5(b->sorted, b->A, b->dinv, b->w, b->Z));
  PetscCall(PetscFree(b->isuppz));
  PetscCall(PetscFree2(b->work, b->iwork));
  PetscCall(PetscFree(*bg));
  PetscFunctionReturn(0);
}

/* Insert the pattern or values of W for this rank's rows into M (a MATPREALLOCATOR or the
   AIJ): row i gets h_ij = w_ij / 2 at its kNN columns, each column j gets h_ij at row i,
   and the diagonal an explicit 0 so that D - W can later be formed in place. */
static PetscErrorCode SetAffinities(Mat M, const BasisGraphParams *p, const BasisKnn *knn, PetscInt rstart,
                                    const PetscReal sigma[], PetscScalar h[])
{
  const PetscInt k = p->knn;

  PetscFunctionBeginUser;
  for (PetscInt i = 0; i < knn->nq; i++) {
    const PetscInt *cols = knn->idx + (size_t)i * knn->k;
    PetscInt        gi   = rstart + i;
    PetscReal       s2   = sigma[i] * sigma[i];
    for (PetscInt t = 0; t < k; t++) h[t] = 0.5 * PetscExpReal(-knn->d2[(size_t)i * knn->k + t] / s2);
    PetscCall(MatSetValues(M, 1, &gi, k, cols, h, ADD_VALUES));
    PetscCall(MatSetValues(M, k, cols, 1, &gi, h, ADD_VALUES));
    PetscCall(MatSetValue(M, gi, gi, 0.0, ADD_VALUES));
  }
  PetscCall(MatAssemblyBegin(M, MAT_FINAL_ASSEMBLY));
  PetscCall(MatAssemblyEnd(M, MAT_FINAL_ASSEMBLY));
  PetscFunctionReturn(0);
}

/*
  BasisGraphAssemble - the symmetric affinity matrix W of a distributed point set.

  Collective on comm.

  Input:
    p       - graph rule; W uses the first p->knn entries of each list (knn->k may be
              larger, so one kNN search can serve several k)
    knn     - lists of this rank's rows [rstart, rstart + knn->nq); rows are split in rank
              order (any sizes)
    nglobal - number of points of the whole set
  Output:
    W - MATMPIAIJ nglobal x nglobal, knn->nq local rows: W_ij = (w_ij + w_ji)/2 with
        w_ij = exp(-d2_ij / sigma_i^2) for j in kNN(i), explicit zero diagonal; flagged
        symmetric

  Errors (the same on every rank): nglobal < K + 1, a list with fewer than knn entries,
  the errors of BasisGraphSigma, isolated points (degree 0).
*/
PetscErrorCode BasisGraphAssemble(MPI_Comm comm, const BasisGraphParams *p, const BasisKnn *knn,
                                  PetscInt rstart, PetscInt nglobal, Mat *W)
{
  const PetscInt     k      = p->knn;
  PetscInt           nshort = 0, r0, nisolated = 0;
  PetscMPIInt        size;
  PetscReal         *sigma;
  PetscScalar       *h;
  Mat                pre;
  Vec                deg;
  const PetscScalar *d;

  PetscFunctionBeginUser;
  PetscCheck(
      nglobal >= p->K + 1, comm, PETSC_ERR_ARG_OUTOFRANGE,
      "a graph of %d points cannot have K+1 = %d points, as -dim %d needs; lower -dim or use more points",
      (int)nglobal, (int)(p->K + 1), (int)p->K);
  PetscCheck(k >= 1 && k < nglobal, comm, PETSC_ERR_ARG_OUTOFRANGE,
             "-knn %d must be between 1 and the number of points in the graph minus one (%d)", (int)k,
             (int)(nglobal - 1));
  PetscCheck(knn->k >= k, comm, PETSC_ERR_ARG_SIZ, "the neighbour lists hold %d entries, fewer than -knn %d",
             (int)knn->k, (int)k);
  for (PetscInt i = 0; i < knn->nq; i++)
    if (knn->idx[(size_t)i * knn->k + k - 1] < 0) nshort++;
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &nshort, 1, MPIU_INT, MPI_SUM, comm));
  PetscCheck(!nshort, comm, PETSC_ERR_ARG_WRONG,
             "%d points have fewer than -knn %d neighbours in their lists; merge every block of points first",
             (int)nshort, (int)k);
  PetscCall(PetscMalloc2(knn->nq, &sigma, k, &h));
  PetscCall(BasisGraphSigma(comm, p, knn, sigma));

  PetscCallMPI(MPI_Comm_size(comm, &size));
  if (size == 1) {
    /* one process (every training step's batch graph): row i holds its k neighbours, the
       rows that list i (its in-degree, unbounded: hubs) and the diagonal; counted directly,
       an upper bound where two points list each other. The general route below, through
       MATPREALLOCATOR's hash table, cost as much as the batch's kNN (measured). */
    PetscInt *nnz;
    PetscCheck(knn->nq == nglobal && rstart == 0, comm, PETSC_ERR_ARG_SIZ,
               "one process holds %d of %d points starting at %d; it must hold all of them", (int)knn->nq,
               (int)nglobal, (int)rstart);
    PetscCall(PetscCalloc1(PetscMax(knn->nq, 1), &nnz));
    for (PetscInt i = 0; i < knn->nq; i++)
      for (PetscInt t = 0; t < k; t++) nnz[knn->idx[(size_t)i * knn->k + t]]++;
    for (PetscInt i = 0; i < knn->nq; i++) nnz[i] = PetscMin(nnz[i] + k + 1, nglobal);
    PetscCall(MatCreateSeqAIJ(comm, nglobal, nglobal, 0, nnz, W));
    PetscCall(PetscFree(nnz));
  } else {
    /* exact preallocation: the in-degree of a kNN graph is unbounded (hubs) */
    PetscCall(MatCreate(comm, &pre));
    PetscCall(MatSetSizes(pre, knn->nq, knn->nq, nglobal, nglobal));
    PetscCall(MatSetType(pre, MATPREALLOCATOR));
    PetscCall(MatSetUp(pre));
    PetscCall(MatGetOwnershipRange(pre, &r0, NULL));
    BasisCheckAll(
        comm, r0 == rstart, PETSC_ERR_ARG_WRONG,
        "the rows of the point set must be split in rank order: a rank's rstart differs from the sum of "
        "the row counts of the ranks before it");
    PetscCall(SetAffinities(pre, p, knn, rstart, sigma, h));
    PetscCall(MatCreate(comm, W));
    PetscCall(MatSetSizes(*W, knn->nq, knn->nq, nglobal, nglobal));
    PetscCall(MatSetType(*W, MATMPIAIJ));
    PetscCall(MatPreallocatorPreallocate(pre, PETSC_TRUE, *W));
    PetscCall(MatDestroy(&pre));
  }
  PetscCall(SetAffinities(*W, p, knn, rstart, sigma, h));
  PetscCall(PetscLogFlops(6.0 * knn->nq * k));
  PetscCall(MatSetOption(*W, MAT_SYMMETRIC, PETSC_TRUE));
  PetscCall(MatSetOption(*W, MAT_SYMMETRY_ETERNAL, PETSC_TRUE));
  PetscCall(PetscFree2(sigma, h));

  PetscCall(MatCreateVecs(*W, &deg, NULL));
  PetscCall(MatGetRowSum(*W, deg));
  PetscCall(VecGetArrayRead(deg, &d));
  for (PetscInt i = 0; i < knn->nq; i++)
    if (!(PetscRealPart(d[i]) > 0)) nisolated++;
  PetscCall(VecRestoreArrayRead(deg, &d));
  PetscCall(VecDestroy(&deg));
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &nisolated, 1, MPIU_INT, MPI_SUM, comm));
  PetscCheck(
      !nisolated, comm, PETSC_ERR_ARG_WRONG,
      "%d points are isolated (degree 0: all their affinities underflow); use -scale local or raise -knn",
      (int)nisolated);
  PetscFunctionReturn(0);
}

/*
  RecoverMissedEigenpairs - make sure no wanted eigenpair was missed.

  Single-vector Krylov methods can miss copies of a repeated eigenvalue: a graph of c
  disconnected pieces has eigenvalue 0 (of L) c times, and Krylov-Schur started from one
  vector returned 0, 0, 0.10 instead of 0, 0, 0 for three clusters (tests/test_exact.c).
  So after the solve, one more pair is sought in the orthogonal complement of the K found
  vectors (EPSSetDeflationSpace). If it beats the worst kept eigenvalue by more than the
  solver tolerance, it replaces it and the search repeats (at most K times). Each search
  starts from a fresh random vector (see below). Costs one nev = 1 solve when nothing was
  missed.

  Collective on comm. evs [K] and V [K] are ordered best first (largest for the
  normalised operator, smallest for D - W) and updated in place.
*/
static PetscErrorCode RecoverMissedEigenpairs(MPI_Comm comm, const char *prefix, Mat A, PetscBool smallest,
                                              PetscReal tol, PetscInt K, PetscReal evs[], Vec V[])
{
  PetscFunctionBeginUser;
  for (PetscInt round = 0; round < K; round++) {
    EPS         eps;
    PetscInt    nconv;
    PetscScalar ev;
    PetscBool   better;
    Vec         x;

    PetscCall(EPSCreate(comm, &eps));
    PetscCall(EPSSetOperators(eps, A, NULL));
    PetscCall(EPSSetProblemType(eps, EPS_HEP));
    PetscCall(EPSSetType(eps, EPSKRYLOVSCHUR));
    PetscCall(EPSSetWhichEigenpairs(eps, smallest ? EPS_SMALLEST_REAL : EPS_LARGEST_REAL));
    PetscCall(EPSSetDimensions(eps, 1, PETSC_DEFAULT, PETSC_DEFAULT));
    if (smallest) PetscCall(EPSSetConvergenceTest(eps, EPS_CONV_NORM));
    PetscCall(EPSSetDeflationSpace(eps, K, V));
    /* A fresh start vector: the first solve's own start vector has, in a repeated
       eigenspace, exactly the component the first solve found, so after deflation it
       would hold nothing of the missed direction. */
    {
      PetscRandom rnd;
      Vec         x0;
      PetscCall(VecDuplicate(V[0], &x0));
      PetscCall(PetscRandomCreate(comm, &rnd));
      PetscCall(PetscRandomSetSeed(rnd, (unsigned long)(7919 + 104729 * round)));
      PetscCall(PetscRandomSeed(rnd));
      PetscCall(VecSetRandom(x0, rnd));
      PetscCall(PetscRandomDestroy(&rnd));
      PetscCall(EPSSetInitialSpace(eps, 1, &x0));
      PetscCall(VecDestroy(&x0));
    }
    PetscCall(EPSSolve(eps));
    PetscCall(EPSGetConverged(eps, &nconv));
    if (nconv < 1) { /* nothing better found within the iteration limit: keep the solve */
      PetscCall(EPSDestroy(&eps));
      break;
    }
    PetscCall(VecDuplicate(V[0], &x));
    PetscCall(EPSGetEigenpair(eps, 0, &ev, NULL, x, NULL));
    PetscCall(EPSDestroy(&eps));
    /* 10 x the solver tolerance: eigenvalue estimates are accurate to about tol */
    better = smallest ? (PetscBool)(PetscRealPart(ev) < evs[K - 1] - 10 * tol)
                      : (PetscBool)(PetscRealPart(ev) > evs[K - 1] + 10 * tol);
    if (!better) {
      PetscCall(VecDestroy(&x));
      break;
    }
    PetscCall(PetscInfo(NULL, "%seigensolver: recovered a missed eigenvalue %g (replaces %g)\n",
                        prefix ? prefix : "", (double)PetscRealPart(ev), (double)evs[K - 1]));
    /* insert (ev, x) in order, dropping the worst */
    {
      PetscInt pos   = K - 1;
      Vec      worst = V[K - 1];
      while (pos > 0 && (smallest ? PetscRealPart(ev) < evs[pos - 1] : PetscRealPart(ev) > evs[pos - 1])) {
        evs[pos] = evs[pos - 1];
        V[pos]   = V[pos - 1];
        pos--;
      }
      evs[pos] = PetscRealPart(ev);
      V[pos]   = worst;
      PetscCall(VecCopy(x, V[pos]));
    }
    PetscCall(VecDestroy(&x));
  }
  PetscFunctionReturn(0);
}

/* Number of connected components of a one-process sparse matrix's graph (union-find over
   its CSR pattern; W stores no zeros off the diagonal). */
static PetscErrorCode CountComponents(Mat W, PetscInt *ncomp)
{
  const PetscInt *ia, *ja;
  PetscInt        n, *parent;
  PetscBool       done;

  PetscFunctionBeginUser;
  PetscCall(MatGetRowIJ(W, 0, PETSC_FALSE, PETSC_FALSE, &n, &ia, &ja, &done));
  PetscCheck(done, PETSC_COMM_SELF, PETSC_ERR_SUP, "MatGetRowIJ is not available for this matrix type");
  PetscCall(PetscMalloc1(n, &parent));
  for (PetscInt i = 0; i < n; i++) parent[i] = i;
  *ncomp = n;
  for (PetscInt i = 0; i < n; i++)
    for (PetscInt e = ia[i]; e < ia[i + 1]; e++) {
      PetscInt a = i, b = ja[e];
      while (parent[a] != a) a = parent[a] = parent[parent[a]]; /* path halving */
      while (parent[b] != b) b = parent[b] = parent[parent[b]];
      if (a != b) parent[PetscMax(a, b)] = PetscMin(a, b), (*ncomp)--;
    }
  PetscCall(PetscFree(parent));
  PetscCall(MatRestoreRowIJ(W, 0, PETSC_FALSE, PETSC_FALSE, &n, &ia, &ja, &done));
  PetscFunctionReturn(0);
}

/*
  WarnComponents - after a solve: a graph with c > 1 connected components has eigenvalue 0
  c times, and its first c eigenvectors only say which component a point is in (their rows
  are positive multiples of one vector per component: D^1/2 1_C for sym, 1_C otherwise).
  Counts the points of each component from those rows and warns on rank 0 (issue 7: a
  component smaller than K + 1 points is named, with the fix). The batch solve of a training
  step warns at most once per process.

  Collective on comm. phi [nlocal][K] row-major after the sign convention; lambda [K].
*/
static PetscErrorCode WarnComponents(MPI_Comm comm, const char *prefix, PetscInt K, PetscInt nlocal,
                                     const PetscReal phi[], const PetscReal lambda[], PetscReal zero)
{
  static PetscBool batch_warned = PETSC_FALSE;
  PetscBool        batch        = (PetscBool)(prefix && !strcmp(prefix, "batch_"));
  PetscInt         c = 0, nrep = 0, *count, *all_count = NULL, smallest = 0, nsmall = 0;
  PetscReal       *rep, *all_rep = NULL;
  PetscMPIInt      size, rank;
  char             name[64];

  PetscFunctionBeginUser;
  while (c < K && PetscAbsReal(lambda[c]) <= zero) c++;
  if (c < 2 || (batch && batch_warned)) PetscFunctionReturn(0);
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  /* this rank's distinct unit rows of the c zero columns (at most c of them), with counts;
     1e-6: the rows of one component agree to the solver's accuracy, different
     components' rows are orthogonal */
  PetscCall(PetscCalloc2((size_t)c * c, &rep, c, &count));
  for (PetscInt i = 0; i < nlocal; i++) {
    PetscReal u[BASIS_MAX_ZERO_COMPONENTS], nrm = 0;
    PetscInt  r;
    for (PetscInt j = 0; j < c; j++) u[j] = phi[(size_t)i * K + j], nrm += u[j] * u[j];
    nrm = PetscSqrtReal(nrm);
    if (!(nrm > 0)) continue;
    for (PetscInt j = 0; j < c; j++) u[j] /= nrm;
    for (r = 0; r < nrep; r++) {
      PetscReal d = 0;
      for (PetscInt j = 0; j < c; j++) d += PetscAbsReal(u[j] - rep[r * c + j]);
      if (d < 1e-6 * c) break;
    }
    if (r == nrep && nrep < c) PetscCall(PetscArraycpy(rep + (nrep++) * c, u, c));
    if (r < nrep) count[r]++;
  }
  /* merge on rank 0: the same matching over every rank's representatives */
  if (rank == 0) PetscCall(PetscMalloc2((size_t)size * c * c, &all_rep, (size_t)size * c, &all_count));
  PetscCallMPI(MPI_Gather(rep, (int)(c * c), MPIU_REAL, all_rep, (int)(c * c), MPIU_REAL, 0, comm));
  PetscCallMPI(MPI_Gather(count, (int)c, MPIU_INT, all_count, (int)c, MPIU_INT, 0, comm));
  if (rank == 0) {
    PetscInt n = 0, total[BASIS_MAX_ZERO_COMPONENTS] = {0};
    for (PetscInt q = 0; q < size * c; q++) {
      PetscInt r;
      if (!all_count[q]) continue;
      for (r = 0; r < n; r++) {
        PetscReal d = 0;
        for (PetscInt j = 0; j < c; j++) d += PetscAbsReal(all_rep[q * c + j] - rep[r * c + j]);
        if (d < 1e-6 * c) break;
      }
      if (r == n && n < c) PetscCall(PetscArraycpy(rep + (n++) * c, all_rep + q * c, c));
      if (r < n) total[r] += all_count[q];
    }
    smallest = PETSC_MAX_INT;
    for (PetscInt r = 0; r < n; r++) {
      smallest = PetscMin(smallest, total[r]);
      if (total[r] < K + 1) nsmall++;
    }
    PetscCall(PetscFree2(all_rep, all_count));
  }
  PetscCallMPI(MPI_Bcast(&smallest, 1, MPIU_INT, 0, comm));
  PetscCallMPI(MPI_Bcast(&nsmall, 1, MPIU_INT, 0, comm));
  {
    size_t len;
    PetscCall(PetscStrncpy(name, prefix ? prefix : "", sizeof(name)));
    PetscCall(PetscStrlen(name, &len));
    if (len && name[len - 1] == '_') name[len - 1] = ' '; /* "exact_" -> "exact " */
  }
  PetscCall(
      PetscPrintf(comm,
                  "warning: the %sgraph has %s%d connected components (eigenvalue 0 %d times); the first "
                  "%d eigenvectors only mark the components. The smallest has %d points%s. To embed one "
                  "connected graph, raise -knn or remove outlying points.\n",
                  name, c == K ? "at least " : "", (int)c, (int)c, (int)c, (int)smallest,
                  nsmall ? " (fewer than -dim + 1: such a component contributes nothing but its own "
                           "indicator)"
                         : ""));
  if (batch) batch_warned = PETSC_TRUE;
  PetscCall(PetscFree2(rep, count));
  PetscFunctionReturn(0);
}

/*
  BasisGraphSolve - the first K eigenpairs of the Laplacian of W with SLEPc.

  Collective on comm (the communicator of W).

  Input:
    prefix - options prefix of the eigensolver ("ref_": -ref_eps_type, -ref_eps_tol, ...)
    p      - Laplacian and K
    W      - from BasisGraphAssemble (symmetric, nonnegative, explicit diagonal)
  Output:
    phi      - [nlocal][K] row-major, this rank's rows: eigenvectors of the K smallest
               eigenvalues, unit 2-norm columns, entry of largest magnitude positive (ties
               to the lowest global row)
    lambda   - [K] eigenvalues, ascending
    residual - [K] ||L v - lambda v||_2 of each pair, L = I - D^-1/2 W D^-1/2 for sym
               and for rw (the residual of the symmetric pair u, before v = D^-1/2 u: the
               generalised residual would be D^1/2 times it and depend on the degree
               scale), L = D - W for unnormalized

  Options:
    -<prefix>eps_*        - any SLEPc EPS option; default Krylov-Schur at tolerance p->eps_tol
                            (0: SLEPc's). With
                            -<prefix>eps_type scalapack the operator becomes a MATSCALAPACK.
    -<prefix>recover_missed - search for a copy of a repeated eigenvalue that Krylov-Schur
                            missed (RecoverMissedEigenpairs). Default: always on several
                            processes (the reference and exact solves, one-off); on one
                            process (the batch solve of every training step) only when the
                            graph is disconnected, the one source of exactly repeated
                            eigenvalues in a graph of randomly sampled data points. The
                            search costs ~30% of a batch eigensolve.
    -<prefix>max_residual - refuse pairs whose residual exceeds this times ||L|| (1 for sym
                            and rw, 2 max degree for unnormalized); default 100 * eps_tol

  Notes:
    sym and rw solve for the LARGEST eigenvalues mu of N = D^-1/2 W D^-1/2 (lambda = 1 - mu):
    well separated at the top of the spectrum, so Krylov-Schur converges fast without
    shift-invert (notes/anchors.md). Errors: fewer than K converged pairs, a residual above
    the bound.
*/
PetscErrorCode BasisGraphSolve(MPI_Comm comm, const char *prefix, const BasisGraphParams *p, Mat W,
                               PetscReal phi[], PetscReal lambda[], PetscReal residual[])
{
  const PetscInt  K        = p->K;
  const PetscBool unnormal = p->laplacian == BASIS_LAPLACIAN_UNNORMALIZED ? PETSC_TRUE : PETSC_FALSE;
  Mat             A, As     = NULL;
  Vec             deg, dinv = NULL, v, r;
  EPS             eps;
  PetscInt        N, nlocal, rstart, nconv, maxit;
  PetscReal       tol, max_residual = -1, scale = 1, dmax;
  PetscBool       isscalapack, set, recover     = PETSC_TRUE;
  PetscMPIInt     rank, size;
  struct {
    double val;
    int    idx;
  } * loc;
  int       *sgn;
  PetscReal *evs;
  Vec       *V;

  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCall(MatGetSize(W, &N, NULL));
  PetscCall(MatGetLocalSize(W, &nlocal, NULL));
  PetscCall(MatGetOwnershipRange(W, &rstart, NULL));
  PetscCheck(
      N >= K + 1, comm, PETSC_ERR_ARG_OUTOFRANGE,
      "a graph of %d points cannot have K+1 = %d points, as -dim %d needs; lower -dim or use more points",
      (int)N, (int)(K + 1), (int)K);
  PetscCall(MatCreateVecs(W, &deg, NULL));
  PetscCall(MatGetRowSum(W, deg));
  PetscCall(VecMax(deg, NULL, &dmax));
  PetscCall(MatDuplicate(W, MAT_COPY_VALUES, &A));
  if (unnormal) {
    PetscCall(MatScale(A, -1.0));
    PetscCall(MatDiagonalSet(A, deg, INSERT_VALUES));
    scale = 2 * dmax; /* Gershgorin: ||D - W||_2 <= 2 max degree */
  } else {
    PetscReal dmin;
    PetscCall(VecMin(deg, NULL, &dmin));
    PetscCheck(dmin > 0, comm, PETSC_ERR_ARG_WRONG, "the graph has isolated points (degree 0)");
    PetscCall(VecDuplicate(deg, &dinv));
    PetscCall(VecCopy(deg, dinv));
    PetscCall(VecSqrtAbs(dinv));
    PetscCall(VecReciprocal(dinv));
    PetscCall(MatDiagonalScale(A, dinv, dinv));
  }
  PetscCall(MatSetOption(A, MAT_SYMMETRIC, PETSC_TRUE));

  PetscCall(EPSCreate(comm, &eps));
  PetscCall(EPSSetOptionsPrefix(eps, prefix));
  PetscCall(EPSSetOperators(eps, A, NULL));
  PetscCall(EPSSetProblemType(eps, EPS_HEP));
  PetscCall(EPSSetType(eps, EPSKRYLOVSCHUR));
  PetscCall(EPSSetWhichEigenpairs(eps, unnormal ? EPS_SMALLEST_REAL : EPS_LARGEST_REAL));
  PetscCall(EPSSetDimensions(eps, K, PETSC_DEFAULT, PETSC_DEFAULT));
  /* D - W has the eigenvalue 0: a test relative to |lambda| would never accept it */
  if (unnormal) PetscCall(EPSSetConvergenceTest(eps, EPS_CONV_NORM));
  if (p->eps_tol > 0) PetscCall(EPSSetTolerances(eps, p->eps_tol, PETSC_DEFAULT));
  PetscCall(EPSSetFromOptions(eps));
  PetscCall(PetscObjectTypeCompare((PetscObject)eps, EPSSCALAPACK, &isscalapack));
  /* the solver's copy of A: dense for ScaLAPACK; on one process (the batch graphs) the upper
     triangle only, so that each MatMult streams half the entries (~15% off the solve at
     m = 1024 and 4096, docs/performance.md) */
  if (isscalapack)
    PetscCall(MatConvert(A, MATSCALAPACK, MAT_INITIAL_MATRIX, &As));
  else if (size == 1)
    PetscCall(MatConvert(A, MATSEQSBAIJ, MAT_INITIAL_MATRIX, &As));
  if (As) PetscCall(EPSSetOperators(eps, As, NULL));
  PetscOptionsBegin(comm, prefix, "Graph eigensolver", NULL);
  {
    PetscBool rset;
    PetscCall(
        PetscOptionsBool("-recover_missed",
                         "Search once more in the complement of the K pairs found, for a copy of a repeated "
                         "eigenvalue that Krylov-Schur missed (default: always on several processes, on one "
                         "only for a disconnected graph)",
                         NULL, recover, &recover, &rset));
    if (!rset && size == 1 && !isscalapack) {
      PetscInt ncomp = 1;
      PetscCall(CountComponents(W, &ncomp));
      recover = (PetscBool)(ncomp > 1);
    }
  }
  PetscCall(PetscOptionsReal(
      "-max_residual",
      "Refuse eigenpairs with ||L v - lambda v|| above this times ||L|| (default 100 * eps_tol)", NULL,
      max_residual, &max_residual, &set));
  PetscOptionsEnd();
  PetscCall(EPSSolve(eps));
  PetscCall(EPSGetConverged(eps, &nconv));
  PetscCall(EPSGetTolerances(eps, &tol, &maxit));
  PetscCheck(nconv >= K, comm, PETSC_ERR_NOT_CONVERGED,
             "the eigensolver converged %d of the -dim %d eigenpairs; raise -%seps_max_it (now %d) or "
             "-%seps_tol (now %g)",
             (int)nconv, (int)K, prefix ? prefix : "", (int)maxit, prefix ? prefix : "", (double)tol);
  /* The Krylov-Schur estimate and the true residual agree to a small factor; 100 leaves
     that margin without accepting a solve that missed its tolerance by orders. */
  if (!set) max_residual = 100 * tol;

  PetscCall(MatCreateVecs(W, &v, &r));
  PetscCall(PetscMalloc3(K, &loc, K, &sgn, K, &evs));
  PetscCall(VecDuplicateVecs(v, K, &V));
  for (PetscInt j = 0; j < K; j++) {
    PetscScalar ev;
    PetscCall(EPSGetEigenpair(eps, j, &ev, NULL, V[j], NULL));
    evs[j] = PetscRealPart(ev);
  }
  if (!isscalapack && recover)
    PetscCall(RecoverMissedEigenpairs(comm, prefix, A, unnormal, tol * scale, K, evs, V));

  for (PetscInt j = 0; j < K; j++) {
    PetscScalar        ev = evs[j];
    const PetscScalar *a;
    PetscReal          nrm;

    PetscCall(VecCopy(V[j], v));
    PetscCall(VecNormalize(v, NULL));
    PetscCall(MatMult(A, v, r));
    PetscCall(VecAXPY(r, -ev, v));
    PetscCall(VecNorm(r, NORM_2, &residual[j]));
    lambda[j] = unnormal ? PetscRealPart(ev) : 1.0 - PetscRealPart(ev);
    if (p->laplacian == BASIS_LAPLACIAN_RW) {
      PetscCall(VecPointwiseMult(v, v, dinv));
      PetscCall(VecNormalize(v, &nrm));
    }
    PetscCall(VecGetArrayRead(v, &a));
    loc[j].val = -1;
    loc[j].idx = 0;
    for (PetscInt i = 0; i < nlocal; i++) {
      phi[(size_t)i * K + j] = PetscRealPart(a[i]);
      if (PetscAbsScalar(a[i]) > loc[j].val) {
        loc[j].val = PetscAbsScalar(a[i]);
        loc[j].idx = (int)(rstart + i);
      }
    }
    PetscCall(VecRestoreArrayRead(v, &a));
  }
  /* sign convention over all ranks: MPI_MAXLOC keeps the lowest index among equal maxima */
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, loc, (int)K, MPI_DOUBLE_INT, MPI_MAXLOC, comm));
  for (PetscInt j = 0; j < K; j++) {
    PetscInt i = loc[j].idx - rstart;
    sgn[j]     = (i >= 0 && i < nlocal) ? (phi[(size_t)i * K + j] < 0 ? -1 : 1) : 0;
  }
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, sgn, (int)K, MPI_INT, MPI_SUM, comm));
  for (PetscInt j = 0; j < K; j++)
    if (sgn[j] < 0)
      for (PetscInt i = 0; i < nlocal; i++) phi[(size_t)i * K + j] = -phi[(size_t)i * K + j];
  for (PetscInt j = 0; j < K; j++)
    PetscCheck(residual[j] <= max_residual * scale, comm, PETSC_ERR_NOT_CONVERGED,
               "eigenpair %d (lambda = %g) has residual %g, above -%smax_residual %g times ||L|| %g; lower "
               "-%seps_tol or raise -%smax_residual",
               (int)j, (double)lambda[j], (double)residual[j], prefix ? prefix : "", (double)max_residual,
               (double)scale, prefix ? prefix : "", prefix ? prefix : "");
  if (K <= BASIS_MAX_ZERO_COMPONENTS)
    /* 1e-9 relative to ||L||: the eigenvalue 0 of a disconnected graph comes out at ~1e-15
       (symmetric Rayleigh quotients are accurate to the residual squared), while the
       smallest nonzero one of the data graphs measured here is >= 1e-3 */
    PetscCall(WarnComponents(comm, prefix, K, nlocal, phi, lambda, 1e-9 * scale));
  PetscCall(PetscFree3(loc, sgn, evs));
  PetscCall(VecDestroyVecs(K, &V));
  PetscCall(VecDestroy(&v));
  PetscCall(VecDestroy(&r));
  PetscCall(VecDestroy(&deg));
  PetscCall(VecDestroy(&dinv));
  PetscCall(EPSDestroy(&eps));
  PetscCall(MatDestroy(&As));
  PetscCall(MatDestroy(&A));
  PetscFunctionReturn(0);
}
