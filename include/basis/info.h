/*
  info.h - `basis info`: a data file checked exactly as the commands read it, and how it
  would be sharded over the ranks.
*/
#pragma once
#include <petscsys.h>

/* BasisInfoMain - `basis info -input FILE`. Collective on comm. */
PetscErrorCode BasisInfoMain(MPI_Comm comm);
