/*
  gemm_probe - the machine's single-precision GEMM peak as basis uses it, so that the
  benchmark (scripts/bench) can quote efficiencies as ratios instead of absolute times.

    mpiexec -n P gemm_probe [-n 2048] [-seconds 1.0]

  Every rank runs cblas_sgemm (serial OpenBLAS, one thread per rank, as basis does) on an
  n x n x n product, repeated until -seconds have passed, all ranks at once (the same
  contention for cores and memory bandwidth as a training or embed run). Prints, on rank 0,
  the per-rank minimum and the sum over ranks in GFLOP/s as one line:

    gemm_probe: ranks 2 n 2048 per-rank-min 91.3 total 180.2 GFLOP/s

  A square n = 2048 product is near OpenBLAS's best case; the network's own shapes (a few
  hundred wide, thousands of rows) reach within ~10% of it (docs/performance.md).
*/
#include <petscsys.h>
#include <cblas.h>

int main(int argc, char **argv)
{
  PetscInt    n       = 2048;
  PetscReal   seconds = 1.0;
  float      *a, *b, *c;
  double      t0, elapsed, rate, rmin, rsum;
  long        reps = 0;
  PetscMPIInt size;

  PetscCall(PetscInitialize(&argc, &argv, NULL, NULL));
  PetscCall(PetscOptionsGetInt(NULL, NULL, "-n", &n, NULL));
  PetscCall(PetscOptionsGetReal(NULL, NULL, "-seconds", &seconds, NULL));
  PetscCheck(n >= 16 && seconds > 0, PETSC_COMM_WORLD, PETSC_ERR_ARG_OUTOFRANGE,
             "gemm_probe: need -n >= 16 and -seconds > 0");
  PetscCallMPI(MPI_Comm_size(PETSC_COMM_WORLD, &size));
  PetscCall(PetscMalloc3((size_t)n * n, &a, (size_t)n * n, &b, (size_t)n * n, &c));
  for (size_t i = 0; i < (size_t)n * n; i++) a[i] = (float)(i % 7) * 0.1f, b[i] = (float)(i % 5) * 0.1f;
  /* one untimed product: page faults and OpenBLAS's buffer set-up */
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)n, (int)n, 1.0f, a, (int)n, b, (int)n,
              0.0f, c, (int)n);
  PetscCallMPI(MPI_Barrier(PETSC_COMM_WORLD));
  t0 = MPI_Wtime();
  do {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)n, (int)n, 1.0f, a, (int)n, b, (int)n,
                0.0f, c, (int)n);
    reps++;
  } while ((elapsed = MPI_Wtime() - t0) < seconds);
  rate = 2.0 * n * n * (double)n * reps / elapsed / 1e9;
  PetscCallMPI(MPI_Allreduce(&rate, &rmin, 1, MPI_DOUBLE, MPI_MIN, PETSC_COMM_WORLD));
  PetscCallMPI(MPI_Allreduce(&rate, &rsum, 1, MPI_DOUBLE, MPI_SUM, PETSC_COMM_WORLD));
  PetscCall(PetscPrintf(PETSC_COMM_WORLD, "gemm_probe: ranks %d n %d per-rank-min %.1f total %.1f GFLOP/s\n",
                        size, (int)n, rmin, rsum));
  PetscCall(PetscFree3(a, b, c));
  PetscCall(PetscFinalize());
  return 0;
}
