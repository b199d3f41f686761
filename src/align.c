/*
  align.c - the affine alignment of a batch's eigenvectors to the reference (DESIGN.md
  step 4) and the targets it produces.

  T (K x (Kb+1)) = argmin_T sum_{anchors i} ||phi_ref_i - T [phi_b_i, 1]||^2 is the linear
  least-squares problem A X = B with A = [phi_b, 1] (l x (Kb+1)), B = phi_ref (l x K) and
  X = T^T, solved by LAPACK's SVD-based dgelss: the singular values it returns give the
  2-norm condition number of A from the same factorisation, and at l ~ 250, K ~ 10 the
  solve costs microseconds.

  phi_b holds Kb = K + -align_extra batch eigenvectors. With Kb = K (DESIGN.md step 4) the
  batch's last eigenvectors, whose eigenvalues sit close to the next ones, come out of the
  batch solve mixed with eigenvectors beyond K, and no map of K columns can undo that: on
  MNIST-10k the aligned target of column 9 had half its variance as error. The extra
  columns let the fit take back what leaked out of the first K (docs/quality.md). More
  columns also mean more coefficients to fit on the same anchors, so the default
  (BasisAlignResolveExtra) keeps at least BASIS_ALIGN_ANCHORS_PER_COEF anchors per
  coefficient and stops at BASIS_ALIGN_EXTRA_MAX, where the measured gain levelled off.

  An ill-conditioned A (the anchors barely span the batch eigenspace, so T would amplify
  eigenvector noise by up to cond) is refused with the number and what to change, never
  silently used.

  For -laplacian unnormalized|rw the constant vector is an eigenvector, so it lies in
  span(phi_b): as one column, or mixed over several when the batch graph has nearly
  disconnected pieces (near-degenerate eigenvalues at 0). Then [phi_b, 1] is exactly
  singular although the fit is well posed: the bias adds nothing a linear map of phi_b
  cannot do. So the ones vector is first projected onto span(phi_b) over the anchors; if
  it lies there (relative residual below BASIS_ALIGN_ONES_IN_SPAN), the bias column is
  left out (T's last column is zero) and the fit is linear in phi_b, whose condition
  number is then the one checked.

  -align ransac follows the authors' code: -ransac_iters times fit T on -ransac_points
  anchors drawn without replacement, count the anchors whose residual norm is below
  -ransac_tol, keep the fit with most inliers (ties: smaller total inlier residual), then
  refit on its inliers (on all anchors if fewer than K+1 remain, recorded in the stats).
  Candidates are fitted by QR, which is cheaper; every fit that is kept is redone by SVD.

  Not collective: every rank aligns its own batch. Errors are raised on PETSC_COMM_SELF.
*/
#include <basis/align.h>
#include <basis/log.h>
#include <basis/options.h>
#include <petscblaslapack.h>
#include <cblas.h>

const char *const BasisAlignTypes[] = {"lsq", "ransac", "BasisAlignType", "BASIS_ALIGN_", NULL};

/* The ones vector lies in span(phi_b) when its least-squares residual is below this
   fraction of its norm: eigensolvers leave the trivial eigenvector constant to ~1e-8
   relative, while for the sym Laplacian (trivial eigenvector sqrt(degree)) the residual is
   the relative spread of the degrees, ~1e-2 or more. */
#define BASIS_ALIGN_ONES_IN_SPAN 1e-6

/* -align_extra's default: min(BASIS_ALIGN_EXTRA_MAX, l / BASIS_ALIGN_ANCHORS_PER_COEF - K - 1),
   at least 0. MNIST-10k, defaults (K = 10, l = 250), seed 42, 2 ranks: d_G 0.1445 (0 extra),
   0.1232 (3), 0.1192 (5), 0.1114 (10), 0.1059 (20), 0.1039 (30), 0.1037 (40), for steps
   3%, 9% and 17% dearer at 10, 20 and 30 (docs/quality.md). */
#define BASIS_ALIGN_EXTRA_MAX        20
#define BASIS_ALIGN_ANCHORS_PER_COEF 8

/*
  BasisAlignParamsDefault - the defaults of the authors' code, with least squares (the
  talk's method) as the default type. Not collective.
*/
void BasisAlignParamsDefault(BasisAlignParams *p)
{
  p->type          = BASIS_ALIGN_LSQ;
  p->ransac_iters  = 100; /* authors' code */
  p->ransac_points = 20;  /* authors' code */
  p->ransac_tol    = 0.1; /* authors' code; absolute, in the units of phi_ref's entries */
  /* Double precision keeps ~16 - log10(cond) digits of T, and T amplifies noise in phi_b
     by up to cond; 1e8 still leaves 8 digits, more than the float32 targets carry, and
     refuses only designs that are singular in all but rounding (duplicate columns, too
     few distinct anchors). */
  p->max_cond = 1e8;
  p->extra    = BASIS_ALIGN_EXTRA_AUTO;
}

/*
  BasisAlignResolveExtra - the number of extra batch eigenvectors a run fits: the default's
  value for l anchors, batch m and K, or the one given, checked against what the fit and the
  batch can hold.

  Collective on comm (same options and sizes everywhere, same verdict).

  Notes:
    Default (BASIS_ALIGN_EXTRA_AUTO): min(BASIS_ALIGN_EXTRA_MAX, l / BASIS_ALIGN_ANCHORS_PER_COEF
    - K - 1), at least 0; with -align ransac also at most -ransac_points - K - 1 (a subset
    must determine the map). An explicit value must leave l >= K + extra + 1 anchors and
    m >= K + extra + 1 batch points; with -align ransac, -ransac_points >= K + extra + 1.
*/
PetscErrorCode BasisAlignResolveExtra(MPI_Comm comm, BasisAlignParams *p, PetscInt l, PetscInt m, PetscInt K)
{
  PetscFunctionBeginUser;
  if (p->extra == BASIS_ALIGN_EXTRA_AUTO) {
    PetscInt e = PetscMin(BASIS_ALIGN_EXTRA_MAX, l / BASIS_ALIGN_ANCHORS_PER_COEF - K - 1);
    if (p->type == BASIS_ALIGN_RANSAC) e = PetscMin(e, p->ransac_points - K - 1);
    p->extra = PetscMax(e, 0);
  } else {
    PetscCheck(
        l >= K + p->extra + 1, comm, PETSC_ERR_ARG_OUTOFRANGE,
        "-align_extra %d: the fit of %d + %d batch eigenvectors needs at least -dim + -align_extra + 1 = "
        "%d anchors, -anchors is %d; raise -anchors or lower -align_extra",
        (int)p->extra, (int)K, (int)p->extra, (int)(K + p->extra + 1), (int)l);
    PetscCheck(
        m >= K + p->extra + 1, comm, PETSC_ERR_ARG_OUTOFRANGE,
        "-align_extra %d: a batch of %d points cannot have the %d eigenvectors -dim + -align_extra asks "
        "for; lower -align_extra",
        (int)p->extra, (int)m, (int)(K + p->extra));
  }
  /* refused here once, not by every rank at every batch */
  PetscCheck(
      p->type != BASIS_ALIGN_RANSAC || p->ransac_points >= K + p->extra + 1, comm, PETSC_ERR_ARG_OUTOFRANGE,
      "-ransac_points %d must be at least -dim + -align_extra + 1 = %d (the coefficients of each row of T)",
      (int)p->ransac_points, (int)(K + p->extra + 1));
  PetscFunctionReturn(0);
}

/*
  BasisAlignParamsSetFromOptions - read the alignment options.

  Collective on comm (every rank reads the same options and reaches the same verdict).

  Options: -align lsq|ransac, -align_extra, -ransac_iters, -ransac_points, -ransac_tol,
  -align_max_cond

  Notes:
    Call it inside the caller's PetscOptionsBegin/End; it opens its own (nested) section so
    that -help lists these options under one heading. -ransac_points >= K + extra + 1 is
    checked once by BasisAlignResolveExtra, where K is known (and by BasisAlignFit).
*/
PetscErrorCode BasisAlignParamsSetFromOptions(MPI_Comm comm, BasisAlignParams *p)
{
  PetscFunctionBeginUser;
  PetscOptionsBegin(comm, NULL, "Alignment of batch eigenvectors to the reference", NULL);
  PetscCall(BasisOptionsEnum("-align",
                             "Affine fit on the anchors: least squares or RANSAC then least squares", NULL,
                             BasisAlignTypes, (PetscEnum)p->type, (PetscEnum *)&p->type, NULL));
  PetscCall(
      BasisOptionsInt("-align_extra",
                      "Batch eigenvectors beyond -dim in the fit, to take back what the batch solve mixed "
                      "into the last ones from the next (-1: min(20, anchors/8 - dim - 1), at least 0)",
                      NULL, p->extra, &p->extra, NULL, BASIS_ALIGN_EXTRA_AUTO, PETSC_MAX_INT));
  PetscCall(PetscOptionsInt("-ransac_iters", "RANSAC: number of random subsets tried", NULL, p->ransac_iters,
                            &p->ransac_iters, NULL));
  PetscCall(PetscOptionsInt("-ransac_points", "RANSAC: anchors per subset (at least -dim + 1)", NULL,
                            p->ransac_points, &p->ransac_points, NULL));
  PetscCall(PetscOptionsReal("-ransac_tol",
                             "RANSAC: an anchor is an inlier if its residual norm is below this", NULL,
                             p->ransac_tol, &p->ransac_tol, NULL));
  PetscCall(PetscOptionsReal(
      "-align_max_cond", "Refuse fits whose design matrix [phi_b, 1] has a larger 2-norm condition number",
      NULL, p->max_cond, &p->max_cond, NULL));
  PetscOptionsEnd();
  PetscCheck(p->ransac_iters >= 1, comm, PETSC_ERR_ARG_OUTOFRANGE, "-ransac_iters %d must be at least 1",
             (int)p->ransac_iters);
  PetscCheck(p->ransac_points >= 2, comm, PETSC_ERR_ARG_OUTOFRANGE,
             "-ransac_points %d must be at least -dim + 1 (the K + 1 coefficients of each row of T)",
             (int)p->ransac_points);
  PetscCheck(p->ransac_tol > 0.0, comm, PETSC_ERR_ARG_OUTOFRANGE, "-ransac_tol %g must be positive",
             (double)p->ransac_tol);
  PetscCheck(p->max_cond >= 1.0, comm, PETSC_ERR_ARG_OUTOFRANGE,
             "-align_max_cond %g must be at least 1 (a condition number is never smaller)",
             (double)p->max_cond);
  PetscFunctionReturn(0);
}

/* Scratch space for one BasisAlignFit call, sized for all l anchors. */
typedef struct {
  PetscInt     l, K;  /* anchors, reference columns (targets) */
  PetscInt     Kb;    /* batch eigenvector columns, K + -align_extra */
  PetscInt     nc;    /* columns of the design: Kb, plus 1 for the bias unless it is in span(phi_b) */
  PetscInt     bias;  /* 1: last design column is the ones vector; 0: ones lie in span(phi_b) */
  PetscBLASInt ldb;   /* max(l, nc) */
  PetscBLASInt lwork; /* dgelss and dgels workspace for any row count <= l */
  PetscReal   *A;     /* (rows of the fit) x nc, column-major, lda = rows */
  PetscReal   *B;     /* ldb x K column-major: phi_ref rows in, X = T^T out */
  PetscReal   *s;     /* [nc] singular values */
  PetscReal   *work;  /* [lwork] */
  PetscReal   *res;   /* [l] residual norms of the anchors */
  PetscReal   *Tc;    /* [K][Kb+1] a RANSAC candidate */
  PetscReal   *Y;     /* [l][K] T phi_b at the anchors (without the bias) */
  PetscInt    *rows;  /* [l] rows of a fit */
} Work;

/*
  Fit T on the anchors rows[0..r) (all l anchors when rows is NULL).

  svd = PETSC_TRUE: dgelss; cond is the 2-norm condition number of the design
  (PETSC_INFINITY when singular). svd = PETSC_FALSE, for RANSAC's candidates: dgels (a QR,
  cheaper than the SVD); cond is max|R_jj| / min|R_jj|, a lower bound of the 2-norm
  condition number that is enough to discard degenerate subsets (PETSC_INFINITY when R
  is singular). Every fit that is kept is redone with the SVD.
*/
static PetscErrorCode Fit(Work *w, PetscInt r, const PetscInt rows[], const PetscReal phi_ref[],
                          const PetscReal phi_b[], PetscBool svd, PetscReal T[], PetscReal *cond)
{
  const PetscInt K = w->K, Kb = w->Kb, nc = w->nc;
  PetscBLASInt   m, n, nrhs, lda, rank, info;
  PetscReal      rcond = -1.0; /* LAPACK: drop only singular values below machine precision;
                                  ill-conditioned fits are refused by the caller instead */

  PetscFunctionBeginUser;
  PetscCall(PetscBLASIntCast(r, &m));
  PetscCall(PetscBLASIntCast(nc, &n));
  PetscCall(PetscBLASIntCast(K, &nrhs));
  lda = m;
  for (PetscInt i = 0; i < r; i++) {
    const PetscInt a = rows ? rows[i] : i;
    for (PetscInt j = 0; j < Kb; j++) w->A[i + j * lda] = phi_b[a * Kb + j];
    if (w->bias) w->A[i + Kb * lda] = 1.0;
    for (PetscInt k = 0; k < K; k++) w->B[i + k * w->ldb] = phi_ref[a * K + k];
  }
  if (svd) {
    PetscCallBLAS("LAPACKgelss", LAPACKgelss_(&m, &n, &nrhs, w->A, &lda, w->B, &w->ldb, w->s, &rcond, &rank,
                                              w->work, &w->lwork, &info));
    BasisCheckLapack("dgelss", info);
    *cond = w->s[nc - 1] > 0.0 ? w->s[0] / w->s[nc - 1] : PETSC_INFINITY;
  } else {
    PetscReal rmin = PETSC_MAX_REAL, rmax = 0.0;

    PetscCallBLAS("LAPACKgels",
                  LAPACKgels_("N", &m, &n, &nrhs, w->A, &lda, w->B, &w->ldb, w->work, &w->lwork, &info));
    PetscCheck(info >= 0, PETSC_COMM_SELF, PETSC_ERR_LIB, "LAPACK dgels failed with info = %d", (int)info);
    for (PetscInt j = 0; j < nc; j++) {
      rmin = PetscMin(rmin, PetscAbsReal(w->A[j + j * lda]));
      rmax = PetscMax(rmax, PetscAbsReal(w->A[j + j * lda]));
    }
    *cond = info > 0 || rmin == 0.0 ? PETSC_INFINITY : rmax / rmin; /* info > 0: R is exactly singular */
  }
  /* X = T^T is in the first nc rows of B; without a bias column T's last column is zero */
  for (PetscInt k = 0; k < K; k++) {
    PetscReal *t = T + k * (Kb + 1);
    for (PetscInt j = 0; j < Kb; j++) t[j] = w->B[j + k * w->ldb];
    t[Kb] = w->bias ? w->B[Kb + k * w->ldb] : 0.0;
  }
  PetscCall(PetscLogFlops(2.0 * r * nc * (nc + K)));
  PetscFunctionReturn(0);
}

/* w->res[i] = ||phi_ref_i - T [phi_b_i, 1]||_2 for all l anchors (T phi_b by one GEMM);
   returns the sum of res[i]^2. */
static PetscErrorCode Residuals(Work *w, const PetscReal phi_ref[], const PetscReal phi_b[],
                                const PetscReal T[], PetscReal *sumsq)
{
  const PetscInt l = w->l, K = w->K, Kb = w->Kb;

  PetscFunctionBeginUser;
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, l, K, Kb, 1.0, phi_b, Kb, T, Kb + 1, 0.0, w->Y, K);
  *sumsq = 0.0;
  for (PetscInt i = 0; i < l; i++) {
    PetscReal r2 = 0.0;
    for (PetscInt k = 0; k < K; k++) {
      PetscReal r = phi_ref[i * K + k] - w->Y[i * K + k] - T[k * (Kb + 1) + Kb];
      r2 += r * r;
    }
    w->res[i] = PetscSqrtReal(r2);
    *sumsq += r2;
  }
  PetscCall(PetscLogFlops(2.0 * l * K * Kb + 4.0 * l * K));
  PetscFunctionReturn(0);
}

/*
  BasisAlignFit - the affine map from the batch's eigenvectors to the reference's.

  Not collective. Errors on PETSC_COMM_SELF: l < Kb + 1, -ransac_points outside
  Kb + 1 .. l, or a final design matrix with condition number above -align_max_cond.

  Input:
    p       - the alignment parameters (BasisAlignParamsSetFromOptions)
    l, K    - anchors and embedding dimension
    Kb      - batch eigenvectors in the fit, at least K (K + p->extra)
    phi_ref - [l][K] row-major reference eigenvectors at the anchors
    phi_b   - [l][Kb] row-major batch eigenvectors at the same anchors, same order
  Input/Output:
    rng     - draws the RANSAC subsets (untouched for -align lsq)
  Output:
    T       - [K][Kb+1] row-major: phi_ref_i ~ T [phi_b_i, 1]
    stats   - RMS residual over all l anchors of the final T, condition number of its
              design matrix, anchors in the final fit, whether RANSAC fell back to all

  Notes:
    One small allocation per call (tens of KB at l = 250, K = 10), plus BasisRngSample's.
*/
PetscErrorCode BasisAlignFit(const BasisAlignParams *p, PetscInt l, PetscInt K, PetscInt Kb,
                             const PetscReal phi_ref[], const PetscReal phi_b[], BasisRng *rng, PetscReal T[],
                             BasisAlignStats *stats)
{
  Work         w;
  PetscReal   *rbuf, query, dummy = 0.0, cond = PETSC_INFINITY, sumsq;
  PetscBLASInt m, n, nrhs, minus1             = -1, rank, info;
  PetscInt     used     = l;
  PetscBool    fallback = PETSC_FALSE;

  PetscFunctionBeginUser;
  PetscCheck(K >= 1, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "alignment: -dim %d must be at least 1",
             (int)K);
  PetscCheck(Kb >= K, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE,
             "alignment: %d batch eigenvectors cannot be fitted to %d reference ones", (int)Kb, (int)K);
  PetscCheck(
      l >= Kb + 1, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE,
      "alignment needs at least -dim + -align_extra + 1 = %d anchors to fit the %d x %d affine map, got "
      "%d; raise -anchors or lower -dim or -align_extra",
      (int)(Kb + 1), (int)K, (int)(Kb + 1), (int)l);
  if (p->type == BASIS_ALIGN_RANSAC)
    PetscCheck(p->ransac_points >= Kb + 1 && p->ransac_points <= l, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE,
               "-ransac_points %d must be at least -dim + -align_extra + 1 = %d and at most the %d anchors",
               (int)p->ransac_points, (int)(Kb + 1), (int)l);
  PetscCall(PetscLogEventBegin(BASIS_Align, 0, 0, 0, 0));

  w.l = l, w.K = K, w.Kb = Kb, w.bias = 1, w.nc = Kb + 1;
  PetscCall(PetscMalloc1(l, &w.rows));

  /* workspace: the queries for l rows satisfy dgelss's and dgels's minimum for fewer rows */
  PetscCall(PetscBLASIntCast(l, &m));
  PetscCall(PetscBLASIntCast(w.nc, &n));
  PetscCall(PetscBLASIntCast(K, &nrhs));
  w.ldb = PetscMax(m, n);
  PetscCallBLAS("LAPACKgelss", LAPACKgelss_(&m, &n, &nrhs, &dummy, &m, &dummy, &w.ldb, &dummy, &dummy, &rank,
                                            &query, &minus1, &info));
  BasisCheckLapack("dgelss (workspace query)", info);
  w.lwork = (PetscBLASInt)query;
  PetscCallBLAS("LAPACKgels",
                LAPACKgels_("N", &m, &n, &nrhs, &dummy, &m, &dummy, &w.ldb, &query, &minus1, &info));
  BasisCheckLapack("dgels (workspace query)", info);
  w.lwork = PetscMax(w.lwork, (PetscBLASInt)query);
  PetscCall(PetscMalloc1((size_t)l * w.nc + (size_t)w.ldb * PetscMax(K, 1) + w.nc + w.lwork + l +
                             K * (Kb + 1) + (size_t)l * K,
                         &rbuf));
  w.A    = rbuf;
  w.B    = w.A + (size_t)l * w.nc;
  w.s    = w.B + (size_t)w.ldb * K;
  w.work = w.s + w.nc;
  w.res  = w.work + w.lwork;
  w.Tc   = w.res + l;
  w.Y    = w.Tc + K * (Kb + 1);

  /* Is the ones vector in span(phi_b) over the anchors? Least squares of 1 on phi_b (the
     first Kb design columns, solved in place by the same SVD routine). */
  {
    PetscBLASInt nK, one = 1, r_;
    PetscReal    rc = -1.0, res2 = 0.0;
    PetscCall(PetscBLASIntCast(Kb, &nK));
    for (PetscInt i = 0; i < l; i++) {
      for (PetscInt j = 0; j < Kb; j++) w.A[i + j * m] = phi_b[i * Kb + j];
      w.B[i] = 1.0;
    }
    PetscCallBLAS("LAPACKgelss",
                  LAPACKgelss_(&m, &nK, &one, w.A, &m, w.B, &w.ldb, w.s, &rc, &r_, w.work, &w.lwork, &info));
    BasisCheckLapack("dgelss", info);
    for (PetscInt i = Kb; i < l; i++)
      res2 += w.B[i] * w.B[i]; /* dgelss leaves the residual in rows Kb..l-1 */
    if (l > Kb && PetscSqrtReal(res2 / l) < BASIS_ALIGN_ONES_IN_SPAN) w.bias = 0, w.nc = Kb;
  }

  switch (p->type) {
  case BASIS_ALIGN_LSQ:
    PetscCall(Fit(&w, l, NULL, phi_ref, phi_b, PETSC_TRUE, T, &cond));
    break;
  case BASIS_ALIGN_RANSAC: {
    PetscInt  best       = -1;
    PetscReal best_score = PETSC_MAX_REAL;

    for (PetscInt it = 0; it < p->ransac_iters && best < l; it++) {
      PetscInt  count = 0;
      PetscReal score = 0.0, c;

      PetscCall(BasisRngSample(rng, l, p->ransac_points, w.rows));
      PetscCall(Fit(&w, p->ransac_points, w.rows, phi_ref, phi_b, PETSC_FALSE, w.Tc, &c));
      if (!(c <= p->max_cond)) continue; /* a degenerate subset: not a candidate */
      PetscCall(Residuals(&w, phi_ref, phi_b, w.Tc, &sumsq));
      for (PetscInt i = 0; i < l; i++)
        if (w.res[i] < p->ransac_tol) count++, score += w.res[i];
      if (count > best || (count == best && score < best_score)) {
        best = count, best_score = score;
        PetscCall(PetscArraycpy(T, w.Tc, K * (Kb + 1)));
      }
    }
    /* refit on the inliers of the best candidate (stopping early above is exact: once every
       anchor is an inlier, the refit uses all of them whatever candidate found it) */
    used = 0;
    if (best >= Kb + 1) {
      PetscCall(Residuals(&w, phi_ref, phi_b, T, &sumsq));
      for (PetscInt i = 0; i < l; i++)
        if (w.res[i] < p->ransac_tol) w.rows[used++] = i;
    }
    if (used >= Kb + 1)
      PetscCall(Fit(&w, used, w.rows, phi_ref, phi_b, PETSC_TRUE, T, &cond));
    else {
      fallback = PETSC_TRUE;
      used     = l;
      PetscCall(Fit(&w, l, NULL, phi_ref, phi_b, PETSC_TRUE, T, &cond));
    }
  } break;
  }
  PetscCall(Residuals(&w, phi_ref, phi_b, T, &sumsq));
  PetscCall(PetscFree(rbuf));
  PetscCall(PetscFree(w.rows));
  PetscCall(PetscLogEventEnd(BASIS_Align, 0, 0, 0, 0));
  PetscCheck(
      cond <= p->max_cond, PETSC_COMM_SELF, PETSC_ERR_NOT_CONVERGED,
      "alignment: the design matrix [phi_b%s] on %d of %d anchors has condition number %g, above "
      "-align_max_cond %g: the %d batch eigenvectors barely span the anchors; use more anchors (-anchors), a "
      "smaller -dim%s",
      w.bias ? ", 1" : "", (int)used, (int)l, (double)cond, (double)p->max_cond, (int)Kb,
      Kb > K ? " or a smaller -align_extra" : "");
  if (stats) {
    stats->residual        = PetscSqrtReal(sumsq / l);
    stats->cond            = cond;
    stats->inliers         = used;
    stats->ransac_fallback = fallback;
  }
  PetscFunctionReturn(0);
}

/*
  BasisAlignApply - the targets of a batch: y_i = T [phi_i, 1].

  Not collective.

  Input:
    m, K - rows and embedding dimension
    Kb   - batch eigenvectors per row (as given to BasisAlignFit)
    T    - [K][Kb+1] row-major (BasisAlignFit)
    phi  - [m][Kb] row-major batch eigenvectors
  Output:
    y    - [m][K] row-major float32 targets (computed in double, rounded once)
*/
PetscErrorCode BasisAlignApply(PetscInt m, PetscInt K, PetscInt Kb, const PetscReal T[],
                               const PetscReal phi[], float y[])
{
  PetscFunctionBeginUser;
  PetscCall(PetscLogEventBegin(BASIS_Align, 0, 0, 0, 0));
  for (PetscInt i = 0; i < m; i++) {
    const PetscReal *x = phi + (size_t)i * Kb;
    for (PetscInt k = 0; k < K; k++) {
      const PetscReal *t = T + k * (Kb + 1);
      PetscReal        s = t[Kb];
      for (PetscInt j = 0; j < Kb; j++) s += t[j] * x[j];
      y[(size_t)i * K + k] = (float)s;
    }
  }
  PetscCall(PetscLogFlops(2.0 * m * K * (Kb + 1)));
  PetscCall(PetscLogEventEnd(BASIS_Align, 0, 0, 0, 0));
  PetscFunctionReturn(0);
}
