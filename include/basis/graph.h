/*
  graph.h - the one graph rule of DESIGN.md "The algorithm", shared by the batch graph,
  the reference graph and the exact baseline: kNN (Euclidean, self excluded; knn.h), sigma
  (local: distance to the scale_neighbor-th neighbour; median: one sigma for the set),
  W_ij = exp(-||x_i - x_j||^2 / sigma_i^2) for j in kNN(i), W = (W + W^T)/2, W_ii = 0,
  Laplacian sym | unnormalized | rw, the K eigenvectors of the smallest eigenvalues
  (trivial one included; eigensolver.h), sign: entry of largest magnitude positive.
*/
#pragma once
#include <basis/error.h>
#include <basis/knn.h>
#include <petscmat.h>

typedef enum { BASIS_SCALE_LOCAL, BASIS_SCALE_MEDIAN } BasisScaleType;
typedef enum { BASIS_LAPLACIAN_SYM, BASIS_LAPLACIAN_UNNORMALIZED, BASIS_LAPLACIAN_RW } BasisLaplacianType;
/* How a batch's eigenpairs are computed: dense LAPACK (dsyevr, K pairs of the dense m x m
   matrix), sparse Krylov-Schur (SLEPc on the batch's sparse Laplacian, one rank), or auto
   (dense up to BASIS_BATCH_DENSE_MAX points). */
typedef enum { BASIS_BATCH_AUTO, BASIS_BATCH_DENSE, BASIS_BATCH_KRYLOV } BasisBatchSolverType;
extern const char *const BasisBatchSolverTypes[];
extern const char *const BasisScaleTypes[];
extern const char *const BasisLaplacianTypes[];

/* Plain parameter struct. Defaults: knn 10, scale_neighbor 7, local, sym, K 10, knn_gemm float. */
typedef struct {
  PetscInt             knn;            /* k: neighbours per point (-knn) */
  PetscInt             scale_neighbor; /* sigma_i = distance to this neighbour (-scale_neighbor) */
  BasisScaleType       scale;          /* -scale local|median */
  BasisLaplacianType   laplacian;      /* -laplacian sym|unnormalized|rw */
  PetscInt             K;              /* eigenpairs wanted (-dim) */
  BasisBatchSolverType batch_solver;   /* -batch_solver auto|dense|krylov (batches only) */
  BasisKnnGemmType     knn_gemm;       /* -knn_gemm auto|float|bf16: precision of the batch kNN's
                                          Gram products (same lists); how, not what: not stored */
  PetscReal eps_tol;                   /* code default of the Krylov tolerance, 0: SLEPc's (1e-8);
                                          -<prefix>eps_tol wins. Not stored in models */
  PetscInt eps_ncv;                    /* code default of the Krylov subspace size, 0: SLEPc's
                                          (max(2 K, K + 15)); -<prefix>eps_ncv wins. Not stored */
} BasisGraphParams;

void           BasisGraphParamsDefault(BasisGraphParams *p);
PetscErrorCode BasisGraphParamsSetFromOptions(MPI_Comm          comm,
                                              BasisGraphParams *p); /* inside PetscOptionsBegin/End */
void BasisGraphParamsMatched(const BasisGraphParams *p, PetscInt n, PetscInt m, BasisGraphParams *matched);

PetscErrorCode BasisGraphSigma(MPI_Comm comm, const BasisGraphParams *p, const BasisKnn *knn,
                               PetscReal sigma[]);

/* The batch graph of a training step: one rank, m points. Every array and object (the kNN
   lists, the dense or sparse W, the eigensolver with its EPS) is made at Create or at the
   first Embed and reused by every later Embed; -batch_eps_* options are read once, at
   Create. */
typedef struct _p_BasisBatchGraph *BasisBatchGraph;
PetscErrorCode BasisBatchGraphCreate(const BasisGraphParams *p, PetscInt m, PetscInt D, BasisBatchGraph *bg);
PetscErrorCode BasisBatchGraphEmbed(BasisBatchGraph bg, const float x[], PetscReal phi[], PetscReal lambda[]);
PetscErrorCode BasisBatchGraphDestroy(BasisBatchGraph *bg);

/* Distributed path (reference set, exact baseline): W of this rank's rows; its eigenpairs
   come from a BasisEigensolver (eigensolver.h). */
PetscErrorCode BasisGraphAssemble(MPI_Comm comm, const BasisGraphParams *p, const BasisKnn *knn,
                                  PetscInt rstart, PetscInt nglobal, Mat *W);
