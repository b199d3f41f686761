/*
  test_align - unit tests of the affine alignment (src/align.c, DESIGN.md step 4):
   - least squares recovers a known random affine map from l = 50 anchors, K = 5;
   - RANSAC recovers it with 30% of the anchors corrupted by large offsets, reports 70%
     inliers and the RMS residual those offsets imply;
   - RANSAC with no consensus (tolerance below rounding) falls back to all anchors;
   - a constant column of phi_b (the trivial eigenvector of the rw and unnormalized
     Laplacians) is absorbed by the bias instead of making the fit singular;
   - an ill-conditioned design (two identical columns of phi_b), too few anchors and
     -ransac_points below K + 1 are refused with an error;
   - BasisAlignApply equals the map evaluated in double, rounded to float32;
   - with -align_extra, a map of Kb = K + 3 batch columns is recovered exactly, and the
     first K columns alone cannot fit it; l = Kb anchors are refused;
   - -align_extra's default resolves to min(20, l/8 - K - 1) (RANSAC: also <= -ransac_points
     - K - 1), at least 0, and explicit values too large for the anchors or batch are refused.
*/
#include <basis/align.h>
#include "check.h"
#include <math.h>

#define L_ANCHORS 50
#define K_DIM     5
#define KP1       (K_DIM + 1)
/* Exact data: T is determined to rounding times cond (~20 here), so 1e-10 has margin. */
#define TOL_EXACT 1e-10
/* RANSAC's final fit uses the 35 clean anchors only: as exact as least squares. */
#define TOL_RANSAC 1e-8

static void MakeData(BasisRng *rng, PetscReal T_true[], PetscReal phi_b[], PetscReal phi_ref[])
{
  for (PetscInt i = 0; i < K_DIM * KP1; i++) T_true[i] = BasisRngNormal(rng);
  /* batch eigenvector entries are O(1/sqrt(m)); 0.1 keeps the design like the real one */
  for (PetscInt i = 0; i < L_ANCHORS * K_DIM; i++) phi_b[i] = 0.1 * BasisRngNormal(rng);
  for (PetscInt i = 0; i < L_ANCHORS; i++)
    for (PetscInt k = 0; k < K_DIM; k++) {
      PetscReal y = T_true[k * KP1 + K_DIM];
      for (PetscInt j = 0; j < K_DIM; j++) y += T_true[k * KP1 + j] * phi_b[i * K_DIM + j];
      phi_ref[i * K_DIM + k] = y;
    }
}

static PetscReal MaxDiff(PetscInt n, const PetscReal a[], const PetscReal b[])
{
  PetscReal d = 0.0;
  for (PetscInt i = 0; i < n; i++) d = PetscMax(d, PetscAbsReal(a[i] - b[i]));
  return d;
}

/* BasisAlignFit is expected to refuse; returns whether it did. */
static PetscErrorCode ExpectRefusal(const BasisAlignParams *p, PetscInt l, const PetscReal phi_ref[],
                                    const PetscReal phi_b[], BasisRng *rng, PetscBool *refused)
{
  PetscReal       T[K_DIM * KP1];
  BasisAlignStats stats;
  PetscErrorCode  ierr;

  PetscFunctionBeginUser;
  PetscCall(PetscPushErrorHandler(PetscReturnErrorHandler, NULL));
  ierr = BasisAlignFit(p, l, K_DIM, K_DIM, phi_ref, phi_b, rng, T, &stats);
  PetscCall(PetscPopErrorHandler());
  *refused = ierr ? PETSC_TRUE : PETSC_FALSE;
  PetscFunctionReturn(0);
}

int main(int argc, char **argv)
{
  BasisAlignParams p;
  BasisAlignStats  stats;
  BasisRng         rng, draws;
  PetscReal        T_true[K_DIM * KP1], T[K_DIM * KP1], phi_b[L_ANCHORS * K_DIM], phi_ref[L_ANCHORS * K_DIM];
  PetscReal        bad[L_ANCHORS * K_DIM], sumsq = 0.0, expect;
  float            y[L_ANCHORS * K_DIM];
  PetscBool        refused;

  PetscCall(PetscInitialize(&argc, &argv, NULL, NULL));
  PetscCall(BasisInitialize());
  BasisRngSeed(&rng, 2023, 7);
  BasisRngSeed(&draws, 2023, 8);
  MakeData(&rng, T_true, phi_b, phi_ref);

  /* least squares on exact data */
  BasisAlignParamsDefault(&p);
  PetscCall(BasisAlignFit(&p, L_ANCHORS, K_DIM, K_DIM, phi_ref, phi_b, &draws, T, &stats));
  PetscCall(BasisTestCheck(PETSC_COMM_WORLD, (PetscBool)(MaxDiff(K_DIM * KP1, T, T_true) < TOL_EXACT),
                           "lsq: T differs from the known map"
                           " (%g)",
                           (double)(MaxDiff(K_DIM * KP1, T, T_true))));
  PetscCall(BasisTestCheck(PETSC_COMM_WORLD, (PetscBool)(stats.residual < TOL_EXACT),
                           "lsq: residual on exact data"
                           " (%g)",
                           (double)(stats.residual)));
  PetscCall(BasisTestCheck(PETSC_COMM_WORLD,
                           (PetscBool)(!(stats.inliers != L_ANCHORS || stats.ransac_fallback)),
                           "lsq: inliers is not l"
                           " (%g)",
                           (double)(stats.inliers)));
  PetscCall(BasisTestCheck(PETSC_COMM_WORLD, (PetscBool)(stats.cond >= 1.0 && stats.cond < 1e3),
                           "lsq: implausible condition number"
                           " (%g)",
                           (double)(stats.cond)));

  /* targets: Apply equals the map in double, rounded once to float32 */
  PetscCall(BasisAlignApply(L_ANCHORS, K_DIM, K_DIM, T_true, phi_b, y));
  for (PetscInt i = 0; i < L_ANCHORS * K_DIM; i++)
    if (y[i] != (float)phi_ref[i] && !(fabs(y[i] - phi_ref[i]) <= 1e-7 * fabs(phi_ref[i]))) {
      PetscCall(BasisTestCheck(PETSC_COMM_WORLD, PETSC_FALSE, "apply: target differs from T [phi, 1] (%g)",
                               fabs(y[i] - phi_ref[i])));
      break;
    }

  /* RANSAC with 30% of the anchors (every third-ish one, 15 of 50) moved far away */
  PetscCall(PetscArraycpy(bad, phi_ref, L_ANCHORS * K_DIM));
  for (PetscInt c = 0; c < 15; c++) {
    PetscInt i = (c * 10) / 3; /* 15 distinct anchors spread over 0..46 */
    for (PetscInt k = 0; k < K_DIM; k++) {
      PetscReal off = (1.0 + 2.0 * BasisRngUniform(&rng)) * (BasisRngUniform(&rng) < 0.5 ? -1.0 : 1.0);
      bad[i * K_DIM + k] += off;
      sumsq += off * off;
    }
  }
  expect          = PetscSqrtReal(sumsq / L_ANCHORS);
  p.type          = BASIS_ALIGN_RANSAC;
  p.ransac_points = K_DIM + 2; /* small subsets: P(clean) = 0.08 each, so 100 draws find one */
  PetscCall(BasisAlignFit(&p, L_ANCHORS, K_DIM, K_DIM, bad, phi_b, &draws, T, &stats));
  PetscCall(BasisTestCheck(PETSC_COMM_WORLD, (PetscBool)(MaxDiff(K_DIM * KP1, T, T_true) < TOL_RANSAC),
                           "ransac: T differs from the known map"
                           " (%g)",
                           (double)(MaxDiff(K_DIM * KP1, T, T_true))));
  PetscCall(BasisTestCheck(PETSC_COMM_WORLD, (PetscBool)(!(stats.inliers != 35 || stats.ransac_fallback)),
                           "ransac: inliers should be 35 of 50"
                           " (%g)",
                           (double)(stats.inliers)));
  PetscCall(BasisTestCheck(PETSC_COMM_WORLD, (PetscBool)(fabs(stats.residual - expect) < 1e-8 * expect),
                           "ransac: RMS residual is not that of the offsets"
                           " (%g)",
                           (double)(stats.residual - expect)));
  /* plain least squares is pulled away by the same outliers: the test data do need RANSAC */
  p.type = BASIS_ALIGN_LSQ;
  PetscCall(BasisAlignFit(&p, L_ANCHORS, K_DIM, K_DIM, bad, phi_b, &draws, T, &stats));
  PetscCall(BasisTestCheck(PETSC_COMM_WORLD, (PetscBool)(MaxDiff(K_DIM * KP1, T, T_true) > 1e-2),
                           "lsq with outliers unexpectedly exact"
                           " (%g)",
                           (double)(MaxDiff(K_DIM * KP1, T, T_true))));

  /* RANSAC without consensus: no anchor fits to 1e-30, so the final fit uses all */
  p.type       = BASIS_ALIGN_RANSAC;
  p.ransac_tol = 1e-30;
  PetscCall(BasisAlignFit(&p, L_ANCHORS, K_DIM, K_DIM, phi_ref, phi_b, &draws, T, &stats));
  PetscCall(BasisTestCheck(PETSC_COMM_WORLD,
                           (PetscBool)(!(!stats.ransac_fallback || stats.inliers != L_ANCHORS)),
                           "ransac: no fallback to all anchors"
                           " (%g)",
                           (double)(stats.inliers)));
  PetscCall(BasisTestCheck(PETSC_COMM_WORLD, (PetscBool)(MaxDiff(K_DIM * KP1, T, T_true) < TOL_EXACT),
                           "ransac fallback: T differs from the known map"
                           " (%g)",
                           (double)(MaxDiff(K_DIM * KP1, T, T_true))));
  BasisAlignParamsDefault(&p);

  /* a constant column (the trivial eigenvector of rw/unnormalized): the ones vector is in
     span(phi_b), so the fit drops the bias column and that column carries the offset; the
     fit is exact and well conditioned */
  {
    PetscReal pc[L_ANCHORS * K_DIM], rc[L_ANCHORS * K_DIM], Tc[K_DIM * KP1];
    PetscCall(PetscArraycpy(pc, phi_b, L_ANCHORS * K_DIM));
    for (PetscInt i = 0; i < L_ANCHORS; i++) pc[i * K_DIM + 2] = 0.3;
    for (PetscInt i = 0; i < L_ANCHORS; i++)
      for (PetscInt k = 0; k < K_DIM; k++) {
        PetscReal s = T_true[k * KP1 + K_DIM];
        for (PetscInt j = 0; j < K_DIM; j++) s += T_true[k * KP1 + j] * pc[i * K_DIM + j];
        rc[i * K_DIM + k] = s;
      }
    PetscCall(PetscArraycpy(Tc, T_true, K_DIM * KP1));
    for (PetscInt k = 0; k < K_DIM; k++)
      Tc[k * KP1 + 2] += Tc[k * KP1 + K_DIM] / 0.3, Tc[k * KP1 + K_DIM] = 0.0;
    PetscCall(BasisAlignFit(&p, L_ANCHORS, K_DIM, K_DIM, rc, pc, &draws, T, &stats));
    PetscCall(BasisTestCheck(PETSC_COMM_WORLD, (PetscBool)(MaxDiff(K_DIM * KP1, T, Tc) < TOL_EXACT),
                             "constant column: T is not the map with the column folded into the bias"
                             " (%g)",
                             (double)(MaxDiff(K_DIM * KP1, T, Tc))));
    PetscCall(BasisTestCheck(PETSC_COMM_WORLD, (PetscBool)(stats.residual < TOL_EXACT && stats.cond < 1e3),
                             "constant column: residual or cond"
                             " (%g)",
                             (double)(stats.cond)));
    /* the constant mixed over two columns (near-degenerate eigenvalues at 0 in a batch
       graph with two loosely connected pieces): [phi_b, 1] is singular, phi_b is not */
    for (PetscInt i = 0; i < L_ANCHORS; i++) {
      PetscReal v       = phi_b[i * K_DIM + 1];
      pc[i * K_DIM + 1] = 0.3 + 0.5 * v, pc[i * K_DIM + 2] = 0.3 - 0.5 * v;
    }
    for (PetscInt i = 0; i < L_ANCHORS; i++)
      for (PetscInt k = 0; k < K_DIM; k++) {
        PetscReal s = T_true[k * KP1 + K_DIM];
        for (PetscInt j = 0; j < K_DIM; j++) s += T_true[k * KP1 + j] * pc[i * K_DIM + j];
        rc[i * K_DIM + k] = s;
      }
    PetscCall(BasisAlignFit(&p, L_ANCHORS, K_DIM, K_DIM, rc, pc, &draws, T, &stats));
    PetscCall(BasisTestCheck(PETSC_COMM_WORLD, (PetscBool)(stats.residual < TOL_EXACT && stats.cond < 1e3),
                             "constant mixed over two columns: not fitted exactly (cond)"
                             " (%g)",
                             (double)(stats.cond)));
  }

  /* refusals: identical columns (lsq and ransac), too few anchors, too small subsets */
  {
    PetscReal dup[L_ANCHORS * K_DIM];
    PetscCall(PetscArraycpy(dup, phi_b, L_ANCHORS * K_DIM));
    for (PetscInt i = 0; i < L_ANCHORS; i++) dup[i * K_DIM + 3] = dup[i * K_DIM + 1];
    PetscCall(ExpectRefusal(&p, L_ANCHORS, phi_ref, dup, &draws, &refused));
    PetscCall(BasisTestCheck(PETSC_COMM_WORLD, (PetscBool)(!(!refused)),
                             "lsq accepted a design with two identical columns"
                             " (%g)",
                             (double)(0)));
    p.type = BASIS_ALIGN_RANSAC;
    PetscCall(ExpectRefusal(&p, L_ANCHORS, phi_ref, dup, &draws, &refused));
    PetscCall(BasisTestCheck(PETSC_COMM_WORLD, (PetscBool)(!(!refused)),
                             "ransac accepted a design with two identical columns"
                             " (%g)",
                             (double)(0)));
    p.ransac_points = K_DIM;
    PetscCall(ExpectRefusal(&p, L_ANCHORS, phi_ref, phi_b, &draws, &refused));
    PetscCall(BasisTestCheck(PETSC_COMM_WORLD, (PetscBool)(!(!refused)),
                             "ransac accepted -ransac_points K"
                             " (%g)",
                             (double)(K_DIM)));
    BasisAlignParamsDefault(&p);
    PetscCall(ExpectRefusal(&p, K_DIM, phi_ref, phi_b, &draws, &refused));
    PetscCall(BasisTestCheck(PETSC_COMM_WORLD, (PetscBool)(!(!refused)),
                             "lsq accepted l = K anchors"
                             " (%g)",
                             (double)(K_DIM)));
  }

  /* guard vectors (-align_extra): the reference is an affine map of Kb = K + 3 batch
     columns. Fitting all Kb recovers it exactly; fitting the first K alone cannot, which is
     the mixing the extra columns are there to take back. */
  {
    enum { KB = K_DIM + 3 };
    PetscReal Tb_true[K_DIM * (KB + 1)], Tb[K_DIM * (KB + 1)], phib[L_ANCHORS * KB], ref[L_ANCHORS * K_DIM];
    PetscReal phik[L_ANCHORS * K_DIM];
    float     yb[L_ANCHORS * K_DIM];

    for (PetscInt i = 0; i < K_DIM * (KB + 1); i++) Tb_true[i] = BasisRngNormal(&rng);
    for (PetscInt i = 0; i < L_ANCHORS * KB; i++) phib[i] = 0.1 * BasisRngNormal(&rng);
    for (PetscInt i = 0; i < L_ANCHORS; i++) {
      for (PetscInt k = 0; k < K_DIM; k++) {
        PetscReal v = Tb_true[k * (KB + 1) + KB];
        for (PetscInt j = 0; j < KB; j++) v += Tb_true[k * (KB + 1) + j] * phib[i * KB + j];
        ref[i * K_DIM + k] = v;
      }
      for (PetscInt j = 0; j < K_DIM; j++) phik[i * K_DIM + j] = phib[i * KB + j];
    }
    BasisAlignParamsDefault(&p);
    p.extra = KB - K_DIM;
    PetscCall(BasisAlignFit(&p, L_ANCHORS, K_DIM, KB, ref, phib, &draws, Tb, &stats));
    PetscCall(BasisTestCheck(PETSC_COMM_WORLD,
                             (PetscBool)(MaxDiff(K_DIM * (KB + 1), Tb, Tb_true) < TOL_EXACT),
                             "extra columns: T differs from the known K x (Kb+1) map (%g)",
                             (double)MaxDiff(K_DIM * (KB + 1), Tb, Tb_true)));
    PetscCall(BasisTestCheck(PETSC_COMM_WORLD, (PetscBool)(stats.residual < TOL_EXACT),
                             "extra columns: residual on exact data (%g)", (double)stats.residual));
    PetscCall(BasisAlignApply(L_ANCHORS, K_DIM, KB, Tb_true, phib, yb));
    for (PetscInt i = 0; i < L_ANCHORS * K_DIM; i++)
      if (!(fabs(yb[i] - ref[i]) <= 1e-7 * fabs(ref[i]) + 1e-12)) {
        PetscCall(BasisTestCheck(PETSC_COMM_WORLD, PETSC_FALSE,
                                 "extra columns: target differs from T [phi, 1] (%g)", fabs(yb[i] - ref[i])));
        break;
      }
    BasisAlignParamsDefault(&p);
    PetscCall(BasisAlignFit(&p, L_ANCHORS, K_DIM, K_DIM, ref, phik, &draws, T, &stats));
    PetscCall(BasisTestCheck(PETSC_COMM_WORLD, (PetscBool)(stats.residual > 0.1),
                             "first K columns alone fitted a map of Kb columns (residual %g)",
                             (double)stats.residual));
    /* l = Kb anchors cannot determine a K x (Kb+1) map */
    p.extra = KB - K_DIM;
    PetscCall(PetscPushErrorHandler(PetscReturnErrorHandler, NULL));
    refused = BasisAlignFit(&p, KB, K_DIM, KB, ref, phib, &draws, Tb, &stats) ? PETSC_TRUE : PETSC_FALSE;
    PetscCall(PetscPopErrorHandler());
    PetscCall(BasisTestCheck(PETSC_COMM_WORLD, refused, "lsq accepted l = Kb anchors (%d)", (int)KB));
  }

  /* -align_extra's default and its checks (BasisAlignResolveExtra) */
  {
    struct {
      PetscInt       extra, l, m, K;
      BasisAlignType type;
      PetscInt       expect; /* -1: refused */
    } cases[] = {
        {BASIS_ALIGN_EXTRA_AUTO, 250, 1024, 10, BASIS_ALIGN_LSQ, 20},   /* the defaults: the cap */
        {BASIS_ALIGN_EXTRA_AUTO, 160, 1024, 10, BASIS_ALIGN_LSQ, 9},    /* 160/8 - 11 */
        {BASIS_ALIGN_EXTRA_AUTO, 64, 256, 10, BASIS_ALIGN_LSQ, 0},      /* few anchors: none */
        {BASIS_ALIGN_EXTRA_AUTO, 250, 1024, 10, BASIS_ALIGN_RANSAC, 9}, /* -ransac_points 20 - 11 */
        {5, 16, 1024, 10, BASIS_ALIGN_LSQ, 5},                          /* explicit, just fits */
        {6, 16, 1024, 10, BASIS_ALIGN_LSQ, -1},                         /* explicit, too many for l */
        {40, 250, 50, 10, BASIS_ALIGN_LSQ, -1},                         /* explicit, too many for m */
    };
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
      PetscErrorCode ierr;
      BasisAlignParamsDefault(&p);
      p.type  = cases[c].type;
      p.extra = cases[c].extra;
      PetscCall(PetscPushErrorHandler(PetscReturnErrorHandler, NULL));
      ierr = BasisAlignResolveExtra(PETSC_COMM_WORLD, &p, cases[c].l, cases[c].m, cases[c].K);
      PetscCall(PetscPopErrorHandler());
      PetscCall(
          BasisTestCheck(PETSC_COMM_WORLD,
                         (PetscBool)(cases[c].expect < 0 ? ierr != 0 : !ierr && p.extra == cases[c].expect),
                         "-align_extra case %d (given %d, l %d, m %d, K %d): got %d (error %d), expected %d",
                         (int)c, (int)cases[c].extra, (int)cases[c].l, (int)cases[c].m, (int)cases[c].K,
                         (int)p.extra, (int)ierr, (int)cases[c].expect));
    }
  }

  PetscCall(PetscFinalize());
  return BasisTestFailures() ? 1 : 0;
}
