/*
  h5attr.c - named, typed attributes and small whole datasets (include/basis/h5attr.h).

  Writers replace an attribute of the same name. Readers take the name, check the class
  and count before reading, close every handle before raising, and name the file and the
  attribute in their messages; strings are read fixed- or variable-length (h5py writes
  UTF-8 variable-length strings). Small arrays (a model's weights, anchors, history) are
  one checksummed chunk each (fletcher32), so a damaged file is refused, not misread.
  Not collective in the MPI sense: HDF5 metadata, the same on every rank that reads it.
*/
#include <basis/h5attr.h>
#include <basis/output.h>
#include <string.h>

static PetscErrorCode AttrWrite(hid_t obj, const char *name, hid_t type, hid_t space, const void *buf)
{
  hid_t attr;

  PetscFunctionBeginUser;
  if (H5Aexists(obj, name) > 0) BasisCallH5(H5Adelete(obj, name));
  attr = H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
  BasisCallH5(attr);
  BasisCallH5(H5Awrite(attr, type, buf));
  BasisCallH5(H5Aclose(attr));
  PetscFunctionReturn(0);
}

PetscErrorCode BasisH5AttrWriteString(hid_t obj, const char *name, const char *value)
{
  hid_t type, space;

  PetscFunctionBeginUser;
  type = H5Tcopy(H5T_C_S1);
  BasisCallH5(type);
  BasisCallH5(H5Tset_size(type, strlen(value) + 1));
  space = H5Screate(H5S_SCALAR);
  PetscCall(AttrWrite(obj, name, type, space, value));
  BasisCallH5(H5Sclose(space));
  BasisCallH5(H5Tclose(type));
  PetscFunctionReturn(0);
}

PetscErrorCode BasisH5AttrWriteDouble(hid_t obj, const char *name, PetscInt n, const double v[])
{
  hsize_t dim = (hsize_t)n;
  hid_t   space;

  PetscFunctionBeginUser;
  space = H5Screate_simple(1, &dim, NULL);
  PetscCall(AttrWrite(obj, name, H5T_NATIVE_DOUBLE, space, v));
  BasisCallH5(H5Sclose(space));
  PetscFunctionReturn(0);
}

PetscErrorCode BasisH5AttrWriteInt(hid_t obj, const char *name, PetscInt n, const PetscInt v[])
{
  hsize_t    dim = (hsize_t)n;
  hid_t      space;
  long long *w;

  PetscFunctionBeginUser;
  PetscCall(PetscMalloc1(n, &w));
  for (PetscInt i = 0; i < n; i++) w[i] = v[i];
  space = H5Screate_simple(1, &dim, NULL);
  PetscCall(AttrWrite(obj, name, H5T_NATIVE_LLONG, space, w));
  BasisCallH5(H5Sclose(space));
  PetscCall(PetscFree(w));
  PetscFunctionReturn(0);
}

/* The name of the file that holds obj, for messages ("(unnamed file)" when HDF5 cannot
   say). */
static void FileName(hid_t obj, char buf[], size_t len)
{
  if (H5Fget_name(obj, buf, len) <= 0) PetscStrncpy(buf, "(unnamed file)", len);
}

/* Open attribute name of obj if it exists; *attr < 0 when it does not. */
static PetscErrorCode AttrOpen(hid_t obj, const char *name, hid_t *attr)
{
  htri_t exists;

  PetscFunctionBeginUser;
  *attr  = -1;
  exists = H5Aexists(obj, name);
  BasisCallH5(exists);
  if (exists) {
    *attr = H5Aopen(obj, name, H5P_DEFAULT);
    BasisCallH5(*attr);
  }
  PetscFunctionReturn(0);
}

/* Class and number of values of an open attribute. */
static PetscErrorCode AttrShape(hid_t attr, H5T_class_t *cls, hssize_t *npoints, hid_t *type)
{
  hid_t space;

  PetscFunctionBeginUser;
  space = H5Aget_space(attr);
  BasisCallH5(space);
  *npoints = H5Sget_simple_extent_npoints(space);
  BasisCallH5(H5Sclose(space));
  *type = H5Aget_type(attr);
  BasisCallH5(*type);
  *cls = H5Tget_class(*type);
  PetscFunctionReturn(0);
}

/* Read a numeric attribute of at most *n values as memtype into buf; see BasisH5AttrReadInt.
   The handles are closed before any check is raised. */
static PetscErrorCode AttrReadNumbers(hid_t obj, const char *name, H5T_class_t want, hid_t memtype,
                                      PetscInt *n, void *buf)
{
  hid_t       attr, type;
  hssize_t    npoints;
  H5T_class_t cls;
  herr_t      err = -1;
  char        file[PETSC_MAX_PATH_LEN];
  PetscBool   class_ok, size_ok;

  PetscFunctionBeginUser;
  PetscCall(AttrOpen(obj, name, &attr));
  if (attr < 0) {
    *n = 0;
    PetscFunctionReturn(0);
  }
  PetscCall(AttrShape(attr, &cls, &npoints, &type));
  BasisCallH5(H5Tclose(type));
  class_ok = cls == H5T_INTEGER || (want == H5T_FLOAT && cls == H5T_FLOAT) ? PETSC_TRUE : PETSC_FALSE;
  size_ok  = npoints >= 1 && npoints <= *n ? PETSC_TRUE : PETSC_FALSE;
  if (class_ok && size_ok) err = H5Aread(attr, memtype, buf);
  BasisCallH5(H5Aclose(attr));
  FileName(obj, file, sizeof(file));
  PetscCheck(class_ok, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED,
             "%s: attribute %s is not %s; the file is corrupt or not written by basis", file, name,
             want == H5T_INTEGER ? "an integer" : "numeric");
  PetscCheck(size_ok, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED,
             "%s: attribute %s holds %lld values; expected 1 to %lld", file, name, (long long)npoints,
             (long long)*n);
  PetscCheck(err >= 0, PETSC_COMM_SELF, PETSC_ERR_FILE_READ,
             "%s: cannot read attribute %s; the file is corrupt", file, name);
  *n = (PetscInt)npoints;
  PetscFunctionReturn(0);
}

/*
  BasisH5AttrReadInt - read an integer attribute by name (see h5io.h for *n).

  Not collective.
*/
PetscErrorCode BasisH5AttrReadInt(hid_t obj, const char *name, PetscInt *n, PetscInt v[])
{
  long long *w;
  PetscInt   cap = *n, bad = -1;

  PetscFunctionBeginUser;
  PetscCall(PetscMalloc1(PetscMax(cap, 1), &w));
  PetscCall(AttrReadNumbers(obj, name, H5T_INTEGER, H5T_NATIVE_LLONG, n, w));
  for (PetscInt i = 0; i < *n; i++) {
    if (w[i] < PETSC_MIN_INT || w[i] > PETSC_MAX_INT) bad = i;
    v[i] = (PetscInt)w[i];
  }
  if (bad >= 0) {
    char      file[PETSC_MAX_PATH_LEN];
    long long value = w[bad];
    PetscCall(PetscFree(w));
    FileName(obj, file, sizeof(file));
    SETERRQ(PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: attribute %s holds %lld, out of range", file,
            name, value);
  }
  PetscCall(PetscFree(w));
  PetscFunctionReturn(0);
}

/*
  BasisH5AttrReadDouble - read a numeric attribute by name as double (see h5io.h for *n).

  Not collective.
*/
PetscErrorCode BasisH5AttrReadDouble(hid_t obj, const char *name, PetscInt *n, double v[])
{
  PetscFunctionBeginUser;
  PetscCall(AttrReadNumbers(obj, name, H5T_FLOAT, H5T_NATIVE_DOUBLE, n, v));
  PetscFunctionReturn(0);
}

/* Read one string of an open string attribute into buf[len]; *err < 0 on failure. */
static PetscErrorCode AttrReadOneString(hid_t attr, hid_t type, size_t len, char buf[], int *err)
{
  hid_t memtype;

  PetscFunctionBeginUser;
  *err    = -1;
  memtype = H5Tcopy(H5T_C_S1);
  BasisCallH5(memtype);
  /* the memory type keeps the file's character set: HDF5 does not convert between ASCII
     and UTF-8 (h5py writes UTF-8) */
  BasisCallH5(H5Tset_cset(memtype, H5Tget_cset(type)));
  if (H5Tis_variable_str(type) > 0) {
    char *s = NULL;
    BasisCallH5(H5Tset_size(memtype, H5T_VARIABLE));
    if (H5Aread(attr, memtype, &s) >= 0 && s && strlen(s) < len) {
      memcpy(buf, s, strlen(s) + 1);
      *err = 0;
    }
    if (s) H5free_memory(s);
  } else {
    size_t size = H5Tget_size(type);
    if (size > 0 && size < len) {
      /* one byte more than the file's: a null-padded string that fills its size (h5py's
         np.bytes_) keeps its last character when HDF5 terminates it */
      BasisCallH5(H5Tset_size(memtype, size + 1));
      if (H5Aread(attr, memtype, buf) >= 0) *err = 0;
      buf[size] = 0;
    }
  }
  BasisCallH5(H5Tclose(memtype));
  PetscFunctionReturn(0);
}

/*
  BasisH5AttrReadString - read a string attribute (fixed or variable length, ASCII or
  UTF-8) into buf[len].

  Not collective. found may be NULL: then a missing attribute is an error too. A string of
  len characters or more, an array of strings, or another type is an error naming it.
*/
PetscErrorCode BasisH5AttrReadString(hid_t obj, const char *name, size_t len, char buf[], PetscBool *found)
{
  hid_t       attr, type;
  hssize_t    npoints;
  H5T_class_t cls;
  int         err = -1;
  char        file[PETSC_MAX_PATH_LEN];

  PetscFunctionBeginUser;
  if (found) *found = PETSC_FALSE;
  PetscCall(AttrOpen(obj, name, &attr));
  FileName(obj, file, sizeof(file));
  PetscCheck(attr >= 0 || found, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED,
             "%s has no attribute %s; it is not written by basis or is from another version", file, name);
  if (attr < 0) PetscFunctionReturn(0);
  PetscCall(AttrShape(attr, &cls, &npoints, &type));
  if (cls == H5T_STRING && npoints == 1) PetscCall(AttrReadOneString(attr, type, len, buf, &err));
  BasisCallH5(H5Tclose(type));
  BasisCallH5(H5Aclose(attr));
  PetscCheck(cls == H5T_STRING && npoints == 1, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED,
             "%s: attribute %s is not a string; the file is corrupt or not written by basis", file, name);
  PetscCheck(err >= 0, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED,
             "%s: attribute %s cannot be read as a string of fewer than %d characters; the file is corrupt",
             file, name, (int)len);
  if (found) *found = PETSC_TRUE;
  PetscFunctionReturn(0);
}

/*
  BasisH5AttrReadEnum - read a string attribute and map it to an enum value through a PETSc
  enum list (names..., type name, prefix, NULL).

  Not collective. found may be NULL: then a missing attribute is an error. A string that
  is not in the list is an error naming the attribute, the value and the choices.
*/
PetscErrorCode BasisH5AttrReadEnum(hid_t obj, const char *name, const char *const list[], PetscEnum *value,
                                   PetscBool *found)
{
  char      buf[64], file[PETSC_MAX_PATH_LEN], names[256] = "";
  PetscBool has = PETSC_TRUE, known;
  PetscEnum e;

  PetscFunctionBeginUser;
  PetscCall(BasisH5AttrReadString(obj, name, sizeof(buf), buf, found ? &has : NULL));
  if (found) *found = has;
  if (!has) PetscFunctionReturn(0);
  PetscCall(PetscEnumFind(list, buf, &e, &known));
  if (known) {
    *value = e;
    PetscFunctionReturn(0);
  }
  for (PetscInt i = 0; list[i] && list[i + 1] && list[i + 2]; i++) {
    PetscCall(PetscStrlcat(names, " ", sizeof(names)));
    PetscCall(PetscStrlcat(names, list[i], sizeof(names)));
  }
  FileName(obj, file, sizeof(file));
  SETERRQ(PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED,
          "%s: attribute %s is '%s', not one of%s; the file is corrupt or from another basis version", file,
          name, buf, names);
}

/*
  BasisH5WriteArray - create dataset name (intermediate groups too) of shape dims[rank] and
  write buf, whole, as one chunk with a Fletcher-32 checksum.

  Collective on the file's communicator (the small datasets of a model: the model writer
  opens its file on PETSC_COMM_SELF). The checksum makes a flipped bit fail the read
  ("truncated or corrupt") instead of giving values that silently compute something
  else; any HDF5 reader can read it (the filter is built in).
*/
PetscErrorCode BasisH5WriteArray(hid_t loc, const char *name, hid_t filetype, hid_t memtype, int rank,
                                 const hsize_t dims[], const void *buf)
{
  hid_t   space, dset, lcpl, dcpl, dxpl;
  hsize_t bytes = H5Tget_size(filetype);

  PetscFunctionBeginUser;
  for (int i = 0; i < rank; i++) bytes *= dims[i];
  space = H5Screate_simple(rank, dims, NULL);
  BasisCallH5(space);
  lcpl = H5Pcreate(H5P_LINK_CREATE);
  BasisCallH5(H5Pset_create_intermediate_group(lcpl, 1));
  dcpl = H5Pcreate(H5P_DATASET_CREATE);
  BasisCallH5(dcpl);
  /* a chunk can be neither empty nor 4 GiB; 1 GiB is far beyond any network here */
  if (bytes > 0 && bytes < ((hsize_t)1 << 30)) {
    BasisCallH5(H5Pset_chunk(dcpl, rank, dims));
    BasisCallH5(H5Pset_fletcher32(dcpl));
  }
  dset = H5Dcreate2(loc, name, filetype, space, lcpl, dcpl, H5P_DEFAULT);
  PetscCheck(dset >= 0, PETSC_COMM_SELF, PETSC_ERR_FILE_WRITE,
             "cannot create dataset /%s of %llu bytes (is the file system full?)", name,
             (unsigned long long)bytes);
  /* files are open through MPI-IO: parallel HDF5 writes filtered datasets only collectively */
  dxpl = H5Pcreate(H5P_DATASET_XFER);
  BasisCallH5(dxpl);
  BasisCallH5(H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE));
  /* arrays go to files written by one rank (models, on PETSC_COMM_SELF): a full disk is an
     error here, before the write */
  PetscCall(BasisOutputReserveSpace(PETSC_COMM_SELF, dset));
  BasisCallH5(H5Dwrite(dset, memtype, H5S_ALL, H5S_ALL, dxpl, buf));
  BasisCallH5(H5Pclose(dxpl));
  BasisCallH5(H5Dclose(dset));
  BasisCallH5(H5Pclose(dcpl));
  BasisCallH5(H5Pclose(lcpl));
  BasisCallH5(H5Sclose(space));
  PetscFunctionReturn(0);
}

/*
  BasisH5WriteIntArray - BasisH5WriteArray of v[n] as a 1-D int64 dataset.

  Collective on the file's communicator. The values are widened here: parallel HDF5
  cannot convert types while it writes a filtered (checksummed) dataset.
*/
PetscErrorCode BasisH5WriteIntArray(hid_t loc, const char *name, PetscInt n, const PetscInt v[])
{
  hsize_t    dim = (hsize_t)n;
  long long *w;

  PetscFunctionBeginUser;
  PetscCall(PetscMalloc1(n, &w));
  for (PetscInt i = 0; i < n; i++) w[i] = v[i];
  PetscCall(BasisH5WriteArray(loc, name, H5T_STD_I64LE, H5T_NATIVE_LLONG, 1, &dim, w));
  PetscCall(PetscFree(w));
  PetscFunctionReturn(0);
}

/*
  BasisH5Has - whether the link path ("a/b/c", relative to loc) exists, every group on the
  way included (H5Lexists alone fails when an intermediate group is missing).

  Not collective.
*/
PetscErrorCode BasisH5Has(hid_t loc, const char *path, PetscBool *has)
{
  char   prefix[PETSC_MAX_PATH_LEN];
  size_t len = strlen(path);

  PetscFunctionBeginUser;
  *has = PETSC_FALSE;
  PetscCheck(len < sizeof(prefix), PETSC_COMM_SELF, PETSC_ERR_ARG_SIZ, "HDF5 path %s is too long", path);
  for (size_t i = 1; i <= len; i++) {
    if (path[i] != '/' && path[i] != 0) continue;
    memcpy(prefix, path, i);
    prefix[i] = 0;
    if (H5Lexists(loc, prefix, H5P_DEFAULT) <= 0) PetscFunctionReturn(0);
  }
  *has = PETSC_TRUE;
  PetscFunctionReturn(0);
}

/*
  BasisH5ArrayShape - rank and dimensions of dataset name.

  Not collective. Output: *rank (-1 when the dataset cannot be opened or is not simple),
  dims[maxrank] (the first maxrank dimensions). A missing dataset is an error naming it.
*/
PetscErrorCode BasisH5ArrayShape(hid_t loc, const char *name, int maxrank, int *rank, hsize_t dims[])
{
  hid_t     dset, space;
  hsize_t   got[H5S_MAX_RANK];
  char      file[PETSC_MAX_PATH_LEN];
  PetscBool has;

  PetscFunctionBeginUser;
  FileName(loc, file, sizeof(file));
  PetscCall(BasisH5Has(loc, name, &has));
  PetscCheck(has, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED,
             "%s has no dataset /%s; it is incomplete or not the file expected", file, name);
  *rank = -1;
  dset  = H5Dopen2(loc, name, H5P_DEFAULT);
  space = dset >= 0 ? H5Dget_space(dset) : -1;
  if (space >= 0) {
    *rank = H5Sget_simple_extent_ndims(space);
    if (*rank >= 0) H5Sget_simple_extent_dims(space, got, NULL);
    H5Sclose(space);
  }
  if (dset >= 0) H5Dclose(dset);
  for (int i = 0; i < maxrank; i++) dims[i] = i < *rank ? got[i] : 0;
  PetscFunctionReturn(0);
}

/*
  BasisH5ReadArray - read dataset name, whole, whose shape must be exactly dims[rank] and
  whose type class that of memtype (integer or floating point).

  Not collective (an independent read; the model reader opens its file on
  PETSC_COMM_SELF). Errors name the file and the dataset: missing, wrong shape or type,
  unreadable (a checksum mismatch included).
*/
PetscErrorCode BasisH5ReadArray(hid_t loc, const char *name, hid_t memtype, int rank, const hsize_t dims[],
                                void *buf)
{
  hid_t       dset, type;
  hsize_t     got[H5S_MAX_RANK];
  int         got_rank;
  H5T_class_t cls = H5T_NO_CLASS;
  PetscBool   same;
  herr_t      err;
  char        file[PETSC_MAX_PATH_LEN];

  PetscFunctionBeginUser;
  PetscCall(BasisH5ArrayShape(loc, name, H5S_MAX_RANK, &got_rank, got));
  FileName(loc, file, sizeof(file));
  same = got_rank == rank ? PETSC_TRUE : PETSC_FALSE;
  for (int i = 0; same && i < rank; i++)
    if (got[i] != dims[i]) same = PETSC_FALSE;
  dset = H5Dopen2(loc, name, H5P_DEFAULT);
  PetscCheck(dset >= 0, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED,
             "%s: cannot open /%s; the file is corrupt (restore or recreate it)", file, name);
  type = H5Dget_type(dset);
  if (type >= 0) {
    cls = H5Tget_class(type);
    H5Tclose(type);
  }
  if (!same || cls != H5Tget_class(memtype)) {
    H5Dclose(dset);
    SETERRQ(
        PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED,
        "%s: /%s has the wrong shape or type (expected %d-D %llu x %llu, %s); the file is corrupt or from "
        "another basis version",
        file, name, rank, (unsigned long long)dims[0], (unsigned long long)(rank > 1 ? dims[1] : 1),
        H5Tget_class(memtype) == H5T_FLOAT ? "floating point" : "integer");
  }
  err = H5Dread(dset, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
  BasisCallH5(H5Dclose(dset));
  PetscCheck(err >= 0, PETSC_COMM_SELF, PETSC_ERR_FILE_READ,
             "%s: cannot read /%s; the file is truncated or corrupt (restore or recreate it)", file, name);
  PetscFunctionReturn(0);
}
