/*
  h5io.h - sharded, collective reading of /features and /labels, and collective row
  writes. Layout (DESIGN.md "Files"): /features N x D (float32/float64/integer on disk,
  float32 in memory), optional /labels of length N (integer).
*/
#pragma once
#include <basis/error.h>
#include <hdf5.h>

/* Partition of N rows into size contiguous blocks: rank r owns [start, start + n). */
static inline void BasisBlockRange(PetscInt N, PetscMPIInt size, PetscMPIInt rank, PetscInt *start,
                                   PetscInt *n)
{
  PetscInt q = N / size, r = N % size;
  *n     = q + (rank < r ? 1 : 0);
  *start = rank * q + PetscMin((PetscInt)rank, r);
}

/* Attributes on the root group or a dataset. Collective only in the HDF5 sense (call on
   every rank that has the file open, with the same values). */
PetscErrorCode BasisH5AttrWriteString(hid_t obj, const char *name, const char *value);
PetscErrorCode BasisH5AttrWriteDouble(hid_t obj, const char *name, PetscInt n, const double v[]);
PetscErrorCode BasisH5AttrWriteInt(hid_t obj, const char *name, PetscInt n, const PetscInt v[]);

/* Read an attribute by name. *n is the capacity of v on entry and the number of values
   read on exit (0 when the attribute is absent). An attribute that exists but holds more
   than the capacity or the wrong class (not integer / not numeric) is an error naming it.
   Not collective in the MPI sense: HDF5 metadata reads, the same on every rank. */
PetscErrorCode BasisH5AttrReadInt(hid_t obj, const char *name, PetscInt *n, PetscInt v[]);
PetscErrorCode BasisH5AttrReadDouble(hid_t obj, const char *name, PetscInt *n, double v[]);
/* A fixed- or variable-length string attribute into buf[len]; *found false when absent
   (found NULL: absent is an error naming the attribute). */
PetscErrorCode BasisH5AttrReadString(hid_t obj, const char *name, size_t len, char buf[], PetscBool *found);
/* A string attribute mapped to an enum through a PETSc enum list (names, type name,
   prefix, NULL); an unknown string is an error naming the attribute and the choices. */
PetscErrorCode BasisH5AttrReadEnum(hid_t obj, const char *name, const char *const list[], PetscEnum *value,
                                   PetscBool *found);

/* The HDF5 memory type of PetscInt (32- or 64-bit indices). */
#if defined(PETSC_USE_64BIT_INDICES)
#  define BASIS_H5T_NATIVE_PETSCINT H5T_NATIVE_LLONG
#else
#  define BASIS_H5T_NATIVE_PETSCINT H5T_NATIVE_INT
#endif

/* Whether link path "a/b/c" exists below loc, every group on the way included. */
PetscErrorCode BasisH5Has(hid_t loc, const char *path, PetscBool *has);

/* Small whole datasets (a model's arrays): written as one checksummed chunk, read back
   with their shape checked exactly. Errors name the file and the dataset. The writer is
   collective on the file's communicator; the readers are not collective. */
PetscErrorCode BasisH5WriteArray(hid_t loc, const char *name, hid_t filetype, hid_t memtype, int rank,
                                 const hsize_t dims[], const void *buf);
PetscErrorCode BasisH5WriteIntArray(hid_t loc, const char *name, PetscInt n, const PetscInt v[]);
PetscErrorCode BasisH5ArrayShape(hid_t loc, const char *name, int maxrank, int *rank, hsize_t dims[]);
PetscErrorCode BasisH5ReadArray(hid_t loc, const char *name, hid_t memtype, int rank, const hsize_t dims[],
                                void *buf);

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
PetscErrorCode BasisInfoMain(MPI_Comm comm);

/* Readers and copiers shared by the commands (embed, exact, eval); see h5io.c. */
PetscBool      BasisH5LinkExists(hid_t file, const char *path);
PetscErrorCode BasisH5MatrixOpen(MPI_Comm comm, hid_t file, const char *path, const char *name, hid_t *dset,
                                 PetscInt *rows, PetscInt *cols);
PetscErrorCode BasisH5MatrixReadRows(MPI_Comm comm, const char *path, hid_t dset, PetscInt rstart, PetscInt n,
                                     PetscInt cols, PetscReal **Y);
PetscErrorCode BasisH5LabelsOpen(MPI_Comm comm, hid_t file, const char *what, PetscInt N, const char *rows,
                                 hid_t *dset);
PetscErrorCode BasisH5LabelsRead(MPI_Comm comm, hid_t file, const char *what, PetscInt N, const char *rows,
                                 PetscInt rstart, PetscInt n, int labels[], PetscBool *found);
PetscErrorCode BasisInputCopyLabels(BasisInput *in, hid_t file);
