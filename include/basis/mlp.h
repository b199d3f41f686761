/*
  mlp.h - the network f: R^D -> R^K, a ReLU multilayer perceptron in float32 with all
  parameters in one flat buffer (so one MPI_Allreduce moves the whole gradient), forward
  and backward on BLAS GEMM, mean-squared-error loss and Adam. Optionally its GEMMs run in
  bfloat16 through oneDNN (BasisMLPSetPrecision); the parameters stay float32.
*/
#pragma once
#include <basis/error.h>
#include <basis/rng.h>

typedef struct _p_BasisMLP *BasisMLP;

/* -mlp_precision: the network's products in float32 (a new network's; cblas_sgemm), or bf16:
   activations, weights and backward deltas rounded to bfloat16, products summed in float,
   parameters, gradient and Adam moments kept in float32 (oneDNN matmul); auto: bf16 where
   the CPU has bfloat16 dot-product instructions, float elsewhere. BASIS_MLP_FLOAT is 0:
   the value of a model file written before the attribute existed. */
typedef enum { BASIS_MLP_FLOAT, BASIS_MLP_BF16, BASIS_MLP_AUTO } BasisMLPPrecision;
extern const char *const BasisMLPPrecisions[];

PetscErrorCode BasisMLPCreate(PetscInt nlayers, const PetscInt widths[], PetscInt max_batch, BasisMLP *mlp);
PetscErrorCode BasisMLPDestroy(BasisMLP *mlp);
PetscErrorCode BasisMLPPrecisionResolve(MPI_Comm comm, BasisMLPPrecision *precision);
PetscErrorCode BasisMLPSetPrecision(BasisMLP mlp, BasisMLPPrecision precision);
PetscErrorCode BasisMLPGetPrecision(BasisMLP mlp, BasisMLPPrecision *precision);
PetscErrorCode BasisMLPInitialize(BasisMLP mlp, BasisRng *rng);
PetscErrorCode BasisMLPGetSizes(BasisMLP mlp, PetscInt *nlayers, const PetscInt **widths,
                                PetscCount *nparams);
PetscErrorCode BasisMLPGetArrays(BasisMLP mlp, float **params, float **grad, float **adam_m, float **adam_v);
PetscErrorCode BasisMLPForward(BasisMLP mlp, PetscInt n, const float x[], float y[]);
PetscErrorCode BasisMLPLossBackward(BasisMLP mlp, PetscInt n, const float x[], const float target[],
                                    float *loss);
PetscErrorCode BasisMLPAdamStep(BasisMLP mlp, PetscReal lr, PetscInt step);
