/*
  h5attr.h - named, typed HDF5 attributes and small whole datasets (a model's arrays): the
  h5io module's part for files that describe themselves by name (DESIGN.md "Files": every
  parameter its own named, typed attribute).
*/
#pragma once
#include <basis/error.h>
#include <hdf5.h>

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
