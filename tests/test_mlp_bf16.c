/*
  test_mlp_bf16 - the network's bfloat16 products (-mlp_precision bf16, src/mlp.c) against
  its float32 ones, on the same parameters:
   - Forward agrees to a relative error consistent with bfloat16 inputs (8-bit mantissa),
     and is not bitwise the float result (the bfloat16 path ran); after the parameters are
     changed in place through BasisMLPGetArrays it agrees again (the bfloat16 weights are
     refreshed every call);
   - LossBackward's loss and gradient agree with float's on several shapes, among them
     batches of more rows than one pass (BASIS_MLP_CHUNK_ROWS = 1024; the weight gradients
     are summed across passes) with a partial last pass;
   - a network switched back to float gives bitwise the float results;
   - a short regression trained with Adam: the loss falls by a large factor in bf16, and
     ends within a loose factor of float's.
  Where the CPU has no bfloat16 dot-product instructions the test says so and returns 77
  (ctest: skipped).
*/
#include <basis/mlp.h>
#include <basis/bf16gram.h>
#include "check.h"
#include <math.h>
#include <string.h>

/* bfloat16 keeps 8 significant bits: each input and weight is off by at most 2^-8
   relative, so a dot product of n such terms is off by about 2^-7 of the sum of |terms|
   (worst case, both factors), more where the terms cancel; a few layers compound it. On
   these nets (oneDNN brg:avx512_core_bf16) the measured relative errors are 3.6e-3 and
   4.4e-3 (forward), 2e-3 to 2.5e-2 (gradient, the largest for 4 layers) and below 2e-4
   (loss); the thresholds leave room for other kernels' summation orders. */
#define TOL_FORWARD 3e-2
#define TOL_GRAD    5e-2
#define TOL_LOSS    2e-2

/* A network of the given shape initialised from seed, in the given precision. */
static PetscErrorCode MakeNet(PetscInt L, const PetscInt w[], PetscInt max_batch, uint64_t seed,
                              BasisMLPPrecision precision, BasisMLP *mlp)
{
  BasisRng rng;

  PetscFunctionBeginUser;
  PetscCall(BasisMLPCreate(L, w, max_batch, mlp));
  PetscCall(BasisMLPSetPrecision(*mlp, precision));
  BasisRngSeed(&rng, seed, BASIS_STREAM_INIT);
  PetscCall(BasisMLPInitialize(*mlp, &rng));
  PetscFunctionReturn(0);
}

/* x [n] uniform in (-2, 2) */
static void RandomFill(uint64_t seed, PetscCount n, float x[])
{
  BasisRng rng;

  BasisRngSeed(&rng, seed, BASIS_STREAM_BATCH);
  for (PetscCount i = 0; i < n; i++) x[i] = (float)(4.0 * BasisRngUniform(&rng) - 2.0);
}

/* max |a - b| / max |b| and whether a and b are bitwise equal */
static double RelMaxDiff(PetscCount n, const float a[], const float b[], PetscBool *same)
{
  double dmax = 0, bmax = 0;

  for (PetscCount i = 0; i < n; i++) {
    dmax = PetscMax(dmax, fabs((double)a[i] - b[i]));
    bmax = PetscMax(bmax, fabs((double)b[i]));
  }
  *same = memcmp(a, b, sizeof(float) * (size_t)n) ? PETSC_FALSE : PETSC_TRUE;
  return bmax > 0 ? dmax / bmax : dmax;
}

/* ||a - b|| / ||b|| */
static double RelNormDiff(PetscCount n, const float a[], const float b[])
{
  double d = 0, s = 0;

  for (PetscCount i = 0; i < n; i++) {
    d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    s += (double)b[i] * b[i];
  }
  return s > 0 ? sqrt(d / s) : sqrt(d);
}

/* Forward in bf16 against float on one net and input, then again after the parameters
   are scaled in place (the bfloat16 copy must follow them). */
static PetscErrorCode CheckForward(void)
{
  const PetscInt w[] = {50, 128, 96, 10}, L = 3, n = 300;
  BasisMLP       f, b;
  float         *x, *yf, *yb, *pf, *pb;
  PetscCount     np;
  PetscBool      same;
  double         err;

  PetscFunctionBeginUser;
  PetscCall(MakeNet(L, w, n, 11, BASIS_MLP_FLOAT, &f));
  PetscCall(MakeNet(L, w, n, 11, BASIS_MLP_BF16, &b));
  PetscCall(PetscMalloc3(n * w[0], &x, n * w[L], &yf, n * w[L], &yb));
  RandomFill(12, n * w[0], x);
  PetscCall(BasisMLPForward(f, n, x, yf));
  PetscCall(BasisMLPForward(b, n, x, yb));
  err = RelMaxDiff(n * w[L], yb, yf, &same);
  PetscCall(BasisTestCheck(PETSC_COMM_WORLD, (PetscBool)(err < TOL_FORWARD),
                           "forward: bf16 differs from float by %.3g relative (max), more than %g", err,
                           TOL_FORWARD));
  PetscCall(BasisTestCheck(PETSC_COMM_WORLD, (PetscBool)!same,
                           "forward: bf16 output is bitwise the float one; the bfloat16 path did not run"));
  /* change the parameters behind the networks' backs */
  PetscCall(BasisMLPGetSizes(f, NULL, NULL, &np));
  PetscCall(BasisMLPGetArrays(f, &pf, NULL, NULL, NULL));
  PetscCall(BasisMLPGetArrays(b, &pb, NULL, NULL, NULL));
  for (PetscCount i = 0; i < np; i++) pf[i] = pb[i] = (i % 3 ? 1.5f : -0.75f) * pf[i];
  PetscCall(BasisMLPForward(f, n, x, yf));
  PetscCall(BasisMLPForward(b, n, x, yb));
  err = RelMaxDiff(n * w[L], yb, yf, &same);
  PetscCall(BasisTestCheck(PETSC_COMM_WORLD, (PetscBool)(err < TOL_FORWARD),
                           "forward after the parameters changed in place: bf16 differs from float by %.3g "
                           "relative; the bfloat16 weights were not refreshed",
                           err));
  /* back to float: bitwise the float network */
  PetscCall(BasisMLPSetPrecision(b, BASIS_MLP_FLOAT));
  PetscCall(BasisMLPForward(b, n, x, yb));
  (void)RelMaxDiff(n * w[L], yb, yf, &same);
  PetscCall(
      BasisTestCheck(PETSC_COMM_WORLD, same, "forward: a network set back to float is not bitwise float"));
  PetscCall(PetscFree3(x, yf, yb));
  PetscCall(BasisMLPDestroy(&f));
  PetscCall(BasisMLPDestroy(&b));
  PetscFunctionReturn(0);
}

/* Loss and gradient of one shape in bf16 against float, on n rows. */
static PetscErrorCode CheckGradient(PetscInt L, const PetscInt w[], PetscInt n, uint64_t seed)
{
  BasisMLP   f, b;
  float     *x, *t, *gf, *gb, lf, lb;
  PetscCount np;
  double     err;

  PetscFunctionBeginUser;
  PetscCall(MakeNet(L, w, n, seed, BASIS_MLP_FLOAT, &f));
  PetscCall(MakeNet(L, w, n, seed, BASIS_MLP_BF16, &b));
  PetscCall(PetscMalloc2((size_t)n * w[0], &x, (size_t)n * w[L], &t));
  RandomFill(seed + 1, (PetscCount)n * w[0], x);
  RandomFill(seed + 2, (PetscCount)n * w[L], t);
  PetscCall(BasisMLPLossBackward(f, n, x, t, &lf));
  PetscCall(BasisMLPLossBackward(b, n, x, t, &lb));
  PetscCall(BasisMLPGetSizes(f, NULL, NULL, &np));
  PetscCall(BasisMLPGetArrays(f, NULL, &gf, NULL, NULL));
  PetscCall(BasisMLPGetArrays(b, NULL, &gb, NULL, NULL));
  err = RelNormDiff(np, gb, gf);
  PetscCall(BasisTestCheck(PETSC_COMM_WORLD, (PetscBool)(err < TOL_GRAD),
                           "gradient (%d layers, %d rows): bf16 differs from float by %.3g relative (norm), "
                           "more than %g",
                           (int)L, (int)n, err, TOL_GRAD));
  PetscCall(BasisTestCheck(PETSC_COMM_WORLD, (PetscBool)(fabs((double)lb - lf) < TOL_LOSS * lf),
                           "loss (%d layers, %d rows): bf16 %.6g, float %.6g", (int)L, (int)n, (double)lb,
                           (double)lf));
  PetscCall(PetscFree2(x, t));
  PetscCall(BasisMLPDestroy(&f));
  PetscCall(BasisMLPDestroy(&b));
  PetscFunctionReturn(0);
}

/* A regression of a smooth map R^8 -> R^2 on 256 fixed points, full batch, 300 Adam steps
   at lr 3e-3: the final loss (mean of the last 10 steps) of each precision. */
static PetscErrorCode Train(BasisMLPPrecision precision, double *first, double *last)
{
  const PetscInt w[] = {8, 64, 64, 2}, L = 3, n = 256, steps = 300;
  BasisMLP       mlp;
  float          x[256 * 8], t[256 * 2], loss;

  PetscFunctionBeginUser;
  RandomFill(5, n * w[0], x);
  for (PetscInt i = 0; i < n; i++) {
    const float *xi = x + i * w[0];
    t[2 * i]        = sinf(xi[0] + 0.5f * xi[1]) + 0.25f * xi[2] * xi[3];
    t[2 * i + 1]    = cosf(xi[4] - xi[5]) * 0.5f + 0.1f * xi[6];
  }
  PetscCall(MakeNet(L, w, n, 3, precision, &mlp));
  *last = 0;
  for (PetscInt s = 0; s < steps; s++) {
    PetscCall(BasisMLPLossBackward(mlp, n, x, t, &loss));
    if (s == 0) *first = loss;
    if (s >= steps - 10) *last += loss / 10.0;
    PetscCall(BasisMLPAdamStep(mlp, 3e-3, s + 1));
  }
  PetscCall(BasisMLPDestroy(&mlp));
  PetscFunctionReturn(0);
}

/* Training in bf16 makes progress like float: the loss falls by a factor of 10 or more
   (measured: 0.78 -> 2.8e-4 in float, -> 3.2e-4 in bf16) and bf16 ends within a factor of 2
   of float. */
static PetscErrorCode CheckTraining(void)
{
  double f0, f1, b0, b1;

  PetscFunctionBeginUser;
  PetscCall(Train(BASIS_MLP_FLOAT, &f0, &f1));
  PetscCall(Train(BASIS_MLP_BF16, &b0, &b1));
  PetscCall(BasisTestCheck(
      PETSC_COMM_WORLD, (PetscBool)(f1 < f0 / 10 && b1 < b0 / 10 && b1 < 2 * f1 && f1 < 2 * b1),
      "training: loss %.4g -> %.4g in float, %.4g -> %.4g in bf16; expected both to fall "
      "10x and to end within 2x of each other",
      f0, f1, b0, b1));
  PetscFunctionReturn(0);
}

int main(int argc, char **argv)
{
  const PetscInt w1[] = {7, 5, 6, 3}, w2[] = {16, 3}, w3[] = {50, 64, 64, 128, 10};
  PetscBool      native;
  const char    *isa;

  PetscCall(PetscInitialize(&argc, &argv, NULL, NULL));
  PetscCall(BasisInitialize());
  PetscCall(BasisBf16GramNative(&native, &isa));
  if (!native) {
    PetscCall(PetscPrintf(
        PETSC_COMM_WORLD,
        "SKIP test_mlp_bf16: this CPU (oneDNN: %s) has no bfloat16 dot-product instructions\n", isa));
    PetscCall(PetscFinalize());
    return 77;
  }
  PetscCall(CheckForward());
  PetscCall(CheckGradient(3, w1, 4, 21));    /* tiny, n below a vector */
  PetscCall(CheckGradient(1, w2, 33, 22));   /* one linear layer, no hidden state */
  PetscCall(CheckGradient(4, w3, 200, 23));  /* deeper, one partial pass */
  PetscCall(CheckGradient(4, w3, 1024, 24)); /* exactly one pass */
  PetscCall(CheckGradient(4, w3, 2500, 25)); /* three passes, the last partial: summed gradients */
  PetscCall(CheckTraining());
  PetscCall(PetscFinalize());
  return BasisTestFailures() ? 1 : 0;
}
