/*
  model.c - model/checkpoint files (DESIGN.md "Files").

  Layout (HDF5, all written by rank 0; a few MB for the default network):
    /            attrs basis_format, basis_version, basis_complete, and every scalar
                 parameter (N, D, K, l, m, R, seed, step, steps, knn, ..., sample)
    /network/widths [nlayers+1] int64, /network/params [nparams] float32
    /optimizer/adam_m, /optimizer/adam_v [nparams] float32
    /input/mean [D] float32                 (the network sees (x - mean) / scale)
    /reference/anchors [l] int64, /reference/anchor_features [l][D] float32,
    /reference/phi [l][K] float64, /reference/lambda [K] float64
    /train/rng [nranks][4] uint64           (each rank's batch stream)
    /train/history [steps][4] float64       (loss, align residual, cond, inliers)
    /orthonormalize/R [K][K] float64        (optional; `basis embed -orthonormalize`)
  Writing goes through BasisOutput (temporary name, completeness attribute, rename), so
  an interrupted checkpoint never replaces the previous good one. Reading checks the
  format version, completeness, and the shape of every dataset, so a truncated, foreign
  or older file is refused with a message instead of being misread.

  Collective on comm: rank 0 does the file I/O and broadcasts the outcome (and, when
  reading, the contents), so every rank returns the same error.
*/
#include <basis/model.h>
#include <basis/log.h>
#include <basis/output.h>
#include <basis/h5io.h>
#include <string.h>

const char *const BasisSampleTypes[] = {"global", "shard", "BasisSampleType", "BASIS_SAMPLE_", NULL};

PetscErrorCode BasisModelAllocate(BasisModel *mo)
{
  PetscInt K = mo->widths[mo->nlayers], D = mo->D;

  PetscFunctionBeginUser;
  PetscCall(PetscCalloc3(mo->nparams, &mo->params, mo->nparams, &mo->adam_m, mo->nparams, &mo->adam_v));
  PetscCall(PetscCalloc4(D, &mo->mean, mo->l, &mo->anchors, (size_t)mo->l * D, &mo->anchor_x,
                         (size_t)mo->l * K, &mo->phi_ref));
  PetscCall(PetscCalloc3(K, &mo->lambda_ref, (size_t)mo->nranks * 4, &mo->rng,
                         (size_t)PetscMax(mo->steps, 1) * BASIS_HISTORY_FIELDS, &mo->history));
  PetscCall(PetscCalloc2(K, &mo->out_shift, K, &mo->out_scale));
  for (PetscInt j = 0; j < K; j++) mo->out_scale[j] = 1.0;
  PetscFunctionReturn(0);
}

PetscErrorCode BasisModelFree(BasisModel *mo)
{
  PetscFunctionBeginUser;
  PetscCall(PetscFree3(mo->params, mo->adam_m, mo->adam_v));
  PetscCall(PetscFree4(mo->mean, mo->anchors, mo->anchor_x, mo->phi_ref));
  PetscCall(PetscFree3(mo->lambda_ref, mo->rng, mo->history));
  PetscCall(PetscFree2(mo->out_shift, mo->out_scale));
  PetscCall(PetscFree(mo->ortho_R));
  PetscFunctionReturn(0);
}

/* Write a dataset as one chunk with a Fletcher-32 checksum: a flipped bit in the weights
   makes the read fail ("the file is truncated or corrupt") instead of giving a model that
   silently computes something else. Any HDF5 reader can read it (the filter is built in). */
static PetscErrorCode WriteArray(hid_t file, const char *name, hid_t filetype, hid_t memtype, int rank,
                                 const hsize_t dims[], const void *buf)
{
  hid_t space, dset, lcpl, dcpl, dxpl;

  PetscFunctionBeginUser;
  space = H5Screate_simple(rank, dims, NULL);
  BasisCallH5(space);
  lcpl = H5Pcreate(H5P_LINK_CREATE);
  BasisCallH5(H5Pset_create_intermediate_group(lcpl, 1));
  dcpl = H5Pcreate(H5P_DATASET_CREATE);
  BasisCallH5(dcpl);
  /* a chunk can be neither empty nor 4 GiB; 1 GiB of model data is far beyond any network here */
  if (dims[0] > 0 && (rank < 2 || dims[1] > 0) &&
      dims[0] * (rank > 1 ? dims[1] : 1) * H5Tget_size(filetype) < ((hsize_t)1 << 30)) {
    BasisCallH5(H5Pset_chunk(dcpl, rank, dims));
    BasisCallH5(H5Pset_fletcher32(dcpl));
  }
  dset = H5Dcreate2(file, name, filetype, space, lcpl, dcpl, H5P_DEFAULT);
  BasisCallH5(dset);
  /* the file is open through MPI-IO (on PETSC_COMM_SELF): parallel HDF5 writes filtered
     datasets only collectively */
  dxpl = H5Pcreate(H5P_DATASET_XFER);
  BasisCallH5(dxpl);
  BasisCallH5(H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE));
  BasisCallH5(H5Dwrite(dset, memtype, H5S_ALL, H5S_ALL, dxpl, buf));
  BasisCallH5(H5Pclose(dxpl));
  BasisCallH5(H5Dclose(dset));
  BasisCallH5(H5Pclose(dcpl));
  BasisCallH5(H5Pclose(lcpl));
  BasisCallH5(H5Sclose(space));
  PetscFunctionReturn(0);
}

static PetscErrorCode WriteInt64(hid_t file, const char *name, PetscInt n, const PetscInt v[])
{
  hsize_t    dim = (hsize_t)n;
  long long *w;

  PetscFunctionBeginUser;
  PetscCall(PetscMalloc1(n, &w));
  for (PetscInt i = 0; i < n; i++) w[i] = v[i];
  PetscCall(WriteArray(file, name, H5T_STD_I64LE, H5T_NATIVE_LLONG, 1, &dim, w));
  PetscCall(PetscFree(w));
  PetscFunctionReturn(0);
}

/* Serial write by one rank; errors are returned, not raised collectively. */
static PetscErrorCode ModelWriteSerial(const char *path, PetscBool force, const char *const inputs[],
                                       const BasisModel *mo)
{
  BasisOutput out;
  hid_t       f;
  PetscInt    K = mo->widths[mo->nlayers], D = mo->D;
  hsize_t     dims[2];
  PetscInt    ints[]  = {BASIS_MODEL_FORMAT,
                         mo->N,
                         D,
                         K,
                         mo->l,
                         mo->m,
                         mo->R,
                         mo->seed,
                         mo->step,
                         mo->steps,
                         mo->nranks,
                         mo->graph.knn,
                         mo->graph.scale_neighbor,
                         mo->align.ransac_iters,
                         mo->align.ransac_points};
  double      reals[] = {mo->scale, mo->target_scale, mo->lr, mo->align.ransac_tol, mo->align.max_cond};

  PetscFunctionBeginUser;
  PetscCall(BasisOutputCreate(PETSC_COMM_SELF, path, force, inputs, &out));
  f = out.file;
  PetscCall(BasisH5AttrWriteString(f, "basis_version", BASIS_VERSION));
  PetscCall(BasisH5AttrWriteInt(
      f, "format_N_D_K_l_m_R_seed_step_steps_nranks_knn_scaleneighbor_ransaciters_ransacpoints",
      (PetscInt)(sizeof(ints) / sizeof(ints[0])), ints));
  PetscCall(BasisH5AttrWriteDouble(f, "scale_targetscale_lr_ransactol_maxcond", 5, reals));
  PetscCall(BasisH5AttrWriteDouble(f, "lr_final", 1, &mo->lr_final));
  PetscCall(BasisH5AttrWriteString(f, "scale", BasisScaleTypes[mo->graph.scale]));
  PetscCall(BasisH5AttrWriteString(f, "laplacian", BasisLaplacianTypes[mo->graph.laplacian]));
  PetscCall(BasisH5AttrWriteString(f, "align", BasisAlignTypes[mo->align.type]));
  PetscCall(BasisH5AttrWriteString(f, "sample", BasisSampleTypes[mo->sample]));
  PetscCall(WriteInt64(f, "network/widths", mo->nlayers + 1, mo->widths));
  dims[0] = (hsize_t)mo->nparams;
  PetscCall(WriteArray(f, "network/params", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 1, dims, mo->params));
  dims[0] = (hsize_t)K;
  PetscCall(WriteArray(f, "network/output_shift", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 1, dims, mo->out_shift));
  PetscCall(WriteArray(f, "network/output_scale", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 1, dims, mo->out_scale));
  dims[0] = (hsize_t)mo->nparams;
  PetscCall(WriteArray(f, "optimizer/adam_m", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 1, dims, mo->adam_m));
  PetscCall(WriteArray(f, "optimizer/adam_v", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 1, dims, mo->adam_v));
  dims[0] = (hsize_t)D;
  PetscCall(WriteArray(f, "input/mean", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 1, dims, mo->mean));
  PetscCall(WriteInt64(f, "reference/anchors", mo->l, mo->anchors));
  dims[0] = (hsize_t)mo->l, dims[1] = (hsize_t)D;
  PetscCall(
      WriteArray(f, "reference/anchor_features", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, dims, mo->anchor_x));
  dims[1] = (hsize_t)K;
  PetscCall(WriteArray(f, "reference/phi", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 2, dims, mo->phi_ref));
  dims[0] = (hsize_t)K;
  PetscCall(WriteArray(f, "reference/lambda", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 1, dims, mo->lambda_ref));
  dims[0] = (hsize_t)mo->nranks, dims[1] = 4;
  PetscCall(WriteArray(f, "train/rng", H5T_STD_U64LE, H5T_NATIVE_UINT64, 2, dims, mo->rng));
  dims[0] = (hsize_t)PetscMax(mo->steps, 1), dims[1] = BASIS_HISTORY_FIELDS;
  PetscCall(WriteArray(f, "train/history", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 2, dims, mo->history));
  if (mo->ortho_R) {
    dims[0] = dims[1] = (hsize_t)K;
    PetscCall(WriteArray(f, "orthonormalize/R", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 2, dims, mo->ortho_R));
  }
  PetscCall(BasisOutputCommit(&out));
  PetscFunctionReturn(0);
}

/*
  BasisModelWrite - write a model/checkpoint atomically.

  Collective on comm (rank 0 writes; the outcome is broadcast).
*/
PetscErrorCode BasisModelWrite(MPI_Comm comm, const char *path, PetscBool force, const char *const inputs[],
                               const BasisModel *mo)
{
  PetscMPIInt    rank;
  PetscErrorCode err = 0;

  PetscFunctionBeginUser;
  PetscCall(PetscLogEventBegin(BASIS_Checkpoint, 0, 0, 0, 0));
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  if (rank == 0) err = ModelWriteSerial(path, force, inputs, mo);
  PetscCallMPI(MPI_Bcast(&err, 1, MPI_INT, 0, comm));
  PetscCheck(!err, comm, PETSC_ERR_FILE_WRITE, "writing model file %s failed (see the message above)", path);
  PetscCall(PetscLogEventEnd(BASIS_Checkpoint, 0, 0, 0, 0));
  PetscFunctionReturn(0);
}

/* Read a dataset whose shape must be exactly dims[0..rank-1]. */
static PetscErrorCode ReadArray(hid_t f, const char *path, const char *name, hid_t memtype, int rank,
                                const hsize_t dims[], void *buf)
{
  hid_t       dset, space, type;
  hsize_t     got[4] = {0, 0, 0, 0};
  int         ndims;
  H5T_class_t cls,
      want = (memtype == H5T_NATIVE_FLOAT || memtype == H5T_NATIVE_DOUBLE) ? H5T_FLOAT : H5T_INTEGER;

  PetscFunctionBeginUser;
  PetscCheck(H5Lexists(f, name, H5P_DEFAULT) > 0, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED,
             "model file %s has no /%s; it is not a complete basis model (retrain, or pass the right -model)",
             path, name);
  /* damaged metadata makes these calls fail: it is reported as a wrong shape or type */
  dset = H5Dopen2(f, name, H5P_DEFAULT);
  PetscCheck(dset >= 0, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED,
             "model file %s: cannot open /%s; the file is corrupt (restore it or retrain)", path, name);
  space = H5Dget_space(dset);
  ndims = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
  if (ndims >= 1 && ndims <= 4) H5Sget_simple_extent_dims(space, got, NULL);
  if (space >= 0) H5Sclose(space);
  type = H5Dget_type(dset);
  cls  = type >= 0 ? H5Tget_class(type) : H5T_NO_CLASS;
  if (type >= 0) H5Tclose(type);
  PetscCheck(ndims == rank && got[0] == dims[0] && (rank < 2 || got[1] == dims[1]) && cls == want,
             PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED,
             "model file %s: /%s has the wrong shape or type (expected %d-D %llu x %llu); the file is "
             "corrupt or from "
             "another basis version",
             path, name, rank, (unsigned long long)dims[0], (unsigned long long)(rank > 1 ? dims[1] : 1));
  PetscCheck(
      H5Dread(dset, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0, PETSC_COMM_SELF, PETSC_ERR_FILE_READ,
      "model file %s: cannot read /%s; the file is truncated or corrupt (restore it or retrain)", path, name);
  BasisCallH5(H5Dclose(dset));
  PetscFunctionReturn(0);
}

static PetscErrorCode ReadAttr(hid_t f, const char *path, const char *name, hid_t memtype, hsize_t n,
                               void *buf)
{
  hid_t   attr, space;
  hsize_t got = 0;

  PetscFunctionBeginUser;
  PetscCheck(H5Aexists(f, name) > 0, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED,
             "model file %s has no attribute %s; it is not a basis model or is from another version", path,
             name);
  attr  = H5Aopen(f, name, H5P_DEFAULT);
  space = attr >= 0 ? H5Aget_space(attr) : -1;
  if (space >= 0 && H5Sget_simple_extent_ndims(space) == 1) H5Sget_simple_extent_dims(space, &got, NULL);
  if (space >= 0) H5Sclose(space);
  PetscCheck(got == n, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED,
             "model file %s: attribute %s has %llu values, expected %llu (another basis version?)", path,
             name, (unsigned long long)got, (unsigned long long)n);
  PetscCheck(H5Aread(attr, memtype, buf) >= 0, PETSC_COMM_SELF, PETSC_ERR_FILE_READ,
             "model file %s: cannot read attribute %s; the file is corrupt (restore it or retrain)", path,
             name);
  BasisCallH5(H5Aclose(attr));
  PetscFunctionReturn(0);
}

static PetscErrorCode ReadEnumAttr(hid_t f, const char *path, const char *name, const char *const list[],
                                   PetscInt *value)
{
  hid_t attr, type;
  char  buf[64] = "";

  PetscFunctionBeginUser;
  PetscCheck(H5Aexists(f, name) > 0, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED,
             "model file %s has no attribute %s", path, name);
  attr = H5Aopen(f, name, H5P_DEFAULT);
  type = attr >= 0 ? H5Aget_type(attr) : -1;
  PetscCheck(type >= 0 && H5Tget_class(type) == H5T_STRING, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED,
             "model file %s: attribute %s is not a string; the file is corrupt or not a basis model", path,
             name);
  if (H5Tis_variable_str(type) > 0) { /* written by another tool (h5py): read the pointer */
    char *s   = NULL;
    hid_t mem = H5Tcopy(H5T_C_S1);
    BasisCallH5(mem);
    BasisCallH5(H5Tset_size(mem, H5T_VARIABLE));
    BasisCallH5(H5Tset_cset(mem, H5Tget_cset(type))); /* h5py writes UTF-8 */
    PetscCheck(H5Aread(attr, mem, &s) >= 0, PETSC_COMM_SELF, PETSC_ERR_FILE_READ,
               "model file %s: cannot read attribute %s; the file is corrupt", path, name);
    if (s) PetscCall(PetscStrncpy(buf, s, sizeof(buf)));
    H5free_memory(s);
    BasisCallH5(H5Tclose(mem));
  } else {
    PetscCheck(H5Tget_size(type) < sizeof(buf), PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED,
               "model file %s: attribute %s is not a short string", path, name);
    PetscCheck(H5Aread(attr, type, buf) >= 0, PETSC_COMM_SELF, PETSC_ERR_FILE_READ,
               "model file %s: cannot read attribute %s; the file is corrupt", path, name);
  }
  BasisCallH5(H5Tclose(type));
  BasisCallH5(H5Aclose(attr));
  for (PetscInt i = 0; list[i] && list[i + 1] && list[i + 2];
       i++) /* enum lists end with name, prefix, NULL */
    if (!strcmp(buf, list[i])) {
      *value = i;
      PetscFunctionReturn(0);
    }
  SETERRQ(PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED,
          "model file %s: unknown %s '%s'; the file is corrupt or from another basis version", path, name,
          buf);
}

static PetscErrorCode ModelReadSerial(const char *path, BasisModel *mo)
{
  hid_t     f;
  long long ints[15], widths[BASIS_MAX_LAYERS + 2], complete = 0;
  double    reals[5];
  hsize_t   dims[2];
  PetscInt  K, e;
  hid_t     dset, space;

  PetscFunctionBeginUser;
  PetscCall(PetscMemzero(mo, sizeof(*mo)));
  PetscCall(BasisH5OpenRead(PETSC_COMM_SELF, path, "model", &f));
  PetscCheck(H5Aexists(f, "basis_complete") > 0, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED,
             "model file %s is incomplete (its writer was interrupted) or is not a basis model", path);
  PetscCall(ReadAttr(f, path, "basis_complete", H5T_NATIVE_LLONG, 1, &complete));
  PetscCall(ReadAttr(f, path,
                     "format_N_D_K_l_m_R_seed_step_steps_nranks_knn_scaleneighbor_ransaciters_ransacpoints",
                     H5T_NATIVE_LLONG, 15, ints));
  PetscCheck(ints[0] == BASIS_MODEL_FORMAT, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED,
             "model file %s has format %lld; this basis reads format %d (retrain with this version)", path,
             ints[0], BASIS_MODEL_FORMAT);
  PetscCall(ReadAttr(f, path, "scale_targetscale_lr_ransactol_maxcond", H5T_NATIVE_DOUBLE, 5, reals));
  mo->N = ints[1], mo->D = ints[2], K = ints[3], mo->l = ints[4], mo->m = ints[5], mo->R = ints[6];
  mo->seed = ints[7], mo->step = ints[8], mo->steps = ints[9], mo->nranks = ints[10];
  mo->graph.knn = ints[11], mo->graph.scale_neighbor = ints[12], mo->graph.K = K;
  mo->align.ransac_iters = ints[13], mo->align.ransac_points = ints[14];
  mo->scale = reals[0], mo->target_scale = reals[1], mo->lr = reals[2], mo->align.ransac_tol = reals[3];
  mo->align.max_cond = reals[4];
  /* files written before the schedule existed trained at a constant rate */
  mo->lr_final = mo->lr;
  if (H5Aexists(f, "lr_final") > 0)
    PetscCall(ReadAttr(f, path, "lr_final", H5T_NATIVE_DOUBLE, 1, &mo->lr_final));
  PetscCheck(mo->D > 0 && K > 0 && mo->l > K && mo->N >= mo->l && mo->m > mo->l && mo->nranks > 0 &&
                 mo->steps >= 0 && mo->step >= 0 && mo->step <= mo->steps && mo->D < 100000000 && K < 10000 &&
                 mo->l < 100000000 && mo->nranks < 1000000,
             PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED,
             "model file %s has inconsistent sizes; it is corrupt", path);
  PetscCall(ReadEnumAttr(f, path, "scale", BasisScaleTypes, &e));
  mo->graph.scale = (BasisScaleType)e;
  PetscCall(ReadEnumAttr(f, path, "laplacian", BasisLaplacianTypes, &e));
  mo->graph.laplacian = (BasisLaplacianType)e;
  PetscCall(ReadEnumAttr(f, path, "align", BasisAlignTypes, &e));
  mo->align.type = (BasisAlignType)e;
  /* files written before global sampling existed drew from the shards */
  mo->sample = BASIS_SAMPLE_SHARD;
  if (H5Aexists(f, "sample") > 0) {
    PetscCall(ReadEnumAttr(f, path, "sample", BasisSampleTypes, &e));
    mo->sample = (BasisSampleType)e;
  }

  /* network shape: the number of layers is the length of /network/widths */
  PetscCheck(H5Lexists(f, "network", H5P_DEFAULT) > 0 && H5Lexists(f, "network/widths", H5P_DEFAULT) > 0,
             PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "model file %s has no /network/widths", path);
  dset    = H5Dopen2(f, "network/widths", H5P_DEFAULT);
  space   = H5Dget_space(dset);
  dims[0] = 0;
  if (H5Sget_simple_extent_ndims(space) == 1) H5Sget_simple_extent_dims(space, dims, NULL);
  H5Sclose(space);
  H5Dclose(dset);
  PetscCheck(dims[0] >= 2 && dims[0] <= BASIS_MAX_LAYERS + 1, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED,
             "model file %s: /network/widths has %llu entries; corrupt", path, (unsigned long long)dims[0]);
  PetscCall(ReadArray(f, path, "network/widths", H5T_NATIVE_LLONG, 1, dims, widths));
  mo->nlayers = (PetscInt)dims[0] - 1;
  mo->nparams = 0;
  for (PetscInt i = 0; i <= mo->nlayers; i++) {
    PetscCheck(widths[i] > 0 && widths[i] < 1000000, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED,
               "model file %s: layer width %lld is invalid; corrupt", path, widths[i]);
    mo->widths[i] = (PetscInt)widths[i];
    if (i > 0) mo->nparams += (PetscCount)(widths[i - 1] + 1) * widths[i];
  }
  PetscCheck(mo->widths[0] == mo->D && mo->widths[mo->nlayers] == K, PETSC_COMM_SELF,
             PETSC_ERR_FILE_UNEXPECTED,
             "model file %s: network %d -> %d does not match D = %d, K = %d; corrupt", path,
             (int)mo->widths[0], (int)mo->widths[mo->nlayers], (int)mo->D, (int)K);
  PetscCall(BasisModelAllocate(mo));
  dims[0] = (hsize_t)mo->nparams;
  PetscCall(ReadArray(f, path, "network/params", H5T_NATIVE_FLOAT, 1, dims, mo->params));
  PetscCall(ReadArray(f, path, "optimizer/adam_m", H5T_NATIVE_FLOAT, 1, dims, mo->adam_m));
  PetscCall(ReadArray(f, path, "optimizer/adam_v", H5T_NATIVE_FLOAT, 1, dims, mo->adam_v));
  if (H5Lexists(f, "network/output_scale", H5P_DEFAULT) > 0) { /* else: the output is the embedding */
    dims[0] = (hsize_t)K;
    PetscCall(ReadArray(f, path, "network/output_shift", H5T_NATIVE_DOUBLE, 1, dims, mo->out_shift));
    PetscCall(ReadArray(f, path, "network/output_scale", H5T_NATIVE_DOUBLE, 1, dims, mo->out_scale));
    for (PetscInt j = 0; j < K; j++)
      PetscCheck(PetscIsNormalReal(mo->out_scale[j]) && mo->out_scale[j] > 0 &&
                     !PetscIsInfOrNanReal(mo->out_shift[j]),
                 PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED,
                 "model file %s: /network/output_scale or output_shift holds an invalid value; corrupt",
                 path);
  }
  dims[0] = (hsize_t)mo->D;
  PetscCall(ReadArray(f, path, "input/mean", H5T_NATIVE_FLOAT, 1, dims, mo->mean));
  {
    long long *a;
    dims[0] = (hsize_t)mo->l;
    PetscCall(PetscMalloc1(mo->l, &a));
    PetscCall(ReadArray(f, path, "reference/anchors", H5T_NATIVE_LLONG, 1, dims, a));
    for (PetscInt i = 0; i < mo->l; i++) mo->anchors[i] = (PetscInt)a[i];
    PetscCall(PetscFree(a));
  }
  dims[0] = (hsize_t)mo->l, dims[1] = (hsize_t)mo->D;
  PetscCall(ReadArray(f, path, "reference/anchor_features", H5T_NATIVE_FLOAT, 2, dims, mo->anchor_x));
  dims[1] = (hsize_t)K;
  PetscCall(ReadArray(f, path, "reference/phi", H5T_NATIVE_DOUBLE, 2, dims, mo->phi_ref));
  dims[0] = (hsize_t)K;
  PetscCall(ReadArray(f, path, "reference/lambda", H5T_NATIVE_DOUBLE, 1, dims, mo->lambda_ref));
  dims[0] = (hsize_t)mo->nranks, dims[1] = 4;
  PetscCall(ReadArray(f, path, "train/rng", H5T_NATIVE_UINT64, 2, dims, mo->rng));
  dims[0] = (hsize_t)PetscMax(mo->steps, 1), dims[1] = BASIS_HISTORY_FIELDS;
  PetscCall(ReadArray(f, path, "train/history", H5T_NATIVE_DOUBLE, 2, dims, mo->history));
  if (H5Lexists(f, "orthonormalize", H5P_DEFAULT) > 0) {
    dims[0] = dims[1] = (hsize_t)K;
    PetscCall(PetscMalloc1(K * K, &mo->ortho_R));
    PetscCall(ReadArray(f, path, "orthonormalize/R", H5T_NATIVE_DOUBLE, 2, dims, mo->ortho_R));
  }
  BasisCallH5(H5Fclose(f));
  PetscFunctionReturn(0);
}

/* Broadcast everything but the pointers; receivers allocate. */
static PetscErrorCode ModelBcast(MPI_Comm comm, BasisModel *mo)
{
  PetscMPIInt rank;
  PetscInt    K, has_ortho;
  BasisModel  head;

  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  head = *mo;
  PetscCallMPI(MPI_Bcast(&head, sizeof(head), MPI_BYTE, 0, comm));
  if (rank != 0) {
    *mo = head;
    PetscCall(BasisModelAllocate(mo));
    mo->ortho_R = NULL;
  }
  K         = mo->widths[mo->nlayers];
  has_ortho = head.ortho_R != NULL;
  PetscCallMPI(MPI_Bcast(mo->params, (int)mo->nparams, MPI_FLOAT, 0, comm));
  PetscCallMPI(MPI_Bcast(mo->adam_m, (int)mo->nparams, MPI_FLOAT, 0, comm));
  PetscCallMPI(MPI_Bcast(mo->adam_v, (int)mo->nparams, MPI_FLOAT, 0, comm));
  PetscCallMPI(MPI_Bcast(mo->mean, (int)mo->D, MPI_FLOAT, 0, comm));
  PetscCallMPI(MPI_Bcast(mo->anchors, (int)mo->l, MPIU_INT, 0, comm));
  PetscCallMPI(MPI_Bcast(mo->anchor_x, (int)(mo->l * mo->D), MPI_FLOAT, 0, comm));
  PetscCallMPI(MPI_Bcast(mo->phi_ref, (int)(mo->l * K), MPIU_REAL, 0, comm));
  PetscCallMPI(MPI_Bcast(mo->lambda_ref, (int)K, MPIU_REAL, 0, comm));
  PetscCallMPI(MPI_Bcast(mo->out_shift, (int)K, MPIU_REAL, 0, comm));
  PetscCallMPI(MPI_Bcast(mo->out_scale, (int)K, MPIU_REAL, 0, comm));
  PetscCallMPI(MPI_Bcast(mo->rng, (int)(4 * mo->nranks), MPI_UINT64_T, 0, comm));
  PetscCallMPI(
      MPI_Bcast(mo->history, (int)(PetscMax(mo->steps, 1) * BASIS_HISTORY_FIELDS), MPIU_REAL, 0, comm));
  if (has_ortho) {
    if (rank != 0) PetscCall(PetscMalloc1(K * K, &mo->ortho_R));
    PetscCallMPI(MPI_Bcast(mo->ortho_R, (int)(K * K), MPIU_REAL, 0, comm));
  }
  PetscFunctionReturn(0);
}

/*
  BasisModelRead - read and validate a model file; every rank gets the whole model.

  Collective on comm (rank 0 reads, broadcasts the verdict and the contents).
*/
PetscErrorCode BasisModelRead(MPI_Comm comm, const char *path, BasisModel *mo)
{
  PetscMPIInt    rank;
  PetscErrorCode err = 0;

  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  PetscCall(PetscMemzero(mo, sizeof(*mo)));
  if (rank == 0) err = ModelReadSerial(path, mo);
  PetscCallMPI(MPI_Bcast(&err, 1, MPI_INT, 0, comm));
  PetscCheck(!err, comm, PETSC_ERR_FILE_UNEXPECTED, "cannot use model file %s (see the message above)", path);
  PetscCall(ModelBcast(comm, mo));
  PetscFunctionReturn(0);
}

/* BasisModelView - a short description on rank 0. Collective on comm. */
PetscErrorCode BasisModelView(const BasisModel *mo, MPI_Comm comm)
{
  PetscFunctionBeginUser;
  PetscCall(PetscPrintf(
      comm, "model: D = %d -> K = %d, %d layers, %lld parameters; trained %d of %d steps on %d ranks\n",
      (int)mo->D, (int)mo->widths[mo->nlayers], (int)mo->nlayers, (long long)mo->nparams, (int)mo->step,
      (int)mo->steps, (int)mo->nranks));
  PetscCall(PetscPrintf(
      comm,
      "       l = %d anchors, batch m = %d (%s sampling), reference R = %d, knn %d, %s scale, %s Laplacian, "
      "%s alignment\n",
      (int)mo->l, (int)mo->m, BasisSampleTypes[mo->sample], (int)mo->R, (int)mo->graph.knn,
      BasisScaleTypes[mo->graph.scale], BasisLaplacianTypes[mo->graph.laplacian],
      BasisAlignTypes[mo->align.type]));
  PetscFunctionReturn(0);
}

/* The network's input: (x - mean) / scale, row by row (n rows of D). */
void BasisModelNormaliseInput(const BasisModel *mo, PetscInt n, const float x[], float xn[])
{
  float inv = (float)(1.0 / mo->scale);

  for (PetscInt i = 0; i < n; i++)
    for (PetscInt j = 0; j < mo->D; j++)
      xn[(size_t)i * mo->D + j] = (x[(size_t)i * mo->D + j] - mo->mean[j]) * inv;
}

/* The embedding from the network's output, in place: y * out_scale + out_shift per column. */
void BasisModelOutput(const BasisModel *mo, PetscInt n, float y[])
{
  PetscInt K = mo->widths[mo->nlayers];

  for (PetscInt i = 0; i < n; i++)
    for (PetscInt j = 0; j < K; j++)
      y[(size_t)i * K + j] = (float)(y[(size_t)i * K + j] * mo->out_scale[j] + mo->out_shift[j]);
}
