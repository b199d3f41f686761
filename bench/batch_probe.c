/*
  batch_probe - what one training step's batch graph costs, phase by phase (issue 20: the
  non-network part of a step), on the real code path (BasisBatchGraphEmbed).

    batch_probe -input FILE [-m 1024] [-dim 10] [-extra 20] [-batches 100] [-seed 1]
                [-knn 10 ... any graph option] [-batch_eps_* ...]

  On one process (one rank of basis): -batches batches of m rows of FILE drawn at random
  (m = basis train's -batch, anchors included), the batch graph of -dim + -extra eigenpairs (a training step
  solves K + -align_extra), after one untimed batch that allocates. Prints the mean per batch of the kNN +
  graph assembly (event BasisBatchGraph) and of the eigensolve (BasisBatchEig), and the Krylov solver's matrix
  products per solve (the K residual products included), e.g.

    batch_probe: m 1024 D 784 K 30: kNN+graph 10.31 ms, eigensolve 5.99 ms, 211 products per solve (its K
  residuals included)

  Every -batch_eps_* option reaches the solver (-batch_eps_ncv 40, ...), so solver settings
  can be compared on the same batches.
*/
#include <basis/graph.h>
#include <basis/h5io.h>
#include <basis/log.h>
#include <basis/rng.h>
#include <slepcsys.h>

static PetscErrorCode EventTime(PetscLogEvent ev, double *seconds, int *count)
{
  PetscEventPerfInfo info;

  PetscFunctionBeginUser;
  PetscCall(PetscLogEventGetPerfInfo(PETSC_DETERMINE, ev, &info));
  *seconds = info.time;
  *count   = info.count;
  PetscFunctionReturn(0);
}

int main(int argc, char **argv)
{
  PetscInt         m = 1024, K = 10, extra = 20, batches = 100, seed = 1, D;
  char             path[PETSC_MAX_PATH_LEN] = "";
  BasisInput       in;
  BasisGraphParams p;
  BasisBatchGraph  bg;
  BasisRng         rng;
  float           *all, *x;
  PetscInt        *rows;
  PetscReal       *phi, *lambda;
  PetscLogEvent    matmult;
  double           tg0, tg1, te0, te1, tm0, tm1;
  int              n, mm0, mm1;

  PetscCall(SlepcInitialize(&argc, &argv, NULL, NULL));
  PetscCall(BasisLogRegister());
  PetscCall(PetscLogDefaultBegin());
  PetscCall(PetscOptionsGetInt(NULL, NULL, "-m", &m, NULL));
  PetscCall(PetscOptionsGetInt(NULL, NULL, "-dim", &K, NULL));
  PetscCall(PetscOptionsGetInt(NULL, NULL, "-extra", &extra, NULL));
  PetscCall(PetscOptionsGetInt(NULL, NULL, "-batches", &batches, NULL));
  PetscCall(PetscOptionsGetInt(NULL, NULL, "-seed", &seed, NULL));
  PetscCall(PetscOptionsGetString(NULL, NULL, "-input", path, sizeof(path), NULL));
  PetscCheck(path[0], PETSC_COMM_SELF, PETSC_ERR_USER_INPUT, "give -input FILE (an HDF5 input of basis)");
  PetscCheck(batches >= 1 && extra >= 0, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE,
             "need -batches >= 1 and -extra >= 0");
  BasisGraphParamsDefault(&p);
  PetscOptionsBegin(PETSC_COMM_SELF, NULL, "batch_probe", NULL);
  PetscCall(BasisGraphParamsSetFromOptions(PETSC_COMM_SELF, &p));
  PetscOptionsEnd();
  p.K = K + extra;
  PetscCall(BasisInputOpen(PETSC_COMM_SELF, path, &in));
  D = in.D;
  PetscCheck(in.N >= m, PETSC_COMM_SELF, PETSC_ERR_ARG_SIZ, "%s has %d rows, fewer than -m %d", path,
             (int)in.N, (int)m);
  PetscCall(
      PetscMalloc5((size_t)in.N * D, &all, (size_t)m * D, &x, (size_t)m * p.K, &phi, p.K, &lambda, m, &rows));
  PetscCall(BasisInputRead(&in, 0, in.N, all));
  PetscCall(BasisBatchGraphCreate(&p, m, D, &bg));
  BasisRngSeed(&rng, (uint64_t)seed, 0);
  PetscCall(PetscLogEventGetId("MatMult", &matmult));
  for (PetscInt b = 0; b <= batches; b++) {
    if (b == 1) { /* batch 0 allocated: time from here */
      PetscCall(EventTime(BASIS_BatchGraph, &tg0, &n));
      PetscCall(EventTime(BASIS_BatchEig, &te0, &n));
      PetscCall(EventTime(matmult, &tm0, &mm0));
    }
    PetscCall(BasisRngSample(&rng, in.N, m, rows)); /* m distinct rows, as a training batch */
    for (PetscInt i = 0; i < m; i++)
      PetscCall(PetscArraycpy(x + (size_t)i * D, all + (size_t)rows[i] * D, D));
    PetscCall(BasisBatchGraphEmbed(bg, x, phi, lambda));
  }
  PetscCall(EventTime(BASIS_BatchGraph, &tg1, &n));
  PetscCall(EventTime(BASIS_BatchEig, &te1, &n));
  PetscCall(EventTime(matmult, &tm1, &mm1));
  PetscCall(
      PetscPrintf(PETSC_COMM_SELF,
                  "batch_probe: m %d D %d K %d: kNN+graph %.2f ms, eigensolve %.2f ms, %.0f products per "
                  "solve (its K residuals included)\n",
                  (int)m, (int)D, (int)p.K, 1e3 * (tg1 - tg0) / batches, 1e3 * (te1 - te0) / batches,
                  (double)(mm1 - mm0) / batches));
  PetscCall(BasisBatchGraphDestroy(&bg));
  PetscCall(BasisInputClose(&in));
  PetscCall(PetscFree5(all, x, phi, lambda, rows));
  PetscCall(SlepcFinalize());
  return 0;
}
