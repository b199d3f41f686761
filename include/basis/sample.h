/*
  sample.h - the batch sampler (DESIGN.md step 3): which m - l rows join the l anchors in
  a training batch, and how they reach the rank that trains on them.
*/
#pragma once
#include <basis/h5io.h>
#include <basis/rng.h>

/* Where each rank draws its batch's m - l new points: from the non-anchor rows of the
   whole data set, fetched from the ranks that hold them (global, the default), or from
   its own shard only (shard, DESIGN.md step 3 as written; no communication). */
typedef enum { BASIS_SAMPLE_GLOBAL, BASIS_SAMPLE_SHARD } BasisSampleType;
extern const char *const BasisSampleTypes[];

typedef struct _p_BasisSampler *BasisSampler;

PetscErrorCode BasisSamplerCheckShards(MPI_Comm, BasisSampleType, const BasisShard *, PetscInt l, PetscInt m);
PetscErrorCode BasisSamplerCreate(MPI_Comm comm, BasisSampleType type, const BasisShard *shard, PetscInt l,
                                  const PetscInt anchors[], PetscInt m, BasisSampler *s);
PetscErrorCode BasisSamplerDraw(BasisSampler s, BasisRng *rng, float x[]);
PetscErrorCode BasisSamplerDestroy(BasisSampler *s);
