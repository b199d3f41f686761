/*
  warmstart_probe - would a warm start help the batch eigensolve? Issue 6 asks for the
  Krylov batch solve to be warm-started "if it helps"; this measures the best case.

    warmstart_probe -input FILE [-m 4096] [-batches 4] [-noise 0.3]

  On one process: batches of m consecutive rows of FILE (an HDF5 input of basis, e.g. the
  manifold set that scripts/bench generates), each graph built as a training step builds
  it (BasisKnnSelf, BasisGraphAssemble, D^-1/2 W D^-1/2), then the K = 10 largest pairs
  by Krylov-Schur at the batch tolerance 1e-5, three ways: from SLEPc's random start
  vector (what a step does), and from v0 = the sum of the K exact eigenvectors (of this
  very solve) plus a random vector of norm -noise, given to EPSSetInitialSpace. No real
  warm start can be better than that start with a small noise: the network's output or
  the previous batch's vectors approximate the eigenvectors far worse. Prints, per batch,
  Krylov-Schur's restarts and the solve time of each.
*/
#include <basis/graph.h>
#include <basis/h5io.h>
#include <slepceps.h>

/* The K largest eigenpairs of N, from v0 (NULL: SLEPc's random start); V [K] receives them. */
static PetscErrorCode Solve(Mat N, PetscInt K, Vec v0, Vec V[], PetscInt *its, double *seconds)
{
  EPS    eps;
  double t0;

  PetscFunctionBeginUser;
  PetscCall(EPSCreate(PETSC_COMM_SELF, &eps));
  PetscCall(EPSSetOperators(eps, N, NULL));
  PetscCall(EPSSetProblemType(eps, EPS_HEP));
  PetscCall(EPSSetType(eps, EPSKRYLOVSCHUR));
  PetscCall(EPSSetWhichEigenpairs(eps, EPS_LARGEST_REAL));
  PetscCall(EPSSetDimensions(eps, K, PETSC_DEFAULT, PETSC_DEFAULT));
  PetscCall(EPSSetTolerances(eps, 1e-5, PETSC_DEFAULT));
  if (v0) PetscCall(EPSSetInitialSpace(eps, 1, &v0));
  t0 = MPI_Wtime();
  PetscCall(EPSSolve(eps));
  *seconds = MPI_Wtime() - t0;
  PetscCall(EPSGetIterationNumber(eps, its));
  if (V)
    for (PetscInt j = 0; j < K; j++) PetscCall(EPSGetEigenpair(eps, j, NULL, NULL, V[j], NULL));
  PetscCall(EPSDestroy(&eps));
  PetscFunctionReturn(0);
}

int main(int argc, char **argv)
{
  char             path[PETSC_MAX_PATH_LEN] = "";
  PetscInt         m = 4096, nbatch = 4, K = 10;
  PetscReal        noise = 0.3;
  BasisGraphParams p;
  BasisInput       in;
  PetscRandom      rnd;
  float           *x;

  PetscCall(SlepcInitialize(&argc, &argv, NULL, NULL));
  PetscCall(PetscOptionsGetString(NULL, NULL, "-input", path, sizeof(path), NULL));
  PetscCall(PetscOptionsGetInt(NULL, NULL, "-m", &m, NULL));
  PetscCall(PetscOptionsGetInt(NULL, NULL, "-batches", &nbatch, NULL));
  PetscCall(PetscOptionsGetReal(NULL, NULL, "-noise", &noise, NULL));
  PetscCheck(path[0], PETSC_COMM_SELF, PETSC_ERR_USER, "give -input FILE (an HDF5 input of basis)");
  PetscCall(BasisInputOpen(PETSC_COMM_SELF, path, &in));
  PetscCheck(in.N >= m * nbatch, PETSC_COMM_SELF, PETSC_ERR_ARG_SIZ,
             "%s has %d rows; -m %d x -batches %d needs more", path, (int)in.N, (int)m, (int)nbatch);
  BasisGraphParamsDefault(&p);
  PetscCall(PetscMalloc1((size_t)m * in.D, &x));
  PetscCall(PetscRandomCreate(PETSC_COMM_SELF, &rnd));
  for (PetscInt b = 0; b < nbatch; b++) {
    BasisKnn knn;
    Mat      N;
    Vec      dinv, v0, *V;
    PetscInt its[3];
    double   t[3];

    PetscCall(BasisInputRead(&in, b * m, m, x));
    PetscCall(BasisKnnCreate(m, p.knn, &knn));
    PetscCall(BasisKnnSelf(&knn, in.D, x));
    PetscCall(BasisGraphAssemble(PETSC_COMM_SELF, &p, &knn, 0, m, &N));
    PetscCall(BasisKnnDestroy(&knn));
    PetscCall(MatCreateVecs(N, &dinv, NULL));
    PetscCall(MatGetRowSum(N, dinv));
    PetscCall(VecSqrtAbs(dinv));
    PetscCall(VecReciprocal(dinv));
    PetscCall(MatDiagonalScale(N, dinv, dinv));
    PetscCall(MatSetOption(N, MAT_SYMMETRIC, PETSC_TRUE));
    PetscCall(VecDuplicateVecs(dinv, K, &V));
    PetscCall(VecDuplicate(dinv, &v0));
    PetscCall(Solve(N, K, NULL, V, &its[0], &t[0]));
    for (PetscInt w = 1; w <= 2; w++) { /* noise 0.01, then -noise */
      PetscCall(VecSetRandom(v0, rnd));
      PetscCall(VecShift(v0, -0.5));
      PetscCall(VecNormalize(v0, NULL));
      PetscCall(VecScale(v0, w == 1 ? 0.01 : noise));
      for (PetscInt j = 0; j < K; j++) PetscCall(VecAXPY(v0, 1.0 / PetscSqrtReal((PetscReal)K), V[j]));
      PetscCall(Solve(N, K, v0, NULL, &its[w], &t[w]));
    }
    PetscCall(
        PetscPrintf(PETSC_COMM_SELF,
                    "warmstart_probe: batch %d, m %d: random start %d restarts %.1f ms; exact vectors + "
                    "noise 0.01: %d restarts %.1f ms; + noise %g: %d restarts %.1f ms\n",
                    (int)b, (int)m, (int)its[0], 1e3 * t[0], (int)its[1], 1e3 * t[1], (double)noise,
                    (int)its[2], 1e3 * t[2]));
    PetscCall(VecDestroyVecs(K, &V));
    PetscCall(VecDestroy(&v0));
    PetscCall(VecDestroy(&dinv));
    PetscCall(MatDestroy(&N));
  }
  PetscCall(PetscRandomDestroy(&rnd));
  PetscCall(PetscFree(x));
  PetscCall(BasisInputClose(&in));
  PetscCall(SlepcFinalize());
  return 0;
}
