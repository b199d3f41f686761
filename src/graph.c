/*
  graph.c - the one graph rule of DESIGN.md "The algorithm" after the kNN (knn.c) and before
  the eigensolve (eigensolver.c): the graph parameters, the scale sigma, the affinities
  W_ij = exp(-||x_i - x_j||^2 / sigma_i^2), W = (W + W^T)/2, W_ii = 0, and the Laplacian;
  used by the batch graph (step 3), the reference graph (step 2) and the exact baseline.

  Distributed assembly (BasisGraphAssemble, collective): MATMPIAIJ W with exact
  preallocation (MATPREALLOCATOR: the in-degree of a kNN graph is unbounded), or on one
  process a SeqAIJ built from its CSR arrays. The eigensolver forms its operator from it.
  Batch graph (BasisBatchGraph, one rank, every training step): its objects are made once
  at Create and reused every step: the kNN lists, and either the dense W and Laplacian
  (LAPACK route, small batches) or the sparse W, refilled in place (Krylov route), and one
  eigensolver object (prefix batch_), with the Krylov route's assembly workspace. Both
  routes raise the same errors with the
  same words ("batch row", since a batch's rows are not data rows).
*/
#include <basis/eigensolver.h>
#include <basis/graph.h>
#include <basis/log.h>
#include <basis/options.h>

const char *const BasisScaleTypes[]     = {"local", "median", "BasisScaleType", "BASIS_SCALE_", NULL};
const char *const BasisLaplacianTypes[] = {
    "sym", "unnormalized", "rw", "BasisLaplacianType", "BASIS_LAPLACIAN_", NULL};

/*
  BasisGraphParamsDefault - the defaults of the authors' code: knn 10, scale_neighbor 7,
  local scale, sym Laplacian, K 10. Not collective.
*/
void BasisGraphParamsDefault(BasisGraphParams *p)
{
  p->knn            = 10;
  p->scale_neighbor = 7;
  p->scale          = BASIS_SCALE_LOCAL;
  p->laplacian      = BASIS_LAPLACIAN_SYM;
  p->K              = 10;
  p->batch_solver   = BASIS_BATCH_AUTO;
  p->knn_gemm       = BASIS_KNN_GEMM_AUTO;
  p->eps_tol        = 0;
  p->eps_ncv        = 0;
}

/*
  BasisGraphParamsSetFromOptions - read the graph rule from the options database.

  Collective on comm (every rank reads the same options and reaches the same verdict).

  Options: -dim K, -knn k, -scale_neighbor s, -scale local|median, -laplacian sym|unnormalized|rw,
  -batch_solver auto|dense|krylov, -knn_gemm auto|float|bf16

  Notes:
    Call it inside the caller's PetscOptionsBegin/End; it opens its own (nested) section so
    that -help lists these options under one heading. -knn_gemm bf16 where some rank's CPU
    has no bfloat16 dot products is said once (rank 0) and those ranks use float.
*/
/* Batches larger than this use the sparse Krylov route by default. Measured per step
   (graph + eigensolve, MNIST-10k, D = 784, K = 10, docs/performance.md): dense/Krylov
   4.2/4.1 ms at m = 256, 8.7/6.8 at 384, 17.2/10.7 at 512, 75.8/26.1 at 1024,
   699/115 at 2048. */
#define BASIS_BATCH_DENSE_MAX 256

const char *const BasisBatchSolverTypes[] = {"auto",         "dense", "krylov", "BasisBatchSolverType",
                                             "BASIS_BATCH_", NULL};

/* -knn_gemm bf16 on a CPU without bfloat16 dot products: float there, said once. */
static PetscErrorCode KnnGemmResolve(MPI_Comm comm, BasisGraphParams *p)
{
  PetscBool   native;
  const char *isa;
  int         lacks, any;

  PetscFunctionBeginUser;
  if (p->knn_gemm != BASIS_KNN_GEMM_BF16) PetscFunctionReturn(0);
  PetscCall(BasisBf16GramNative(&native, &isa));
  lacks = !native;
  PetscCallMPI(MPI_Allreduce(&lacks, &any, 1, MPI_INT, MPI_MAX, comm));
  if (any) /* rank 0 prints: its own ISA if it is one of those without */
    PetscCall(PetscPrintf(
        comm,
        "-knn_gemm bf16: %s%s%s has no bfloat16 dot-product instructions; the batch kNN uses float there\n",
        lacks ? "this CPU (oneDNN: " : "some rank's CPU", lacks ? isa : "", lacks ? ")" : ""));
  if (lacks) p->knn_gemm = BASIS_KNN_GEMM_FLOAT;
  PetscFunctionReturn(0);
}

PetscErrorCode BasisGraphParamsSetFromOptions(MPI_Comm comm, BasisGraphParams *p)
{
  PetscFunctionBeginUser;
  PetscOptionsBegin(comm, NULL, "Graph rule: kNN, scale, Laplacian, embedding dimension", NULL);
  PetscCall(
      PetscOptionsInt("-dim", "K: number of eigenvectors (embedding dimension)", NULL, p->K, &p->K, NULL));
  PetscCall(PetscOptionsInt("-knn", "k: neighbours per point", NULL, p->knn, &p->knn, NULL));
  PetscCall(PetscOptionsInt("-scale_neighbor", "sigma_i = distance to this neighbour (1-based)", NULL,
                            p->scale_neighbor, &p->scale_neighbor, NULL));
  PetscCall(BasisOptionsEnum("-scale", "Affinity scale: per point (local) or one median", NULL,
                             BasisScaleTypes, (PetscEnum)p->scale, (PetscEnum *)&p->scale, NULL));
  PetscCall(BasisOptionsEnum("-laplacian", "Graph Laplacian", NULL, BasisLaplacianTypes,
                             (PetscEnum)p->laplacian, (PetscEnum *)&p->laplacian, NULL));
  PetscCall(BasisOptionsEnum(
      "-batch_solver", "Batch eigensolver: dense LAPACK or sparse Krylov (SLEPc, -batch_eps_*)", NULL,
      BasisBatchSolverTypes, (PetscEnum)p->batch_solver, (PetscEnum *)&p->batch_solver, NULL));
  PetscCall(BasisOptionsEnum("-knn_gemm",
                             "Batch kNN distance products: float, bf16 (bfloat16 inputs, float sums; same "
                             "lists), auto (bf16 where the CPU has bfloat16 dot products)",
                             NULL, BasisKnnGemmTypes, (PetscEnum)p->knn_gemm, (PetscEnum *)&p->knn_gemm,
                             NULL));
  PetscOptionsEnd();
  PetscCall(KnnGemmResolve(comm, p));
  PetscCheck(p->K >= 1, comm, PETSC_ERR_ARG_OUTOFRANGE, "-dim %d must be at least 1", (int)p->K);
  PetscCheck(p->knn >= 1, comm, PETSC_ERR_ARG_OUTOFRANGE, "-knn %d must be at least 1", (int)p->knn);
  PetscCheck(p->scale_neighbor >= 1 && p->scale_neighbor <= p->knn, comm, PETSC_ERR_ARG_OUTOFRANGE,
             "-scale_neighbor %d must be between 1 and -knn %d", (int)p->scale_neighbor, (int)p->knn);
  PetscFunctionReturn(0);
}

/*
  BasisGraphParamsMatched - the density-matched graph rule for a set of n points when the
  batches have m points (DESIGN.md "Metrics"): knn = round(k n / m), scale_neighbor =
  round(s n / m), both at least 1 and scale_neighbor <= knn. m <= 0 means the same-k graph
  (a copy). Not collective. matched may be p.
*/
void BasisGraphParamsMatched(const BasisGraphParams *p, PetscInt n, PetscInt m, BasisGraphParams *matched)
{
  BasisGraphParams q = *p;

  if (m > 0) {
    /* round half up, as round() */
    q.knn = (PetscInt)PetscMax(1.0, PetscFloorReal((PetscReal)p->knn * (PetscReal)n / (PetscReal)m + 0.5));
    q.scale_neighbor = (PetscInt)PetscMax(
        1.0, PetscFloorReal((PetscReal)p->scale_neighbor * (PetscReal)n / (PetscReal)m + 0.5));
    q.scale_neighbor = PetscMin(q.scale_neighbor, q.knn);
  }
  *matched = q;
}

/*
  SigmaCompute - BasisGraphSigma with an optional workspace work [knn->nq] for the median
  on one rank (the batch path allocates nothing per step); what names a row in the
  messages ("point", or "batch row" for a training batch, whose rows are not data rows).
*/
static PetscErrorCode SigmaCompute(MPI_Comm comm, const BasisGraphParams *p, const BasisKnn *knn,
                                   const char *what, PetscReal sigma[], PetscReal work[])
{
  const PetscInt s = p->scale_neighbor, k = knn->k, nq = knn->nq;
  PetscInt       rstart = 0, nq_sum = 0, count[2] = {0, 0}, first[2] = {PETSC_MAX_INT, PETSC_MAX_INT};
  PetscMPIInt    size, rank;

  PetscFunctionBeginUser;
  PetscCheck(s >= 1 && s <= k, comm, PETSC_ERR_ARG_OUTOFRANGE,
             "-scale_neighbor %d must be between 1 and the %d neighbours kept (-knn)", (int)s, (int)k);
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  /* rows are numbered in rank order (as in a PETSc layout) for the messages */
  PetscCallMPI(MPI_Exscan(&nq, &rstart, 1, MPIU_INT, MPI_SUM, comm));
  if (rank == 0) rstart = 0;
  for (PetscInt i = 0; i < nq; i++) {
    PetscInt j = i * k + s - 1;
    if (knn->idx[j] < 0) {
      count[0]++;
      first[0] = PetscMin(first[0], rstart + i);
      sigma[i] = 0;
    } else {
      sigma[i] = PetscSqrtReal(knn->d2[j]);
      if (sigma[i] == 0 && p->scale == BASIS_SCALE_LOCAL) {
        count[1]++;
        first[1] = PetscMin(first[1], rstart + i);
      }
    }
  }
  /* agree over comm, so every rank raises the same error with the same numbers */
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, count, 2, MPIU_INT, MPI_SUM, comm));
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, first, 2, MPIU_INT, MPI_MIN, comm));
  PetscCallMPI(MPI_Allreduce(&nq, &nq_sum, 1, MPIU_INT, MPI_SUM, comm));
  PetscCheck(
      count[0] == 0, comm, PETSC_ERR_ARG_OUTOFRANGE,
      "%d points have fewer than -scale_neighbor %d neighbours (first: %s %d of a set of %d points); the "
      "set is too small for this -scale_neighbor",
      (int)count[0], (int)s, what, (int)first[0], (int)nq_sum);
  PetscCheck(
      count[1] == 0, comm, PETSC_ERR_ARG_WRONG,
      "%d points have a zero scale (at least %d duplicates of %s %d); remove duplicate points or raise "
      "-scale_neighbor",
      (int)count[1], (int)s, what, (int)first[1]);
  if (p->scale == BASIS_SCALE_MEDIAN) {
    PetscReal    med = 0, *all = NULL;
    PetscInt     n      = nq_sum;
    PetscMPIInt *counts = NULL, *displs = NULL, nqm;

    /* gather the scale_neighbor-th distances to rank 0: the median is exact */
    if (size == 1) {
      all = work;
      if (!all) PetscCall(PetscMalloc1(n, &all));
      PetscCall(PetscArraycpy(all, sigma, nq));
    } else {
      PetscCall(PetscMPIIntCast(nq, &nqm));
      if (rank == 0) PetscCall(PetscMalloc3(n, &all, size, &counts, size, &displs));
      PetscCallMPI(MPI_Gather(&nqm, 1, MPI_INT, counts, 1, MPI_INT, 0, comm));
      if (rank == 0) {
        displs[0] = 0;
        for (PetscMPIInt r = 1; r < size; r++) displs[r] = displs[r - 1] + counts[r - 1];
      }
      PetscCallMPI(MPI_Gatherv(sigma, nqm, MPIU_REAL, all, counts, displs, MPIU_REAL, 0, comm));
    }
    if (rank == 0 && n > 0) {
      PetscCall(PetscSortReal(n, all));
      /* median of an even count: the mean of the two middle values (as numpy) */
      med = n % 2 ? all[n / 2] : 0.5 * (all[n / 2 - 1] + all[n / 2]);
    }
    PetscCallMPI(MPI_Bcast(&med, 1, MPIU_REAL, 0, comm));
    if (size == 1 && all != work) PetscCall(PetscFree(all));
    if (size > 1 && rank == 0) PetscCall(PetscFree3(all, counts, displs));
    PetscCheck(
        med > 0, comm, PETSC_ERR_ARG_WRONG,
        "the median scale is 0: at least half of the %d points have %d or more duplicates; remove duplicate "
        "points, raise -scale_neighbor or use -scale local",
        (int)n, (int)s);
    for (PetscInt i = 0; i < nq; i++) sigma[i] = med;
  }
  PetscFunctionReturn(0);
}

/*
  BasisGraphSigma - the affinity scale of every query row.

  Collective on comm (PETSC_COMM_SELF for a batch).

  Input:
    p   - scale (local | median) and scale_neighbor s
    knn - this rank's rows; s <= knn->k
  Output:
    sigma - [knn->nq] local: distance to the s-th neighbour (1-based); median: the median
            of that distance over all rows of all ranks of comm (the same on every row)

  Errors (the same on every rank): a row with fewer than s neighbours; a zero local scale
  (s or more duplicates of a point); a zero median scale.
*/
PetscErrorCode BasisGraphSigma(MPI_Comm comm, const BasisGraphParams *p, const BasisKnn *knn,
                               PetscReal sigma[])
{
  PetscFunctionBeginUser;
  PetscCall(SigmaCompute(comm, p, knn, "point", sigma, NULL));
  PetscFunctionReturn(0);
}

/* Half the affinity of a pair, h = w / 2 = exp(-d2 / sigma^2) / 2: W = (w + w^T) / 2 is
   assembled by adding h at (i, j) and at (j, i). */
static inline PetscReal HalfAffinity(PetscReal d2, PetscReal sigma)
{
  const PetscReal s2 = sigma * sigma;
  return 0.5 * PetscExpReal(-d2 / s2);
}

/* The error for points of degree 0 (all their affinities underflow), the same on every
   rank and for every route: nzero of this rank's rows, the first global row first
   (PETSC_MAX_INT if none here); what names a row ("point" or "batch row"). */
static PetscErrorCode CheckDegrees(MPI_Comm comm, PetscInt nzero, PetscInt first, const char *what)
{
  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &nzero, 1, MPIU_INT, MPI_SUM, comm));
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &first, 1, MPIU_INT, MPI_MIN, comm));
  PetscCheck(!nzero, comm, PETSC_ERR_ARG_WRONG,
             "%d points are isolated (degree 0, first: %s %d): all their affinities underflow; use -scale "
             "local or raise -knn",
             (int)nzero, what, (int)first);
  PetscFunctionReturn(0);
}

/* Insert the pattern or values of W for this rank's rows into M (a MATPREALLOCATOR or the
   AIJ): row i gets h_ij = w_ij / 2 at its kNN columns, each column j gets h_ij at row i,
   and the diagonal an explicit 0 so that D - W can later be formed in place. */
static PetscErrorCode SetAffinities(Mat M, const BasisGraphParams *p, const BasisKnn *knn, PetscInt rstart,
                                    const PetscReal sigma[], PetscScalar h[])
{
  const PetscInt k = p->knn;

  PetscFunctionBeginUser;
  for (PetscInt i = 0; i < knn->nq; i++) {
    const PetscInt *cols = knn->idx + (size_t)i * knn->k;
    PetscInt        gi   = rstart + i;
    for (PetscInt t = 0; t < k; t++) h[t] = HalfAffinity(knn->d2[(size_t)i * knn->k + t], sigma[i]);
    PetscCall(MatSetValues(M, 1, &gi, k, cols, h, ADD_VALUES));
    PetscCall(MatSetValues(M, k, cols, 1, &gi, h, ADD_VALUES));
    PetscCall(MatSetValue(M, gi, gi, 0.0, ADD_VALUES));
  }
  PetscCall(MatAssemblyBegin(M, MAT_FINAL_ASSEMBLY));
  PetscCall(MatAssemblyEnd(M, MAT_FINAL_ASSEMBLY));
  PetscFunctionReturn(0);
}

/* The checks of BasisGraphAssemble on the sizes and the lists, agreed over comm. */
static PetscErrorCode CheckLists(MPI_Comm comm, const BasisGraphParams *p, const BasisKnn *knn,
                                 PetscInt nglobal)
{
  const PetscInt k      = p->knn;
  PetscInt       nshort = 0;

  PetscFunctionBeginUser;
  PetscCheck(
      nglobal >= p->K + 1, comm, PETSC_ERR_ARG_OUTOFRANGE,
      "a graph of %d points cannot have K+1 = %d points, as -dim %d needs; lower -dim or use more points",
      (int)nglobal, (int)(p->K + 1), (int)p->K);
  PetscCheck(k >= 1 && k < nglobal, comm, PETSC_ERR_ARG_OUTOFRANGE,
             "-knn %d must be between 1 and the number of points in the graph minus one (%d)", (int)k,
             (int)(nglobal - 1));
  PetscCheck(knn->k >= k, comm, PETSC_ERR_ARG_SIZ, "the neighbour lists hold %d entries, fewer than -knn %d",
             (int)knn->k, (int)k);
  for (PetscInt i = 0; i < knn->nq; i++)
    if (knn->idx[(size_t)i * knn->k + k - 1] < 0) nshort++;
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &nshort, 1, MPIU_INT, MPI_SUM, comm));
  PetscCheck(!nshort, comm, PETSC_ERR_ARG_WRONG,
             "%d points have fewer than -knn %d neighbours in their lists; merge every block of points first",
             (int)nshort, (int)k);
  PetscFunctionReturn(0);
}

/*
  AssembleWork - AssembleW's workspace for n rows of k neighbours, made once per graph (the
  batch graph: at Create) so that a step allocates nothing. On one process the row
  cursors cnt [n] and W's CSR arrays ia [n + 1], ja and va [n (2k + 1)] (every row's entries
  before the two halves of a mutual pair merge); on several, one row's affinities h [k].
  Errors: on one process, more entries than PetscInt indexes (use more processes).
*/
typedef struct {
  PetscInt    *cnt, *ia, *ja;
  PetscScalar *va, *h;
} AssembleWork;

static PetscErrorCode AssembleWorkCreate(MPI_Comm comm, PetscInt n, PetscInt k, AssembleWork *w)
{
  PetscMPIInt size;

  PetscFunctionBeginUser;
  PetscCall(PetscMemzero(w, sizeof(*w)));
  PetscCallMPI(MPI_Comm_size(comm, &size));
  if (size > 1) {
    PetscCall(PetscMalloc1(k, &w->h));
    PetscFunctionReturn(0);
  }
  PetscCheck((size_t)n * (2 * (size_t)k + 1) <= (size_t)PETSC_MAX_INT, comm, PETSC_ERR_SUP,
             "the graph of %d points with -knn %d has more entries than one process can index (%d-bit "
             "indices); run on more processes",
             (int)n, (int)k, (int)(8 * sizeof(PetscInt)));
  PetscCall(PetscMalloc4(PetscMax(n, 1), &w->cnt, n + 1, &w->ia, (size_t)n * (2 * k + 1), &w->ja,
                         (size_t)n * (2 * k + 1), &w->va));
  PetscFunctionReturn(0);
}

static PetscErrorCode AssembleWorkDestroy(AssembleWork *w)
{
  PetscFunctionBeginUser;
  PetscCall(PetscFree4(w->cnt, w->ia, w->ja, w->va));
  PetscCall(PetscFree(w->h));
  PetscFunctionReturn(0);
}

/*
  AssembleOneProcess - W of all n points on one process (every training step's batch graph;
  the reference and exact graphs at one rank), *W refilled if it exists. Its CSR arrays are
  built here and handed to PETSc in one call (MatSeqAIJSetPreallocationCSR): row i holds its
  k neighbours (h_ij), the rows j that list i (h_ji) and the diagonal (an explicit 0), its
  columns sorted and the two halves of a mutual pair summed. Inserting the entries one
  MatSetValues at a time, with a search and a shift each, had cost ~3% of a batch's graph
  and eigensolve (perf record of bench/batch_probe). The same W bit for bit: an entry is
  h_ij, h_ji or h_ij + h_ji, and a sum of two terms does not depend on their order. The
  arrays are w's (AssembleWork); PETSc copies them.
*/
static PetscErrorCode AssembleOneProcess(MPI_Comm comm, const BasisGraphParams *p, const BasisKnn *knn,
                                         const PetscReal sigma[], AssembleWork *w, Mat *W)
{
  const PetscInt n = knn->nq, k = p->knn;
  PetscInt      *cnt = w->cnt, *ia = w->ia, *ja = w->ja, out = 0;
  PetscScalar   *va = w->va;

  PetscFunctionBeginUser;
  PetscCall(PetscArrayzero(cnt, n));
  for (PetscInt i = 0; i < n; i++)
    for (PetscInt t = 0; t < k; t++) cnt[knn->idx[(size_t)i * knn->k + t]]++;
  ia[0] = 0;
  for (PetscInt i = 0; i < n; i++) ia[i + 1] = ia[i] + cnt[i] + k + 1; /* before merging pairs */
  for (PetscInt i = 0; i < n; i++) { /* cnt: where row i's next entry goes; the diagonal first */
    ja[ia[i]] = i;
    va[ia[i]] = 0;
    cnt[i]    = ia[i] + 1;
  }
  for (PetscInt i = 0; i < n; i++)
    for (PetscInt t = 0; t < k; t++) {
      const PetscInt  j = knn->idx[(size_t)i * knn->k + t];
      const PetscReal h = HalfAffinity(knn->d2[(size_t)i * knn->k + t], sigma[i]);
      ja[cnt[i]]        = j;
      va[cnt[i]++]      = h;
      ja[cnt[j]]        = i;
      va[cnt[j]++]      = h;
    }
  for (PetscInt i = 0; i < n; i++) { /* sort each row, merge pairs, compact to the left */
    const PetscInt start = ia[i], end = cnt[i], row = out;

    PetscCall(PetscSortIntWithScalarArray(end - start, ja + start, va + start));
    for (PetscInt e = start; e < end; e++) {
      if (out > row && ja[out - 1] == ja[e])
        va[out - 1] += va[e];
      else {
        ja[out] = ja[e];
        va[out] = va[e];
        out++;
      }
    }
    ia[i] = row; /* row i + 1 still starts at ia [i + 1], read next */
  }
  ia[n] = out;
  if (!*W) {
    PetscCall(MatCreate(comm, W));
    PetscCall(MatSetSizes(*W, n, n, n, n));
    PetscCall(MatSetType(*W, MATSEQAIJ));
  }
  PetscCall(MatSeqAIJSetPreallocationCSR(*W, ia, ja, va));
  PetscFunctionReturn(0);
}

/*
  AssembleW - W from the lists and sigma: the body of BasisGraphAssemble, also the batch
  graph's Krylov route, which passes its W of the previous step in *W (refilled); w from
  AssembleWorkCreate on comm for these n rows and knn. One process: AssembleOneProcess.
  Several: the pattern through MATPREALLOCATOR's hash table, then the values.
*/
static PetscErrorCode AssembleW(MPI_Comm comm, const BasisGraphParams *p, const BasisKnn *knn,
                                PetscInt rstart, PetscInt nglobal, const char *what, const PetscReal sigma[],
                                AssembleWork *w, Mat *W)
{
  const PetscInt k     = p->knn;
  PetscInt       nzero = 0, first = PETSC_MAX_INT, r0;
  PetscMPIInt    size;

  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_size(comm, &size));
  if (size == 1) {
    PetscCheck(knn->nq == nglobal && rstart == 0, comm, PETSC_ERR_ARG_SIZ,
               "one process holds %d of %d points starting at %d; it must hold all of them", (int)knn->nq,
               (int)nglobal, (int)rstart);
    PetscCall(AssembleOneProcess(comm, p, knn, sigma, w, W));
  } else {
    Mat pre;
    PetscCall(MatCreate(comm, &pre));
    PetscCall(MatSetSizes(pre, knn->nq, knn->nq, nglobal, nglobal));
    PetscCall(MatSetType(pre, MATPREALLOCATOR));
    PetscCall(MatSetUp(pre));
    PetscCall(MatGetOwnershipRange(pre, &r0, NULL));
    BasisCheckAll(
        comm, r0 == rstart, PETSC_ERR_ARG_WRONG,
        "the rows of the point set must be split in rank order: a rank's rstart differs from the sum of "
        "the row counts of the ranks before it");
    PetscCall(SetAffinities(pre, p, knn, rstart, sigma, w->h));
    PetscCall(MatCreate(comm, W));
    PetscCall(MatSetSizes(*W, knn->nq, knn->nq, nglobal, nglobal));
    PetscCall(MatSetType(*W, MATMPIAIJ));
    PetscCall(MatPreallocatorPreallocate(pre, PETSC_TRUE, *W));
    PetscCall(MatDestroy(&pre));
    PetscCall(SetAffinities(*W, p, knn, rstart, sigma, w->h));
  }
  PetscCall(PetscLogFlops(6.0 * knn->nq * k));
  PetscCall(MatSetOption(*W, MAT_SYMMETRIC, PETSC_TRUE));
  PetscCall(MatSetOption(*W, MAT_SYMMETRY_ETERNAL, PETSC_TRUE));
  /* degree 0: no positive entry in the row (all entries are >= 0) */
  for (PetscInt i = 0; i < knn->nq; i++) {
    const PetscScalar *v;
    PetscInt           ncols, gi = rstart + i;
    PetscBool          positive = PETSC_FALSE;
    PetscCall(MatGetRow(*W, gi, &ncols, NULL, &v));
    for (PetscInt t = 0; t < ncols; t++)
      if (PetscRealPart(v[t]) > 0) positive = PETSC_TRUE;
    PetscCall(MatRestoreRow(*W, gi, &ncols, NULL, &v));
    if (!positive && !nzero++) first = gi;
  }
  PetscCall(CheckDegrees(comm, nzero, first, what));
  PetscFunctionReturn(0);
}

/*
  BasisGraphAssemble - the symmetric affinity matrix W of a distributed point set.

  Collective on comm.

  Input:
    p       - graph rule; W uses the first p->knn entries of each list (knn->k may be
              larger, so one kNN search can serve several k)
    knn     - lists of this rank's rows [rstart, rstart + knn->nq); rows are split in rank
              order (any sizes)
    nglobal - number of points of the whole set
  Output:
    W - MATMPIAIJ nglobal x nglobal (SeqAIJ on one process), knn->nq local rows:
        W_ij = (w_ij + w_ji)/2 with w_ij = exp(-d2_ij / sigma_i^2) for j in kNN(i),
        explicit zero diagonal; flagged symmetric

  Errors (the same on every rank): nglobal < K + 1, a list with fewer than knn entries,
  the errors of BasisGraphSigma, isolated points (degree 0).
*/
PetscErrorCode BasisGraphAssemble(MPI_Comm comm, const BasisGraphParams *p, const BasisKnn *knn,
                                  PetscInt rstart, PetscInt nglobal, Mat *W)
{
  PetscReal   *sigma;
  AssembleWork w;

  PetscFunctionBeginUser;
  *W = NULL;
  PetscCall(CheckLists(comm, p, knn, nglobal));
  PetscCall(PetscMalloc1(knn->nq, &sigma));
  PetscCall(AssembleWorkCreate(comm, knn->nq, p->knn, &w));
  PetscCall(BasisGraphSigma(comm, p, knn, sigma));
  PetscCall(AssembleW(comm, p, knn, rstart, nglobal, "point", sigma, &w, W));
  PetscCall(AssembleWorkDestroy(&w));
  PetscCall(PetscFree(sigma));
  PetscFunctionReturn(0);
}

struct _p_BasisBatchGraph {
  BasisGraphParams p;
  PetscInt         m, D;
  BasisKnn         knn;      /* the batch's lists; keeps BasisKnnSelf's workspace */
  PetscReal       *sigma;    /* [m] */
  PetscReal       *sorted;   /* [m] median workspace */
  BasisEigensolver es;       /* prefix batch_, kept across steps */
  PetscBool        krylov;   /* sparse SLEPc route instead of the dense arrays below */
  PetscReal       *A;        /* dense: [m][m] W, then the Laplacian (destroyed by the solve) */
  PetscReal       *dinv;     /* dense: [m] D^-1/2 (sym, rw) or D (unnormalized) */
  Mat              W;        /* Krylov: the sparse W, refilled every step */
  AssembleWork     work;     /* Krylov: AssembleW's workspace */
  PetscReal       *residual; /* Krylov: [K] */
};

/*
  BasisBatchGraphCreate - workspace and eigensolver for embedding batches of m points of
  dimension D.

  Not collective (PETSC_COMM_SELF). All memory and objects are made here or at the first
  BasisBatchGraphEmbed and reused by every later one. Reads the -batch_eps_* options once.

  Errors: m < K + 1 (DESIGN.md: a graph needs at least K + 1 points), knn >= m,
  scale_neighbor outside 1..knn.
*/
PetscErrorCode BasisBatchGraphCreate(const BasisGraphParams *p, PetscInt m, PetscInt D, BasisBatchGraph *bg)
{
  BasisBatchGraph b;
  PetscInt        K = p->K;

  PetscFunctionBeginUser;
  *bg = NULL;
  PetscCheck(K >= 1, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "-dim %d must be at least 1", (int)K);
  PetscCheck(m >= K + 1, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE,
             "a graph of %d points cannot have K+1 = %d points, as -dim %d needs; raise -batch or lower -dim",
             (int)m, (int)(K + 1), (int)K);
  PetscCheck(p->knn >= 1 && p->knn < m, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE,
             "-knn %d must be between 1 and the number of points in the graph minus one (%d)", (int)p->knn,
             (int)(m - 1));
  PetscCheck(p->scale_neighbor >= 1 && p->scale_neighbor <= p->knn, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE,
             "-scale_neighbor %d must be between 1 and -knn %d", (int)p->scale_neighbor, (int)p->knn);
  PetscCheck(D >= 1, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "dimension D = %d must be at least 1",
             (int)D);
  PetscCall(PetscNew(&b));
  b->p = *p;
  b->m = m;
  b->D = D;
  PetscCall(BasisKnnCreate(m, p->knn, &b->knn));
  PetscCall(BasisKnnSetGemm(&b->knn, p->knn_gemm, NULL));
  PetscCall(PetscMalloc2(m, &b->sigma, m, &b->sorted));
  b->krylov = (PetscBool)(p->batch_solver == BASIS_BATCH_KRYLOV ||
                          (p->batch_solver == BASIS_BATCH_AUTO && m > BASIS_BATCH_DENSE_MAX));
  if (b->krylov) { /* no dense arrays: an m x m matrix is what this route avoids */
    /* The batch solve's tolerance, 1e-5 instead of SLEPc's 1e-8: a batch's eigenvectors
       are training targets whose batch-to-batch noise is orders larger. On MNIST-10k,
       1000 steps gave d_G 0.2396 (1e-5) against 0.2398 (1e-8) for fewer Krylov
       iterations (docs/performance.md). -batch_eps_tol still wins. */
    b->p.eps_tol = 1e-5;
    /* The subspace: K + 15 vectors, SLEPc's own choice up to K = 15, instead of its 2 K
       above (training solves K + -align_extra = 30 pairs): the products per solve stay and
       the orthogonalisation and restarts cost less; at m = 1024, D = 784 the eigensolve
       took 7.3 / 8.1 ms (min / median) against 8.7 / 9.2 with 2 K (bench/batch_probe,
       docs/performance.md "The non-network part of a step, again"). */
    b->p.eps_ncv = PetscMin(K + 15, m);
    PetscCall(AssembleWorkCreate(PETSC_COMM_SELF, m, p->knn, &b->work));
    PetscCall(PetscMalloc1(K, &b->residual));
  } else
    PetscCall(PetscMalloc2((size_t)m * m, &b->A, m, &b->dinv));
  PetscCall(BasisEigensolverCreate(PETSC_COMM_SELF, "batch_", &b->es));
  PetscCall(BasisEigensolverSetProblem(b->es, &b->p));
  PetscCall(BasisEigensolverSetFromOptions(b->es));
  *bg = b;
  PetscFunctionReturn(0);
}

/* The dense route's Laplacian in bg->A from the lists and sigma: I - D^-1/2 W D^-1/2 (sym,
   rw; bg->dinv = D^-1/2) or D - W (unnormalized; bg->dinv = D). */
static PetscErrorCode DenseLaplacian(BasisBatchGraph bg)
{
  const PetscInt  m = bg->m, k = bg->p.knn;
  const BasisKnn *knn   = &bg->knn;
  PetscReal      *A     = bg->A;
  PetscInt        nzero = 0, first = PETSC_MAX_INT;

  PetscFunctionBeginUser;
  PetscCall(PetscArrayzero(A, (size_t)m * m));
  for (PetscInt i = 0; i < m; i++)
    for (PetscInt t = 0; t < k; t++) {
      PetscInt  j = knn->idx[i * k + t];
      PetscReal h = HalfAffinity(knn->d2[i * k + t], bg->sigma[i]);
      A[(size_t)i * m + j] += h;
      A[(size_t)j * m + i] += h;
    }
  PetscCall(PetscLogFlops(6.0 * m * k));
  for (PetscInt i = 0; i < m; i++) {
    PetscReal deg = 0;
    for (PetscInt j = 0; j < m; j++) deg += A[(size_t)i * m + j];
    if (!(deg > 0)) {
      if (!nzero++) first = i;
      bg->dinv[i] = 0;
    } else
      bg->dinv[i] = bg->p.laplacian == BASIS_LAPLACIAN_UNNORMALIZED ? deg : 1.0 / PetscSqrtReal(deg);
  }
  PetscCall(CheckDegrees(PETSC_COMM_SELF, nzero, first, "batch row"));
  if (bg->p.laplacian == BASIS_LAPLACIAN_UNNORMALIZED) {
    for (size_t ij = 0; ij < (size_t)m * m; ij++) A[ij] = -A[ij];
    for (PetscInt i = 0; i < m; i++) A[(size_t)i * m + i] = bg->dinv[i];
  } else {
    for (PetscInt i = 0; i < m; i++) {
      PetscReal *a = A + (size_t)i * m, di = -bg->dinv[i];
      for (PetscInt j = 0; j < m; j++) a[j] *= di * bg->dinv[j];
      a[i] = 1.0;
    }
  }
  PetscCall(PetscLogFlops(2.0 * m * m));
  PetscFunctionReturn(0);
}

/*
  BasisBatchGraphEmbed - the first K eigenpairs of the graph of one batch (DESIGN.md step 3).

  Not collective.

  Input:
    x - [m][D] the batch, row-major float
  Output:
    phi    - [m][K] row-major: eigenvectors of the K smallest eigenvalues (trivial included),
             unit 2-norm columns, entry of largest magnitude positive
    lambda - [K] the eigenvalues, ascending

  Notes:
    Dense route: the K smallest of the dense Laplacian by LAPACK dsyevr; Krylov route: the
    sparse W, refilled in place, solved by the batch's eigensolver (BasisEigensolverSolve).
    rw: the sym pairs with v = D^-1/2 u, each column renormalised. Errors (never NaN), with
    the same words on both routes: sigma 0 (duplicates), a point of degree 0.
*/
PetscErrorCode BasisBatchGraphEmbed(BasisBatchGraph bg, const float x[], PetscReal phi[], PetscReal lambda[])
{
  PetscFunctionBeginUser;
  PetscCall(PetscLogEventBegin(BASIS_BatchGraph, 0, 0, 0, 0));
  PetscCall(BasisKnnSelf(&bg->knn, bg->D, x));
  PetscCall(SigmaCompute(PETSC_COMM_SELF, &bg->p, &bg->knn, "batch row", bg->sigma, bg->sorted));
  if (bg->krylov)
    PetscCall(
        AssembleW(PETSC_COMM_SELF, &bg->p, &bg->knn, 0, bg->m, "batch row", bg->sigma, &bg->work, &bg->W));
  else
    PetscCall(DenseLaplacian(bg));
  PetscCall(PetscLogEventEnd(BASIS_BatchGraph, 0, 0, 0, 0));
  PetscCall(PetscLogEventBegin(BASIS_BatchEig, 0, 0, 0, 0));
  if (bg->krylov)
    PetscCall(BasisEigensolverSolve(bg->es, bg->W, phi, lambda, bg->residual));
  else
    PetscCall(BasisEigensolverSolveDense(bg->es, bg->m, bg->A, bg->dinv, phi, lambda));
  PetscCall(PetscLogEventEnd(BASIS_BatchEig, 0, 0, 0, 0));
  PetscFunctionReturn(0);
}

/*
  BasisBatchGraphDestroy - free the workspace and the eigensolver. Not collective;
  NULL-tolerant.
*/
PetscErrorCode BasisBatchGraphDestroy(BasisBatchGraph *bg)
{
  BasisBatchGraph b;

  PetscFunctionBeginUser;
  if (!bg || !*bg) PetscFunctionReturn(0);
  b = *bg;
  PetscCall(BasisKnnDestroy(&b->knn));
  PetscCall(PetscFree2(b->sigma, b->sorted));
  PetscCall(BasisEigensolverDestroy(&b->es));
  PetscCall(MatDestroy(&b->W));
  PetscCall(AssembleWorkDestroy(&b->work));
  PetscCall(PetscFree(b->residual));
  PetscCall(PetscFree2(b->A, b->dinv));
  PetscCall(PetscFree(*bg));
  PetscFunctionReturn(0);
}
