/*
  embed.h - the embedder (DESIGN.md step 6): a trained model applied to rows of data,
  x [n][D] -> y [n][K], and `basis embed`, its thin driver over a data file.

  Lifecycle (PETSc style):
    BasisEmbedderCreate(comm, &e);
    BasisEmbedderSetModel(e, &model, "model.h5");   (borrowed; BasisModelRead)
    BasisEmbedderSetFromOptions(e);          -chunk, -orthonormalize, -mlp_precision, -trivial,
                                             -landmark_weight, -landmark_values, -knn_gemm
    BasisEmbedderSetUp(e);
    BasisEmbedderApply(e, n, x, y);          any n, in chunks of -chunk rows
    BasisEmbedderDestroy(&e);
*/
#pragma once
#include <basis/model.h>

/* -orthonormalize: none; compute (R from this run's output over all ranks, y <- y R^-1);
   stored (the R a previous `compute` stored in the model file). */
typedef enum { BASIS_ORTHO_NONE, BASIS_ORTHO_COMPUTE, BASIS_ORTHO_STORED } BasisOrthoType;
extern const char *const BasisOrthoTypes[];

/* -trivial: where column 0 (the trivial eigenvector D^1/2 1 of -laplacian sym) comes from:
   each point's degree among the model's landmarks (landmark.h; the default wherever the
   model has them) or the network's output. */
typedef enum { BASIS_TRIVIAL_LANDMARKS, BASIS_TRIVIAL_NETWORK } BasisTrivialType;
extern const char *const BasisTrivialTypes[];

typedef struct _p_BasisEmbedder *BasisEmbedder;

PetscErrorCode BasisEmbedderCreate(MPI_Comm comm, BasisEmbedder *e);
PetscErrorCode BasisEmbedderSetModel(BasisEmbedder e, const BasisModel *model, const char *name);
PetscErrorCode BasisEmbedderSetFromOptions(BasisEmbedder e);
PetscErrorCode BasisEmbedderSetUp(BasisEmbedder e);
PetscErrorCode BasisEmbedderView(BasisEmbedder e);
PetscErrorCode BasisEmbedderUsesLandmarks(BasisEmbedder e, PetscBool *col0, PetscReal *weight,
                                          BasisLandmarkValuesType *values);
PetscErrorCode BasisEmbedderGetSizes(BasisEmbedder e, PetscInt *D, PetscInt *K, PetscInt *chunk);
PetscErrorCode BasisEmbedderGetOrthoType(BasisEmbedder e, BasisOrthoType *ortho);
PetscErrorCode BasisEmbedderApply(BasisEmbedder e, PetscInt n, const float x[], float y[]);
PetscErrorCode BasisEmbedderOrthonormalize(BasisEmbedder e, PetscInt n, float y[]);
PetscErrorCode BasisEmbedderGetOrthonormalization(BasisEmbedder e, const PetscReal **R);
PetscErrorCode BasisEmbedderDestroy(BasisEmbedder *e);

PetscErrorCode BasisEmbedMain(MPI_Comm comm);
