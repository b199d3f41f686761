/*
  model.h - the model/checkpoint file (DESIGN.md "Files"): network shapes and weights,
  Adam state, step, every rank's RNG state, anchors and their features, Phi_ref and its
  eigenvalues, graph/alignment parameters, input normalisation and per-step alignment
  diagnostics, the landmarks (reference rows, their features and the reference's vectors
  there) -- enough to resume training exactly and to embed new data without the training
  set.
*/
#pragma once
#include <basis/graph.h>
#include <basis/align.h>
#include <basis/rng.h>
#include <basis/sample.h>
#include <basis/mlp.h>
#include <hdf5.h>

/* Bump when the layout changes. 2: every scalar its own named attribute (model.c lists
   them); readers also read format 1 (two positional attributes) and refuse others. */
#define BASIS_MODEL_FORMAT 2
#define BASIS_MAX_LAYERS   16

/* What embed's columns 1..K-1 extend from the landmarks (embed -landmark_values): the
   reference's eigenvectors there (/reference/landmark_phi, the default where the model keeps
   them) or the network's outputs there. A stored orthonormalisation records which. */
typedef enum { BASIS_LANDMARK_VALUES_REFERENCE, BASIS_LANDMARK_VALUES_NETWORK } BasisLandmarkValuesType;
extern const char *const BasisLandmarkValuesTypes[];

/* What a model is: chosen when training starts (options and the data's shape) and adopted
   whole by -resume, which continues the same run. */
typedef struct {
  PetscInt         nlayers;                      /* weight layers */
  PetscInt         widths[BASIS_MAX_LAYERS + 1]; /* D, hidden..., K */
  PetscInt         N, D;                         /* the training data's shape */
  BasisGraphParams graph;                        /* the graph rule's parameters (-knn, -dim, ...) */
  BasisAlignParams align;                        /* -align and its RANSAC parameters */
  BasisSampleType  sample;                       /* -sample */
  PetscInt         l, m, R, seed;                /* -anchors, -batch, -reference_size, -seed */
  PetscInt         L;        /* -landmarks: reference rows kept for embed's columns (0: none) */
  PetscReal        lr;       /* Adam learning rate at step 1 */
  PetscReal        lr_final; /* ... decayed along a half cosine to this at the last step (= lr: constant) */
} BasisModelSpec;

typedef struct {
  BasisModelSpec spec;
  /* network weights */
  PetscCount nparams;
  float     *params, *adam_m, *adam_v; /* [nparams] each */
  /* input normalisation: the network sees (x - mean) / scale */
  float    *mean; /* [D] */
  PetscReal scale;
  PetscReal target_scale; /* the embedding's units: aligned eigenvectors * target_scale */
  /* the network learns standardised targets; the embedding is its output * out_scale +
     out_shift (column by column; 0 and 1 in files written before this existed) */
  PetscReal *out_shift, *out_scale; /* [K] each */
  /* the reference */
  PetscInt  *anchors;          /* [l] global row indices */
  float     *anchor_x;         /* [l][D] raw anchor features */
  PetscReal *phi_ref;          /* [l][K] */
  PetscReal *lambda_ref;       /* [K] */
  float     *landmark_x;       /* [spec.L][D] raw features of the landmarks (landmark.h); NULL when L = 0 */
  PetscReal *landmark_phi;     /* [spec.L][K] the reference's eigenvectors at the landmarks, */
  PetscBool  has_landmark_phi; /*   absent from files written before they were kept */
  /* training state */
  PetscInt   step, steps; /* steps done, steps planned (-steps may extend a resumed run) */
  PetscInt   nranks;
  uint64_t  *rng;     /* [nranks][4] batch stream state of each rank */
  PetscReal *history; /* [steps][BASIS_HISTORY_FIELDS] mean over ranks per step */
  /* how the network's products ran in training (-mlp_precision, resolved: float or bf16;
     a resumed run records its last part's), for the record: embed has its own option */
  BasisMLPPrecision mlp_precision;
  /* optional global orthonormalisation of the output, y <- y R^-1 */
  PetscReal *ortho_R;               /* [K][K] upper triangular, row-major; NULL when not computed */
  PetscBool  ortho_landmarks;       /* R was computed with column 0 from the landmarks (embed -trivial) */
  PetscReal  ortho_landmark_weight; /*   and with this embed -landmark_weight (0: the network's columns) */
  BasisLandmarkValuesType ortho_landmark_values; /*   and -landmark_values (network in older files) */
} BasisModel;

/* Per-step diagnostics kept in history: loss, alignment residual, condition number,
   inliers (RANSAC; l for least squares). */
#define BASIS_HISTORY_FIELDS 4

PetscErrorCode BasisModelAllocate(BasisModel *model);
PetscErrorCode BasisModelFree(BasisModel *model);
PetscErrorCode BasisModelWrite(MPI_Comm comm, const char *path, PetscBool force, const char *const inputs[],
                               const BasisModel *model);
PetscErrorCode BasisModelRead(MPI_Comm comm, const char *path, BasisModel *model);
PetscErrorCode BasisModelWriteAttributes(hid_t obj, const BasisModel *model);
PetscErrorCode BasisModelView(const BasisModel *model, MPI_Comm comm);
PetscErrorCode BasisShardMoments(MPI_Comm, const BasisShard *, float mean[], PetscReal *scale);
PetscErrorCode BasisModelSetNormalisation(MPI_Comm, const BasisShard *, const char *input, BasisModel *);
void           BasisModelNormaliseInput(const BasisModel *model, PetscInt n, const float x[], float xn[]);
void           BasisModelOutput(const BasisModel *model, PetscInt n, float y[]);
