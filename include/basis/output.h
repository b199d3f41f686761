/*
  output.h - the one way basis writes an output file safely (DESIGN.md "Files"): created
  under a temporary name, marked complete, closed and renamed; removed on error.
*/
#pragma once
#include <petscsys.h>
#include <hdf5.h>

/* An output file written under a temporary name and renamed when complete. */
typedef struct {
  MPI_Comm comm;
  char     path[PETSC_MAX_PATH_LEN]; /* final name */
  char     tmp[PETSC_MAX_PATH_LEN];  /* name while being written */
  hid_t    file;
} BasisOutput;

PetscErrorCode BasisOutputCheckPath(MPI_Comm, const char *path, PetscBool force, const char *const inputs[]);
PetscErrorCode BasisOutputCheckPathOption(MPI_Comm, const char *option, const char *path, PetscBool force,
                                          const char *const inputs[]);
PetscErrorCode BasisOutputCreate(MPI_Comm, const char *path, PetscBool force, const char *const inputs[],
                                 BasisOutput *out);
PetscErrorCode BasisOutputCommit(BasisOutput *out);
PetscErrorCode BasisOutputAbort(BasisOutput *out);
void           BasisOutputCleanupAll(void);
