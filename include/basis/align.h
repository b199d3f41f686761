/*
  align.h - the affine alignment of a batch's eigenvectors to the reference (DESIGN.md
  step 4): T (K x (Kb+1)) = argmin_T sum_{anchors} ||phi_ref_i - T [phi_b_i, 1]||^2, by
  least squares (-align lsq) or RANSAC then least squares on the inliers (-align ransac),
  phi_b holding Kb = K + -align_extra batch eigenvectors.
*/
#pragma once
#include <basis/error.h>
#include <basis/rng.h>

typedef enum { BASIS_ALIGN_LSQ, BASIS_ALIGN_RANSAC } BasisAlignType;
extern const char *const BasisAlignTypes[];

typedef struct {
  BasisAlignType type;          /* -align */
  PetscInt       ransac_iters;  /* -ransac_iters 100 */
  PetscInt       ransac_points; /* -ransac_points 20 */
  PetscReal      ransac_tol;    /* -ransac_tol 0.1: inlier if ||residual_i|| < tol */
  PetscReal      max_cond;      /* -align_max_cond: refuse fits whose design matrix is worse */
  PetscInt       extra;         /* -align_extra: batch eigenvectors beyond K in the fit, or
                                   BASIS_ALIGN_EXTRA_AUTO until BasisAlignResolveExtra */
} BasisAlignParams;

/* -align_extra's default: as many as the anchors determine well, up to 20 (align.c) */
#define BASIS_ALIGN_EXTRA_AUTO (-1)

typedef struct {
  PetscReal residual;        /* RMS over the anchors of ||phi_ref_i - T [phi_b_i, 1]|| */
  PetscReal cond;            /* 2-norm condition number of the design matrix [phi_b_anchors, 1] */
  PetscInt  inliers;         /* anchors used in the final fit (l for lsq) */
  PetscBool ransac_fallback; /* RANSAC kept fewer than K+1 inliers and fit on all anchors */
} BasisAlignStats;

void           BasisAlignParamsDefault(BasisAlignParams *p);
PetscErrorCode BasisAlignParamsSetFromOptions(MPI_Comm          comm,
                                              BasisAlignParams *p); /* inside PetscOptionsBegin/End */
PetscErrorCode BasisAlignResolveExtra(MPI_Comm comm, BasisAlignParams *p, PetscInt l, PetscInt m, PetscInt K);
PetscErrorCode BasisAlignFit(const BasisAlignParams *p, PetscInt l, PetscInt K, PetscInt Kb,
                             const PetscReal phi_ref[], const PetscReal phi_b[], BasisRng *rng, PetscReal T[],
                             BasisAlignStats *stats);
PetscErrorCode BasisAlignApply(PetscInt m, PetscInt K, PetscInt Kb, const PetscReal T[],
                               const PetscReal phi[], float y[]);
