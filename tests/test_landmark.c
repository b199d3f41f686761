/*
  test_landmark - the landmark degree (src/landmark.c) against the graph rule itself:
    (a) a landmark's degree equals its row sum of the landmark graph's W (BasisGraphAssemble
        on the landmarks): local and median scale, the batch's k and a density-matched k,
        points c + noise with ||c|| >> noise (the float GEMM's hard case), and a grid with
        exact distance ties (broken by index, as the rule breaks them);
    (b) a point that is not a landmark gets its row sum of W on the landmarks with it added
        (local scale: its arrival moves its neighbours' scales); a copy of a landmark gets
        that landmark's degree;
    (d) bfloat16 products (BasisLandmarksSetGemm) give the same degrees bit for bit;
  (c) BasisLandmarksFit recovers y = alpha sqrt(degree) + beta, and BasisLandmarksColumn
        writes column 0 alone;
    (e) the extension of columns (BasisLandmarksExtend) is sum_j W(x, j) f_j / sqrt(d(x) d_j)
        with W the graph with x added and d_j the landmark graph's degrees, for new points
        and for landmarks (left out of their own sum); D^1/2 1 of the landmark graph extends
        to itself at the landmarks (eigenvalue 1 of D^-1/2 W D^-1/2), so its fitted map is
        the identity; BasisLandmarksColumn blends columns 1.. with the weight and, given no
        fit, leaves column 0.
  Serial (the object is not collective); every verdict is agreed over PETSC_COMM_WORLD.
*/
#include <basis/landmark.h>
#include <basis/rng.h>
#include "check.h"
#include <petscmat.h>
#include <string.h>

/* Three Gaussian clusters; or, with noise < 0, a 2-D integer grid of 12 columns (landmarks)
   and points halfway between grid points (queries): exact distance ties everywhere. */
static void Points(BasisRng *rng, PetscInt n, PetscInt D, PetscReal offset, PetscReal noise, float x[])
{
  if (noise < 0) {
    for (PetscInt i = 0; i < n; i++) {
      PetscInt a = offset > 0 ? BasisRngInt(rng, 11) : i % 12, b = offset > 0 ? BasisRngInt(rng, 12) : i / 12;
      x[i * D] = (float)a + (offset > 0 ? 0.5f : 0.0f), x[i * D + 1] = (float)b;
    }
    return;
  }
  for (PetscInt i = 0; i < n; i++) {
    PetscReal c = offset + 4.0 * (i % 3); /* three clusters */
    for (PetscInt d = 0; d < D; d++) x[i * D + d] = (float)(c + noise * BasisRngNormal(rng));
  }
}

/* Row sums of W of the graph on the n points x under the rule p (not re-matched). */
static PetscErrorCode GraphDegrees(const BasisGraphParams *p, PetscInt n, PetscInt D, const float x[],
                                   PetscReal deg[])
{
  BasisKnn           knn;
  Mat                W;
  Vec                s;
  const PetscScalar *a;

  PetscFunctionBeginUser;
  PetscCall(BasisKnnCreate(n, p->knn, &knn));
  PetscCall(BasisKnnSelf(&knn, D, x));
  PetscCall(BasisGraphAssemble(PETSC_COMM_SELF, p, &knn, 0, n, &W));
  PetscCall(MatCreateVecs(W, &s, NULL));
  PetscCall(MatGetRowSum(W, s));
  PetscCall(VecGetArrayRead(s, &a));
  for (PetscInt i = 0; i < n; i++) deg[i] = PetscRealPart(a[i]);
  PetscCall(VecRestoreArrayRead(s, &a));
  PetscCall(VecDestroy(&s));
  PetscCall(MatDestroy(&W));
  PetscCall(BasisKnnDestroy(&knn));
  PetscFunctionReturn(0);
}

static PetscReal RelDiff(PetscReal a, PetscReal b)
{
  return PetscAbsReal(a - b) / PetscMax(PetscAbsReal(b), 1e-300);
}

/* (a) and (b) for one rule: L landmarks of dimension D, m the batch size matched from. */
static PetscErrorCode CheckDegrees(const char *name, BasisScaleType scale, PetscInt m, PetscInt L, PetscInt D,
                                   PetscReal offset, PetscReal noise)
{
  const PetscInt   nnew = 12;
  BasisGraphParams p, lp;
  BasisLandmarks   lm;
  BasisRng         rng;
  float           *x, *q;
  PetscReal       *deg, *ref, worst = 0, worst_new = 0, dup;

  PetscFunctionBeginUser;
  BasisGraphParamsDefault(&p);
  p.scale = scale;
  BasisGraphParamsMatched(&p, L, m, &lp);
  BasisRngSeed(&rng, 5, 1);
  PetscCall(PetscMalloc4((size_t)(L + 1) * D, &x, (size_t)nnew * D, &q, L + 1, &deg, L + 1, &ref));
  Points(&rng, L, D, noise < 0 ? 0 : offset, noise, x);
  Points(&rng, nnew, D, offset, noise, q);
  PetscCall(BasisLandmarksCreate(&p, m, L, D, x, &lm));

  PetscCall(BasisLandmarksDegree(lm, L, x, deg));
  PetscCall(GraphDegrees(&lp, L, D, x, ref));
  for (PetscInt i = 0; i < L; i++) worst = PetscMax(worst, RelDiff(deg[i], ref[i]));
  PetscCall(
      BasisTestCheck(PETSC_COMM_WORLD, worst < 1e-12,
                     "%s: a landmark's degree is off its row sum of the landmark graph by %g (relative)",
                     name, (double)worst));

  if (scale == BASIS_SCALE_LOCAL) { /* the median moves with every point added: not exact */
    for (PetscInt t = 0; t < nnew; t++) {
      PetscCall(PetscArraycpy(x + (size_t)L * D, q + (size_t)t * D, D));
      PetscCall(BasisLandmarksDegree(lm, 1, q + (size_t)t * D, deg + L));
      PetscCall(GraphDegrees(&lp, L + 1, D, x, ref));
      worst_new = PetscMax(worst_new, RelDiff(deg[L], ref[L]));
    }
    PetscCall(BasisTestCheck(PETSC_COMM_WORLD, worst_new < 1e-12,
                             "%s: a new point's degree is off its row sum of the graph with it added by %g",
                             name, (double)worst_new));
  }
  { /* the bfloat16 products select the same candidates: the same degrees, bit for bit */
    PetscReal       *d32, *d16;
    BasisKnnGemmType used;
    PetscBool        same;
    PetscCall(PetscMalloc2(L + nnew, &d32, L + nnew, &d16));
    PetscCall(BasisLandmarksDegree(lm, L, x, d32));
    PetscCall(BasisLandmarksDegree(lm, nnew, q, d32 + L));
    PetscCall(BasisLandmarksSetGemm(lm, BASIS_KNN_GEMM_BF16, &used));
    PetscCall(BasisLandmarksDegree(lm, L, x, d16));
    PetscCall(BasisLandmarksDegree(lm, nnew, q, d16 + L));
    same = (PetscBool)!memcmp(d32, d16, sizeof(PetscReal) * (L + nnew));
    PetscCall(BasisTestCheck(PETSC_COMM_WORLD, used != BASIS_KNN_GEMM_BF16 || same,
                             "%s: the degrees with bfloat16 products differ from those with float ones",
                             name));
    PetscCall(BasisLandmarksSetGemm(lm, BASIS_KNN_GEMM_FLOAT, NULL));
    PetscCall(PetscFree2(d32, d16));
  }
  PetscCall(BasisLandmarksDegree(lm, 1, x + 7 * D, &dup));
  PetscCall(BasisLandmarksDegree(lm, L, x, deg));
  PetscCall(BasisTestCheck(PETSC_COMM_WORLD, dup == deg[7],
                           "%s: a copy of landmark 7 has degree %g, not its %g", name, (double)dup,
                           (double)deg[7]));
  PetscCall(BasisLandmarksDestroy(&lm));
  PetscCall(PetscFree4(x, q, deg, ref));
  PetscFunctionReturn(0);
}

/* (c): the fit and the column. */
static PetscErrorCode CheckFit(void)
{
  const PetscInt          L = 200, D = 5, n = 40, K = 3;
  BasisGraphParams        p;
  BasisLandmarks          lm;
  BasisLandmarksFitResult fit;
  BasisRng                rng;
  float                  *x, *q, *y;
  PetscReal              *deg, *t, worst = 0;
  PetscBool               others = PETSC_TRUE;

  PetscFunctionBeginUser;
  BasisGraphParamsDefault(&p);
  BasisRngSeed(&rng, 9, 1);
  PetscCall(PetscMalloc5((size_t)L * D, &x, (size_t)n * D, &q, (size_t)n * K, &y, n, &deg, n, &t));
  Points(&rng, L, D, 0, 1, x);
  Points(&rng, n, D, 0, 1, q);
  PetscCall(BasisLandmarksCreate(&p, 100, L, D, x, &lm));
  PetscCall(BasisLandmarksDegree(lm, n, q, deg));
  for (PetscInt i = 0; i < n; i++) t[i] = 3.0 * PetscSqrtReal(deg[i]) - 1.0;
  PetscCall(BasisLandmarksFit(lm, n, q, t, &fit));
  PetscCall(BasisTestCheckNear(PETSC_COMM_WORLD, "fit alpha", fit.alpha, 3.0, 1e-9));
  PetscCall(BasisTestCheckNear(PETSC_COMM_WORLD, "fit beta", fit.beta, -1.0, 1e-9));
  PetscCall(BasisTestCheckNear(PETSC_COMM_WORLD, "fit r", fit.r, 1.0, 1e-12));
  for (PetscInt i = 0; i < n * K; i++) y[i] = 7.0f;
  PetscCall(BasisLandmarksColumn(lm, &fit, n, q, K, y));
  for (PetscInt i = 0; i < n; i++) {
    worst = PetscMax(worst, PetscAbsReal(y[i * K] - t[i]) / PetscAbsReal(t[i]));
    for (PetscInt j = 1; j < K; j++) others = others && y[i * K + j] == 7.0f;
  }
  PetscCall(BasisTestCheck(PETSC_COMM_WORLD, worst < 1e-6, "column 0 is off alpha sqrt(degree) + beta by %g",
                           (double)worst));
  PetscCall(BasisTestCheck(PETSC_COMM_WORLD, others, "BasisLandmarksColumn changed a column other than 0"));
  PetscCall(BasisLandmarksDestroy(&lm));
  PetscCall(PetscFree5(x, q, y, deg, t));
  PetscFunctionReturn(0);
}

/* Row i of the graph of the n points x under the rule p: w [n] (dense). */
static PetscErrorCode GraphRow(const BasisGraphParams *p, PetscInt n, PetscInt D, const float x[], PetscInt i,
                               PetscReal w[])
{
  BasisKnn           knn;
  Mat                W;
  PetscInt           nz;
  const PetscInt    *cols;
  const PetscScalar *vals;

  PetscFunctionBeginUser;
  PetscCall(BasisKnnCreate(n, p->knn, &knn));
  PetscCall(BasisKnnSelf(&knn, D, x));
  PetscCall(BasisGraphAssemble(PETSC_COMM_SELF, p, &knn, 0, n, &W));
  PetscCall(PetscArrayzero(w, n));
  PetscCall(MatGetRow(W, i, &nz, &cols, &vals));
  for (PetscInt t = 0; t < nz; t++) w[cols[t]] = PetscRealPart(vals[t]);
  PetscCall(MatRestoreRow(W, i, &nz, &cols, &vals));
  PetscCall(MatDestroy(&W));
  PetscCall(BasisKnnDestroy(&knn));
  PetscFunctionReturn(0);
}

/* (e): the extension against the graph's own rows. */
static PetscErrorCode CheckExtension(void)
{
  const PetscInt   L = 400, D = 7, m = 100, K = 3, nnew = 8;
  BasisGraphParams p, lp;
  BasisLandmarks   lm;
  BasisRng         rng;
  float           *x, *q, *y, *y0;
  PetscReal       *f, *dl, *w, *ext, rmin, worst = 0, worst_self = 0, worst_triv = 0, worst_blend = 0;
  PetscBool        col0 = PETSC_TRUE;

  PetscFunctionBeginUser;
  BasisGraphParamsDefault(&p);
  BasisGraphParamsMatched(&p, L, m, &lp);
  BasisRngSeed(&rng, 11, 1);
  PetscCall(PetscMalloc5((size_t)(L + 1) * D, &x, (size_t)nnew * D, &q, (size_t)L * K, &f, (size_t)nnew * K,
                         &y, (size_t)nnew * K, &y0));
  PetscCall(PetscMalloc3(L, &dl, L + 1, &w, (size_t)L * K, &ext));
  Points(&rng, L, D, 0, 1, x);
  Points(&rng, nnew, D, 0, 1, q);
  PetscCall(BasisLandmarksCreate(&p, m, L, D, x, &lm));
  PetscCall(GraphDegrees(&lp, L, D, x, dl));
  /* column 0: D^1/2 1 of the landmark graph; columns 1, 2: arbitrary values */
  for (PetscInt j = 0; j < L; j++) {
    f[j * K]     = PetscSqrtReal(dl[j]);
    f[j * K + 1] = BasisRngNormal(&rng);
    f[j * K + 2] = x[j * D] * x[j * D] - x[j * D + 1];
  }
  PetscCall(BasisLandmarksSetValues(lm, K, f, 0.3, &rmin));

  /* new points: W's row of x in the graph of the landmarks with x added */
  PetscCall(BasisLandmarksExtend(lm, nnew, q, ext));
  for (PetscInt t = 0; t < nnew; t++) {
    PetscReal dx = 0;
    PetscCall(PetscArraycpy(x + (size_t)L * D, q + (size_t)t * D, D));
    PetscCall(GraphRow(&lp, L + 1, D, x, L, w));
    for (PetscInt j = 0; j < L; j++) dx += w[j];
    for (PetscInt c = 0; c < K; c++) {
      PetscReal e = 0;
      for (PetscInt j = 0; j < L; j++) e += w[j] * f[j * K + c] / PetscSqrtReal(dl[j]);
      e /= PetscSqrtReal(dx);
      worst = PetscMax(worst, PetscAbsReal(ext[t * K + c] - e) / PetscMax(PetscAbsReal(e), 1e-3));
    }
  }
  PetscCall(BasisTestCheck(PETSC_COMM_WORLD, worst < 1e-10,
                           "a new point's extension is off sum_j W(x,j) f_j / sqrt(d(x) d_j) by %g",
                           (double)worst));

  /* landmarks: their own row of the landmark graph, themselves left out */
  PetscCall(BasisLandmarksExtend(lm, L, x, ext));
  for (PetscInt i = 0; i < L; i += 37) {
    PetscCall(GraphRow(&lp, L, D, x, i, w));
    for (PetscInt c = 1; c < K; c++) {
      PetscReal e = 0;
      for (PetscInt j = 0; j < L; j++) e += w[j] * f[j * K + c] / PetscSqrtReal(dl[j]);
      e /= PetscSqrtReal(dl[i]);
      worst_self = PetscMax(worst_self, PetscAbsReal(ext[i * K + c] - e) / PetscMax(PetscAbsReal(e), 1e-3));
    }
  }
  for (PetscInt i = 0; i < L; i++)
    worst_triv = PetscMax(worst_triv, PetscAbsReal(ext[i * K] - f[i * K]) / f[i * K]);
  PetscCall(BasisTestCheck(PETSC_COMM_WORLD, worst_self < 1e-10,
                           "a landmark's extension is off its row of the landmark graph by %g",
                           (double)worst_self));
  PetscCall(
      BasisTestCheck(PETSC_COMM_WORLD, worst_triv < 1e-6,
                     "D^1/2 1 of the landmark graph does not extend to itself at the landmarks (off by %g)",
                     (double)worst_triv));
  PetscCall(BasisTestCheck(PETSC_COMM_WORLD, rmin > -1 && rmin <= 1, "fit r %g out of range", (double)rmin));

  /* the blend, with column 0 left alone (no fit): weight 1 gives an affine map of the
     extension (z), weight 0.3 gives 0.7 y + 0.3 z */
  PetscCall(BasisLandmarksExtend(lm, nnew, q, ext));
  for (PetscInt i = 0; i < nnew * K; i++) y[i] = y0[i] = (float)BasisRngNormal(&rng);
  PetscCall(BasisLandmarksSetValues(lm, K, f, 1.0, NULL));
  PetscCall(BasisLandmarksColumn(lm, NULL, nnew, q, K, y));
  for (PetscInt t = 0; t < nnew; t++) col0 = col0 && y[t * K] == y0[t * K];
  for (PetscInt c = 1; c < K; c++) { /* z_c = a ext_c + b: the slope between any two points is a */
    const PetscReal a = (y[K + c] - y[c]) / (ext[K + c] - ext[c]);
    for (PetscInt t = 2; t < nnew; t++)
      worst_blend =
          PetscMax(worst_blend, PetscAbsReal(y[t * K + c] - (y[c] + a * (ext[t * K + c] - ext[c]))) /
                                    PetscMax(PetscAbsReal(y[t * K + c]), 1e-3));
  }
  PetscCall(BasisTestCheck(PETSC_COMM_WORLD, worst_blend < 1e-4,
                           "-landmark_weight 1: a column is not an affine map of the extension (off by %g)",
                           (double)worst_blend));
  {
    float *z;
    PetscCall(PetscMalloc1((size_t)nnew * K, &z));
    PetscCall(PetscArraycpy(z, y, (size_t)nnew * K));
    PetscCall(PetscArraycpy(y, y0, (size_t)nnew * K));
    PetscCall(BasisLandmarksSetValues(lm, K, f, 0.3, NULL));
    PetscCall(BasisLandmarksColumn(lm, NULL, nnew, q, K, y));
    worst_blend = 0;
    for (PetscInt t = 0; t < nnew; t++) {
      col0 = col0 && y[t * K] == y0[t * K];
      for (PetscInt c = 1; c < K; c++)
        worst_blend =
            PetscMax(worst_blend, PetscAbsReal(y[t * K + c] - (0.7 * y0[t * K + c] + 0.3 * z[t * K + c])));
    }
    PetscCall(PetscFree(z));
  }
  PetscCall(BasisTestCheck(PETSC_COMM_WORLD, worst_blend < 1e-5,
                           "-landmark_weight 0.3 is not 0.7 network + 0.3 extension (off by %g)",
                           (double)worst_blend));
  PetscCall(BasisTestCheck(PETSC_COMM_WORLD, col0, "BasisLandmarksColumn with no fit changed column 0"));
  PetscCall(BasisLandmarksDestroy(&lm));
  PetscCall(PetscFree5(x, q, f, y, y0));
  PetscCall(PetscFree3(dl, w, ext));
  PetscFunctionReturn(0);
}

int main(int argc, char **argv)
{
  PetscCall(PetscInitialize(&argc, &argv, NULL, NULL));
  PetscCall(CheckDegrees("local, k of the batch", BASIS_SCALE_LOCAL, 300, 300, 7, 0, 1));
  PetscCall(CheckDegrees("local, matched k = 40", BASIS_SCALE_LOCAL, 100, 400, 7, 0, 1));
  PetscCall(CheckDegrees("median, matched k = 40", BASIS_SCALE_MEDIAN, 100, 400, 7, 0, 1));
  PetscCall(CheckDegrees("local, D = 300, c + noise", BASIS_SCALE_LOCAL, 128, 256, 300, 1000, 0.01));
  PetscCall(CheckDegrees("local, grid (exact ties)", BASIS_SCALE_LOCAL, 144, 144, 2, 1, -1));
  PetscCall(CheckFit());
  PetscCall(CheckExtension());
  PetscCall(PetscFinalize());
  return BasisTestFailures() ? 1 : 0;
}
