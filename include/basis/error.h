/*
  error.h - how basis reports errors (STYLE.md "Errors"): HDF5 and LAPACK call checks,
  checks agreed across ranks before they are raised, the exit status of a checkpointed
  stop, and the error handler that prints one readable line per error.
*/
#pragma once
#include <petscsys.h>

/* Check an HDF5 call: a negative return is failure; the message names the call. Not
   collective: use for calls whose failure is the same on every rank (collective HDF5
   calls) or follow with BasisCheckAll. */
#define BasisCallH5(call)                                                                                    \
  do {                                                                                                       \
    if ((call) < 0) SETERRQ(PETSC_COMM_SELF, PETSC_ERR_LIB, "HDF5 call failed: %s", #call);                  \
  } while (0)

/* Check a condition that may differ between ranks: agree first (logical AND over comm),
   then raise the same error on comm, so no rank waits in a later collective. The message
   is formatted on the ranks where it is computed; keep its arguments rank-independent. */
#define BasisCheckAll(comm, cond, err, ...)                                                                  \
  do {                                                                                                       \
    int basis_ok_ = (cond) ? 1 : 0, basis_all_ok_;                                                           \
    PetscCallMPI(MPI_Allreduce(&basis_ok_, &basis_all_ok_, 1, MPI_INT, MPI_MIN, (comm)));                    \
    PetscCheck(basis_all_ok_, (comm), (err), __VA_ARGS__);                                                   \
  } while (0)

/* A LAPACK info check; info > 0 is numerical failure of a named routine. */
#define BasisCheckLapack(routine, info)                                                                      \
  PetscCheck((info) == 0, PETSC_COMM_SELF, PETSC_ERR_LIB, "LAPACK %s failed with info = %d", routine,        \
             (int)(info))

/* Exit status for runs stopped on purpose (signal before a time limit, checkpoint
   written): jobs/ scripts requeue on it. Distinct from 1 (an error). */
#define BASIS_EXIT_CHECKPOINTED 3

PetscErrorCode BasisInitialize(void);
PetscErrorCode BasisFinalize(void);
PetscErrorCode BasisErrorHandler(MPI_Comm, int, const char *, const char *, PetscErrorCode, PetscErrorType,
                                 const char *, void *);
