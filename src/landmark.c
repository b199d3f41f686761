/*
  landmark.c - the trivial eigenvector of -laplacian sym from degrees among landmarks, and
  the other columns extended from values at the landmarks (the reference's eigenvectors
  there, or the network's outputs).

  For L_sym = I - D^-1/2 W D^-1/2 the eigenvector of eigenvalue 0 is D^1/2 1: its entry at
  a point is the square root of the point's degree. Of the K directions it is the one the
  network carries worst to unseen points (docs/quality.md "The trivial direction from
  landmarks"): a degree sums over a point's neighbours and over the points that have it as
  a neighbour (its hubness), which the features predict poorly for points the network never
  saw. It need not be learned. A model keeps L landmarks (a uniform subset of its reference
  set, train -landmarks), and the degree of a point x is its degree in the graph of the
  landmarks with x added, under the one graph rule density-matched to L points (k_L =
  round(k L / m), the scale neighbour likewise; graph.h):
      d(x) = 1/2 sum_{j in kNN_L(x)} exp(-|x - l_j|^2 / sigma_x^2)
           + 1/2 sum_{j : |x - l_j| <= r_j} exp(-|x - l_j|^2 / sigma_j^2)
  (W = (W + W^T) / 2), where r_j is landmark j's k_L-th neighbour distance among the
  landmarks -- x enters j's list exactly when it is that near -- and sigma_j its scale in
  that graph (the local scale moves one neighbour in when x comes nearer than it; with
  -scale median the landmark graph's median is kept).
  The embedding's column 0 is alpha sqrt(d(x)) + beta, alpha and beta fitted by least
  squares on the anchors, where the reference column's value is known (BasisLandmarksFit).

  A landmark at distance zero from x is taken to be x itself and left out (at most one;
  further copies are neighbours), so a landmark's degree is its degree in the landmark
  graph (tests/test_landmark.c checks that against the graph's W). Distances: a GEMM
  ||x||^2 + ||l||^2 - 2 x.l in float, or in bfloat16 through oneDNN (BasisLandmarksSetGemm,
  embed -knn_gemm), selects candidates with knn.c's rounding margin, and every candidate is
  recomputed exactly (BasisKnnDistance2), so lists, memberships and degrees are those of an
  exact search, the same bit for bit in either precision. Cost per point: 2 D L flops of
  GEMM (D = 784, L = 4096: 6.4 MFLOP, about three forward passes of the default network)
  and a few passes over L values.
  The same weights extend the other columns (BasisLandmarksSetValues, embed -landmark_weight,
  -landmark_values): the Nystrom extension of D^-1/2 W D^-1/2 u = (1 - lambda) u,
      ext_c(x) = sum_j W(x, j) f_c(l_j) / sqrt(d(x) d_j),
  with values f at the landmarks as u there and d_j a landmark's degree in the landmarks'
  graph, mapped to f's units by a least-squares a_c ext_c + b_c fitted on the landmarks
  (each extended from the others). f is the reference's eigenvectors at the landmarks (they
  are reference rows; exact for the reference graph) or the network's outputs there (which
  is accurate at the points it trained on and less so at others); either way the extension
  carries values known at training points to any point through the graph rule itself.
  Column c >= 1 of the embedding is (1 - w) y_c(x) + w (a_c ext_c(x) + b_c), y the network's
  output; docs/quality.md "The other columns from landmarks" and "The reference's values at
  the landmarks" have the measurements (w = 0.75 best in and out of sample).

  Not collective: every rank builds the same object from the same model.
*/
#include <basis/landmark.h>
#include <basis/log.h>
#include <basis/bf16gram.h>
#include <string.h>
#include <cblas.h>
#include <float.h>
#include <math.h>

/* Query rows per GEMM: 128 x 4096 landmarks of float is 2 MiB, which stays in cache
   between the GEMM that writes a row and the scans that read it. */
#define BASIS_LANDMARK_BLOCK 128

struct _p_BasisLandmarks {
  PetscInt       L, D, k, s; /* landmarks, features, matched kNN and scale neighbour */
  BasisScaleType scale;
  float         *x;       /* [L][D] landmarks, normalised as the network's input */
  PetscReal     *xn;      /* [L] squared norms */
  PetscReal     *r2;      /* [L] squared distance to the k-th neighbour among the landmarks */
  PetscInt      *rk;      /* [L] which landmark is that k-th neighbour (ties go to the smaller index) */
  PetscReal     *s2;      /* [L] squared scale sigma_j^2 (median: all equal) */
  PetscReal     *p2;      /* [L] squared distance to the neighbour before the scale neighbour (0 if none) */
  float         *g;       /* [BASIS_LANDMARK_BLOCK][L] -2 x.l of a block of queries */
  float         *xnf;     /* [L] squared norms in float, for the float passes */
  float         *mx;      /* [L] the landmark's part of the rounding margin, mrel ||l||^2 */
  float         *r2f;     /* [L] r2 rounded up to float */
  PetscReal     *cd, *od; /* [L] exact squared distances of a query's candidates, in two orders, */
  PetscInt      *ci, *oj; /*   and which landmarks they are */
  float         *hv;      /* [k + 1] max-heap of the smallest float distances, */
  PetscInt      *hj;      /*   and their landmarks */
  PetscReal     *deg;     /* [BASIS_LANDMARK_BLOCK] degrees of a block */
  PetscReal      mrel, mabs; /* rounding margin of a float distance: mrel (||x||^2 + ||l||^2) + mabs */
  PetscReal     *qn;         /* [BASIS_LANDMARK_BLOCK] squared norms of a block of queries */
  BasisBf16Gram  bf16;       /* the products in bfloat16 (BasisLandmarksSetGemm), or NULL: float */
  PetscReal      rho_l;      /*   and the landmarks' rounding bound (bf16gram.h) */
  PetscReal     *dl;         /* [L] each landmark's degree in the landmark graph */
  /* the extension of columns 1.. (BasisLandmarksSetValues); K = 0: none */
  PetscInt   K;
  PetscReal *v;       /* [L][K] the values at landmark j / sqrt(dl[j]) */
  PetscReal *ext;     /* [BASIS_LANDMARK_BLOCK][K] the extension of a block of queries */
  PetscReal  weight;  /* columns 1.. = (1 - weight) network's + weight (a ext + b) */
  PetscReal *ea, *eb; /* [K] the extension's map a ext + b per column, fitted on the landmarks */
};

/* w = exp(-d2 / s2), with the limit of a zero scale: 1 at distance 0, else 0. */
static inline PetscReal Weight(PetscReal d2, PetscReal s2)
{
  return s2 > 0 ? PetscExpReal(-d2 / s2) : (d2 == 0 ? 1.0 : 0.0);
}

/* The margin of the float passes for products whose inputs were rounded with relative
   error at most rho (0: float GEMM on the float points). The product's error is knn.c's
   bound, (2 rho + rho^2 + (1 + rho)^2 (D + 2) eps) (||x||^2 + ||l||^2); the float norms and
   sums add a few eps of the same; twice the total, so the float comparisons keep every
   landmark that can qualify. */
static void SetMargin(BasisLandmarks b, PetscReal rho)
{
  const PetscReal c = 2 * rho + rho * rho + (1 + rho) * (1 + rho) * (PetscReal)(b->D + 2) * FLT_EPSILON;

  b->mrel = 2 * (c + 8 * FLT_EPSILON);
  for (PetscInt j = 0; j < b->L; j++) b->mx[j] = (float)(b->mrel * b->xn[j]);
}

/*
  BasisLandmarksCreate - the landmark graph's radii and scales.

  Not collective. Input: graph - the rule of the batches (k, scale neighbour, scale type),
  m - the batch size it is matched from, x [L][D] - the landmarks as the network sees
  them (BasisModelNormaliseInput), copied. Output: lm, or NULL where a landmark's scale is
  zero (s or more copies of it among the landmarks). Errors: L too small for the matched k_L.
*/
PetscErrorCode BasisLandmarksCreate(const BasisGraphParams *graph, PetscInt m, PetscInt L, PetscInt D,
                                    const float x[], BasisLandmarks *lm)
{
  BasisGraphParams lp;
  BasisKnn         knn;
  BasisLandmarks   b;
  PetscReal       *sigma;
  PetscErrorCode   ierr;

  PetscFunctionBeginUser;
  BasisGraphParamsMatched(graph, L, m, &lp);
  PetscCheck(L > lp.knn, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE,
             "%d landmarks are too few for their density-matched graph (k = %d); train with more -landmarks",
             (int)L, (int)lp.knn);
  PetscCall(PetscNew(&b));
  b->L = L, b->D = D, b->k = lp.knn, b->s = lp.scale_neighbor, b->scale = lp.scale;
  /* mrel: SetMargin; mabs: the underflow of tiny products */
  b->mabs = (PetscReal)(D + 2) * 0x1p-120;
  PetscCall(PetscMalloc5((size_t)L * D, &b->x, L, &b->xn, L, &b->r2, L, &b->s2,
                         (size_t)BASIS_LANDMARK_BLOCK * L, &b->g));
  PetscCall(PetscMalloc5(L, &b->xnf, L, &b->mx, L, &b->r2f, L, &b->cd, L, &b->ci));
  PetscCall(PetscMalloc4(L, &b->od, L, &b->oj, BASIS_LANDMARK_BLOCK, &b->deg, BASIS_LANDMARK_BLOCK, &b->qn));
  PetscCall(PetscMalloc4(lp.knn + 1, &b->hv, lp.knn + 1, &b->hj, L, &b->p2, L, &b->rk));
  PetscCall(PetscArraycpy(b->x, x, (size_t)L * D));
  BasisKnnSquaredNorms(L, D, x, b->xn);
  PetscCall(BasisKnnCreate(L, lp.knn, &knn));
  PetscCall(BasisKnnSelf(&knn, D, b->x));
  PetscCall(PetscMalloc1(L, &sigma));
  /* a zero scale (s or more copies of a landmark) is the graph rule's error; here it only
     means the landmarks cannot give column 0: *lm = NULL, and the caller says why */
  PetscCall(PetscPushErrorHandler(PetscReturnErrorHandler, NULL));
  ierr = BasisGraphSigma(PETSC_COMM_SELF, &lp, &knn, sigma);
  PetscCall(PetscPopErrorHandler());
  if (ierr) {
    PetscCall(PetscFree(sigma));
    PetscCall(BasisKnnDestroy(&knn));
    PetscCall(BasisLandmarksDestroy(&b));
    *lm = NULL;
    PetscFunctionReturn(0);
  }
  for (PetscInt j = 0; j < L; j++) {
    b->r2[j]  = knn.d2[j * lp.knn + lp.knn - 1];
    b->rk[j]  = knn.idx[j * lp.knn + lp.knn - 1];
    b->s2[j]  = sigma[j] * sigma[j];
    b->p2[j]  = lp.scale_neighbor > 1 ? knn.d2[j * lp.knn + lp.scale_neighbor - 2] : 0;
    b->xnf[j] = (float)b->xn[j];
    b->r2f[j] = (float)b->r2[j];
    if ((PetscReal)b->r2f[j] < b->r2[j]) b->r2f[j] = nextafterf(b->r2f[j], FLT_MAX);
  }
  /* the landmark graph's degrees, row sums of (W + W^T) / 2 from the lists */
  PetscCall(PetscCalloc1(L, &b->dl));
  for (PetscInt i = 0; i < L; i++)
    for (PetscInt t = 0; t < lp.knn; t++) {
      const PetscReal w = 0.5 * Weight(knn.d2[i * lp.knn + t], b->s2[i]);
      b->dl[i] += w, b->dl[knn.idx[i * lp.knn + t]] += w;
    }
  PetscCall(PetscFree(sigma));
  PetscCall(BasisKnnDestroy(&knn));
  SetMargin(b, 0);
  *lm = b;
  PetscFunctionReturn(0);
}

/* BasisLandmarksGetSize - the number of landmarks and their graph's k. Not collective. */
PetscErrorCode BasisLandmarksGetSize(BasisLandmarks lm, PetscInt *L, PetscInt *knn)
{
  PetscFunctionBeginUser;
  if (L) *L = lm->L;
  if (knn) *knn = lm->k;
  PetscFunctionReturn(0);
}

/* Restore the max-heap property of hv[0..n) (largest on top) from position p down. */
static void HeapDown(float hv[], PetscInt hj[], PetscInt n, PetscInt p)
{
  for (;;) {
    PetscInt c = 2 * p + 1;
    if (c >= n) return;
    if (c + 1 < n && hv[c + 1] > hv[c]) c++;
    if (hv[p] >= hv[c]) return;
    {
      float    tv = hv[p];
      PetscInt tj = hj[p];
      hv[p] = hv[c], hj[p] = hj[c], hv[c] = tv, hj[c] = tj;
    }
    p = c;
  }
}

/* Sort the first n candidates by (distance, landmark), the graph rule's order. */
static void SortCandidates(PetscInt n, PetscReal d[], PetscInt j[])
{
  for (PetscInt a = 1; a < n; a++) { /* n is about k (the float bounds are tight): insertion sort */
    const PetscReal da = d[a];
    const PetscInt  ja = j[a];
    PetscInt        b  = a;
    for (; b > 0 && (d[b - 1] > da || (d[b - 1] == da && j[b - 1] > ja)); b--)
      d[b] = d[b - 1], j[b] = j[b - 1];
    d[b] = da, j[b] = ja;
  }
}

/* ext += w v_j (the extension's sum; BasisLandmarksSetValues). */
static inline void Accumulate(BasisLandmarks lm, PetscInt j, PetscReal w, PetscReal ext[])
{
  const PetscReal *vj = lm->v + (size_t)j * lm->K;
  for (PetscInt c = 0; c < lm->K; c++) ext[c] += w * vj[c];
}

/*
  The degree of one query q [D] (squared norm qn) from its row a [L] of -2 q.l, which it
  overwrites. Float passes over the L landmarks find (1) the k + 1 smallest GEMM distances
  (a max-heap; k + 1 because the query may itself be a landmark) and (2) every landmark
  whose lower bound admits it to the query's k + 1 nearest or the query to its list; only
  those get an exact distance (one each).
*/
static PetscErrorCode QueryDegree(BasisLandmarks lm, const float q[], PetscReal qn, float a[],
                                  PetscReal *degree, PetscReal ext[])
{
  const PetscInt L = lm->L, k = lm->k, c = PetscMin(k + 1, L);
  const float    qf = (float)qn, mq = (float)(lm->mrel * qn + lm->mabs);
  PetscInt       nh = 0, nc = 0, nown = 0, self = -1;
  PetscReal      own = 0, rev = 0, s2x;
  float          T = 0;

  PetscFunctionBeginUser;
  for (PetscInt j = 0; j < L; j++) a[j] += qf + lm->xnf[j];
  for (PetscInt j = 0; j < L; j++) {
    if (nh < c) {
      lm->hv[nh] = a[j], lm->hj[nh] = j, nh++;
      if (nh == c)
        for (PetscInt p = c / 2 - 1; p >= 0; p--) HeapDown(lm->hv, lm->hj, c, p);
    } else if (a[j] < lm->hv[0]) {
      lm->hv[0] = a[j], lm->hj[0] = j;
      HeapDown(lm->hv, lm->hj, c, 0);
    }
  }
  /* the (k+1)-th smallest exact distance is at most the largest upper bound in the heap;
     a landmark whose lower bound exceeds that is not among the k + 1 nearest */
  for (PetscInt h = 0; h < nh; h++) T = PetscMax(T, lm->hv[h] + lm->mx[lm->hj[h]]);
  T += 2 * mq;
  for (PetscInt j = 0; j < L; j++) {
    const float t = a[j] - lm->mx[j];
    if (t <= T || t <= lm->r2f[j] + mq) lm->ci[nc++] = j;
    if (t <= T) lm->oj[nown++] = nc - 1; /* an own candidate: its place among all of them */
  }
  if (nown < c) { /* non-finite float distances (values beyond float's range): all of them */
    nc = nown = L;
    for (PetscInt j = 0; j < L; j++) lm->ci[j] = lm->oj[j] = j;
  }
  for (PetscInt i = 0; i < nc; i++)
    lm->cd[i] = BasisKnnDistance2(lm->D, q, lm->x + (size_t)lm->ci[i] * lm->D);
  for (PetscInt i = 0; i < nown; i++) lm->od[i] = lm->cd[lm->oj[i]], lm->oj[i] = lm->ci[lm->oj[i]];
  /* the query's own list in the rule's order; the first at distance 0 is the query itself */
  SortCandidates(nown, lm->od, lm->oj);
  if (lm->od[0] == 0) self = lm->oj[0];
  {
    const PetscInt first = self >= 0 ? 1 : 0;
    nown                 = PetscMin(nown - first, k);
    s2x = lm->scale == BASIS_SCALE_LOCAL ? lm->od[first + PetscMin(lm->s, nown) - 1] : lm->s2[0];
    for (PetscInt i = 0; i < nown; i++) {
      const PetscReal w = Weight(lm->od[first + i], s2x);
      own += w;
      if (ext) Accumulate(lm, lm->oj[first + i], w, ext);
    }
  }
  /* the landmarks whose lists the query enters; a query that is not a landmark moves the
     scale neighbour of a landmark it comes nearer to than that neighbour (local scale) */
  for (PetscInt i = 0; i < nc; i++) {
    const PetscInt  j   = lm->ci[i];
    const PetscReal d2  = lm->cd[i];
    PetscReal       s2j = lm->s2[j];
    /* the query enters j's list if it orders before j's k-th neighbour by (distance, index):
       a new point has the largest index, a landmark its own */
    if (j == self || d2 > lm->r2[j] || (d2 == lm->r2[j] && (self < 0 || self > lm->rk[j]))) continue;
    if (self < 0 && lm->scale == BASIS_SCALE_LOCAL && d2 < s2j) s2j = PetscMax(d2, lm->p2[j]);
    {
      const PetscReal w = Weight(d2, s2j);
      rev += w;
      if (ext) Accumulate(lm, j, w, ext);
    }
  }
  *degree = 0.5 * (own + rev);
  if (ext) /* sum_j W(x, j) v_j / sqrt(d(x)), W = w / 2; a point with no weight extends to 0 */
    for (PetscInt c = 0; c < lm->K; c++) ext[c] = *degree > 0 ? 0.5 * ext[c] / PetscSqrtReal(*degree) : 0;
  PetscFunctionReturn(0);
}

/* Degrees of a block of at most BASIS_LANDMARK_BLOCK queries x [n][D]. */
static PetscErrorCode BlockDegree(BasisLandmarks lm, PetscInt n, const float x[], PetscReal degree[],
                                  PetscReal ext[])
{
  const PetscInt L = lm->L, D = lm->D;

  PetscFunctionBeginUser;
  BasisKnnSquaredNorms(n, D, x, lm->qn);
  if (lm->bf16) { /* the block is kept after the landmarks (BasisLandmarksSetGemm) */
    PetscReal rho_q;
    PetscCall(BasisBf16GramSetRows(lm->bf16, L, n, x, lm->qn, &rho_q));
    SetMargin(lm, PetscMax(lm->rho_l, rho_q));
    PetscCall(BasisBf16GramProduct(lm->bf16, L, n, 0, L, lm->g, L));
  } else {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)L, (int)D, -2.0f, x, (int)D, lm->x,
                (int)D, 0.0f, lm->g, (int)L);
    PetscCall(PetscLogFlops(2.0 * n * L * D));
  }
  if (ext) PetscCall(PetscArrayzero(ext, (size_t)n * lm->K));
  for (PetscInt i = 0; i < n; i++)
    PetscCall(QueryDegree(lm, x + (size_t)i * D, lm->qn[i], lm->g + (size_t)i * L, &degree[i],
                          ext ? ext + (size_t)i * lm->K : NULL));
  PetscFunctionReturn(0);
}

/*
  BasisLandmarksSetGemm - the precision of the query-landmark products: float (the
  default), bf16 (wherever oneDNN runs a bfloat16 matmul), auto (bf16 where the CPU has
  bfloat16 dot products). The degrees are the same bit for bit in every case: the products
  only select candidates, with a margin that covers their rounding, and every candidate's
  distance is exact.

  Not collective. Output: used (may be NULL), float or bf16.
*/
PetscErrorCode BasisLandmarksSetGemm(BasisLandmarks lm, BasisKnnGemmType type, BasisKnnGemmType *used)
{
  PetscBool native;

  PetscFunctionBeginUser;
  PetscCall(BasisBf16GramDestroy(&lm->bf16));
  SetMargin(lm, 0);
  if (type == BASIS_KNN_GEMM_AUTO) {
    PetscCall(BasisBf16GramNative(&native, NULL));
    type = native ? BASIS_KNN_GEMM_BF16 : BASIS_KNN_GEMM_FLOAT;
  }
  if (type == BASIS_KNN_GEMM_BF16) PetscCall(BasisBf16GramCreate(&lm->bf16));
  if (lm->bf16) { /* the landmarks, then room for a block of queries */
    const size_t L = (size_t)lm->L, D = (size_t)lm->D, B = BASIS_LANDMARK_BLOCK;
    float       *x;
    PetscReal   *xn;
    PetscCall(PetscCalloc2((L + B) * D, &x, L + B, &xn));
    PetscCall(PetscArraycpy(x, lm->x, L * D));
    PetscCall(PetscArraycpy(xn, lm->xn, L));
    PetscCall(BasisBf16GramSetPoints(lm->bf16, lm->L + BASIS_LANDMARK_BLOCK, lm->D, x, xn, &lm->rho_l));
    PetscCall(PetscFree2(x, xn));
  }
  if (used) *used = lm->bf16 ? BASIS_KNN_GEMM_BF16 : BASIS_KNN_GEMM_FLOAT;
  PetscFunctionReturn(0);
}

/*
  BasisLandmarksDegree - each point's degree in the graph of the landmarks with it added.

  Not collective. Input: x [n][D], normalised as the landmarks. Output: degree [n].
  Logged as BASIS_Landmarks.
*/
PetscErrorCode BasisLandmarksDegree(BasisLandmarks lm, PetscInt n, const float x[], PetscReal degree[])
{
  PetscFunctionBeginUser;
  PetscCall(PetscLogEventBegin(BASIS_Landmarks, 0, 0, 0, 0));
  for (PetscInt lo = 0; lo < n; lo += BASIS_LANDMARK_BLOCK)
    PetscCall(
        BlockDegree(lm, PetscMin(BASIS_LANDMARK_BLOCK, n - lo), x + (size_t)lo * lm->D, degree + lo, NULL));
  PetscCall(PetscLogEventEnd(BASIS_Landmarks, 0, 0, 0, 0));
  PetscFunctionReturn(0);
}

/* Least squares y ~ a x + b over n pairs (x, y strided alike), and their correlation r (a = 0,
   b = mean y, r = 0 where x does not vary). */
static void LineFit(PetscInt n, const PetscReal x[], const PetscReal y[], PetscInt stride, PetscReal *a,
                    PetscReal *b, PetscReal *r)
{
  PetscReal mx = 0, my = 0, sxx = 0, syy = 0, sxy = 0;

  for (PetscInt i = 0; i < n; i++) mx += x[(size_t)i * stride], my += y[(size_t)i * stride];
  mx /= PetscMax(n, 1), my /= PetscMax(n, 1);
  for (PetscInt i = 0; i < n; i++) {
    const PetscReal dx = x[(size_t)i * stride] - mx, dy = y[(size_t)i * stride] - my;
    sxx += dx * dx, syy += dy * dy, sxy += dx * dy;
  }
  *a = sxx > 0 ? sxy / sxx : 0;
  *b = my - *a * mx;
  *r = sxx > 0 && syy > 0 ? sxy / PetscSqrtReal(sxx * syy) : 0;
}

/*
  BasisLandmarksFit - the least-squares map y ~ alpha sqrt(degree) + beta over n points
  whose column-0 values y [n] are known (the anchors: the reference eigenvector there, in
  the embedding's units).

  Not collective. Input: x [n][D] normalised. Output: fit (alpha, beta, and the correlation
  r; alpha = 0, beta = mean y when the degrees do not vary).
*/
PetscErrorCode BasisLandmarksFit(BasisLandmarks lm, PetscInt n, const float x[], const PetscReal y[],
                                 BasisLandmarksFitResult *fit)
{
  PetscReal *deg;

  PetscFunctionBeginUser;
  PetscCall(PetscMalloc1(PetscMax(n, 1), &deg));
  PetscCall(BasisLandmarksDegree(lm, n, x, deg));
  for (PetscInt i = 0; i < n; i++) deg[i] = PetscSqrtReal(deg[i]);
  LineFit(n, deg, y, 1, &fit->alpha, &fit->beta, &fit->r);
  PetscCall(PetscFree(deg));
  PetscFunctionReturn(0);
}

/*
  BasisLandmarksExtend - the extension of the values at the landmarks to the rows x: for
  each row and column c, ext_c(x) = sum_j W(x, j) f_c(l_j) / sqrt(d(x) d_j), the Nystrom
  extension of the sym Laplacian's eigenvectors (D^-1/2 W D^-1/2 u = (1 - lambda) u), with
  the values f of BasisLandmarksSetValues as u there, W the landmarks' graph with x added
  and d_j a landmark's degree in the landmarks' graph. A landmark itself is left out of its
  own sum. Rows with no weight on any landmark get 0.

  Not collective. Input: x [n][D] normalised. Output: ext [n][K] (K of BasisLandmarksSetValues).
*/
PetscErrorCode BasisLandmarksExtend(BasisLandmarks lm, PetscInt n, const float x[], PetscReal ext[])
{
  PetscFunctionBeginUser;
  PetscCheck(lm->K > 0, PETSC_COMM_SELF, PETSC_ERR_ORDER, "BasisLandmarksSetValues must come first");
  PetscCall(PetscLogEventBegin(BASIS_Landmarks, 0, 0, 0, 0));
  for (PetscInt lo = 0; lo < n; lo += BASIS_LANDMARK_BLOCK)
    PetscCall(BlockDegree(lm, PetscMin(BASIS_LANDMARK_BLOCK, n - lo), x + (size_t)lo * lm->D, lm->deg,
                          ext + (size_t)lo * lm->K));
  PetscCall(PetscLogEventEnd(BASIS_Landmarks, 0, 0, 0, 0));
  PetscFunctionReturn(0);
}

/*
  BasisLandmarksSetValues - the values at the landmarks that columns 1..K-1 extend
  (BasisLandmarksExtend), and the weight the extension gets in BasisLandmarksColumn:
  column c = (1 - weight) y_c(x) + weight (a_c ext_c(x) + b_c), a_c and b_c fitted by least
  squares over the landmarks, each extended from the others, to their own f_c (the map
  takes the extension's 1 / (1 - lambda) and the output's shift).

  Not collective. Input: K, f [L][K] (the embedding's units: the reference's eigenvectors at
  the landmarks or the network's outputs there, embed -landmark_values), weight in [0, 1].
  Output: rmin (may be NULL): the smallest correlation of ext_c and f_c at the landmarks,
  c >= 1 (1 for K = 1).
*/
PetscErrorCode BasisLandmarksSetValues(BasisLandmarks lm, PetscInt K, const PetscReal f[], PetscReal weight,
                                       PetscReal *rmin)
{
  const PetscInt L = lm->L;
  PetscReal     *e, worst = 1;

  PetscFunctionBeginUser;
  PetscCheck(K >= 1 && weight >= 0 && weight <= 1, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE,
             "BasisLandmarksSetValues: K %d >= 1 and weight %g in [0, 1]", (int)K, (double)weight);
  PetscCall(PetscFree4(lm->v, lm->ext, lm->ea, lm->eb));
  lm->K = K, lm->weight = weight;
  PetscCall(PetscMalloc4((size_t)L * K, &lm->v, (size_t)BASIS_LANDMARK_BLOCK * K, &lm->ext, K, &lm->ea, K,
                         &lm->eb));
  for (PetscInt j = 0; j < L; j++)
    for (PetscInt c = 0; c < K; c++)
      lm->v[(size_t)j * K + c] = lm->dl[j] > 0 ? f[(size_t)j * K + c] / PetscSqrtReal(lm->dl[j]) : 0;
  PetscCall(PetscMalloc1((size_t)L * K, &e));
  PetscCall(BasisLandmarksExtend(lm, L, lm->x, e));
  for (PetscInt c = 0; c < K; c++) { /* least squares f_c ~ a ext_c + b over the landmarks */
    PetscReal r;
    LineFit(L, e + c, f + c, K, &lm->ea[c], &lm->eb[c], &r);
    if (c > 0) worst = PetscMin(worst, r);
  }
  PetscCall(PetscFree(e));
  if (rmin) *rmin = worst;
  PetscFunctionReturn(0);
}

/*
  BasisLandmarksColumn - y [n][K] column 0 <- alpha sqrt(degree) + beta of the rows x (fit
  NULL: column 0 as it is) and,
  after BasisLandmarksSetValues with a weight w > 0, columns 1..K-1 <- (1 - w) y + w (a
  ext + b) (rows with no weight on any landmark keep y).

  Not collective. Input: x [n][D] normalised; y [n][K] the network's output (embedding units).
*/
PetscErrorCode BasisLandmarksColumn(BasisLandmarks lm, const BasisLandmarksFitResult *fit, PetscInt n,
                                    const float x[], PetscInt K, float y[])
{
  const PetscBool extend = lm->K == K && lm->weight > 0 && K > 1 ? PETSC_TRUE : PETSC_FALSE;
  const PetscReal w      = lm->weight;

  PetscFunctionBeginUser;
  PetscCall(PetscLogEventBegin(BASIS_Landmarks, 0, 0, 0, 0));
  for (PetscInt lo = 0; lo < n; lo += BASIS_LANDMARK_BLOCK) {
    const PetscInt cnt = PetscMin(BASIS_LANDMARK_BLOCK, n - lo);
    PetscCall(BlockDegree(lm, cnt, x + (size_t)lo * lm->D, lm->deg, extend ? lm->ext : NULL));
    for (PetscInt i = 0; i < cnt; i++) {
      float *yi = y + (size_t)(lo + i) * K;
      if (fit) yi[0] = (float)(fit->alpha * PetscSqrtReal(lm->deg[i]) + fit->beta);
      if (extend && lm->deg[i] > 0)
        for (PetscInt c = 1; c < K; c++)
          yi[c] = (float)((1 - w) * yi[c] + w * (lm->ea[c] * lm->ext[(size_t)i * K + c] + lm->eb[c]));
    }
  }
  PetscCall(PetscLogEventEnd(BASIS_Landmarks, 0, 0, 0, 0));
  PetscFunctionReturn(0);
}

/* BasisLandmarksDestroy - free (NULL-tolerant). Not collective. */
PetscErrorCode BasisLandmarksDestroy(BasisLandmarks *lm)
{
  PetscFunctionBeginUser;
  if (!*lm) PetscFunctionReturn(0);
  PetscCall(PetscFree5((*lm)->x, (*lm)->xn, (*lm)->r2, (*lm)->s2, (*lm)->g));
  PetscCall(PetscFree5((*lm)->xnf, (*lm)->mx, (*lm)->r2f, (*lm)->cd, (*lm)->ci));
  PetscCall(PetscFree4((*lm)->od, (*lm)->oj, (*lm)->deg, (*lm)->qn));
  PetscCall(BasisBf16GramDestroy(&(*lm)->bf16));
  PetscCall(PetscFree4((*lm)->hv, (*lm)->hj, (*lm)->p2, (*lm)->rk));
  PetscCall(PetscFree4((*lm)->v, (*lm)->ext, (*lm)->ea, (*lm)->eb));
  PetscCall(PetscFree((*lm)->dl));
  PetscCall(PetscFree(*lm));
  PetscFunctionReturn(0);
}

/* Below this the reference's second eigenvalue counts as a second 0 (L_sym's eigenvalues lie
   in [0, 2]; the solvers resolve them to ~1e-10, eigensolver.c's components warning). */
#define BASIS_CONNECTED_LAMBDA 1e-8
/* Below this correlation between sqrt(degree) and the reference's column 0 at the anchors
   the landmarks are not used: the estimate would not be the column it replaces. On real
   data it is near 1 (MNIST-10k 0.984, Fashion-MNIST training set 0.990; 0.956 on
   tests/cli_pipeline.sh's 2,400 generated points), and by construction the reference
   column is sqrt of the reference graph's degrees; 0.5 only catches a broken estimate. */
#define BASIS_LANDMARK_MIN_R 0.5

/*
  BasisLandmarksCreateFromModel - the landmark estimate of a model's column 0:
  the landmarks, normalised as the network's input, and the map alpha sqrt(degree) + beta
  fitted on the anchors to the reference's column 0 in the embedding's units
  (target_scale phi_ref[.][0]).

  Not collective (every rank builds the same from the same model). Output: lm, or NULL and
  why (for a message) when the model has no landmarks, its reference graph has more than
  one component (column 0 is then one component's indicator, not D^1/2 1; with K = 1 this
  cannot be seen and is not checked), a landmark has a zero scale, or the fit is poor (r
  below BASIS_LANDMARK_MIN_R); fit (fit->r is 0 where no fit was made).
*/
PetscErrorCode BasisLandmarksCreateFromModel(const BasisModel *mo, BasisLandmarks *lm,
                                             BasisLandmarksFitResult *fit, const char **why)
{
  const PetscInt K = mo->spec.graph.K, D = mo->spec.D, L = mo->spec.L, l = mo->spec.l;
  float         *xn;
  PetscReal     *y;

  PetscFunctionBeginUser;
  *lm  = NULL;
  *why = NULL;
  PetscCall(PetscMemzero(fit, sizeof(*fit)));
  if (mo->spec.graph.laplacian != BASIS_LAPLACIAN_SYM) {
    *why = "its -laplacian is not sym, whose trivial eigenvector alone is not constant";
    PetscFunctionReturn(0);
  }
  if (L <= 0) {
    *why = "the model has no landmarks (trained with -landmarks 0, or before landmarks existed)";
    PetscFunctionReturn(0);
  }
  if (K > 1 && !(mo->lambda_ref[1] > BASIS_CONNECTED_LAMBDA)) {
    *why = "the reference graph has more than one connected component, so column 0 is not D^1/2 1";
    PetscFunctionReturn(0);
  }
  PetscCall(PetscMalloc2((size_t)PetscMax(L, l) * D, &xn, l, &y));
  BasisModelNormaliseInput(mo, L, mo->landmark_x, xn);
  PetscCall(BasisLandmarksCreate(&mo->spec.graph, mo->spec.m, L, D, xn, lm));
  if (!*lm) {
    PetscCall(PetscFree2(xn, y));
    *why = "some landmark has a zero scale (too many copies of one point among the landmarks)";
    PetscFunctionReturn(0);
  }
  BasisModelNormaliseInput(mo, l, mo->anchor_x, xn);
  for (PetscInt a = 0; a < l; a++) y[a] = mo->target_scale * mo->phi_ref[a * K];
  PetscCall(BasisLandmarksFit(*lm, l, xn, y, fit));
  PetscCall(PetscFree2(xn, y));
  if (!(fit->r >= BASIS_LANDMARK_MIN_R)) {
    PetscCall(BasisLandmarksDestroy(lm));
    *why =
        "the landmark degrees do not follow the reference's first eigenvector at the anchors (r below 0.5)";
  }
  PetscFunctionReturn(0);
}
