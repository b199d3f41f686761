/*
  gemm_probe - the machine's GEMM peak as basis uses it, so that the benchmark
  (scripts/bench) can quote efficiencies as ratios instead of absolute times.

    mpiexec -n P gemm_probe [-n 2048] [-seconds 1.0] [-precision float|bf16]

  Every rank runs an n x n x n product, repeated until -seconds have passed, all ranks at
  once (the same contention for cores and memory bandwidth as a training or embed run):
  - float: cblas_sgemm (serial OpenBLAS, one thread per rank, as basis does);
  - bf16: oneDNN's matmul with bfloat16 inputs and float sums (one thread per rank), the
    kernel basis's -mlp_precision bf16 network and -knn_gemm bf16 products run on
    (through BasisBf16Gram: X X^T of n points of dimension n). Where the CPU has no
    bfloat16 dot-product instructions the probe says so and exits with 1.
  Prints, on rank 0, the per-rank minimum and the sum over ranks in GFLOP/s as one line:

    gemm_probe: ranks 2 n 2048 float per-rank-min 91.3 total 180.2 GFLOP/s

  A square n = 2048 product is near the library's best case; the network's own shapes (a
  few hundred wide, thousands of rows) reach within ~10% of it in float
  (docs/performance.md).
*/
#include <basis/bf16gram.h>
#include <petscsys.h>
#include <cblas.h>

/* One product of the chosen precision: c = a a^T (bf16, the points kept in g) or a b. */
static PetscErrorCode Product(BasisBf16Gram g, PetscInt n, const float a[], const float b[], float c[])
{
  PetscFunctionBeginUser;
  if (g)
    PetscCall(BasisBf16GramProduct(g, 0, n, 0, n, c, n));
  else
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)n, (int)n, 1.0f, a, (int)n, b, (int)n,
                0.0f, c, (int)n);
  PetscFunctionReturn(0);
}

int main(int argc, char **argv)
{
  const char *const precisions[] = {"float", "bf16"};
  PetscInt          n = 2048, prec = 0;
  PetscReal         seconds = 1.0;
  float            *a, *b, *c;
  PetscReal        *an;
  double            t0, elapsed, rate, rmin, rsum;
  long              reps = 0;
  PetscMPIInt       size;
  BasisBf16Gram     g = NULL;

  PetscCall(PetscInitialize(&argc, &argv, NULL, NULL));
  PetscCall(PetscOptionsGetInt(NULL, NULL, "-n", &n, NULL));
  PetscCall(PetscOptionsGetReal(NULL, NULL, "-seconds", &seconds, NULL));
  PetscCall(PetscOptionsGetEList(NULL, NULL, "-precision", precisions, 2, &prec, NULL));
  PetscCheck(n >= 16 && seconds > 0, PETSC_COMM_WORLD, PETSC_ERR_ARG_OUTOFRANGE,
             "gemm_probe: need -n >= 16 and -seconds > 0");
  PetscCallMPI(MPI_Comm_size(PETSC_COMM_WORLD, &size));
  PetscCall(PetscMalloc4((size_t)n * n, &a, (size_t)n * n, &b, (size_t)n * n, &c, n, &an));
  for (size_t i = 0; i < (size_t)n * n; i++) a[i] = (float)(i % 7) * 0.1f, b[i] = (float)(i % 5) * 0.1f;
  if (prec == 1) {
    PetscBool   native;
    const char *isa;
    PetscReal   rho;

    PetscCall(BasisBf16GramNative(&native, &isa));
    if (native) PetscCall(BasisBf16GramCreate(&g));
    if (!g) {
      PetscCall(PetscPrintf(PETSC_COMM_WORLD,
                            "gemm_probe: this CPU (oneDNN: %s) has no bfloat16 dot-product instructions\n",
                            isa));
      PetscCall(PetscFinalize());
      return 1;
    }
    for (PetscInt i = 0; i < n; i++) {
      an[i] = 0;
      for (PetscInt d = 0; d < n; d++) an[i] += (PetscReal)a[(size_t)i * n + d] * a[(size_t)i * n + d];
    }
    PetscCall(BasisBf16GramSetPoints(g, n, n, a, an, &rho));
  }
  /* one untimed product: page faults, the library's buffers, oneDNN's kernel generation */
  PetscCall(Product(g, n, a, b, c));
  PetscCallMPI(MPI_Barrier(PETSC_COMM_WORLD));
  t0 = MPI_Wtime();
  do {
    PetscCall(Product(g, n, a, b, c));
    reps++;
  } while ((elapsed = MPI_Wtime() - t0) < seconds);
  rate = 2.0 * n * n * (double)n * reps / elapsed / 1e9;
  PetscCallMPI(MPI_Allreduce(&rate, &rmin, 1, MPI_DOUBLE, MPI_MIN, PETSC_COMM_WORLD));
  PetscCallMPI(MPI_Allreduce(&rate, &rsum, 1, MPI_DOUBLE, MPI_SUM, PETSC_COMM_WORLD));
  PetscCall(PetscPrintf(PETSC_COMM_WORLD,
                        "gemm_probe: ranks %d n %d %s per-rank-min %.1f total %.1f GFLOP/s\n", size, (int)n,
                        precisions[prec], rmin, rsum));
  PetscCall(BasisBf16GramDestroy(&g));
  PetscCall(PetscFree4(a, b, c, an));
  PetscCall(PetscFinalize());
  return 0;
}
