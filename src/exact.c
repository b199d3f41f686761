/*
  exact.c - `basis exact`: the first K eigenvectors of the kNN graph of all N points, the
  baseline every embedding is judged against (DESIGN.md "Metrics"; same graph rule as the
  batch and reference graphs, graph.h).

  kNN by a ring exchange: each rank keeps its own block of rows as the queries; the
  blocks travel around the ring of ranks (rank r sends to r + 1, receives from r - 1), and
  each visiting block is merged into the running lists by BasisKnnUpdate, which is exact
  and independent of the block order, so the result equals a single-rank brute-force
  search. The next block is received (nonblocking) while the current one is merged; a rank
  holds its own block plus two travelling buffers (and a copy of its block scaled by a power
  of two when the data's largest |value| is outside [1, 2), so that the graph does not
  depend on the data's units, knn.h), never more: memory O(N D / P), time O(N^2 D / P),
  P - 1 messages of N D / P floats per rank.

  Graph and eigenpairs: BasisGraphAssemble (MATMPIAIJ) and a BasisEigensolver with the
  options prefix -exact_ (-exact_eps_type, -exact_eps_tol, ...), whose default is
  Krylov-Schur on the LARGEST eigenvalues of D^-1/2 W D^-1/2. Measured on
  data/fashion-mnist-test.h5 (N = 10000, D = 784, k = 10, K = 10, 2 ranks, EPSSolve time
  from -log_view, machine shared): krylovschur 0.036-0.059 s (3 runs), arnoldi 0.29-0.75 s,
  gd 0.28-1.1 s, jd 0.68-0.80 s, lanczos (full reorthogonalisation) 0.24 s, lobpcg fails
  (LAPACK sygvd info = 31), scalapack (dense) 1318 s; all converged sets agree with the
  dense solve to d_G < 2e-13. Krylov-Schur stays the default. Its one weakness: a single
  start vector can miss copies of an exactly multiple eigenvalue (a graph with 3 or more
  components, see tests/test_exact.c -test_multiplicity); the kNN graphs of MNIST-10k and
  Fashion-MNIST (10k, 70k) at k = 10 are connected.

  -match_batch m builds the density-matched graph (k N / m neighbours) that a model
  trained on batches of m points approximates. Output /exact/vectors (N x K float64),
  /exact/values (K), /labels copied from the input; written atomically (BasisOutput).
  Collective on comm throughout.
*/
#include <basis/exact.h>
#include <basis/eigensolver.h>
#include <basis/log.h>
#include <basis/options.h>
#include <basis/output.h>

/* Points of a visiting block merged per BasisKnnUpdate call: large enough that the query
   norms recomputed per call cost < 0.1% of the GEMM, small enough to test the pending
   messages and report progress often. */
#define BASIS_EXACT_CHUNK 4096

/* Seconds between progress lines of the kNN phase (rank 0). */
#define BASIS_EXACT_PROGRESS_SECONDS 5.0

/*
  BasisExactKnn - the k nearest neighbours of this rank's points among all N points.

  Collective on comm.

  Input:
    shard - this rank's contiguous rows [rstart, rstart + n) of the N x D point set; the
            ranks' blocks must follow each other in rank order (any sizes, 0 allowed)
    k     - neighbours per point, 1 <= k < N
  Output:
    knn - created here ([n][k] lists, global indices, nearest first, ties to the smaller
          index, self excluded); destroy with BasisKnnDestroy

  Notes:
    Ring exchange of the blocks with the next one received while the current is merged.
    Rank 0 prints progress every BASIS_EXACT_PROGRESS_SECONDS on long runs. Logged as
    BASIS_ExactKnn.
*/
PetscErrorCode BasisExactKnn(MPI_Comm comm, const BasisShard *shard, PetscInt k, BasisKnn *knn)
{
  const PetscInt D = shard->D;
  MPI_Comm       ring;
  MPI_Datatype   row = MPI_DATATYPE_NULL;
  PetscMPIInt    size, rank, next, prev;
  PetscInt      *counts, *starts, maxn = 0, N, done = 0, owner;
  float         *buf[2] = {NULL, NULL}, *scaled = NULL;
  const float   *cur, *own;
  int            e;
  double         t0 = MPI_Wtime(), tlast = t0;

  PetscFunctionBeginUser;
  PetscCall(PetscLogEventBegin(BASIS_ExactKnn, 0, 0, 0, 0));
  /* a private communicator: the ring's messages never match anyone else's */
  PetscCallMPI(MPI_Comm_dup(comm, &ring));
  PetscCallMPI(MPI_Comm_size(ring, &size));
  PetscCallMPI(MPI_Comm_rank(ring, &rank));
  next = (rank + 1) % size;
  prev = (rank + size - 1) % size;
  PetscCall(PetscMalloc2(size, &counts, size + 1, &starts));
  PetscCallMPI(MPI_Allgather(&shard->n, 1, MPIU_INT, counts, 1, MPIU_INT, ring));
  starts[0] = 0;
  for (PetscMPIInt r = 0; r < size; r++) {
    starts[r + 1] = starts[r] + counts[r];
    maxn          = PetscMax(maxn, counts[r]);
  }
  N = starts[size];
  BasisCheckAll(ring, starts[rank] == shard->rstart && N == shard->N, PETSC_ERR_ARG_WRONG,
                "the ranks' blocks of points must be contiguous and in rank order, covering all %d points",
                (int)N);
  PetscCheck(k >= 1 && k < N, comm, PETSC_ERR_ARG_OUTOFRANGE,
             "%d neighbours per point asked, but a set of %d points has at most %d; lower -knn (or raise "
             "-match_batch)",
             (int)k, (int)N, (int)(N - 1));
  PetscCall(BasisKnnCreate(shard->n, k, knn));
  /* searched at unit scale (knn.h), one exponent for all ranks' blocks: a scaled copy of
     this rank's block (only when the data are not in range already) */
  PetscCall(BasisKnnScaleExponent(ring, (size_t)shard->n * D, shard->x, &e));
  if (e) {
    PetscCall(PetscMalloc1((size_t)PetscMax(shard->n, 1) * D, &scaled));
    BasisKnnScaleCopy((size_t)shard->n * D, shard->x, e, scaled);
  }
  own = scaled ? scaled : shard->x;
  if (size > 1) {
    PetscCall(PetscMalloc2((size_t)maxn * D, &buf[0], (size_t)maxn * D, &buf[1]));
    /* one row = one element: counts stay below 2^31 for any N that PetscInt indexes */
    PetscCallMPI(MPI_Type_contiguous((int)D, MPI_FLOAT, &row));
    PetscCallMPI(MPI_Type_commit(&row));
  }

  cur   = own;
  owner = rank;
  for (PetscMPIInt s = 0; s < size; s++) {
    MPI_Request req[2] = {MPI_REQUEST_NULL, MPI_REQUEST_NULL};
    PetscMPIInt from   = (rank + size - s - 1) % size, nrecv, nsend;
    float      *recv   = buf[s % 2];

    if (s < size - 1) {
      PetscCall(PetscMPIIntCast(counts[from], &nrecv));
      PetscCall(PetscMPIIntCast(counts[owner], &nsend));
      PetscCallMPI(MPI_Irecv(recv, nrecv, row, prev, 0, ring, &req[0]));
      PetscCallMPI(MPI_Isend((void *)cur, nsend, row, next, 0, ring, &req[1]));
    }
    for (PetscInt c0 = 0; c0 < counts[owner]; c0 += BASIS_EXACT_CHUNK) {
      PetscInt cnt = PetscMin(BASIS_EXACT_CHUNK, counts[owner] - c0);
      int      flag;

      PetscCall(BasisKnnUpdate(knn, D, own, shard->rstart, cnt, cur + (size_t)c0 * D, starts[owner] + c0));
      /* drive the pending transfer: MPI progresses large messages only inside MPI calls */
      if (s < size - 1) PetscCallMPI(MPI_Testall(2, req, &flag, MPI_STATUSES_IGNORE));
      done += cnt;
      if (rank == 0) {
        double now = MPI_Wtime(), frac = (double)done / (double)N;
        if (now - tlast >= BASIS_EXACT_PROGRESS_SECONDS && done < N) {
          PetscCall(PetscPrintf(PETSC_COMM_SELF, "exact: kNN %5.1f%% (%.0f s elapsed, ~%.0f s left)\n",
                                100.0 * frac, now - t0, (now - t0) * (1.0 - frac) / frac));
          tlast = now;
        }
      }
    }
    PetscCallMPI(MPI_Waitall(2, req, MPI_STATUSES_IGNORE));
    cur   = recv;
    owner = from;
  }

  BasisKnnUnscale(knn, e);
  PetscCall(PetscFree(scaled));
  if (size > 1) {
    PetscCallMPI(MPI_Type_free(&row));
    PetscCall(PetscFree2(buf[0], buf[1]));
  }
  PetscCall(PetscFree2(counts, starts));
  PetscCallMPI(MPI_Comm_free(&ring));
  PetscCall(PetscLogEventEnd(BASIS_ExactKnn, 0, 0, 0, 0));
  PetscFunctionReturn(0);
}

/*
  BasisExactSolveKnn - the first K eigenpairs of the graph built from finished kNN lists.

  Collective on comm.

  Input:
    prefix - options prefix of the eigensolver (BASIS_EXACT_PREFIX for -exact_eps_*)
    shard  - this rank's rows (only rstart, n and N are used)
    p      - graph rule; p->knn <= knn->k (one kNN search can serve several graphs)
    knn    - from BasisExactKnn
  Output:
    phi      - [n][K] row-major, this rank's rows of the eigenvectors
    lambda   - [K] eigenvalues, ascending
    residual - [K] ||L v - lambda v|| of each pair (BasisEigensolverSolve)

  Notes:
    Refuses unconverged or inaccurate pairs (BasisEigensolverSolve). Logged as BASIS_ExactSolve.
*/
PetscErrorCode BasisExactSolveKnn(MPI_Comm comm, const char *prefix, const BasisShard *shard,
                                  const BasisGraphParams *p, const BasisKnn *knn, PetscReal phi[],
                                  PetscReal lambda[], PetscReal residual[])
{
  Mat              W;
  BasisEigensolver es;

  PetscFunctionBeginUser;
  PetscCall(PetscLogEventBegin(BASIS_ExactSolve, 0, 0, 0, 0));
  PetscCall(BasisGraphAssemble(comm, p, knn, shard->rstart, shard->N, &W));
  PetscCall(BasisEigensolverCreate(comm, prefix, &es));
  PetscCall(BasisEigensolverSetProblem(es, p));
  PetscCall(BasisEigensolverSetFromOptions(es));
  PetscCall(BasisEigensolverSolve(es, W, phi, lambda, residual));
  PetscCall(BasisEigensolverDestroy(&es));
  PetscCall(MatDestroy(&W));
  PetscCall(PetscLogEventEnd(BASIS_ExactSolve, 0, 0, 0, 0));
  PetscFunctionReturn(0);
}

/*
  BasisExactCompute - exact eigenvectors of the kNN graph of a distributed point set.

  Collective on comm.

  Input:
    prefix - options prefix of the eigensolver (BASIS_EXACT_PREFIX)
    shard  - this rank's rows (contiguous, rank order), N x D in all
    p      - graph rule (knn, scale_neighbor, scale, laplacian, K); for the density-
             matched graph pass the result of BasisGraphParamsMatched
  Output:
    phi      - [n][K] row-major, this rank's rows
    lambda   - [K] ascending
    residual - [K]
    seconds  - [2] wall time of the kNN and the graph + eigensolve phases (slowest rank);
               may be NULL
*/
PetscErrorCode BasisExactCompute(MPI_Comm comm, const char *prefix, const BasisShard *shard,
                                 const BasisGraphParams *p, PetscReal phi[], PetscReal lambda[],
                                 PetscReal residual[], PetscReal seconds[2])
{
  BasisKnn knn;
  double   t[3];

  PetscFunctionBeginUser;
  t[0] = MPI_Wtime();
  PetscCall(BasisExactKnn(comm, shard, p->knn, &knn));
  t[1] = MPI_Wtime();
  PetscCall(BasisExactSolveKnn(comm, prefix, shard, p, &knn, phi, lambda, residual));
  t[2] = MPI_Wtime();
  PetscCall(BasisKnnDestroy(&knn));
  if (seconds) {
    double dt[2] = {t[1] - t[0], t[2] - t[1]};
    PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, dt, 2, MPI_DOUBLE, MPI_MAX, comm));
    seconds[0] = dt[0];
    seconds[1] = dt[1];
  }
  PetscFunctionReturn(0);
}

/*
  BasisExactMain - `basis exact`.

  Collective on comm.

  Options: -input F -output G -match_batch m -force, the graph rule (-dim -knn
  -scale_neighbor -scale -laplacian) and the eigensolver (-exact_eps_*, -exact_max_residual).
*/
PetscErrorCode BasisExactMain(MPI_Comm comm)
{
  char             input[PETSC_MAX_PATH_LEN] = "", output[PETSC_MAX_PATH_LEN] = "exact.h5";
  PetscBool        force       = PETSC_FALSE, help;
  PetscInt         match_batch = 0, K;
  BasisGraphParams p, q;
  BasisInput       in;
  BasisShard       shard;
  BasisOutput      out;
  PetscReal       *phi, *lambda, *residual, seconds[2];
  hid_t            vset;
  const char      *inputs[2];

  PetscFunctionBeginUser;
  BasisGraphParamsDefault(&p);
  PetscOptionsBegin(comm, NULL, "basis exact: exact eigenvectors of the full kNN graph", NULL);
  PetscCall(
      PetscOptionsString("-input", "Data (HDF5 with /features)", NULL, input, input, sizeof(input), NULL));
  PetscCall(PetscOptionsString("-output", "Output HDF5 file (/exact/vectors, /exact/values)", NULL, output,
                               output, sizeof(output), NULL));
  PetscCall(PetscOptionsInt("-match_batch",
                            "Density-matched graph for batches of m points (k N / m neighbours); 0: same k",
                            NULL, match_batch, &match_batch, NULL));
  PetscCall(PetscOptionsBool("-force", "Overwrite an existing output", NULL, force, &force, NULL));
  PetscCall(BasisGraphParamsSetFromOptions(comm, &p));
  PetscOptionsEnd();
  PetscCall(BasisHelpRequested(&help));
  if (help) {
    PetscCall(PetscPrintf(comm,
                          "  -exact_eps_*: SLEPc eigensolver options (default Krylov-Schur on the largest "
                          "eigenvalues of D^-1/2 W D^-1/2); -exact_max_residual\n"));
    PetscFunctionReturn(0);
  }
  PetscCheck(match_batch >= 0, comm, PETSC_ERR_ARG_OUTOFRANGE,
             "-match_batch %d must be a batch size (> 0) or 0 for the same-k graph", (int)match_batch);
  inputs[0] = input, inputs[1] = NULL;
  PetscCall(BasisOutputCheckPath(comm, output, force, inputs));
  PetscCall(BasisInputOpen(comm, input, &in));
  BasisGraphParamsMatched(&p, in.N, match_batch, &q);
  PetscCheck(q.knn < in.N, comm, PETSC_ERR_ARG_OUTOFRANGE,
             "the graph needs %d neighbours per point but %s has only %d points; lower -knn%s", (int)q.knn,
             input, (int)in.N, match_batch ? " or raise -match_batch" : "");
  PetscCheck(in.N >= q.K + 1, comm, PETSC_ERR_ARG_OUTOFRANGE,
             "%s has %d points, fewer than -dim %d + 1; lower -dim", input, (int)in.N, (int)q.K);
  PetscCall(BasisEigensolverCheckOptions(comm, BASIS_EXACT_PREFIX, q.K, in.N, "-dim"));
  K = q.K;
  if (match_batch)
    PetscCall(PetscPrintf(
        comm,
        "exact: %d points, D = %d, K = %d; density-matched to batches of %d: -knn %d -> %d, "
        "-scale_neighbor %d -> %d, scale %s, laplacian %s\n",
        (int)in.N, (int)in.D, (int)K, (int)match_batch, (int)p.knn, (int)q.knn, (int)p.scale_neighbor,
        (int)q.scale_neighbor, BasisScaleTypes[q.scale], BasisLaplacianTypes[q.laplacian]));
  else
    PetscCall(
        PetscPrintf(comm,
                    "exact: %d points, D = %d, K = %d; same-k graph: knn %d, scale_neighbor %d, scale %s, "
                    "laplacian %s\n",
                    (int)in.N, (int)in.D, (int)K, (int)q.knn, (int)q.scale_neighbor, BasisScaleTypes[q.scale],
                    BasisLaplacianTypes[q.laplacian]));

  PetscCall(BasisInputReadShard(&in, &shard));
  PetscCall(PetscMalloc3((size_t)PetscMax(shard.n, 1) * K, &phi, K, &lambda, K, &residual));
  PetscCall(BasisExactCompute(comm, BASIS_EXACT_PREFIX, &shard, &q, phi, lambda, residual, seconds));
  PetscCall(PetscPrintf(comm, "exact: kNN (k = %d) in %.1f s; graph + eigensolve in %.1f s\n", (int)q.knn,
                        seconds[0], seconds[1]));
  PetscCall(PetscPrintf(comm, "exact:    j   lambda_j        ||L v - lambda v||\n"));
  for (PetscInt j = 0; j < K; j++)
    PetscCall(
        PetscPrintf(comm, "exact: %4d   %-14.8e  %.2e\n", (int)j, (double)lambda[j], (double)residual[j]));

  PetscCall(BasisOutputCreate(comm, output, force, inputs, &out));
  PetscCall(BasisH5CreateMatrix(out.file, "exact/vectors", in.N, K, H5T_IEEE_F64LE, &vset));
  PetscCall(BasisH5WriteRows(comm, vset, shard.rstart, shard.n, K, H5T_NATIVE_DOUBLE, phi));
  {
    PetscMPIInt rank;
    hid_t       eset;

    PetscCallMPI(MPI_Comm_rank(comm, &rank));
    PetscCall(BasisH5CreateMatrix(out.file, "exact/values", K, 0, H5T_IEEE_F64LE, &eset));
    PetscCall(BasisH5WriteRows(comm, eset, 0, rank == 0 ? K : 0, 1, H5T_NATIVE_DOUBLE, lambda));
    BasisCallH5(H5Dclose(eset));
    /* each parameter its own attribute (DESIGN.md "Files"); eval reads them by name: the
       graph's knn, scale_neighbor, scale, laplacian and match_batch; *_option: as given */
    PetscCall(BasisH5AttrWriteInt(vset, "knn", 1, &q.knn));
    PetscCall(BasisH5AttrWriteInt(vset, "scale_neighbor", 1, &q.scale_neighbor));
    PetscCall(BasisH5AttrWriteInt(vset, "match_batch", 1, &match_batch));
    PetscCall(BasisH5AttrWriteInt(vset, "dim", 1, &K));
    PetscCall(BasisH5AttrWriteInt(vset, "knn_option", 1, &p.knn));
    PetscCall(BasisH5AttrWriteInt(vset, "scale_neighbor_option", 1, &p.scale_neighbor));
    PetscCall(BasisH5AttrWriteString(vset, "scale", BasisScaleTypes[q.scale]));
    PetscCall(BasisH5AttrWriteString(vset, "laplacian", BasisLaplacianTypes[q.laplacian]));
    PetscCall(BasisH5AttrWriteString(vset, "input", input));
    PetscCall(BasisH5AttrWriteString(vset, "basis_version", BASIS_VERSION));
    PetscCall(BasisH5AttrWriteDouble(vset, "residuals", K, residual));
  }
  BasisCallH5(H5Dclose(vset));
  PetscCall(BasisInputCopyLabels(&in, out.file)); /* so `basis eval` needs only this file */
  PetscCall(BasisOutputCommit(&out));
  PetscCall(PetscPrintf(comm, "exact: %d x %d eigenvectors written to %s (/exact/vectors, /exact/values)\n",
                        (int)in.N, (int)K, output));
  PetscCall(PetscFree3(phi, lambda, residual));
  PetscCall(BasisShardDestroy(&shard));
  PetscCall(BasisInputClose(&in));
  PetscFunctionReturn(0);
}
