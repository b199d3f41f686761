/*
  output.h - the one way basis writes an output file safely (DESIGN.md "Files"): an
  exclusive lock "<path>.lock", a temporary name unique to the run, every write checked
  and the verdict agreed across ranks, marked complete, closed and renamed; removed on
  error. Never replaces anything but a regular file, never touches an input.
*/
#pragma once
#include <petscsys.h>
#include <hdf5.h>

/* An output file written under a temporary name and renamed when complete. */
typedef struct {
  MPI_Comm  comm;
  char      path[PETSC_MAX_PATH_LEN]; /* final name */
  char      tmp[PETSC_MAX_PATH_LEN];  /* name while being written: "<path>.<run>.partial" */
  char      lock[PETSC_MAX_PATH_LEN]; /* "<path>.lock", held (by rank 0) while writing */
  hid_t     file;                     /* < 0 for a file written without HDF5 (BasisOutputReserve) */
  PetscBool locked;
} BasisOutput;

PetscErrorCode BasisOutputCheckPath(MPI_Comm, const char *path, PetscBool force, const char *const inputs[]);
PetscErrorCode BasisOutputCheckPathOption(MPI_Comm, const char *option, const char *path, PetscBool force,
                                          const char *const inputs[]);
PetscErrorCode BasisOutputCreate(MPI_Comm, const char *path, PetscBool force, const char *const inputs[],
                                 BasisOutput *out);
PetscErrorCode BasisOutputReserve(MPI_Comm, const char *option, const char *path, PetscBool force,
                                  const char *const inputs[], BasisOutput *out);
PetscErrorCode BasisOutputReserveSpace(MPI_Comm, hid_t obj);
/* A run-long lock on a file the run writes several times (train's -model). */
PetscErrorCode BasisOutputHold(MPI_Comm, const char *option, const char *path, PetscBool force,
                               const char *const inputs[], BasisOutput *hold);
void           BasisOutputRelease(BasisOutput *hold);
PetscErrorCode BasisOutputCommit(BasisOutput *out);
/* Whether an open file is an output left under its temporary name (never committed). */
PetscErrorCode BasisOutputIsTemporary(hid_t file, const char *path, PetscBool *temporary);
PetscErrorCode BasisOutputAbort(BasisOutput *out);
void           BasisOutputCleanupAll(void);
void           BasisOutputCloseAll(void);
