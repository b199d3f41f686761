/*
  knn.h - exact k-nearest-neighbour lists (DESIGN.md "The algorithm": the k nearest
  neighbours of each point, Euclidean, self excluded), the first step of the one graph rule
  (graph.h). The lists equal those of a double-precision brute-force search, ties broken by
  the smaller global index, whatever the order in which blocks of points are merged.
  BasisKnnUpdate searches the coordinates as given: a caller whose data may be far from
  unit scale (1e30, 1e-30) scales them first (BasisKnnScaleExponent, as exact.c and ref.c do).
*/
#pragma once
#include <basis/bf16gram.h>
#include <basis/error.h>

/* Precision of BasisKnnSelf's Gram products (-knn_gemm): float, bfloat16 (inputs rounded to
   bfloat16, products summed in float, through oneDNN), or auto (bfloat16 where the CPU has
   bfloat16 dot-product instructions, float elsewhere). The lists are exact in every case. */
typedef enum { BASIS_KNN_GEMM_AUTO, BASIS_KNN_GEMM_FLOAT, BASIS_KNN_GEMM_BF16 } BasisKnnGemmType;
extern const char *const BasisKnnGemmTypes[];

/* Running k-nearest-neighbour lists of nq query points, filled block by block. */
typedef struct {
  PetscInt         nq, k;
  PetscInt        *idx;    /* [nq][k] global indices of neighbours, nearest first; -1 = empty */
  PetscReal       *d2;     /* [nq][k] squared distances, ascending; PETSC_MAX_REAL = empty */
  float           *fwork;  /* scratch of the merge: filter norms and seed minima of a tile row, thresholds */
  PetscInt        *iwork;  /* scratch of the merge: where the seed minima are, the chosen seeds */
  unsigned char   *mark;   /* scratch of the merge: the float filter's verdict per column of a tile row */
  PetscReal       *xn;     /* BasisKnnSelf's workspace, allocated by its first call: [nq] squared norms, */
  float           *pf;     /*   [nq] their float filter values, */
  float           *gram;   /*   one block of the Gram matrix, */
  float           *scaled; /*  [nscaled] and the copy 2^e x of its points (see BasisKnnScaleExponent) */
  size_t           nscaled;
  BasisKnnGemmType gemm;   /* BasisKnnSelf's Gram products: float or bf16 (BasisKnnSetGemm) */
  BasisBf16Gram    bf16;   /*   and their oneDNN object when bf16 */
  PetscLogDouble   nexact; /* exact distances computed by the last BasisKnnSelf (candidates) */
} BasisKnn;

/* Empty lists (idx -1, d2 PETSC_MAX_REAL) for nq query points, k per point. Not collective. */
PetscErrorCode BasisKnnCreate(PetscInt nq, PetscInt k, BasisKnn *knn);
/* The precision of BasisKnnSelf's Gram products: float (the default of BasisKnnCreate), bf16
   (wherever oneDNN runs a bfloat16 matmul, else float), auto (bf16 where the CPU has
   bfloat16 dot products). used (may be NULL): float or bf16, what BasisKnnSelf will use. */
PetscErrorCode BasisKnnSetGemm(BasisKnn *knn, BasisKnnGemmType type, BasisKnnGemmType *used);
/* Merge the candidate points p [np][D] (global indices pstart ..) into the lists of the
   queries q [nq][D] (global indices qstart ..). Not collective. */
PetscErrorCode BasisKnnUpdate(BasisKnn *knn, PetscInt D, const float q[], PetscInt qstart, PetscInt np,
                              const float p[], PetscInt pstart);
/* The lists of the nq points x [nq][D] among themselves, from empty lists, searched on a
   copy scaled by a power of two (the lists do not depend on the units of x). Not collective. */
PetscErrorCode BasisKnnSelf(BasisKnn *knn, PetscInt D, const float x[]);
/* Units: 2^e brings a point set's largest |value| into [1, 2) (collective, agreed over comm);
   y = 2^e x; the lists' squared distances back to the units of x. Scaling by a power of
   two is exact, so the lists of X and c X agree for any c whose c X is a normal float. */
PetscErrorCode BasisKnnScaleExponent(MPI_Comm comm, size_t n, const float x[], int *e);
void           BasisKnnScaleCopy(size_t n, const float x[], int e, float y[]);
void           BasisKnnUnscale(BasisKnn *knn, int e);
/* The lists' exact squared distance of two points (double, summed in a fixed order that
   depends on D only): the value a list holds for the pair. Not collective. */
PetscReal BasisKnnDistance2(PetscInt D, const float a[], const float b[]);
/* nrm [n] = the squared norms of x [n][D] in double, as the lists' candidate bounds use
   them (summed in vector lanes: within D 2^-53 relative). Not collective. */
void BasisKnnSquaredNorms(PetscInt n, PetscInt D, const float x[], PetscReal nrm[]);
/* Free the lists and workspace. Not collective; safe on a zeroed or destroyed struct. */
PetscErrorCode BasisKnnDestroy(BasisKnn *knn);
