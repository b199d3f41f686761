/*
  h5io.c - sharded HDF5 input and collective row output (DESIGN.md "Files").

  Each rank reads its contiguous block of rows of /features with collective hyperslab
  reads through the MPI-IO driver; HDF5 converts float64 or integer data to float32 in
  memory. Reads and writes are split into slabs of at most BASIS_IO_SLAB_BYTES so no
  single MPI-IO call nears the 2 GiB limit and type conversion needs only a bounded
  buffer; all ranks agree on the number of slabs (ranks with fewer rows join with empty
  selections), so the collective calls always match.

  Validation happens in BasisInputOpen on every rank from the same metadata, so every
  rank raises the same error. Values are checked after each read: a non-finite value is
  counted and the first bad row reported, agreed by reductions.
*/
#include <basis/h5io.h>
#include <basis/log.h>
#include <basis/output.h>
#include <limits.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* 64 MiB per collective call: far under MPI-IO's 2 GiB, few calls for large shards. */
#define BASIS_IO_SLAB_BYTES ((size_t)64 << 20)

/*
  BasisH5OpenRead - open an existing HDF5 file read-only on comm, with a clear error when
  it is missing or not HDF5.

  Collective on comm; rank 0 looks first and broadcasts what it found.
  Input: what - how the message names the file ("input", "model")
*/
PetscErrorCode BasisH5OpenRead(MPI_Comm comm, const char *path, const char *what, hid_t *file)
{
  PetscMPIInt rank;
  int         state = 0; /* 0 ok, 1 missing, 2 unreadable, 3 not HDF5, 4 not a regular file */
  hid_t       fapl;
  struct stat st;

  PetscFunctionBeginUser;
  PetscCheck(path && path[0], comm, PETSC_ERR_ARG_WRONG, "no %s file given", what);
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  if (rank == 0) {
    if (access(path, F_OK))
      state = 1;
    else if (stat(path, &st) || !S_ISREG(st.st_mode)) /* a FIFO would block every open */
      state = 4;
    else if (access(path, R_OK))
      state = 2;
    else if (H5Fis_hdf5(path) <= 0)
      state = 3;
  }
  PetscCallMPI(MPI_Bcast(&state, 1, MPI_INT, 0, comm));
  PetscCheck(state != 1, comm, PETSC_ERR_FILE_OPEN, "%s file %s does not exist; check the path", what, path);
  PetscCheck(state != 2, comm, PETSC_ERR_FILE_OPEN, "%s file %s is not readable; check its permissions", what,
             path);
  PetscCheck(state != 4, comm, PETSC_ERR_FILE_UNEXPECTED,
             "%s file %s is not a regular file (a directory, FIFO, device or socket); give an HDF5 file",
             what, path);
  PetscCheck(state != 3, comm, PETSC_ERR_FILE_UNEXPECTED,
             "%s file %s is not an HDF5 file (or is truncated); give an HDF5 file", what, path);
  fapl = H5Pcreate(H5P_FILE_ACCESS);
  BasisCallH5(fapl);
  BasisCallH5(H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL));
  *file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
  BasisCallH5(H5Pclose(fapl));
  BasisCheckAll(comm, *file >= 0, PETSC_ERR_FILE_OPEN,
                "cannot open %s file %s: it is truncated or corrupt; restore or recreate it", what, path);
  { /* a basis output (it records the temporary name it was written under) that was never
       committed: still under that name, or without its completeness mark */
    PetscBool temporary, recorded = H5Aexists(*file, "basis_temporary_name") > 0 ? PETSC_TRUE : PETSC_FALSE;
    PetscCall(BasisOutputIsTemporary(*file, path, &temporary));
    PetscCheck(
        !temporary, comm, PETSC_ERR_FILE_UNEXPECTED,
        "%s file %s is the temporary file of a run that was stopped before it committed it; use the file "
        "under its final name, or run the command that writes it again",
        what, path);
    PetscCheck(!recorded || H5Aexists(*file, "basis_complete") > 0, comm, PETSC_ERR_FILE_UNEXPECTED,
               "%s file %s is incomplete (its writer was interrupted); run the command that writes it again",
               what, path);
  }
  PetscFunctionReturn(0);
}

/*
  BasisInputOpen - open a data file and validate /features and /labels.

  Collective on comm. Errors (same on every rank): missing/unreadable/not HDF5, no
  /features, /features not 2-D or not numeric, N = 0 or D = 0, fewer rows than ranks,
  /labels not integer or of another length than N.
*/
/* Refuse a dataset whose storage this HDF5 cannot read, naming why, instead of a failed
   read later: a filter without its plugin (LZF, Blosc, ... written by h5py or PyTables),
   a virtual dataset (its layout is not readable through MPI-IO here), or a chunked one
   whose writer stopped part-way (chunks never written: parallel HDF5 fails on them, and
   hangs when only some ranks' rows lie there; what they would hold is no data anyway).
   Collective. */
static PetscErrorCode CheckStorage(MPI_Comm comm, hid_t dset, const char *path, const char *name)
{
  hid_t        dcpl = H5Dget_create_plist(dset);
  H5D_layout_t layout;
  hsize_t      stored = 0, full  = 0; /* chunked: bytes stored, bytes of every chunk the extent spans */
  int          nfilters, missing = -1;
  char         fname[64] = "";

  PetscFunctionBeginUser;
  BasisCallH5(dcpl);
  layout = H5Pget_layout(dcpl);
  if (layout == H5D_CHUNKED) {
    hid_t   space = H5Dget_space(dset), type = H5Dget_type(dset);
    hsize_t dims[H5S_MAX_RANK], chunk[H5S_MAX_RANK];
    int     nd;
    BasisCallH5(space);
    BasisCallH5(type);
    nd = H5Sget_simple_extent_ndims(space);
    BasisCallH5(nd);
    BasisCallH5(H5Sget_simple_extent_dims(space, dims, NULL));
    BasisCallH5(H5Pget_chunk(dcpl, nd, chunk));
    full = H5Tget_size(type);
    for (int d = 0; d < nd; d++)
      full *= (dims[d] + chunk[d] - 1) / chunk[d] * chunk[d]; /* edge chunks whole */
    stored = H5Dget_storage_size(dset);
    BasisCallH5(H5Tclose(type));
    BasisCallH5(H5Sclose(space));
  }
  nfilters = H5Pget_nfilters(dcpl);
  for (int i = 0; i < nfilters && missing < 0; i++) {
    unsigned int flags, config;
    size_t       ncd = 0;
    H5Z_filter_t id  = H5Pget_filter2(dcpl, (unsigned)i, &flags, &ncd, NULL, sizeof(fname), fname, &config);
    if (id >= 0 && H5Zfilter_avail(id) <= 0) missing = (int)id;
  }
  BasisCallH5(H5Pclose(dcpl));
  PetscCheck(layout != H5D_VIRTUAL, comm, PETSC_ERR_FILE_UNEXPECTED,
             "%s: /%s is a virtual dataset, which basis cannot read through parallel HDF5; write the data "
             "into a regular dataset (h5py: f2['%s'] = f['%s'][()])",
             path, name, name, name);
  PetscCheck(
      missing < 0, comm, PETSC_ERR_FILE_UNEXPECTED,
      "%s: /%s is compressed with HDF5 filter %d (%s), which this HDF5 cannot decode; point "
      "HDF5_PLUGIN_PATH at the filter's plugin, or rewrite the file without it (h5repack -f NONE %s OUT.h5)",
      path, name, missing, fname[0] ? fname : "unknown", path);
  /* Without filters every stored chunk is a whole chunk, edge chunks included, so the bytes
     stored tell whether all were written. (H5Dget_space_status compares with the extent's
     bytes instead and says "part" of complete datasets with edge chunks before HDF5 1.10.9;
     H5Dget_num_chunks failed here on files opened through MPI-IO.) With filters stored
     sizes say nothing: only a dataset with no chunk at all is recognised. */
  PetscCheck(layout != H5D_CHUNKED || full == 0 || (nfilters ? stored > 0 : stored >= full), comm,
             PETSC_ERR_FILE_UNEXPECTED,
             "%s: /%s was %s written (the program that wrote it stopped or skipped rows: %s of its chunks "
             "are stored); write the whole dataset again",
             path, name, stored ? "only partly" : "never", stored ? "not all" : "none");
  PetscFunctionReturn(0);
}

PetscErrorCode BasisInputOpen(MPI_Comm comm, const char *path, BasisInput *in)
{
  hid_t       space, type;
  int         ndims;
  hsize_t     dims[2];
  H5T_class_t cls;
  PetscMPIInt size;

  PetscFunctionBeginUser;
  PetscCall(PetscMemzero(in, sizeof(*in)));
  in->comm     = comm;
  in->features = in->labels = -1;
  PetscCall(PetscStrncpy(in->path, path ? path : "", sizeof(in->path)));
  PetscCall(BasisH5OpenRead(comm, path, "input", &in->file));
  PetscCheck(H5Lexists(in->file, "features", H5P_DEFAULT) > 0, comm, PETSC_ERR_FILE_UNEXPECTED,
             "input %s has no dataset /features; basis reads an N x D matrix named /features "
             "(scripts/ convert common formats)",
             path);
  in->features = H5Dopen2(in->file, "features", H5P_DEFAULT);
  BasisCheckAll(comm, in->features >= 0, PETSC_ERR_FILE_UNEXPECTED, "input %s: /features is not a dataset",
                path);
  {
    char what[PETSC_MAX_PATH_LEN + 8];
    PetscCall(PetscSNPrintf(what, sizeof(what), "input %s", path));
    PetscCall(CheckStorage(comm, in->features, what, "features"));
  }
  space = H5Dget_space(in->features);
  BasisCallH5(space);
  ndims = H5Sget_simple_extent_ndims(space);
  PetscCheck(ndims == 2, comm, PETSC_ERR_FILE_UNEXPECTED,
             "input %s: /features has %d dimensions; it must be 2-D (N points x D features)", path, ndims);
  BasisCallH5(H5Sget_simple_extent_dims(space, dims, NULL));
  BasisCallH5(H5Sclose(space));
  type = H5Dget_type(in->features);
  BasisCallH5(type);
  cls = H5Tget_class(type);
  BasisCallH5(H5Tclose(type));
  PetscCheck(cls == H5T_FLOAT || cls == H5T_INTEGER, comm, PETSC_ERR_FILE_UNEXPECTED,
             "input %s: /features is not numeric; store it as float32, float64 or integers", path);
  PetscCheck(dims[0] > 0 && dims[1] > 0, comm, PETSC_ERR_FILE_UNEXPECTED,
             "input %s: /features is %llu x %llu; it needs at least one point and one feature", path,
             (unsigned long long)dims[0], (unsigned long long)dims[1]);
  PetscCheck(dims[0] < PETSC_MAX_INT && dims[1] < PETSC_MAX_INT, comm, PETSC_ERR_FILE_UNEXPECTED,
             "input %s: /features is too large for 32-bit indices", path);
  in->N = (PetscInt)dims[0];
  in->D = (PetscInt)dims[1];
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCheck(in->N >= size, comm, PETSC_ERR_ARG_SIZ,
             "input %s has %d point%s but the run has %d ranks; use at most %d rank%s", path, (int)in->N,
             in->N == 1 ? "" : "s", (int)size, (int)in->N, in->N == 1 ? "" : "s");

  { /* /labels: the one validation, shared with eval (BasisH5LabelsOpen) */
    char what[PETSC_MAX_PATH_LEN + 8];
    PetscCall(PetscSNPrintf(what, sizeof(what), "input %s", path));
    PetscCall(BasisH5LabelsOpen(comm, in->file, what, in->N, "/features", &in->labels));
    in->has_labels = in->labels >= 0 ? PETSC_TRUE : PETSC_FALSE;
  }
  PetscFunctionReturn(0);
}

/* Rows per slab for rows of `cols` values of `elem` bytes. */
static PetscInt SlabRows(PetscInt cols, size_t elem)
{
  size_t rows = BASIS_IO_SLAB_BYTES / ((size_t)PetscMax(cols, 1) * elem);
  return (PetscInt)PetscMax(rows, 1);
}

/* HDF5 conversion exception handler: count values clipped to the memory type's range
   (HDF5 clips them silently) and let HDF5 clip. */
static H5T_conv_ret_t CountClipped(H5T_conv_except_t except, hid_t src, hid_t dst, void *sbuf, void *dbuf,
                                   void *ctx)
{
  (void)src, (void)dst, (void)sbuf, (void)dbuf;
  if (except == H5T_CONV_EXCEPT_RANGE_HI || except == H5T_CONV_EXCEPT_RANGE_LOW) (*(long long *)ctx)++;
  return H5T_CONV_UNHANDLED;
}

/* "/name in file", for messages. */
static const char *DatasetName(hid_t dset, char *buf, size_t len)
{
  char name[256] = "?", file[PETSC_MAX_PATH_LEN] = "?";

  if (H5Iget_name(dset, name, sizeof(name)) < 0) snprintf(name, sizeof(name), "?");
  if (H5Fget_name(dset, file, sizeof(file)) < 0) snprintf(file, sizeof(file), "?");
  snprintf(buf, len, "%s in %s", name, file);
  return buf;
}

/* Collective transfer of rows [start, start+n) x cols between dset and buf, in slabs.
   clipped (reads only, may be NULL): counts values outside the range of memtype. */
static PetscErrorCode TransferRows(MPI_Comm comm, hid_t dset, PetscInt start, PetscInt n, PetscInt cols,
                                   hid_t memtype, void *buf, PetscBool write, long long *clipped)
{
  hid_t    fspace, mspace, dxpl;
  size_t   elem = H5Tget_size(memtype);
  PetscInt slab = SlabRows(cols, elem), nslabs = (n + slab - 1) / slab, max_slabs;
  int      rank_ndims;
  char     name[PETSC_MAX_PATH_LEN + 300];

  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Allreduce(&nslabs, &max_slabs, 1, MPIU_INT, MPI_MAX, comm));
  fspace = H5Dget_space(dset);
  BasisCallH5(fspace);
  rank_ndims = H5Sget_simple_extent_ndims(fspace);
  dxpl       = H5Pcreate(H5P_DATASET_XFER);
  BasisCallH5(H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE));
  if (clipped) BasisCallH5(H5Pset_type_conv_cb(dxpl, CountClipped, clipped));
  for (PetscInt s = 0; s < max_slabs; s++) {
    PetscInt lo = PetscMin(s * slab, n), cnt = PetscMin(slab, n - lo);
    hsize_t  off[2] = {(hsize_t)(start + lo), 0}, count[2] = {(hsize_t)cnt, (hsize_t)cols};
    herr_t   err;

    if (cnt > 0)
      BasisCallH5(H5Sselect_hyperslab(fspace, H5S_SELECT_SET, off, NULL, count, NULL));
    else
      BasisCallH5(H5Sselect_none(fspace));
    mspace = H5Screate_simple(rank_ndims, count, NULL);
    if (cnt == 0) BasisCallH5(H5Sselect_none(mspace));
    if (write)
      err = H5Dwrite(dset, memtype, mspace, fspace, dxpl, (char *)buf + (size_t)lo * cols * elem);
    else
      err = H5Dread(dset, memtype, mspace, fspace, dxpl, (char *)buf + (size_t)lo * cols * elem);
    BasisCallH5(H5Sclose(mspace));
    if (write)
      BasisCheckAll(comm, err >= 0, PETSC_ERR_FILE_WRITE, "HDF5 write of rows %s failed (disk full?)",
                    DatasetName(dset, name, sizeof(name)));
    else
      BasisCheckAll(comm, err >= 0, PETSC_ERR_FILE_READ,
                    "HDF5 read of rows %s failed: the file is damaged (a truncated or corrupt chunk); "
                    "restore or recreate it",
                    DatasetName(dset, name, sizeof(name)));
  }
  BasisCallH5(H5Pclose(dxpl));
  BasisCallH5(H5Sclose(fspace));
  PetscFunctionReturn(0);
}

/*
  BasisH5ReadRows / BasisH5WriteRows - rows [start, start+n) of a 2-D (or 1-D, cols = 1)
  dataset, collectively; n may differ between ranks and be 0.
*/
PetscErrorCode BasisH5ReadRows(MPI_Comm comm, hid_t dset, PetscInt start, PetscInt n, PetscInt cols,
                               hid_t memtype, void *buf)
{
  long long clipped = 0, all;
  PetscBool integer = (PetscBool)(H5Tget_class(memtype) == H5T_INTEGER);

  PetscFunctionBeginUser;
  PetscCall(TransferRows(comm, dset, start, n, cols, memtype, buf, PETSC_FALSE, integer ? &clipped : NULL));
  PetscCallMPI(MPI_Allreduce(&clipped, &all, 1, MPI_LONG_LONG, MPI_SUM, comm));
  if (all) {
    char name[PETSC_MAX_PATH_LEN + 300];
    SETERRQ(comm, PETSC_ERR_FILE_UNEXPECTED,
            "%s holds %lld values outside the range of a 32-bit integer, which basis would clip; "
            "renumber them (class ids from 0 to %d)",
            DatasetName(dset, name, sizeof(name)), all, INT_MAX);
  }
  PetscFunctionReturn(0);
}

PetscErrorCode BasisH5WriteRows(MPI_Comm comm, hid_t dset, PetscInt start, PetscInt n, PetscInt cols,
                                hid_t memtype, const void *buf)
{
  PetscFunctionBeginUser;
  PetscCall(PetscLogEventBegin(BASIS_WriteRows, 0, 0, 0, 0));
  /* a full disk is refused here, agreed, before any rank starts a collective write */
  PetscCall(BasisOutputReserveSpace(comm, dset));
  PetscCall(TransferRows(comm, dset, start, n, cols, memtype, (void *)buf, PETSC_TRUE, NULL));
  PetscCall(PetscLogEventEnd(BASIS_WriteRows, 0, 0, 0, 0));
  PetscFunctionReturn(0);
}

/*
  BasisInputRead - rows [start, start+n) of /features as float32, checked finite.

  Collective on in->comm (every rank calls; n may be 0). Output: x [n][D].
*/
PetscErrorCode BasisInputRead(BasisInput *in, PetscInt start, PetscInt n, float x[])
{
  long long bad[2] = {0, 0}, all_bad[2];
  long long first  = PETSC_MAX_INT, all_first;
  size_t    total  = (size_t)n * (size_t)in->D;

  PetscFunctionBeginUser;
  PetscCall(PetscLogEventBegin(BASIS_ReadShard, 0, 0, 0, 0));
  PetscCall(BasisH5ReadRows(in->comm, in->features, start, n, in->D, H5T_NATIVE_FLOAT, x));
  for (size_t i = 0; i < total; i++)
    if (!isfinite(x[i])) {
      if (!bad[0]) first = start + (long long)(i / (size_t)in->D);
      bad[0]++;
    }
  PetscCallMPI(MPI_Allreduce(bad, all_bad, 1, MPI_LONG_LONG, MPI_SUM, in->comm));
  PetscCallMPI(MPI_Allreduce(&first, &all_first, 1, MPI_LONG_LONG, MPI_MIN, in->comm));
  PetscCall(PetscLogEventEnd(BASIS_ReadShard, 0, 0, 0, 0));
  PetscCheck(
      all_bad[0] == 0, in->comm, PETSC_ERR_FP,
      "input %s: /features has %lld non-finite values (NaN/Inf, or too large for float32) in the rows read, "
      "the first in row %lld; remove or impute them",
      in->path, all_bad[0], all_first);
  PetscFunctionReturn(0);
}

/* BasisInputReadLabels - rows [start, start+n) of /labels. Collective on in->comm. */
PetscErrorCode BasisInputReadLabels(BasisInput *in, PetscInt start, PetscInt n, int labels[])
{
  PetscFunctionBeginUser;
  PetscCheck(in->has_labels, in->comm, PETSC_ERR_ARG_WRONG, "input %s has no /labels", in->path);
  PetscCall(BasisH5ReadRows(in->comm, in->labels, start, n, 1, H5T_NATIVE_INT, labels));
  PetscFunctionReturn(0);
}

/*
  BasisInputReadShard - this rank's contiguous block of rows (and labels, if any).

  Collective on in->comm. Memory: the block itself plus HDF5's bounded conversion buffer.
*/
PetscErrorCode BasisInputReadShard(BasisInput *in, BasisShard *shard)
{
  PetscMPIInt size, rank;

  PetscFunctionBeginUser;
  PetscCall(PetscMemzero(shard, sizeof(*shard)));
  PetscCallMPI(MPI_Comm_size(in->comm, &size));
  PetscCallMPI(MPI_Comm_rank(in->comm, &rank));
  shard->N = in->N;
  shard->D = in->D;
  BasisBlockRange(in->N, size, rank, &shard->rstart, &shard->n);
  PetscCall(PetscMalloc1((size_t)shard->n * (size_t)in->D, &shard->x));
  PetscCall(BasisInputRead(in, shard->rstart, shard->n, shard->x));
  if (in->has_labels) {
    PetscCall(PetscMalloc1(shard->n, &shard->labels));
    PetscCall(BasisInputReadLabels(in, shard->rstart, shard->n, shard->labels));
  }
  PetscFunctionReturn(0);
}

PetscErrorCode BasisShardDestroy(BasisShard *shard)
{
  PetscFunctionBeginUser;
  PetscCall(PetscFree(shard->x));
  PetscCall(PetscFree(shard->labels));
  PetscFunctionReturn(0);
}

/* BasisInputClose - collective on in->comm. */
PetscErrorCode BasisInputClose(BasisInput *in)
{
  PetscFunctionBeginUser;
  if (in->labels >= 0) BasisCallH5(H5Dclose(in->labels));
  if (in->features >= 0) BasisCallH5(H5Dclose(in->features));
  if (in->file >= 0) BasisCallH5(H5Fclose(in->file));
  in->file = in->features = in->labels = -1;
  PetscFunctionReturn(0);
}

/*
  BasisH5CreateMatrix - create a rows x cols dataset (cols = 0: a 1-D dataset of rows).

  Collective (HDF5 metadata). Contiguous layout: written once, read in row blocks.
*/
PetscErrorCode BasisH5CreateMatrix(hid_t file, const char *name, PetscInt rows, PetscInt cols, hid_t type,
                                   hid_t *dset)
{
  hsize_t dims[2] = {(hsize_t)rows, (hsize_t)cols};
  hid_t   space, lcpl;

  PetscFunctionBeginUser;
  space = H5Screate_simple(cols > 0 ? 2 : 1, dims, NULL);
  BasisCallH5(space);
  lcpl = H5Pcreate(H5P_LINK_CREATE);
  BasisCallH5(H5Pset_create_intermediate_group(lcpl, 1));
  *dset = H5Dcreate2(file, name, type, space, lcpl, H5P_DEFAULT, H5P_DEFAULT);
  BasisCallH5(*dset);
  BasisCallH5(H5Pclose(lcpl));
  BasisCallH5(H5Sclose(space));
  PetscFunctionReturn(0);
}

/* ---- Readers and copiers shared by the commands (embed, exact, eval) ---- */

/*
  BasisH5MatrixOpen - open the 2-D numeric dataset name of an open file and return its shape.

  Collective on comm (every rank opens the same dataset; errors are raised on comm).

  Input:
    path - the file's name, for the messages
  Output:
    dset       - the open dataset (close with H5Dclose)
    rows, cols - its shape, both >= 1
*/
PetscErrorCode BasisH5MatrixOpen(MPI_Comm comm, hid_t file, const char *path, const char *name, hid_t *dset,
                                 PetscInt *rows, PetscInt *cols)
{
  hid_t       space, type;
  hsize_t     dims[2] = {0, 0};
  int         ndims;
  H5T_class_t cls;

  PetscFunctionBeginUser;
  *dset = H5Dopen2(file, name, H5P_DEFAULT);
  BasisCheckAll(comm, *dset >= 0, PETSC_ERR_FILE_UNEXPECTED, "%s: /%s is not a dataset", path, name);
  PetscCall(CheckStorage(comm, *dset, path, name));
  space = H5Dget_space(*dset);
  BasisCallH5(space);
  ndims = H5Sget_simple_extent_ndims(space);
  if (ndims == 2) BasisCallH5(H5Sget_simple_extent_dims(space, dims, NULL));
  BasisCallH5(H5Sclose(space));
  type = H5Dget_type(*dset);
  BasisCallH5(type);
  cls = H5Tget_class(type);
  BasisCallH5(H5Tclose(type));
  PetscCheck(ndims == 2, comm, PETSC_ERR_FILE_UNEXPECTED, "%s: /%s has %d dimensions; it must be N x K", path,
             name, ndims);
  PetscCheck(cls == H5T_FLOAT || cls == H5T_INTEGER, comm, PETSC_ERR_FILE_UNEXPECTED,
             "%s: /%s is not numeric", path, name);
  PetscCheck(dims[0] > 0 && dims[1] > 0 && dims[0] < PETSC_MAX_INT && dims[1] < PETSC_MAX_INT, comm,
             PETSC_ERR_FILE_UNEXPECTED, "%s: /%s is %llu x %llu; it needs at least one row and one column",
             path, name, (unsigned long long)dims[0], (unsigned long long)dims[1]);
  *rows = (PetscInt)dims[0];
  *cols = (PetscInt)dims[1];
  PetscFunctionReturn(0);
}

/*
  BasisH5MatrixReadRows - rows [rstart, rstart + n) of an open matrix as double, checked finite.

  Collective on comm (n may differ between ranks and be 0); the finiteness verdict is agreed.

  Input:
    path - the file's name, for the messages
    cols - the matrix's column count (BasisH5MatrixOpen)
  Output:
    Y - [n][cols] row-major, allocated here (PetscFree)
*/
PetscErrorCode BasisH5MatrixReadRows(MPI_Comm comm, const char *path, hid_t dset, PetscInt rstart, PetscInt n,
                                     PetscInt cols, PetscReal **Y)
{
  long long bad = 0, first = PETSC_MAX_INT;

  PetscFunctionBeginUser;
  PetscCall(PetscLogEventBegin(BASIS_ReadShard, 0, 0, 0, 0));
  PetscCall(PetscMalloc1((size_t)PetscMax(n, 1) * cols, Y));
  PetscCall(BasisH5ReadRows(comm, dset, rstart, n, cols, H5T_NATIVE_DOUBLE, *Y));
  for (size_t i = 0; i < (size_t)n * cols; i++)
    if (PetscIsInfOrNanReal((*Y)[i])) {
      if (!bad++) first = rstart + (long long)(i / (size_t)cols);
    }
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &bad, 1, MPI_LONG_LONG, MPI_SUM, comm));
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &first, 1, MPI_LONG_LONG, MPI_MIN, comm));
  PetscCall(PetscLogEventEnd(BASIS_ReadShard, 0, 0, 0, 0));
  PetscCheck(!bad, comm, PETSC_ERR_FP,
             "%s has %lld non-finite values (NaN/Inf), the first in row %lld; the model may have diverged",
             path, bad, first);
  PetscFunctionReturn(0);
}

/*
  BasisH5LabelsOpen - open and validate /labels of an open file, if it has one: integer
  class ids, N of them (1-D, or N x 1).

  Collective on comm; every rank reaches the same verdict from the same metadata.

  Input:
    what - how the messages name the file ("input data.h5", "emb.h5")
    N    - the number of rows the labels must match
    rows - how the messages name those rows ("/features", "the embeddings")
  Output:
    dset - the open /labels (close with H5Dclose), or -1 when the file has none
*/
PetscErrorCode BasisH5LabelsOpen(MPI_Comm comm, hid_t file, const char *what, PetscInt N, const char *rows,
                                 hid_t *dset)
{
  hid_t       space, type;
  int         ndims;
  hsize_t     dims[H5S_MAX_RANK] = {0, 1};
  H5T_class_t cls;

  PetscFunctionBeginUser;
  *dset = -1;
  if (H5Lexists(file, "labels", H5P_DEFAULT) <= 0) PetscFunctionReturn(0);
  *dset = H5Dopen2(file, "labels", H5P_DEFAULT);
  BasisCheckAll(comm, *dset >= 0, PETSC_ERR_FILE_UNEXPECTED, "%s: /labels is not a dataset", what);
  PetscCall(CheckStorage(comm, *dset, what, "labels"));
  space = H5Dget_space(*dset);
  BasisCallH5(space);
  ndims = H5Sget_simple_extent_ndims(space);
  BasisCallH5(ndims);
  BasisCallH5(H5Sget_simple_extent_dims(space, dims, NULL));
  BasisCallH5(H5Sclose(space));
  type = H5Dget_type(*dset);
  BasisCallH5(type);
  cls = H5Tget_class(type);
  BasisCallH5(H5Tclose(type));
  PetscCheck(cls == H5T_INTEGER, comm, PETSC_ERR_FILE_UNEXPECTED,
             "%s: /labels must hold integers (class ids); found another type", what);
  if (!((ndims == 1 || (ndims == 2 && dims[1] == 1)) && dims[0] == (hsize_t)N)) {
    char shape[H5S_MAX_RANK * 24 + 32] = "is a scalar";
    if (ndims == 1) snprintf(shape, sizeof(shape), "has %llu entries", (unsigned long long)dims[0]);
    for (int d = 0, c = 0; ndims > 1 && d < ndims; d++)
      c += snprintf(shape + c, sizeof(shape) - c, "%s%llu", d ? " x " : "is a ", (unsigned long long)dims[d]);
    SETERRQ(comm, PETSC_ERR_FILE_UNEXPECTED,
            "%s: /labels %s%s but %s has %d rows; labels must be %d integers (1-D, or %d x 1)", what, shape,
            ndims > 1 ? " array" : "", rows, (int)N, (int)N, (int)N);
  }
  PetscFunctionReturn(0);
}

/*
  BasisH5LabelsRead - this rank's rows [rstart, rstart + n) of /labels of an open file,
  validated by BasisH5LabelsOpen.

  Collective on comm. Output: labels [n]; *found false (labels untouched) when the file has
  no /labels.
*/
PetscErrorCode BasisH5LabelsRead(MPI_Comm comm, hid_t file, const char *what, PetscInt N, const char *rows,
                                 PetscInt rstart, PetscInt n, int labels[], PetscBool *found)
{
  hid_t dset;

  PetscFunctionBeginUser;
  PetscCall(BasisH5LabelsOpen(comm, file, what, N, rows, &dset));
  *found = dset >= 0 ? PETSC_TRUE : PETSC_FALSE;
  if (dset < 0) PetscFunctionReturn(0);
  PetscCall(BasisH5ReadRows(comm, dset, rstart, n, 1, H5T_NATIVE_INT, labels));
  BasisCallH5(H5Dclose(dset));
  PetscFunctionReturn(0);
}

/*
  BasisInputCopyLabels - copy the input's /labels, if any, into an output file as /labels
  (N, int32), so that `basis eval` needs only that file. Nothing when the input has none.

  Collective on in->comm; every rank copies its block of rows (BasisBlockRange).
*/
PetscErrorCode BasisInputCopyLabels(BasisInput *in, hid_t file)
{
  PetscMPIInt size, rank;
  PetscInt    rstart, n;
  hid_t       lset;
  int        *labels;

  PetscFunctionBeginUser;
  if (!in->has_labels) PetscFunctionReturn(0);
  PetscCallMPI(MPI_Comm_size(in->comm, &size));
  PetscCallMPI(MPI_Comm_rank(in->comm, &rank));
  BasisBlockRange(in->N, size, rank, &rstart, &n);
  PetscCall(PetscMalloc1(PetscMax(n, 1), &labels));
  PetscCall(BasisInputReadLabels(in, rstart, n, labels));
  PetscCall(BasisH5CreateMatrix(file, "labels", in->N, 0, H5T_STD_I32LE, &lset));
  PetscCall(BasisH5WriteRows(in->comm, lset, rstart, n, 1, H5T_NATIVE_INT, labels));
  BasisCallH5(H5Dclose(lset));
  PetscCall(PetscFree(labels));
  PetscFunctionReturn(0);
}
