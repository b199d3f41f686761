/*
  eigensolver.h - the first K eigenpairs of a graph Laplacian (DESIGN.md "The algorithm":
  the K smallest eigenvalues, the trivial one included; sign convention: the entry of largest
  magnitude is positive). One object serves the batch graph of every training step (prefix
  batch_), the reference graph (ref_) and the exact baseline (exact_).

  Lifecycle (PETSc style):
    BasisEigensolverCreate(comm, prefix, &es);
    BasisEigensolverSetProblem(es, p);    Laplacian, K, code default tolerance
    BasisEigensolverSetFromOptions(es);                      -<prefix>eps_*, once
    BasisEigensolverSolve(es, W, ...) or BasisEigensolverSolveDense(es, m, L, ...), repeatedly
    BasisEigensolverDestroy(&es);
  The EPS, the operator matrices, vectors and dense workspace are kept across solves of one
  size; every solve gives the result a fresh object would.
*/
#pragma once
#include <basis/graph.h>

typedef struct _p_BasisEigensolver *BasisEigensolver;

/* Longest options prefix (e.g. "batch_"), terminating zero included. */
#define BASIS_EIGENSOLVER_PREFIX_LEN 64

PetscErrorCode BasisEigensolverCreate(MPI_Comm comm, const char prefix[], BasisEigensolver *es);
PetscErrorCode BasisEigensolverCheckOptions(MPI_Comm, const char prefix[], PetscInt nev, PetscInt n,
                                            const char pairs[]);
PetscErrorCode BasisEigensolverSetProblem(BasisEigensolver es, const BasisGraphParams *p);
PetscErrorCode BasisEigensolverSetFromOptions(BasisEigensolver es);
PetscErrorCode BasisEigensolverSolve(BasisEigensolver es, Mat W, PetscReal phi[], PetscReal lambda[],
                                     PetscReal residual[]);
PetscErrorCode BasisEigensolverSolveDense(BasisEigensolver es, PetscInt m, PetscReal L[], const PetscReal d[],
                                          PetscReal phi[], PetscReal lambda[]);
PetscErrorCode BasisEigensolverDestroy(BasisEigensolver *es);
