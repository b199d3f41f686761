/*
  bf16gram.h - Gram products -2 X_a X_b^T of a point set in bfloat16 (inputs rounded to
  bfloat16, products accumulated in float) through oneDNN's matmul, for the batch kNN's
  candidate selection (knn.c: the values only select candidates, with a margin that covers
  the bfloat16 rounding; every candidate is recomputed exactly).
*/
#pragma once
#include <basis/error.h>
#include <stdint.h>

/* Wrap a oneDNN call: a status other than dnnl_success is an error naming the call. */
#define BasisCallDnnl(call)                                                                                  \
  do {                                                                                                       \
    dnnl_status_t basis_st_ = (call);                                                                        \
    PetscCheck(basis_st_ == dnnl_success, PETSC_COMM_SELF, PETSC_ERR_LIB,                                    \
               "oneDNN call failed (status %d): %s", (int)basis_st_, #call);                                 \
  } while (0)

typedef struct _p_BasisBf16Gram *BasisBf16Gram;

/* Whether this CPU has bfloat16 dot-product instructions (oneDNN's effective ISA is
   avx512_core_bf16 or AMX); isa: a name for messages. Not collective. */
PetscErrorCode BasisBf16GramNative(PetscBool *native, const char **isa);
/* xb [n] = x [n] rounded to bfloat16 (to nearest, ties to even; results below 2^-126 in
   magnitude flushed to zero): the one rounding rule of every bfloat16 product in basis.
   Not collective. */
void BasisBf16Round(size_t n, const float x[], uint16_t xb[]);
/* A oneDNN engine and stream, or NULL where oneDNN has no bfloat16 matmul on this CPU. Not
   collective. */
PetscErrorCode BasisBf16GramCreate(BasisBf16Gram *g);
/* Round the n points x [n][D] to bfloat16 (to nearest, ties to even, subnormals to 0) and
   keep them; rho bounds their relative rounding error ||x^_i - x_i|| / ||x_i|| (xn [n]: the
   squared norms ||x_i||^2 in double). */
PetscErrorCode BasisBf16GramSetPoints(BasisBf16Gram g, PetscInt n, PetscInt D, const float x[],
                                      const PetscReal xn[], PetscReal *rho);
/* Replace the kept rows i0 .. i0 + n by x [n][D] rounded; rho as above, for these rows. */
PetscErrorCode BasisBf16GramSetRows(BasisBf16Gram g, PetscInt i0, PetscInt n, const float x[],
                                    const PetscReal xn[], PetscReal *rho);
/* G [rows][ldg] = -2 X[i0 .. i0 + rows) X[j0 .. j0 + cols)^T of the kept points, float. */
PetscErrorCode BasisBf16GramProduct(BasisBf16Gram g, PetscInt i0, PetscInt rows, PetscInt j0, PetscInt cols,
                                    float G[], PetscInt ldg);
/* Free everything; NULL-tolerant. */
PetscErrorCode BasisBf16GramDestroy(BasisBf16Gram *g);
