/*
  generate.h - synthetic labelled data sets written in parallel (`basis generate`).
*/
#pragma once
#include <basis/error.h>

typedef enum { BASIS_GENERATE_MANIFOLD, BASIS_GENERATE_CIRCLES, BASIS_GENERATE_MOONS } BasisGenerateType;
extern const char *const BasisGenerateTypes[];

typedef struct {
  BasisGenerateType type;
  PetscInt          N, D, classes;
  PetscReal         noise;
  PetscInt          seed;
  PetscInt          latent; /* manifold: dimension of the curved latent manifold */
} BasisGenerateParams;

PetscErrorCode BasisGenerateRows(const BasisGenerateParams *p, PetscInt start, PetscInt n, float x[],
                                 int labels[]);
PetscErrorCode BasisGenerateMain(MPI_Comm comm);
