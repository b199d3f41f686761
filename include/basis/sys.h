/*
  sys.h - conventions every basis module shares: error checks that agree across ranks,
  HDF5 call checking, atomic output files, the error handler, and all PETSc log events.
*/
#pragma once
#include <petscsys.h>
#include <hdf5.h>

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

/* Log events (log.c registers them in BasisInitialize). Names <= 16 characters. */
extern PetscLogEvent BASIS_ReadShard, BASIS_WriteRows, BASIS_Generate, BASIS_BatchGraph, BASIS_BatchEig,
    BASIS_RefGraph, BASIS_RefSolve, BASIS_Align, BASIS_Forward, BASIS_Backward, BASIS_GradReduce, BASIS_Adam,
    BASIS_Embed, BASIS_Checkpoint, BASIS_ExactKnn, BASIS_ExactSolve, BASIS_Metrics, BASIS_Sample;
extern PetscLogStage BASIS_StageRef, BASIS_StageTrain, BASIS_StageEmbed;

PetscErrorCode BasisInitialize(void);
PetscErrorCode BasisFinalize(void);
PetscErrorCode BasisHelpRequested(PetscBool *help);
PetscErrorCode BasisErrorHandler(MPI_Comm, int, const char *, const char *, PetscErrorCode, PetscErrorType,
                                 const char *, void *);

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

/* Attributes on the root group or a dataset. Collective only in the HDF5 sense (call on
   every rank that has the file open, with the same values). */
PetscErrorCode BasisH5AttrWriteString(hid_t obj, const char *name, const char *value);
PetscErrorCode BasisH5AttrWriteDouble(hid_t obj, const char *name, PetscInt n, const double v[]);
PetscErrorCode BasisH5AttrWriteInt(hid_t obj, const char *name, PetscInt n, const PetscInt v[]);

/* Partition of N rows into size contiguous blocks: rank r owns [start, start + n). */
static inline void BasisBlockRange(PetscInt N, PetscMPIInt size, PetscMPIInt rank, PetscInt *start,
                                   PetscInt *n)
{
  PetscInt q = N / size, r = N % size;
  *n     = q + (rank < r ? 1 : 0);
  *start = rank * q + PetscMin((PetscInt)rank, r);
}

/* Parse "a,b,c" into positive integers. Collective on comm: every rank parses the same
   string and raises the same error (naming the option) on comm. */
PetscErrorCode BasisParseIntList(MPI_Comm comm, const char *option, const char *text, PetscInt max,
                                 PetscInt *n, PetscInt v[]);

/* Refuse an unknown value of an enum option on comm (once, the same on every rank) before
   PetscOptionsEnum sees it: PETSc raises that error on PETSC_COMM_SELF, so each rank would
   print it. list is a PETSc enum list (names, type name, prefix, NULL). */
PetscErrorCode BasisOptionsCheckEnum(MPI_Comm comm, const char *option, const char *const list[]);
