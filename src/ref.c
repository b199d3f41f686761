/*
  ref.c - anchors and the reference eigenspace (DESIGN.md "The algorithm", steps 1-2).

  The reference set is R points drawn uniformly without replacement from the whole data
  set with the run's seed; the l anchors are a uniform subset of it (so -reference_size l
  means anchors only, and any R >= l keeps the anchors uniform over the data). Every rank
  draws the same indices, so no communication is needed to agree on them; the rows are
  then gathered from their owners with one MPI_Allgatherv (indices are sorted, shards are
  contiguous and ordered by rank, so concatenation is sorted order).

  The reference graph uses the density-matched rule of DESIGN.md "Metrics": a graph on R
  points resolves the same scale as the batches of m points with k_R = round(k R / m) and
  the scale neighbour likewise. Each rank builds the kNN lists of its block of reference
  rows (all R rows are on every rank: R x D is small next to a shard), the rows are
  assembled into a distributed PETSc matrix and SLEPc solves for the K wanted pairs with
  options prefix -ref_ (-ref_eps_type scalapack for the dense ScaLAPACK route).
  Collective on comm.
*/
#include <basis/ref.h>
#include <basis/eigensolver.h>
#include <basis/log.h>
#include <basis/rng.h>

/*
  BasisReferenceSample - the reference rows, which of them are anchors and which landmarks
  (src/landmark.c; each a uniform subset of the reference rows, from its own stream, so
  the anchors do not depend on L).

  Not collective (identical on every rank for the same arguments).
  Output: ref_idx [R] sorted global rows; pos [l + L]: the anchors' sorted positions in
  ref_idx, then the landmarks'.
*/
PetscErrorCode BasisReferenceSample(PetscInt N, PetscInt R, PetscInt l, PetscInt L, PetscInt seed,
                                    PetscInt ref_idx[], PetscInt pos[])
{
  BasisRng rng;

  PetscFunctionBeginUser;
  BasisRngSeed(&rng, (uint64_t)seed, BASIS_STREAM_REFERENCE);
  PetscCall(BasisRngSample(&rng, N, R, ref_idx));
  BasisRngSeed(&rng, (uint64_t)seed, BASIS_STREAM_ANCHORS);
  PetscCall(BasisRngSample(&rng, R, l, pos));
  if (L > 0) {
    BasisRngSeed(&rng, (uint64_t)seed, BASIS_STREAM_LANDMARKS);
    PetscCall(BasisRngSample(&rng, R, L, pos + l));
  }
  PetscFunctionReturn(0);
}

/*
  BasisShardGatherRows - every rank receives rows idx[] (sorted, global) of the data set.

  Collective on comm. Output: rows [nidx][D].
*/
PetscErrorCode BasisShardGatherRows(MPI_Comm comm, const BasisShard *shard, PetscInt nidx,
                                    const PetscInt idx[], float rows[])
{
  PetscMPIInt size;
  PetscInt    lo = 0, hi;
  int        *counts, *displs, mine;
  float      *send;

  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_size(comm, &size));
  while (lo < nidx && idx[lo] < shard->rstart) lo++;
  hi = lo;
  while (hi < nidx && idx[hi] < shard->rstart + shard->n) hi++;
  mine = (int)((hi - lo) * shard->D);
  PetscCall(PetscMalloc3(size, &counts, size, &displs, (size_t)PetscMax(mine, 1), &send));
  for (PetscInt i = lo; i < hi; i++)
    PetscCall(PetscArraycpy(send + (i - lo) * shard->D,
                            shard->x + (size_t)(idx[i] - shard->rstart) * shard->D, shard->D));
  PetscCallMPI(MPI_Allgather(&mine, 1, MPI_INT, counts, 1, MPI_INT, comm));
  displs[0] = 0;
  for (int r = 1; r < size; r++) displs[r] = displs[r - 1] + counts[r - 1];
  PetscCheck(displs[size - 1] + counts[size - 1] == nidx * shard->D, comm, PETSC_ERR_PLIB,
             "gathered rows do not add up");
  PetscCallMPI(MPI_Allgatherv(send, mine, MPI_FLOAT, rows, counts, displs, MPI_FLOAT, comm));
  PetscCall(PetscFree3(counts, displs, send));
  PetscFunctionReturn(0);
}

/*
  BasisReferenceSolve - the reference eigenspace, restricted to some of its rows.

  Collective on comm.
  Input:  graph - the batch graph rule (k and scale neighbour for batches of m points)
          ref_x [R][D] - all reference rows (same on every rank)
          l, anchor_pos [l] - the rows wanted (train: the anchors, then the landmarks)
  Output: phi_ref [l][K] - reference eigenvectors at those rows, on every rank
          lambda [K]     - reference eigenvalues, ascending
  Options: -ref_eps_* (prefix ref_), e.g. -ref_eps_type scalapack, -ref_eps_view
*/
PetscErrorCode BasisReferenceSolve(MPI_Comm comm, const BasisGraphParams *graph, PetscInt m, PetscInt R,
                                   PetscInt D, const float ref_x[], PetscInt l, const PetscInt anchor_pos[],
                                   PetscReal phi_ref[], PetscReal lambda[])
{
  BasisGraphParams rp;
  BasisKnn         knn;
  BasisEigensolver es;
  Mat              W;
  PetscMPIInt      size, rank;
  PetscInt         rstart, n, K = graph->K;
  PetscReal       *phi_local, *phi_all, *residual;
  int             *counts, *displs, e;
  float           *scaled = NULL;
  const float     *xk;

  PetscFunctionBeginUser;
  PetscCall(PetscLogStagePush(BASIS_StageRef));
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  BasisGraphParamsMatched(graph, R, m, &rp);
  PetscCheck(R > rp.knn && R > K, comm, PETSC_ERR_ARG_OUTOFRANGE,
             "the reference graph of %d points needs more than -knn (matched: %d) and -dim %d points; raise "
             "-reference_size",
             (int)R, (int)rp.knn, (int)K);

  PetscCall(PetscLogEventBegin(BASIS_RefGraph, 0, 0, 0, 0));
  BasisBlockRange(R, size, rank, &rstart, &n);
  PetscCall(BasisKnnCreate(n, rp.knn, &knn));
  /* searched at unit scale (knn.h): every rank holds all R rows, so e is the same on all */
  PetscCall(BasisKnnScaleExponent(PETSC_COMM_SELF, (size_t)R * D, ref_x, &e));
  if (e) {
    PetscCall(PetscMalloc1((size_t)R * D, &scaled));
    BasisKnnScaleCopy((size_t)R * D, ref_x, e, scaled);
  }
  xk = scaled ? scaled : ref_x;
  PetscCall(BasisKnnUpdate(&knn, D, xk + (size_t)rstart * D, rstart, R, xk, 0));
  BasisKnnUnscale(&knn, e);
  PetscCall(PetscFree(scaled));
  PetscCall(BasisGraphAssemble(comm, &rp, &knn, rstart, R, &W));
  PetscCall(BasisKnnDestroy(&knn));
  PetscCall(PetscLogEventEnd(BASIS_RefGraph, 0, 0, 0, 0));

  PetscCall(PetscLogEventBegin(BASIS_RefSolve, 0, 0, 0, 0));
  PetscCall(PetscMalloc5((size_t)PetscMax(n, 1) * K, &phi_local, (size_t)R * K, &phi_all, K, &residual, size,
                         &counts, size, &displs));
  PetscCall(BasisEigensolverCreate(comm, "ref_", &es));
  PetscCall(BasisEigensolverSetProblem(es, &rp));
  PetscCall(BasisEigensolverSetFromOptions(es));
  PetscCall(BasisEigensolverSolve(es, W, phi_local, lambda, residual));
  PetscCall(BasisEigensolverDestroy(&es));
  PetscCall(MatDestroy(&W));
  for (int r = 0; r < size; r++) {
    PetscInt st, cnt;
    BasisBlockRange(R, size, r, &st, &cnt);
    counts[r] = (int)(cnt * K), displs[r] = (int)(st * K);
  }
  PetscCallMPI(MPI_Allgatherv(phi_local, (int)(n * K), MPIU_REAL, phi_all, counts, displs, MPIU_REAL, comm));
  for (PetscInt a = 0; a < l; a++) PetscCall(PetscArraycpy(phi_ref + a * K, phi_all + anchor_pos[a] * K, K));
  PetscCall(PetscFree5(phi_local, phi_all, residual, counts, displs));
  PetscCall(PetscLogEventEnd(BASIS_RefSolve, 0, 0, 0, 0));
  PetscCall(PetscLogStagePop());
  PetscFunctionReturn(0);
}
