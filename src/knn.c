/*
  knn.c - exact k-nearest-neighbour lists, the first step of the one graph rule (DESIGN.md
  "The algorithm": kNN, Euclidean, self excluded) for the batch graph (step 3), the
  reference graph (step 2) and the exact baseline. Not collective: distributed callers
  (exact.c's ring, ref.c's row blocks) merge blocks of points into their own rows' lists.

  BasisKnnUpdate: squared distances by single-precision GEMM, ||q||^2 + ||p||^2 - 2 q.p, in
  bounded tiles; for each query row the GEMM values only select candidates, with a
  rigorous error margin, and every candidate kept is recomputed exactly in double from the
  coordinates. The lists are therefore exactly those of a double-precision brute-force
  search (ties broken by the smaller global index), whatever the order of the point blocks:
  float GEMM cancellation would otherwise corrupt small distances and with them sigma.
  BasisKnnSelf: the same lists of a point set among itself (the batch graph) with a
  symmetric Gram matrix, half the GEMM flops; its workspace is kept in the lists, so a batch
  graph reusing one BasisKnn allocates nothing per step. Its Gram products may be bfloat16
  (BasisKnnSetGemm, -knn_gemm; oneDNN, bf16gram.c: twice the float rate on CPUs with
  bfloat16 dot products): the margin then also covers the rounding of the points, bounded
  from the actual rounding errors of the batch, and the lists are the same bit for bit.

  Units (BasisKnnScaleExponent, BasisKnnScaleCopy, BasisKnnUnscale): the float GEMM
  overflows for coordinates near 1e19 and loses small products below ~1e-19, so the lists
  of X and of c X would differ although the graph rule is invariant to a global scale c
  (issue 18). A point set is therefore searched as 2^e X, the power of two that puts its
  largest |value| in [1, 2), and the squared distances are scaled back by 2^-2e. Both
  steps are exact for normal floats and doubles, so data already in range give bitwise the
  lists they gave before, and X and c X the same lists up to the rounding of c X itself.
  Denormal input (|value| < 1.2e-38) lost bits when it was stored; it is scaled up exactly
  and gets the lists of the values as stored.
*/
#include <basis/knn.h>
#include <cblas.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
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
  knn->nq      = nq;
  knn->k       = k;
  knn->xn      = NULL;
  knn->scaled  = NULL;
  knn->nscaled = 0;
  knn->pf      = NULL;
  knn->gram    = NULL;
  knn->gemm    = BASIS_KNN_GEMM_FLOAT;
  knn->bf16    = NULL;
  knn->nexact  = 0;
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
  PetscCall(PetscFree3(knn->xn, knn->pf, knn->gram));
  PetscCall(PetscFree(knn->scaled));
  PetscCall(BasisBf16GramDestroy(&knn->bf16));
  knn->nscaled = 0;
  knn->nq = knn->k = 0;
  PetscFunctionReturn(0);
}

const char *const BasisKnnGemmTypes[] = {"auto", "float", "bf16", "BasisKnnGemmType", "BASIS_KNN_GEMM_",
                                         NULL};

/*
  BasisKnnSetGemm - the precision of BasisKnnSelf's Gram products.

  Not collective. Input: type, float, bf16 or auto (bf16 where BasisBf16GramNative). Output:
  used (may be NULL), float or bf16: bf16 where oneDNN runs a bfloat16 matmul on this CPU,
  with or without native instructions (the tests compare both paths anywhere), else float.

  Notes: the lists are the same in either precision; bf16 selects the candidates with a
  wider margin (see the candidate bound below).
*/
PetscErrorCode BasisKnnSetGemm(BasisKnn *knn, BasisKnnGemmType type, BasisKnnGemmType *used)
{
  PetscBool native;

  PetscFunctionBeginUser;
  if (type == BASIS_KNN_GEMM_AUTO) {
    PetscCall(BasisBf16GramNative(&native, NULL));
    type = native ? BASIS_KNN_GEMM_BF16 : BASIS_KNN_GEMM_FLOAT;
  }
  if (type == BASIS_KNN_GEMM_BF16 && !knn->bf16) PetscCall(BasisBf16GramCreate(&knn->bf16));
  knn->gemm = type == BASIS_KNN_GEMM_BF16 && knn->bf16 ? BASIS_KNN_GEMM_BF16 : BASIS_KNN_GEMM_FLOAT;
  if (used) *used = knn->gemm;
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

static inline PetscBool InList(PetscInt k, const PetscInt idx[], PetscInt g)
{
  for (PetscInt t = 0; t < k; t++)
    if (idx[t] == g) return PETSC_TRUE;
  return PETSC_FALSE;
}

/* Merge (d, g) into the sorted list idx, d2 [k] if it orders before the last entry. */
static inline void Merge(PetscInt k, PetscInt idx[], PetscReal d2[], PetscReal d, PetscInt g)
{
  if (Before(d, g, d2[k - 1], idx[k - 1])) ListInsert(k, idx, d2, d, g);
}

/* Offer point b (global index g) to the sorted list idx, d2 [k] of point a: its exact
   distance, merged (Merge); counted in exact. Returns the distance. */
BASIS_ALWAYS_INLINE static inline PetscReal Offer(PetscInt D, const float a[], const float b[], PetscInt g,
                                                  PetscInt k, PetscInt idx[], PetscReal d2[],
                                                  PetscLogDouble *exact)
{
  const PetscReal d = Dist2(D, a, b);

  *exact += 1;
  Merge(k, idx, d2, d, g);
  return d;
}

/* A tile of points against themselves (BasisKnnSelf's diagonal blocks), whose rows are
   merged in order: an exact distance computed for row i is also merged into the list of
   column j > i, the lists of the tile's columns being idx + j k, d2 + j k; a later row
   skips the columns already in its list. Each pair's distance is then computed once where
   both lists want it: 11.6 exact distances per point became 9.1 (MNIST, m = 1024,
   bench/knn_probe; 10.3-11.7 ms became 9.0-9.9). The lists are the same: a list is the k best of what is
   merged into it, whatever the order (ties by index), and no point enters it twice. */
typedef struct {
  PetscInt  *idx;
  PetscReal *d2;
} KnnShare;

/* Offer column j (global g0 + j, point b) to row gi's list as Offer does, and the distance
   to column j's list if the tile is shared (sh) and j's row comes later. */
BASIS_ALWAYS_INLINE static inline void OfferShared(PetscInt D, const float a[], const float b[], PetscInt gi,
                                                   PetscInt g0, PetscInt j, PetscInt k, PetscInt idx[],
                                                   PetscReal d2[], const KnnShare *sh, PetscLogDouble *exact)
{
  const PetscReal d = Offer(D, a, b, g0 + j, k, idx, d2, exact);

  if (sh && g0 + j > gi) { /* not twice: row i may offer j again (a seed not kept, then filtered) */
    PetscInt *idxj = sh->idx + (size_t)j * k;
    if (!InList(k, idxj, gi)) Merge(k, idxj, sh->d2 + (size_t)j * k, d, gi);
  }
}

/* The margins of the candidate bound (see below MarkRow): c relative and a absolute for the
   double bound, c2 for the float pre-filter. */
typedef struct {
  PetscReal c, c2, a;
} KnnMargin;

/* rho: a bound on the relative rounding error of the points before the product, 0 for
   float GEMM on the float points, BasisBf16GramSetPoints' for bfloat16. */
static inline KnnMargin Margins(PetscInt D, PetscReal rho)
{
  const PetscReal cf = (PetscReal)(D + 2) * FLT_EPSILON;
  KnnMargin       m;

  m.c  = 2 * rho + rho * rho + (1 + rho) * (1 + rho) * cf;
  m.c2 = m.c + 4 * FLT_EPSILON;
  m.a  = (PetscReal)(D + 2) * 0x1p-120;
  return m;
}

/* The float pre-filter: with a threshold tau that k points are known to meet (the list's
   k-th exact distance, once full), a point j can enter the list of point i only if
   FilterNorm(pn_j) + g_ij <= FilterThreshold(tau, qn_i), both sides in float. */
static inline float FilterNorm(PetscReal xn, KnnMargin mg)
{
  return xn < 1e30 ? (float)((1 - mg.c2) * xn) : -INFINITY; /* the filter is off there anyway */
}

static inline float FilterThreshold(PetscReal tau, PetscReal xn, KnnMargin mg)
{
  const PetscReal thr = tau - (1 - mg.c2) * xn + mg.a;
  const float     T   = (float)thr;

  return (PetscReal)T < thr ? nextafterf(T, FLT_MAX) : T; /* rounded up; a list not full: inf */
}

/* The double bound: a_j - margin_j, a lower bound on the exact d2_j; s = qn + pn_j, g = g_j.
   A point whose bound exceeds a list's k-th exact distance cannot enter it. */
static inline PetscReal LowerBound(PetscReal s, float g, KnnMargin mg)
{
  return s + (PetscReal)g - mg.c * s - mg.a;
}

/* Squared norms in double, summed in vector lanes (the order is the compiler's): they enter
   only the candidate bounds, whose margins are orders wider than D 2^-53 relative, never a
   distance of the lists. A serial sum was a chain of dependent adds: 2.5% of a batch's
   graph and eigensolve at D = 784 (perf record of bench/batch_probe). */
static void SquaredNorms(PetscInt n, PetscInt D, const float x[], PetscReal nrm[])
{
  for (PetscInt i = 0; i < n; i++) {
    const float *xi = x + (size_t)i * D;
    PetscReal    s  = 0;
#pragma omp simd reduction(+ : s)
    for (PetscInt d = 0; d < D; d++) s += (PetscReal)xi[d] * xi[d];
    nrm[i] = s;
  }
}

PetscReal BasisKnnDistance2(PetscInt D, const float a[], const float b[])
{
  return Dist2(D, a, b);
}

void BasisKnnSquaredNorms(PetscInt n, PetscInt D, const float x[], PetscReal nrm[])
{
  SquaredNorms(n, D, x, nrm);
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

/*
  The candidate bound, shared by every kNN routine below. From GEMM, a_j = qn + pn_j +
  g_j with g_j the computed -2 q.p_j differs from the exact d2_j by at most margin_j = c (qn
  + pn_j) + a (Margins), c = 2 rho + rho^2 + (1 + rho)^2 (D + 2) FLT_EPSILON, a = (D + 2)
  2^-120, where rho bounds the relative error of the points as the product reads them:
  - float (BasisKnnUpdate; BasisKnnSelf by default): rho = 0, c = (D + 2) FLT_EPSILON (the
    float dot-product error bound gamma_D ||q|| ||p|| <= D u (qn + pn_j)/2, doubled by the
    factor 2, plus the final rounding; FLT_EPSILON = 2u leaves another factor 2 of safety).
  - bfloat16 (BasisKnnSelf with -knn_gemm bf16): the product reads q^ = q + e_q, p^ = p +
    e_p, the points rounded to bfloat16 (8 significant bits) with subnormals flushed, and
    rho >= ||e_x|| / ||x|| for every point, computed from the actual roundings
    (BasisBf16GramSetPoints: at most u_b = 2^-8, 0.4-0.6 u_b on batches of data). Then
    |q^.p^ - q.p| = |q.e_p + e_q.p + e_q.e_p| <= (2 rho + rho^2) ||q|| ||p|| (Cauchy-
    Schwarz). A product of two bfloat16 values is exact in float (16 significant bits); the
    D products are summed in float in the kernel's order, within gamma_D sum_d |q^_d p^_d|
    <= gamma_D (1 + rho)^2 ||q|| ||p||, and a product or sum below 2^-126 may be flushed to
    zero (at most 2^-126 each, 2 D + 1 of them with the exact scale by -2). With 2 ||q||
    ||p|| <= qn + pn_j: |g_j + 2 q.p_j| <= [2 rho + rho^2 + (1 + rho)^2 gamma_D] (qn + pn_j)
    + (4 D + 2) 2^-126; c takes gamma_D with the float case's factor 2 of safety. rho is
    computed, not estimated, so its term needs none (a worst case 2 u_b would send twice as
    many candidates or more to the exact recheck).
  - a = (D + 2) 2^-120 covers those flushes 16 times over; float's gradual underflow (at
    most 2^-150 per operation) is far inside it.
  A point whose lower bound a_j - margin_j exceeds a threshold tau that k other points are
  known to meet cannot enter the list; every other one is recomputed exactly (Dist2) and
  merged. Ties are kept (<=), so the lists are those of a double-precision brute force. The
  double bound is computed only for the survivors of a float pre-filter, ((1 - c2) pn_j +
  g_j <= tau - (1 - c2) qn + a in float, c2 = c + 4 FLT_EPSILON): the wider margin covers
  the filter's own roundings, u pn_j for pf_j and u |pf_j + g_j| <= u (2 + c)(qn + pn_j) for
  the sum (|g_j| <= (1 + c)(qn + pn_j)), within 8u (qn + pn_j) in either precision; the
  threshold is rounded up. The filter marks a whole tile row in one vector pass (a byte per
  column) and the marks are scanned eight at a time, so with a good threshold the per-column
  scalar work is done for a few columns of a row. Norms of 1e30 or more (float could
  overflow) switch the filter off: every column gets the double bound (and BasisKnnSelf the
  float product).
*/

/*
  FilterRow - offer to the list idx, d2 [k] of query q_i (global index gi, squared norm
  qni) the columns of one tile row g [cols] that may enter it: points p [cols][D], global
  indices g0 + j, squared norms pn [cols], FilterNorm values pf [cols]. The threshold is
  the list's k-th distance (every column is examined while it is not full) and tightens
  with every insertion; the float filter marks the columns against the threshold at the
  start (mark [cols] scratch), the double bound uses the current one. seeded: the list
  holds seeds from this tile row (SeedRow), which are not offered twice; sh: a shared tile
  (KnnShare), whose earlier rows may have merged columns of this one already.
*/
static void FilterRow(PetscInt D, KnnMargin mg, const float qi[], PetscInt gi, PetscReal qni, const float p[],
                      PetscInt g0, const PetscReal pn[], const float pf[], const float g[], PetscInt cols,
                      PetscBool filter, PetscBool seeded, const KnnShare *sh, PetscInt k, PetscInt idx[],
                      PetscReal d2[], unsigned char mark[], PetscLogDouble *exact)
{
  PetscReal tau = d2[k - 1];

  if (filter)
    MarkRow(cols, pf, g, FilterThreshold(tau, qni, mg), mark);
  else
    memset(mark, 1, (size_t)cols);
  for (PetscInt j = NextMark(0, cols, mark); j < cols; j = NextMark(j + 1, cols, mark)) {
    const PetscReal s = qni + pn[j];

    if (g0 + j == gi || LowerBound(s, g[j], mg) > tau) continue;
    if ((seeded || sh) && InList(k, idx, g0 + j)) continue;
    OfferShared(D, qi, p + (size_t)j * D, gi, g0, j, k, idx, d2, sh, exact);
    tau = d2[k - 1];
  }
}

/*
  SeedRow - the first tile row of a list that is not full: offer it k good columns, so that
  FilterRow starts from a threshold near the final one instead of examining every column.
  The columns are dealt into nb blocks, k + 1 or more if the row is that long (block b:
  columns b, b + nb, ..., so that the minima of all blocks and where they are come from
  one vertical vector pass); the column of smallest filter value in each of the k blocks
  of smallest minimum is offered (the query itself excluded; in a shared tile, sh, so is
  a column already in the list). Scratch: fm [nb], fa [nb], best [k], bestv [k].
*/
static void SeedRow(PetscInt D, const float qi[], PetscInt gi, const float p[], PetscInt g0, const float pf[],
                    const float g[], PetscInt cols, const KnnShare *sh, PetscInt k, PetscInt idx[],
                    PetscReal d2[], float fm[], PetscInt fa[], PetscInt best[], float bestv[],
                    PetscLogDouble *exact)
{
  const PetscInt nb = PetscMin(cols, PetscMax(k + 1, cols / BASIS_KNN_SEED_BLOCK)), self = gi - g0;
  PetscInt       nbest = 0;

  for (PetscInt b = 0; b < nb; b++) {
    fm[b] = FLT_MAX;
    fa[b] = -1;
  }
  for (PetscInt jt = 0; jt < cols; jt += nb) {
    const PetscInt nbt = PetscMin(nb, cols - jt);
    if (self >= jt && self < jt + nbt) /* the one row of blocks with the query in it */
      for (PetscInt b = 0; b < nbt; b++) {
        const float v = pf[jt + b] + g[jt + b];
        fa[b]         = v < fm[b] && jt + b != self ? jt + b : fa[b];
        fm[b]         = v < fm[b] && jt + b != self ? v : fm[b];
      }
    else { /* without the test of self, a vector pass (with it, GCC left the loop scalar) */
#pragma omp simd
      for (PetscInt b = 0; b < nbt; b++) {
        const float v = pf[jt + b] + g[jt + b];
        fa[b]         = v < fm[b] ? jt + b : fa[b];
        fm[b]         = v < fm[b] ? v : fm[b];
      }
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
  for (PetscInt s = 0; s < nbest; s++)
    if (!sh || !InList(k, idx, g0 + best[s]))
      OfferShared(D, qi, p + (size_t)best[s] * D, gi, g0, best[s], k, idx, d2, sh, exact);
}

/*
  MergeTile - merge the candidates of one GEMM tile into the lists of its query rows.

  Rows i0 .. i0 + rows of q against points j0 .. j0 + cols of p; G [rows][ldg] holds
  -2 q_i.p_j in float in its first cols columns; qn [nq], pn [np] are squared norms in
  double; mg the margins of the precision G was computed in. A row whose list is not full
  yet (its first tile) is seeded first (SeedRow), then filtered (FilterRow). share: the
  tile is points i0 .. of x against themselves (q = p, i0 = j0, rows = cols, qstart =
  pstart = 0), its distances shared between the pair's lists (KnnShare).
*/
static void MergeTile(BasisKnn *knn, PetscInt D, KnnMargin mg, const float q[], PetscInt qstart,
                      const PetscReal qn[], PetscInt i0, PetscInt rows, const float p[], PetscInt pstart,
                      const PetscReal pn[], PetscInt j0, PetscInt cols, const float G[], PetscInt ldg,
                      PetscBool share, PetscLogDouble *exact)
{
  const PetscInt   k = knn->k, g0 = pstart + j0;
  KnnShare         tile = {NULL, NULL}, *sh = NULL;
  const PetscReal *pnj = pn + j0;
  const float     *pj  = p + (size_t)j0 * D;
  /* scratch (BasisKnnCreate): pf [cols], fm [cols], bestv [k]; fa [cols], best [k]; mark [cols] */
  float *restrict pf = knn->fwork, *restrict fm = pf + cols, *restrict bestv = fm + cols;
  PetscInt *restrict fa = knn->iwork, *restrict best = fa + cols;
  PetscReal pnmax = 0;

  if (share) { /* the tile's columns are the lists' points j0 .. */
    tile.idx = knn->idx + (size_t)j0 * k;
    tile.d2  = knn->d2 + (size_t)j0 * k;
    sh       = &tile;
  }
  for (PetscInt j = 0; j < cols; j++) {
    pf[j] = FilterNorm(pnj[j], mg);
    pnmax = PetscMax(pnmax, pnj[j]);
  }
  for (PetscInt r = 0; r < rows; r++) {
    const PetscInt  i = i0 + r, gi = qstart + i;
    const float    *g = G + (size_t)r * ldg, *qi = q + (size_t)i * D;
    PetscInt       *idx    = knn->idx + (size_t)i * k;
    PetscReal      *d2     = knn->d2 + (size_t)i * k;
    const PetscBool seeded = d2[k - 1] == PETSC_MAX_REAL ? PETSC_TRUE : PETSC_FALSE;

    if (seeded) SeedRow(D, qi, gi, pj, g0, pf, g, cols, sh, k, idx, d2, fm, fa, best, bestv, exact);
    FilterRow(D, mg, qi, gi, qn[i], pj, g0, pnj, pf, g, cols, (PetscBool)(pnmax < 1e30 && qn[i] < 1e30),
              seeded, sh, k, idx, d2, knn->mark, exact);
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
static void FilterPairs(BasisKnn *knn, PetscInt D, KnnMargin mg, const float x[], const PetscReal xn[],
                        const float pf[], PetscInt i0, PetscInt rows, PetscInt j0, PetscInt cols,
                        const float G[], float T[], PetscBool filter, PetscLogDouble *exact)
{
  const PetscInt k    = knn->k;
  unsigned char *mark = knn->mark;
  const float   *pfj  = pf + j0;

  for (PetscInt r = 0; r < rows; r++) {
    const PetscInt  i = i0 + r;
    const float    *g = G + (size_t)r * cols, *xi = x + (size_t)i * D, pfi = pf[i];
    const PetscReal xni = xn[i];
    PetscInt       *idx = knn->idx + (size_t)i * k;
    PetscReal      *d2  = knn->d2 + (size_t)i * k;
    const float     TR  = FilterThreshold(d2[k - 1], xni, mg);

    if (filter) {
#pragma omp simd
      for (PetscInt j = 0; j < cols; j++) mark[j] = (pfj[j] + g[j] <= TR) | (pfi + g[j] <= T[j]) << 1;
    } else
      memset(mark, 3, (size_t)cols);
    for (PetscInt j = NextMark(0, cols, mark); j < cols; j = NextMark(j + 1, cols, mark)) {
      const PetscReal a   = LowerBound(xni + xn[j0 + j], g[j], mg);
      PetscReal      *d2j = knn->d2 + (size_t)(j0 + j) * k;

      PetscReal d = -1; /* the pair's exact distance once computed (symmetric, bit for bit) */

      if ((mark[j] & 1) && !(a > d2[k - 1]))
        d = Offer(D, xi, x + (size_t)(j0 + j) * D, j0 + j, k, idx, d2, exact);
      if ((mark[j] & 2) && !(a > d2j[k - 1])) {
        if (d < 0)
          Offer(D, x + (size_t)(j0 + j) * D, xi, i, k, knn->idx + (size_t)(j0 + j) * k, d2j, exact);
        else
          Merge(k, knn->idx + (size_t)(j0 + j) * k, d2j, d, i);
        T[j] = FilterThreshold(d2j[k - 1], xn[j0 + j], mg);
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

/* G [rows][ldg] = -2 x_i.x_j, rows i0 .. of the batch x against its columns j0 ..: float
   GEMM, or bfloat16 (the points BasisBf16GramSetPoints kept, which are x rounded). */
static PetscErrorCode GramStrip(BasisKnn *knn, PetscBool bf16, PetscInt D, const float x[], PetscInt i0,
                                PetscInt rows, PetscInt j0, PetscInt cols, float G[], PetscInt ldg)
{
  PetscFunctionBeginUser;
  if (bf16)
    PetscCall(BasisBf16GramProduct(knn->bf16, i0, rows, j0, cols, G, ldg));
  else {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)cols, (int)D, -2.0f,
                x + (size_t)i0 * D, (int)D, x + (size_t)j0 * D, (int)D, 0.0f, G, (int)ldg);
    PetscCall(PetscLogFlops(2.0 * rows * cols * D));
  }
  PetscFunctionReturn(0);
}

/* The diagonal Gram block of points b0 .. b0 + n, G [n][ld], whole: its lower triangle by
   SYRK (float) or by strips of BASIS_KNN_STRIP rows up to the diagonal (bfloat16: oneDNN
   has no SYRK; 9/16 of a full GEMM's flops for n = 1024), then mirrored. */
static PetscErrorCode GramDiag(BasisKnn *knn, PetscBool bf16, PetscInt D, const float x[], PetscInt b0,
                               PetscInt n, float G[], PetscInt ld)
{
  PetscFunctionBeginUser;
  if (bf16)
    for (PetscInt i0 = 0; i0 < n; i0 += BASIS_KNN_STRIP) {
      const PetscInt rows = PetscMin(BASIS_KNN_STRIP, n - i0);
      PetscCall(BasisBf16GramProduct(knn->bf16, b0 + i0, rows, b0, i0 + rows, G + (size_t)i0 * ld, ld));
    }
  else {
    cblas_ssyrk(CblasRowMajor, CblasLower, CblasNoTrans, (int)n, (int)D, -2.0f, x + (size_t)b0 * D, (int)D,
                0.0f, G, (int)ld);
    PetscCall(PetscLogFlops((PetscLogDouble)n * (n + 1) * D));
  }
  MirrorLower(n, ld, G);
  PetscFunctionReturn(0);
}

/*
  KnnSelf - the kNN lists of m points among themselves (the batch graph), with workspace
  xn [m] (squared norms), pf [m] (their FilterNorm) and G [KnnSelfGramSize(m)].

  The points are cut into blocks of BASIS_KNN_SELF_BLOCK. First each block against itself
  (GramDiag: half the flops of a GEMM), which seeds and fills every list from its own block
  (MergeTile); then each pair of blocks once, in strips of BASIS_KNN_STRIP rows
  (FilterPairs), each strip of G read once for both lists of every pair in it. Same lists
  as BasisKnnUpdate of x against itself, ties included, in either precision of the Gram
  products (knn->gemm; bfloat16 only where the float filter is on, i.e. every squared norm
  is below 1e30 -- BasisKnnSelf's scaling makes them at most 4 D -- and with its wider
  margins). The exact distances computed are counted in knn->nexact.
*/
static inline size_t KnnSelfGramSize(PetscInt m)
{
  const PetscInt n = PetscMin(BASIS_KNN_SELF_BLOCK, m);

  return (size_t)n * (n + BASIS_KNN_SELF_PAD);
}

static PetscErrorCode KnnSelf(BasisKnn *knn, PetscInt D, const float x[], PetscReal xn[], float pf[],
                              float G[])
{
  const PetscInt m = knn->nq, B = BASIS_KNN_SELF_BLOCK, S = BASIS_KNN_STRIP;
  float         *T      = knn->fwork; /* [B]: FilterPairs' column thresholds */
  PetscBool      filter = PETSC_TRUE, bf16;
  PetscReal      rho    = 0;
  KnnMargin      mg;
  PetscLogDouble exact = 0;

  PetscFunctionBeginUser;
  KnnReset(knn);
  SquaredNorms(m, D, x, xn);
  for (PetscInt i = 0; i < m; i++)
    if (!(xn[i] < 1e30)) filter = PETSC_FALSE;
  bf16 = (PetscBool)(filter && knn->gemm == BASIS_KNN_GEMM_BF16);
  if (bf16) PetscCall(BasisBf16GramSetPoints(knn->bf16, m, D, x, xn, &rho));
  mg = Margins(D, rho);
  for (PetscInt i = 0; i < m; i++) pf[i] = FilterNorm(xn[i], mg);
  for (PetscInt b0 = 0; b0 < m; b0 += B) {
    const PetscInt n = PetscMin(B, m - b0), ld = n + BASIS_KNN_SELF_PAD;
    PetscCall(GramDiag(knn, bf16, D, x, b0, n, G, ld));
    MergeTile(knn, D, mg, x, 0, xn, b0, n, x, 0, xn, b0, n, G, ld, PETSC_TRUE, &exact);
  }
  for (PetscInt b0 = 0; b0 < m; b0 += B)
    for (PetscInt c0 = b0 + B; c0 < m; c0 += B) {
      const PetscInt cols = PetscMin(B, m - c0);
      for (PetscInt j = 0; j < cols; j++)
        T[j] = FilterThreshold(knn->d2[(size_t)(c0 + j) * knn->k + knn->k - 1], xn[c0 + j], mg);
      for (PetscInt i0 = b0; i0 < b0 + B; i0 += S) { /* block b0 is full: c0 follows it */
        const PetscInt rows = PetscMin(S, b0 + B - i0);
        PetscCall(GramStrip(knn, bf16, D, x, i0, rows, c0, cols, G, cols));
        FilterPairs(knn, D, mg, x, xn, pf, i0, rows, c0, cols, G, T, filter, &exact);
      }
    }
  knn->nexact = exact;
  PetscCall(PetscLogFlops(3.0 * D * exact));
  PetscFunctionReturn(0);
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
  Same result as MergeTile, ties included. Only bounds below the list's k-th distance enter
  the quickselect (once the list is full, few of a tile's do): the tile's k-th smallest
  bound can tighten tau only if k of them are below it, and is then the k-th among those.
*/
static void MergeTileLargeK(BasisKnn *knn, PetscInt D, const float q[], PetscInt qstart, const PetscReal qn[],
                            PetscInt i0, PetscInt rows, const float p[], PetscInt pstart,
                            const PetscReal pn[], PetscInt j0, PetscInt cols, const float G[], LargeKWork *w,
                            PetscLogDouble *exact)
{
  const PetscInt  k  = knn->k;
  const KnnMargin mg = Margins(D, 0);

  for (PetscInt r = 0; r < rows; r++) {
    const PetscInt  i = i0 + r, gi = qstart + i;
    const float    *g = G + (size_t)r * cols, *qi = q + (size_t)i * D;
    const PetscReal qni = qn[i];
    PetscInt       *idx = knn->idx + (size_t)i * k, nu = 0, nc = 0;
    PetscReal      *d2 = knn->d2 + (size_t)i * k, tau = d2[k - 1];

    for (PetscInt j = 0; j < cols; j++) { /* the upper bounds on d2_j below tau */
      PetscReal s = qni + pn[j0 + j], u = s + (PetscReal)g[j] + mg.c * s + mg.a;
      if (pstart + j0 + j != gi && u < tau) w->u[nu++] = u;
    }
    if (nu >= k) tau = SelectKth(w->u, nu, k); /* the tile's k-th smallest bound, < tau */
    for (PetscInt j = 0; j < cols; j++) {
      PetscReal s  = qni + pn[j0 + j], d;
      PetscInt  gj = pstart + j0 + j;
      if (gj == gi || LowerBound(s, g[j], mg) > tau) continue;
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
        MergeTile(knn, D, Margins(D, 0), q, qstart, qn, i0, rows, p, pstart, pn, j0, cols, G, cols,
                  PETSC_FALSE, &exact);
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

  Not collective. Input: x [m][D] row-major. The workspace (norms, one Gram block) is
  allocated by the first call and kept in knn until BasisKnnDestroy, so a batch graph that
  calls it every step with the same lists allocates nothing after the first.

  Notes:
    Lists are kept by insertion, O(k) per candidate: meant for the batch's k (~10); the long
    lists of density-matched graphs go through BasisKnnUpdate.
*/
PetscErrorCode BasisKnnSelf(BasisKnn *knn, PetscInt D, const float x[])
{
  const size_t n = (size_t)knn->nq * D;
  int          e;

  PetscFunctionBeginUser;
  PetscCheck(D >= 1, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "dimension D = %d must be at least 1",
             (int)D);
  if (knn->nq == 0) PetscFunctionReturn(0);
  if (!knn->xn)
    PetscCall(PetscMalloc3(knn->nq, &knn->xn, knn->nq, &knn->pf, KnnSelfGramSize(knn->nq), &knn->gram));
  PetscCall(BasisKnnScaleExponent(PETSC_COMM_SELF, n, x, &e));
  if (e) {
    if (knn->nscaled < n) {
      PetscCall(PetscFree(knn->scaled));
      PetscCall(PetscMalloc1(n, &knn->scaled));
      knn->nscaled = n;
    }
    BasisKnnScaleCopy(n, x, e, knn->scaled);
    x = knn->scaled;
  }
  PetscCall(KnnSelf(knn, D, x, knn->xn, knn->pf, knn->gram));
  BasisKnnUnscale(knn, e);
  PetscFunctionReturn(0);
}

/*
  BasisKnnScaleExponent - the power of two 2^e that puts the largest |value| of a point set
  in [1, 2), agreed over comm (the largest over all ranks' blocks).

  Collective on comm. Input: x [n], this rank's coordinates. Output: e, the same on every
  rank; 0 when every value is 0 or the largest is not finite (left to the checks of the
  data).
*/
PetscErrorCode BasisKnnScaleExponent(MPI_Comm comm, size_t n, const float x[], int *e)
{
  float big = 0;
  int   ex;

  PetscFunctionBeginUser;
  /* one vector pass: this scan and the copy cost O(n) per batch against the kNN's O(m n) */
#pragma omp simd reduction(max : big)
  for (size_t i = 0; i < n; i++) big = PetscMax(big, fabsf(x[i]));
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &big, 1, MPI_FLOAT, MPI_MAX, comm));
  *e = 0;
  if (big > 0 && isfinite(big)) {
    (void)frexpf(big, &ex); /* big = f 2^ex, f in [0.5, 1): 2^(1 - ex) big in [1, 2) */
    *e = 1 - ex;
  }
  PetscFunctionReturn(0);
}

/*
  BasisKnnScaleCopy - y = 2^e x, exact for every value that stays a normal float. Not
  collective. x [n], y [n] (may be x).
*/
void BasisKnnScaleCopy(size_t n, const float x[], int e, float y[])
{
  const double f = ldexp(1.0, e); /* 2^e in double: exact for any e of a float's range */

  for (size_t i = 0; i < n; i++) y[i] = (float)(f * x[i]);
}

/*
  BasisKnnUnscale - squared distances found on 2^e X back in the units of X: d2 *= 2^-2e,
  exact in double (no float's squared distance leaves its range); empty entries stay
  PETSC_MAX_REAL. Not collective.
*/
void BasisKnnUnscale(BasisKnn *knn, int e)
{
  const double f = ldexp(1.0, -2 * e);

  if (!e) return;
  for (size_t i = 0; i < (size_t)knn->nq * knn->k; i++)
    if (knn->d2[i] != PETSC_MAX_REAL) knn->d2[i] *= f;
}
