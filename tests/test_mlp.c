/*
  test_mlp - unit tests of the float32 MLP (src/mlp.c):
   - Forward equals a naive triple-loop forward in double (relative 1e-5);
   - LossBackward's loss equals the double reference loss, and its gradient equals central
     finite differences of the double reference loss, entry by entry; the check is shown
     to catch a sign error in any layer's gradient;
   - LossBackward overwrites the gradient (two calls give the same gradient, not twice it);
   - AdamStep equals a hand-computed update over two steps (bias correction, eps placement);
   - two replicas initialised from the same stream are bitwise identical;
   - batches larger than max_batch are refused;
   - a batch of more rows than one pass of the network (src/mlp.c) gets the same checks.
  The finite differences run on the reference loss in double with the float parameters
  converted exactly, so their error (~1e-10) is far below the float32 gradient's; the
  reference forward is itself checked against the library's forward.
*/
#include <basis/mlp.h>
#include "check.h"
#include <math.h>
#include <string.h>

/* Tolerances. float32 rounding is ~6e-8 relative per operation; the nets here are tiny
   (sums of <= 20 terms), so 1e-5 leaves two orders of margin for forward and loss. */
#define TOL_FORWARD 1e-5
/* Gradient entries: |g - g_fd| <= TOL_GRAD_REL |g_fd| + TOL_GRAD_ABS max|g_fd|. The absolute
   floor covers entries that are float32 cancellations of larger terms; a sign error in an
   entry larger than 1e-5 of the largest fails. */
#define TOL_GRAD_REL 1e-3
#define TOL_GRAD_ABS 1e-5
/* Central difference step on the double reference: truncation ~h^2, rounding ~1e-16/h. */
#define FD_STEP 1e-6

typedef struct {
  PetscInt        L;
  const PetscInt *w;
  PetscCount      nparams;
} Arch;

/* Naive reference forward in double; p holds the parameters (W_l [out][in], b_l). */
#define MAX_WIDTH 64 /* of the nets below; CheckNetwork refuses wider ones */
static void RefForward(const Arch *a, const double *p, PetscInt n, const float *x, double *y)
{
  double h[2][MAX_WIDTH];

  for (PetscInt i = 0; i < n; i++) {
    const double *W   = p;
    double       *cur = h[0], *nxt = h[1];

    for (PetscInt j = 0; j < a->w[0]; j++) cur[j] = x[i * a->w[0] + j];
    for (PetscInt l = 0; l < a->L; l++) {
      PetscInt      in = a->w[l], out = a->w[l + 1];
      const double *b = W + out * in;
      for (PetscInt o = 0; o < out; o++) {
        double s = b[o];
        for (PetscInt k = 0; k < in; k++) s += W[o * in + k] * cur[k];
        nxt[o] = (l + 1 < a->L && s < 0.0) ? 0.0 : s;
      }
      W += out * (in + 1);
      double *t = cur;
      cur = nxt, nxt = t;
    }
    for (PetscInt o = 0; o < a->w[a->L]; o++) y[i * a->w[a->L] + o] = cur[o];
  }
}

static double RefLoss(const Arch *a, const double *p, PetscInt n, const float *x, const float *t, double *y)
{
  double   s = 0.0;
  PetscInt K = a->w[a->L];

  RefForward(a, p, n, x, y);
  for (PetscInt i = 0; i < n * K; i++) s += (y[i] - t[i]) * (y[i] - t[i]);
  return s / n;
}

/* Number of entries of g outside the tolerance around the finite differences fd. */
static PetscInt GradMismatches(PetscCount np, const float *g, const double *fd, double *worst)
{
  double   fdmax = 0.0;
  PetscInt bad   = 0;

  *worst = 0.0;
  for (PetscCount i = 0; i < np; i++) fdmax = PetscMax(fdmax, fabs(fd[i]));
  for (PetscCount i = 0; i < np; i++) {
    double err = fabs(g[i] - fd[i]), tol = TOL_GRAD_REL * fabs(fd[i]) + TOL_GRAD_ABS * fdmax;
    *worst = PetscMax(*worst, err / (fabs(fd[i]) + fdmax));
    if (err > tol) bad++;
  }
  return bad;
}

static PetscErrorCode CheckNetwork(PetscInt L, const PetscInt *w, PetscInt n, PetscInt max_batch,
                                   uint64_t seed)
{
  BasisMLP mlp;
  BasisRng rng;
  Arch     a = {L, w, 0};
  PetscInt D = w[0], K = w[L];
  float   *x, *t, *y, *params, *grad, *grad1, loss;
  double  *p, *fd, *yref, ymax = 0.0, err = 0.0, ref_loss, worst;
  PetscInt bad, changed = -1;
  char     name[64];

  PetscFunctionBeginUser;
  for (PetscInt l = 0; l <= L; l++)
    PetscCheck(w[l] <= MAX_WIDTH, PETSC_COMM_SELF, PETSC_ERR_SUP, "test nets are at most %d wide", MAX_WIDTH);
  PetscCall(PetscSNPrintf(name, sizeof(name), "net %d-...-%d (L=%d, n=%d)", (int)D, (int)K, (int)L, (int)n));
  PetscCall(BasisMLPCreate(L, w, max_batch, &mlp));
  BasisRngSeed(&rng, seed, BASIS_STREAM_INIT);
  PetscCall(BasisMLPInitialize(mlp, &rng));
  PetscCall(BasisMLPGetSizes(mlp, NULL, NULL, &a.nparams));
  PetscCall(BasisMLPGetArrays(mlp, &params, &grad, NULL, NULL));
  PetscCall(PetscMalloc4(n * D, &x, n * K, &t, n * K, &y, a.nparams, &grad1));
  PetscCall(PetscMalloc3(a.nparams, &p, a.nparams, &fd, n * K, &yref));
  for (PetscInt i = 0; i < n * D; i++) x[i] = (float)BasisRngNormal(&rng);
  for (PetscInt i = 0; i < n * K; i++) t[i] = (float)BasisRngNormal(&rng);
  for (PetscCount i = 0; i < a.nparams; i++) p[i] = params[i];

  /* forward */
  PetscCall(BasisMLPForward(mlp, n, x, y));
  RefForward(&a, p, n, x, yref);
  for (PetscInt i = 0; i < n * K; i++) {
    ymax = PetscMax(ymax, fabs(yref[i]));
    err  = PetscMax(err, fabs(y[i] - yref[i]));
  }
  PetscCall(BasisTestCheck(PETSC_COMM_WORLD, (PetscBool)(err <= TOL_FORWARD * ymax),
                           "%s: forward differs from the double reference by %g (max |y| %g)", name, err,
                           ymax));

  /* loss and gradient; called twice: the gradient must be overwritten, not accumulated */
  PetscCall(BasisMLPLossBackward(mlp, n, x, t, &loss));
  PetscCall(PetscArraycpy(grad1, grad, a.nparams));
  PetscCall(BasisMLPLossBackward(mlp, n, x, t, &loss));
  for (PetscCount i = 0; i < a.nparams && changed < 0; i++)
    if (grad[i] != grad1[i]) changed = (PetscInt)i;
  PetscCall(BasisTestCheck(PETSC_COMM_WORLD, (PetscBool)(changed < 0),
                           "%s: a second LossBackward changed gradient entry %d (%g -> %g)", name,
                           (int)changed, changed < 0 ? 0.0 : (double)grad1[changed],
                           changed < 0 ? 0.0 : (double)grad[changed]));
  ref_loss = RefLoss(&a, p, n, x, t, yref);
  PetscCall(BasisTestCheck(PETSC_COMM_WORLD, (PetscBool)(fabs(loss - ref_loss) <= TOL_FORWARD * ref_loss),
                           "%s: loss %.8g, double reference %.8g", name, (double)loss, ref_loss));
  for (PetscCount i = 0; i < a.nparams; i++) {
    double save = p[i], lp, lm;
    p[i]        = save + FD_STEP;
    lp          = RefLoss(&a, p, n, x, t, yref);
    p[i]        = save - FD_STEP;
    lm          = RefLoss(&a, p, n, x, t, yref);
    p[i]        = save;
    fd[i]       = (lp - lm) / (2 * FD_STEP);
  }
  bad = GradMismatches(a.nparams, grad, fd, &worst);
  PetscCall(
      BasisTestCheck(PETSC_COMM_WORLD, (PetscBool)(bad == 0),
                     "%s: %d of %d gradient entries differ from finite differences (worst scaled error %g)",
                     name, (int)bad, (int)a.nparams, worst));

  /* the check has teeth: a sign error in any layer's weights or bias gradient is caught */
  for (PetscInt l = 0, off = 0; l < L; off += w[l + 1] * (w[l] + 1), l++) {
    for (PetscInt part = 0; part < 2; part++) {
      PetscInt start = off + (part ? w[l + 1] * w[l] : 0), len = part ? w[l + 1] : w[l + 1] * w[l];
      PetscCall(PetscArraycpy(grad1, grad, a.nparams));
      for (PetscInt i = start; i < start + len; i++) grad1[i] = -grad1[i];
      PetscCall(BasisTestCheck(
          PETSC_COMM_WORLD, (PetscBool)(GradMismatches(a.nparams, grad1, fd, &worst) != 0),
          "%s: gradient check misses a sign error in layer %d %s", name, (int)l, part ? "bias" : "weights"));
    }
  }

  PetscCall(PetscFree4(x, t, y, grad1));
  PetscCall(PetscFree3(p, fd, yref));
  PetscCall(BasisMLPDestroy(&mlp));
  PetscFunctionReturn(0);
}

/* Two Adam steps on a 2-3 linear layer (9 parameters) against the formulas in double. */
static PetscErrorCode CheckAdam(void)
{
  const PetscInt w[] = {2, 3};
  const double   lr  = 0.01;
  /* gradients chosen to test: sign, scale invariance, 0 (no move), and |g| ~ eps (where
     eps placement matters: sqrt(v_hat) + eps moves by lr/101, sqrt(v_hat + eps) by 1e-6 lr) */
  const float g1[9] = {0.5f, -2.0f, 1e-3f, 0.0f, 1e-10f, -1e-10f, 3.0f, -0.25f, 7.0f};
  const float g2[9] = {-0.5f, 1.0f, 1e-3f, 0.0f, 1e-10f, 2.0f, -3.0f, 0.0f, 7.0f};
  BasisMLP    mlp;
  float      *params, *grad, *am, *av;
  double      p[9], m[9] = {0}, v[9] = {0};
  PetscCount  np;

  PetscFunctionBeginUser;
  PetscCall(BasisMLPCreate(1, w, 1, &mlp));
  PetscCall(BasisMLPGetSizes(mlp, NULL, NULL, &np));
  PetscCheck(np == 9, PETSC_COMM_SELF, PETSC_ERR_PLIB, "2-3 layer has %d parameters, expected 9", (int)np);
  PetscCall(BasisMLPGetArrays(mlp, &params, &grad, &am, &av));
  for (int i = 0; i < 9; i++) p[i] = params[i] = (float)(0.1 * i - 0.4);
  for (int step = 1; step <= 2; step++) {
    const float *g   = step == 1 ? g1 : g2;
    double       bc1 = 1.0 - pow(0.9, step), bc2 = 1.0 - pow(0.999, step);
    for (int i = 0; i < 9; i++) {
      grad[i] = g[i];
      m[i]    = 0.9 * m[i] + 0.1 * g[i];
      v[i]    = 0.999 * v[i] + 0.001 * (double)g[i] * g[i];
      p[i] -= lr * (m[i] / bc1) / (sqrt(v[i] / bc2) + 1e-8);
    }
    PetscCall(BasisMLPAdamStep(mlp, lr, step));
    for (int i = 0; i < 9; i++) {
      /* float32 parameters ~0.5: rounding ~3e-8; the update itself is ~lr, good to ~1e-6 lr */
      PetscBool ok = (PetscBool)(fabs(params[i] - p[i]) <= 1e-7 + 1e-5 * lr &&
                                 fabs(am[i] - m[i]) <= 1e-6 * fabs(m[i]) + 1e-30 &&
                                 fabs(av[i] - v[i]) <= 1e-6 * fabs(v[i]) + 1e-30);
      PetscCall(BasisTestCheck(PETSC_COMM_WORLD, ok,
                               "Adam step %d, parameter %d: p %.9g (expected %.9g), m %g (%g), v %g (%g)",
                               step, i, (double)params[i], p[i], (double)am[i], m[i], (double)av[i], v[i]));
    }
  }
  PetscCall(BasisMLPDestroy(&mlp));
  PetscFunctionReturn(0);
}

/* Same stream, same network; Forward refuses n > max_batch. */
static PetscErrorCode CheckReplicasAndLimits(void)
{
  const PetscInt w[] = {5, 16, 4};
  BasisMLP       a, b;
  BasisRng       ra, rb;
  float         *pa, *pb, x[6 * 5] = {0}, y[6 * 4];
  PetscCount     np, bad = -1;
  double         bound = 0.0;
  PetscErrorCode ierr;

  PetscFunctionBeginUser;
  PetscCall(BasisMLPCreate(2, w, 5, &a));
  PetscCall(BasisMLPCreate(2, w, 5, &b));
  BasisRngSeed(&ra, 42, BASIS_STREAM_INIT);
  BasisRngSeed(&rb, 42, BASIS_STREAM_INIT);
  PetscCall(BasisMLPInitialize(a, &ra));
  PetscCall(BasisMLPInitialize(b, &rb));
  PetscCall(BasisMLPGetSizes(a, NULL, NULL, &np));
  PetscCall(BasisMLPGetArrays(a, &pa, NULL, NULL, NULL));
  PetscCall(BasisMLPGetArrays(b, &pb, NULL, NULL, NULL));
  for (PetscCount i = 0; i < np && bad < 0; i++) {
    bound = i < 5 * 16 + 16 ? 1.0 / sqrt(5.0) : 1.0 / sqrt(16.0); /* U(-1/sqrt(fan_in), ..) */
    if (memcmp(&pa[i], &pb[i], sizeof(float)) || !(fabs(pa[i]) <= bound)) bad = i;
  }
  PetscCall(BasisTestCheck(PETSC_COMM_WORLD, (PetscBool)(bad < 0),
                           "init: parameter %d is %g and %g (bound %g)", (int)bad,
                           bad < 0 ? 0.0 : (double)pa[bad], bad < 0 ? 0.0 : (double)pb[bad], bound));
  PetscCall(PetscPushErrorHandler(PetscReturnErrorHandler, NULL));
  ierr = BasisMLPForward(a, 6, x, y);
  PetscCall(PetscPopErrorHandler());
  PetscCall(BasisTestCheck(PETSC_COMM_WORLD, (PetscBool)(ierr != 0),
                           "Forward accepted 6 rows on a network created for 5"));
  PetscCall(BasisMLPDestroy(&a));
  PetscCall(BasisMLPDestroy(&b));
  PetscFunctionReturn(0);
}

int main(int argc, char **argv)
{
  const PetscInt w1[] = {7, 5, 6, 3}, w2[] = {4, 3}, w3[] = {3, 17, 2}, w4[] = {6, 32, 33, 31, 5};

  PetscCall(PetscInitialize(&argc, &argv, NULL, NULL));
  PetscCall(BasisInitialize());
  PetscCall(CheckNetwork(3, w1, 4, 8, 1));   /* the brief's small net, n < max_batch */
  PetscCall(CheckNetwork(1, w2, 5, 5, 2));   /* one linear layer, no hidden state */
  PetscCall(CheckNetwork(2, w3, 19, 19, 3)); /* vector loops with a scalar tail */
  PetscCall(CheckNetwork(4, w4, 9, 12, 4));  /* deeper, widths around 32 */
  /* more rows than one pass (BASIS_MLP_CHUNK_ROWS = 1024): three passes, the last partial,
     whose gradients must add up */
  PetscCall(CheckNetwork(3, w1, 2500, 2600, 5));
  PetscCall(CheckAdam());
  PetscCall(CheckReplicasAndLimits());
  PetscCall(PetscFinalize());
  return BasisTestFailures() ? 1 : 0;
}
