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

/* PetscOptionsEnum (inside PetscOptionsBegin/End) with an unknown value refused once on the
   options' communicator (BasisOptionsCheckEnum) instead of on every rank's PETSC_COMM_SELF.
   Same call as PetscOptionsEnum. */
PetscErrorCode BasisOptionsEnum_Private(PetscOptionItems *, const char opt[], const char text[],
                                        const char man[], const char *const list[], PetscEnum value,
                                        PetscEnum *result, PetscBool *set);
#define BasisOptionsEnum(opt, text, man, list, value, result, set)                                           \
  BasisOptionsEnum_Private(PetscOptionsObject, opt, text, man, list, value, result, set)

/* PetscOptionsInt (inside PetscOptionsBegin/End) reading the value as a 64-bit integer:
   a value outside [min, max] is an error naming the option and the range, instead of
   PETSc's silent 32-bit cast ("-steps 4294967299" is not 3 steps). Same call as
   PetscOptionsInt plus the range. */
PetscErrorCode BasisOptionsInt_Private(PetscOptionItems *, const char opt[], const char text[],
                                       const char man[], PetscInt value, PetscInt *result, PetscBool *set,
                                       PetscInt min, PetscInt max);
#define BasisOptionsInt(opt, text, man, value, result, set, min, max)                                        \
  BasisOptionsInt_Private(PetscOptionsObject, opt, text, man, value, result, set, min, max)

/* Refuse a comma-separated option of more than max entries, which PetscOptions*Array would
   cut to max without a word. Collective on comm; call before the array is read. */
PetscErrorCode BasisOptionsCheckListLength(MPI_Comm comm, const char *option, PetscInt max);

/* Refuse unknown options (naming the closest known one), options other than booleans given
   without a value, and integer options whose value does not fit 32 bits. Collective; main
   calls it once after SlepcInitialize. */
PetscErrorCode BasisOptionsCheckCommandLine(MPI_Comm comm);

/* Why PETSc would fail on the options file path (-options_file), or NULL: PETSc reads it
   inside SlepcInitialize, before basis's error handler, crashing on a file that includes
   itself and printing its trace for a line it refuses. Checks the lines with PETSc's rules
   and every file included; of a YAML file (-options_file_yaml: yaml true) only that it can
   be read. Not collective, no MPI: main calls it on rank 0 before PETSc. */
const char *BasisOptionsFileProblem(const char *path, PetscBool yaml);
