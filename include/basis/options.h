/*
  options.h - helpers around the PETSc options database shared by every command: -help,
  integer lists, enum values refused once on the communicator.
*/
#pragma once
#include <petscsys.h>

PetscErrorCode BasisHelpRequested(PetscBool *help);

/* Parse "a,b,c" into positive integers. Collective on comm: every rank parses the same
   string and raises the same error (naming the option) on comm. */
PetscErrorCode BasisParseIntList(MPI_Comm comm, const char *option, const char *text, PetscInt max,
                                 PetscInt *n, PetscInt v[]);

/* Refuse an unknown value of an enum option on comm (once, the same on every rank) before
   PetscOptionsEnum sees it: PETSc raises that error on PETSC_COMM_SELF, so each rank would
   print it. list is a PETSc enum list (names, type name, prefix, NULL). */
PetscErrorCode BasisOptionsCheckEnum(MPI_Comm comm, const char *option, const char *const list[]);
