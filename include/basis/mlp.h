/*
  mlp.h - the network f: R^D -> R^K, a ReLU multilayer perceptron in float32 with all
  parameters in one flat buffer (so one MPI_Allreduce moves the whole gradient), forward
  and backward on BLAS GEMM, mean-squared-error loss and Adam.
*/
#pragma once
#include <basis/error.h>
#include <basis/rng.h>

typedef struct _p_BasisMLP *BasisMLP;

PetscErrorCode BasisMLPCreate(PetscInt nlayers, const PetscInt widths[], PetscInt max_batch, BasisMLP *mlp);
PetscErrorCode BasisMLPDestroy(BasisMLP *mlp);
PetscErrorCode BasisMLPInitialize(BasisMLP mlp, BasisRng *rng);
PetscErrorCode BasisMLPGetSizes(BasisMLP mlp, PetscInt *nlayers, const PetscInt **widths,
                                PetscCount *nparams);
PetscErrorCode BasisMLPGetArrays(BasisMLP mlp, float **params, float **grad, float **adam_m, float **adam_v);
PetscErrorCode BasisMLPForward(BasisMLP mlp, PetscInt n, const float x[], float y[]);
PetscErrorCode BasisMLPLossBackward(BasisMLP mlp, PetscInt n, const float x[], const float target[],
                                    float *loss);
PetscErrorCode BasisMLPAdamStep(BasisMLP mlp, PetscReal lr, PetscInt step);
