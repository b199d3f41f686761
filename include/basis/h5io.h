/*
  h5io.h - all of basis's HDF5: sharded, collective reading of /features and /labels,
  collective row writes, the matrix and labels readers of the commands; named attributes
  and small whole datasets are in h5attr.h (included here). Layout (DESIGN.md "Files"): /features N x D
  (float32/float64/integer on disk, float32 in memory), optional /labels of length N (integer).
*/
#pragma once
#include <basis/error.h>
#include <basis/h5attr.h>
#include <hdf5.h>

/* Partition of N rows into size contiguous blocks: rank r owns [start, start + n). */
static inline void BasisBlockRange(PetscInt N, PetscMPIInt size, PetscMPIInt rank, PetscInt *start,
                                   PetscInt *n)
{
  PetscInt q = N / size, r = N % size;
  *n     = q + (rank < r ? 1 : 0);
  *start = rank * q + PetscMin((PetscInt)rank, r);
}

typedef struct {
  MPI_Comm  comm;
  char      path[PETSC_MAX_PATH_LEN];
  hid_t     file, features, labels; /* labels < 0 when absent */
  PetscInt  N, D;                   /* global shape of /features */
  PetscBool has_labels;
} BasisInput;

/* One rank's contiguous block of rows, held in memory. */
typedef struct {
  PetscInt N, D;      /* global shape */
  PetscInt rstart, n; /* this rank owns rows [rstart, rstart + n) */
  float   *x;         /* [n][D] row-major */
  int     *labels;    /* [n], or NULL when the file has none */
} BasisShard;

PetscErrorCode BasisInputOpen(MPI_Comm comm, const char *path, BasisInput *in);
PetscErrorCode BasisInputRead(BasisInput *in, PetscInt start, PetscInt n, float x[]);
PetscErrorCode BasisInputReadLabels(BasisInput *in, PetscInt start, PetscInt n, int labels[]);
PetscErrorCode BasisInputClose(BasisInput *in);
PetscErrorCode BasisInputReadShard(BasisInput *in, BasisShard *shard);
PetscErrorCode BasisShardDestroy(BasisShard *shard);

PetscErrorCode BasisH5CreateMatrix(hid_t file, const char *name, PetscInt rows, PetscInt cols, hid_t type,
                                   hid_t *dset);
PetscErrorCode BasisH5WriteRows(MPI_Comm comm, hid_t dset, PetscInt start, PetscInt n, PetscInt cols,
                                hid_t memtype, const void *buf);
PetscErrorCode BasisH5ReadRows(MPI_Comm comm, hid_t dset, PetscInt start, PetscInt n, PetscInt cols,
                               hid_t memtype, void *buf);
PetscErrorCode BasisH5OpenRead(MPI_Comm comm, const char *path, const char *what, hid_t *file);

/* Readers and copiers shared by the commands (embed, exact, eval); see h5io.c. */
PetscErrorCode BasisH5MatrixOpen(MPI_Comm comm, hid_t file, const char *path, const char *name, hid_t *dset,
                                 PetscInt *rows, PetscInt *cols);
PetscErrorCode BasisH5MatrixReadRows(MPI_Comm comm, const char *path, hid_t dset, PetscInt rstart, PetscInt n,
                                     PetscInt cols, PetscReal **Y);
PetscErrorCode BasisH5LabelsOpen(MPI_Comm comm, hid_t file, const char *what, PetscInt N, const char *rows,
                                 hid_t *dset);
PetscErrorCode BasisH5LabelsRead(MPI_Comm comm, hid_t file, const char *what, PetscInt N, const char *rows,
                                 PetscInt rstart, PetscInt n, int labels[], PetscBool *found);
PetscErrorCode BasisInputCopyLabels(BasisInput *in, hid_t file);
