/*
  rng.h - seeded random streams (xoshiro256**); no rand() anywhere in basis.
*/
#pragma once
#include <petscsys.h>
#include <stdint.h>

/* Plain state: copied into checkpoints as 4 words. */
typedef struct {
  uint64_t s[4];
} BasisRng;

void           BasisRngSeed(BasisRng *rng, uint64_t seed, uint64_t stream);
uint64_t       BasisRngNext(BasisRng *rng);
double         BasisRngUniform(BasisRng *rng);
double         BasisRngNormal(BasisRng *rng);
PetscInt       BasisRngInt(BasisRng *rng, PetscInt n);
PetscErrorCode BasisRngSample(BasisRng *rng, PetscInt n, PetscInt k, PetscInt idx[]);
PetscInt       BasisNthNotIn(PetscInt n, const PetscInt skip[], PetscInt p);

/* Stream numbers: each use of randomness has its own stream of the run's seed, so adding
   a draw in one place never shifts another. */
enum {
  BASIS_STREAM_ANCHORS   = 1,
  BASIS_STREAM_REFERENCE = 2,
  BASIS_STREAM_INIT      = 3,
  BASIS_STREAM_KMEANS    = 4,        /* k-means++ seeding of all restarts, in turn */
  BASIS_STREAM_LANDMARKS = 5,        /* which reference rows are landmarks */
  BASIS_STREAM_BATCH     = 1000,     /* + world rank */
  BASIS_STREAM_GENERATE  = 1u << 20, /* + row index: generate is rank-count independent */
};
