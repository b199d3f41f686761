/*
  knn_probe - what the exact batch kNN costs and how much of it is the distance GEMM, for
  the batch-size question of docs/performance.md (a batch of m points needs the kNN of m
  points among themselves: m^2 pairs, O(m^2 D) by the graph rule).

    knn_probe [-m 4096] [-D 50] [-knn 10] [-reps 20] [-knn_gemm float|bf16|auto] [-input FILE]
              [-self_only]

  On one process (serial OpenBLAS, as one rank of basis): m Gaussian points in D
  dimensions (or the first m rows of the HDF5 input FILE, D its own); the minimum over -reps repetitions of
  (a) BasisKnnUpdate of all m points against themselves, the routine of the reference and exact graphs, (b)
  the bare cblas_sgemm calls of its tiles (1024 x 2048), i.e. the floor that the distance products alone set,
  and (c) BasisKnnSelf, the batch graph's kNN (symmetric: half the GEMM flops), its Gram products in the
  precision of -knn_gemm (default float), with the number of exact distances it computed per point (the
  candidates its margin let through); -self_only: (c) alone. Prints

    knn_probe: m 4096 D 50 knn 10: kNN 37.5 ms, distance GEMM 18.7 ms (50%), 2.2 ns per pair;
    batch (symmetric) kNN 20.1 ms (float products, 14.2 exact distances per point)
*/
#include <basis/graph.h>
#include <basis/h5io.h>
#include <basis/rng.h>
#include <cblas.h>

int main(int argc, char **argv)
{
  PetscInt         m = 4096, D = 50, k = 10, reps = 20, tr = 1024, tc = 2048;
  float           *x, *G;
  BasisRng         rng;
  BasisKnn         knn;
  double           tk = 1e30, tg = 1e30, ts = 1e30, nexact = 0;
  BasisKnnGemmType gemm = BASIS_KNN_GEMM_FLOAT, used = BASIS_KNN_GEMM_FLOAT;
  char             path[PETSC_MAX_PATH_LEN] = "";
  BasisInput       in;
  PetscBool        self_only = PETSC_FALSE;

  PetscCall(PetscInitialize(&argc, &argv, NULL, NULL));
  PetscCall(PetscOptionsGetInt(NULL, NULL, "-m", &m, NULL));
  PetscCall(PetscOptionsGetInt(NULL, NULL, "-D", &D, NULL));
  PetscCall(PetscOptionsGetInt(NULL, NULL, "-knn", &k, NULL));
  PetscCall(PetscOptionsGetInt(NULL, NULL, "-reps", &reps, NULL));
  PetscCall(PetscOptionsGetEnum(NULL, NULL, "-knn_gemm", BasisKnnGemmTypes, (PetscEnum *)&gemm, NULL));
  PetscCall(PetscOptionsGetString(NULL, NULL, "-input", path, sizeof(path), NULL));
  PetscCall(PetscOptionsGetBool(NULL, NULL, "-self_only", &self_only, NULL));
  if (path[0]) {
    PetscCall(BasisInputOpen(PETSC_COMM_SELF, path, &in));
    D = in.D;
    PetscCheck(in.N >= m, PETSC_COMM_SELF, PETSC_ERR_ARG_SIZ, "%s has %d rows, fewer than -m %d", path,
               (int)in.N, (int)m);
  }
  PetscCheck(m > k && k >= 1 && D >= 1 && reps >= 1, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE,
             "need -m > -knn >= 1, -D >= 1 and -reps >= 1");
  PetscCall(PetscMalloc2((size_t)m * D, &x, (size_t)tr * tc, &G));
  BasisRngSeed(&rng, 3, 0);
  if (path[0]) {
    PetscCall(BasisInputRead(&in, 0, m, x));
    PetscCall(BasisInputClose(&in));
  } else
    for (PetscInt i = 0; i < m * D; i++) x[i] = (float)BasisRngNormal(&rng);
  for (PetscInt r = 0; r < reps; r++) {
    double t0, t1;

    if (!self_only) {
      PetscCall(BasisKnnCreate(m, k, &knn));
      t0 = MPI_Wtime();
      PetscCall(BasisKnnUpdate(&knn, D, x, 0, m, x, 0));
      t1 = MPI_Wtime();
      PetscCall(BasisKnnDestroy(&knn));
      tk = PetscMin(tk, t1 - t0);
      t0 = MPI_Wtime();
      for (PetscInt i0 = 0; i0 < m; i0 += tr)
        for (PetscInt j0 = 0; j0 < m; j0 += tc) {
          int rows = (int)PetscMin(tr, m - i0), cols = (int)PetscMin(tc, m - j0);
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, cols, (int)D, -2.0f, x + (size_t)i0 * D,
                      (int)D, x + (size_t)j0 * D, (int)D, 0.0f, G, cols);
        }
      tg = PetscMin(tg, MPI_Wtime() - t0);
    }
    PetscCall(BasisKnnCreate(m, k, &knn));
    PetscCall(BasisKnnSetGemm(&knn, gemm, &used));
    PetscCall(BasisKnnSelf(&knn, D, x)); /* the first call allocates; a batch graph reuses it */
    t0 = MPI_Wtime();
    PetscCall(BasisKnnSelf(&knn, D, x));
    ts     = PetscMin(ts, MPI_Wtime() - t0);
    nexact = knn.nexact;
    PetscCall(BasisKnnDestroy(&knn));
  }
  if (self_only)
    PetscCall(
        PetscPrintf(PETSC_COMM_SELF,
                    "knn_probe: m %d D %d knn %d: batch (symmetric) kNN %.1f ms (%s products, %.1f exact "
                    "distances per point)\n",
                    (int)m, (int)D, (int)k, 1e3 * ts, BasisKnnGemmTypes[used], nexact / m));
  else
    PetscCall(PetscPrintf(
        PETSC_COMM_SELF,
        "knn_probe: m %d D %d knn %d: kNN %.1f ms, distance GEMM %.1f ms (%.0f%%), %.1f ns per pair; batch "
        "(symmetric) kNN %.1f ms (%s products, %.1f exact distances per point)\n",
        (int)m, (int)D, (int)k, 1e3 * tk, 1e3 * tg, 100 * tg / tk, 1e9 * tk / ((double)m * m), 1e3 * ts,
        BasisKnnGemmTypes[used], nexact / m));
  PetscCall(PetscFree2(x, G));
  PetscCall(PetscFinalize());
  return 0;
}
