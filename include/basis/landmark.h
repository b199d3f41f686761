/*
  landmark.h - the trivial eigenvector of -laplacian sym, D^1/2 1, from each point's
  degree among a model's landmarks (a uniform subset of its reference set) instead of the
  network's output, and the other columns blended with the extension of values at the
  landmarks (the reference's eigenvectors there, or the network's outputs); src/landmark.c
  has the estimators and why.

    BasisLandmarksCreateFromModel(&model, &lm, &fit, &why); a model's, fitted on its anchors; or:
    BasisLandmarksCreate(&graph, m, L, D, landmarks, &lm);  normalised rows, as the network sees them
    BasisLandmarksFit(lm, l, anchors, phi0, &fit);          column 0 = alpha sqrt(degree) + beta
    BasisLandmarksSetValues(lm, K, f, w, &rmin);            the values f [L][K] at the landmarks
    BasisLandmarksColumn(lm, &fit, n, x, K, y);             y[i][0] for rows x [n][D]; with w > 0 also
                                                            y[i][c] = (1 - w) y[i][c] + w extension
    BasisLandmarksDestroy(&lm);
*/
#pragma once
#include <basis/graph.h>
#include <basis/model.h>

typedef struct _p_BasisLandmarks *BasisLandmarks;

/* The map from a degree to the embedding's column 0, fitted on the anchors. */
typedef struct {
  PetscReal alpha, beta; /* column 0 = alpha sqrt(degree) + beta */
  PetscReal r;           /* correlation of sqrt(degree) and the reference column at the anchors */
} BasisLandmarksFitResult;

PetscErrorCode BasisLandmarksCreate(const BasisGraphParams *graph, PetscInt m, PetscInt L, PetscInt D,
                                    const float x[], BasisLandmarks *lm);
PetscErrorCode BasisLandmarksGetSize(BasisLandmarks lm, PetscInt *L, PetscInt *knn);
PetscErrorCode BasisLandmarksSetGemm(BasisLandmarks lm, BasisKnnGemmType type, BasisKnnGemmType *used);
PetscErrorCode BasisLandmarksDegree(BasisLandmarks lm, PetscInt n, const float x[], PetscReal degree[]);
PetscErrorCode BasisLandmarksFit(BasisLandmarks lm, PetscInt n, const float x[], const PetscReal y[],
                                 BasisLandmarksFitResult *fit);
PetscErrorCode BasisLandmarksSetValues(BasisLandmarks lm, PetscInt K, const PetscReal f[], PetscReal weight,
                                       PetscReal *rmin);
PetscErrorCode BasisLandmarksExtend(BasisLandmarks lm, PetscInt n, const float x[], PetscReal ext[]);
PetscErrorCode BasisLandmarksColumn(BasisLandmarks lm, const BasisLandmarksFitResult *fit, PetscInt n,
                                    const float x[], PetscInt K, float y[]);
PetscErrorCode BasisLandmarksDestroy(BasisLandmarks *lm);
/* A model's landmarks set up and fitted on its anchors, or NULL and why not (for messages). */
PetscErrorCode BasisLandmarksCreateFromModel(const BasisModel *model, BasisLandmarks *lm,
                                             BasisLandmarksFitResult *fit, const char **why);
