/*
  exact.h - the exact baseline (DESIGN.md "Metrics"): the first K eigenvectors of the kNN
  graph of ALL N points by the one graph rule, with the kNN found by a ring exchange of
  row blocks (`basis exact`), and the evaluation of embeddings against them (`basis eval`).
*/
#pragma once
#include <basis/graph.h>
#include <basis/h5io.h>

/* Options prefix of the exact eigensolver: -exact_eps_type, -exact_eps_tol, ... */
#define BASIS_EXACT_PREFIX "exact_"

PetscErrorCode BasisExactKnn(MPI_Comm comm, const BasisShard *shard, PetscInt k, BasisKnn *knn);
PetscErrorCode BasisExactSolveKnn(MPI_Comm comm, const char *prefix, const BasisShard *shard,
                                  const BasisGraphParams *p, const BasisKnn *knn, PetscReal phi[],
                                  PetscReal lambda[], PetscReal residual[]);
PetscErrorCode BasisExactCompute(MPI_Comm comm, const char *prefix, const BasisShard *shard,
                                 const BasisGraphParams *p, PetscReal phi[], PetscReal lambda[],
                                 PetscReal residual[], PetscReal seconds[2]);
PetscErrorCode BasisExactMain(MPI_Comm comm);
