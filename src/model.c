/*
  model.c - model/checkpoint files (DESIGN.md "Files").

  Layout (HDF5, all written by rank 0; a few MB for the default network):
    /            attrs format_version (2), basis_version,
                 basis_complete, and every scalar parameter as its own named, typed
                 attribute (train_size, features, dim, anchors, batch, ..., sample; the
                 table model_fields below)
    /network/widths [nlayers+1] int64, /network/params [nparams] float32
    /network/output_shift, /network/output_scale [K] float64
    /optimizer/adam_m, /optimizer/adam_v [nparams] float32
    /input/mean [D] float32                 (the network sees (x - mean) / input_scale)
    /reference/anchors [l] int64, /reference/anchor_features [l][D] float32,
    /reference/phi [l][K] float64, /reference/lambda [K] float64,
    /reference/landmark_features [L][D] float32 (when L = landmarks > 0; src/landmark.c),
    /reference/landmark_phi [L][K] float64  (the reference's vectors there; absent in older files)
    /train/rng [nranks][4] uint64           (each rank's batch stream)
    /train/history [steps][4] float64       (loss, align residual, cond, inliers)
    /orthonormalize/R [K][K] float64        (optional; `basis embed -orthonormalize`), with the
                 root attribute orthonormalize_trivial (landmarks | network: the -trivial of R)
                 orthonormalize_landmark_weight (the -landmark_weight of R) and
                 orthonormalize_landmark_values (reference | network: the -landmark_values of R)
  Writing goes through BasisOutput (temporary name, completeness attribute, rename), so
  an interrupted checkpoint never replaces the previous good one. Reading checks the
  format version, completeness, the shape of every dataset and that every value the model
  computes with is finite, so a truncated, foreign, damaged or older file is refused with
  a message instead of being misread. Format 1 (written before issue 17: the scalars in two
  positional attributes) is still read; tests/data/model-format1.h5 proves it.

  Collective on comm: rank 0 does the file I/O and broadcasts the outcome (and, when
  reading, the contents), so every rank returns the same error.

  Also the model's maps in and out: the input normalisation, computed from the data
  (BasisModelSetNormalisation) and applied (BasisModelNormaliseInput), and the output map.
*/
#include <basis/model.h>
#include <basis/log.h>
#include <basis/output.h>
#include <basis/h5io.h>
#include <float.h>
#include <math.h>
#include <stddef.h>
#include <string.h>

const char *const BasisLandmarkValuesTypes[] = {"reference", "network", "BasisLandmarkValuesType",
                                                "BASIS_LANDMARK_VALUES_", NULL};

PetscErrorCode BasisModelAllocate(BasisModel *mo)
{
  PetscInt K = mo->spec.widths[mo->spec.nlayers], D = mo->spec.D;

  PetscFunctionBeginUser;
  PetscCall(PetscCalloc3(mo->nparams, &mo->params, mo->nparams, &mo->adam_m, mo->nparams, &mo->adam_v));
  PetscCall(PetscCalloc4(D, &mo->mean, mo->spec.l, &mo->anchors, (size_t)mo->spec.l * D, &mo->anchor_x,
                         (size_t)mo->spec.l * K, &mo->phi_ref));
  PetscCall(PetscCalloc3(K, &mo->lambda_ref, (size_t)mo->nranks * 4, &mo->rng,
                         (size_t)PetscMax(mo->steps, 1) * BASIS_HISTORY_FIELDS, &mo->history));
  PetscCall(PetscCalloc2(K, &mo->out_shift, K, &mo->out_scale));
  PetscCall(PetscCalloc1((size_t)mo->spec.L * D, &mo->landmark_x));
  PetscCall(PetscCalloc1((size_t)mo->spec.L * K, &mo->landmark_phi));
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
  PetscCall(PetscFree(mo->landmark_x));
  PetscCall(PetscFree(mo->landmark_phi));
  PetscCall(PetscFree(mo->ortho_R));
  PetscFunctionReturn(0);
}

/*
  The model's scalar parameters (format 2), one named, typed attribute each, named after
  the command-line option where one exists (docs/files.md has the table):
    train_size (N), features (D), dim (K), anchors (l), batch (m), reference_size (R),
    seed, step, steps, nranks, knn, scale_neighbor, ransac_iters, ransac_points,
    align_extra: int64[1]
    lr, lr_final, ransac_tol, align_max_cond: float64[1]
    scale, laplacian, align, sample: strings, the option's value
  and three values of the training state, not stamped on embeddings: input_scale (the
  network sees (x - mean) / input_scale) and target_scale, float64[1], and mlp_precision,
  the string float or bf16 (-mlp_precision of train, resolved; absent from files written
  before it existed: float; an embedding carries the precision embed ran with instead).
  One table serves the writer, the reader and the format-1 reader, so a field cannot be
  written under one name and read under another.
*/
typedef enum { MODEL_INT, MODEL_REAL, MODEL_ENUM } ModelFieldType;
typedef struct {
  const char        *name;
  ModelFieldType     type;
  size_t             offset;    /* of the PetscInt, PetscReal or enum member of BasisModel */
  const char *const *list;      /* MODEL_ENUM: its PETSc enum list */
  PetscBool          state;     /* training state rather than a parameter */
  PetscBool          new_in_v1; /* absent from early format-1 files: a default applies */
  PetscBool          new_in_v2; /* absent from files written before it existed: the zeroed
                                   model's 0 applies (ModelReadSerial) */
} ModelField;

#define OFF(member) offsetof(BasisModel, member)
/* name, type, member, enum list, training state, absent from early format-1 files, absent
   from files written before it existed */
static const ModelField model_fields[] = {
    {"train_size", MODEL_INT, OFF(spec.N), NULL, PETSC_FALSE, PETSC_FALSE, PETSC_FALSE},
    {"features", MODEL_INT, OFF(spec.D), NULL, PETSC_FALSE, PETSC_FALSE, PETSC_FALSE},
    {"dim", MODEL_INT, OFF(spec.graph.K), NULL, PETSC_FALSE, PETSC_FALSE, PETSC_FALSE},
    {"anchors", MODEL_INT, OFF(spec.l), NULL, PETSC_FALSE, PETSC_FALSE, PETSC_FALSE},
    {"batch", MODEL_INT, OFF(spec.m), NULL, PETSC_FALSE, PETSC_FALSE, PETSC_FALSE},
    {"reference_size", MODEL_INT, OFF(spec.R), NULL, PETSC_FALSE, PETSC_FALSE, PETSC_FALSE},
    {"seed", MODEL_INT, OFF(spec.seed), NULL, PETSC_FALSE, PETSC_FALSE, PETSC_FALSE},
    {"step", MODEL_INT, OFF(step), NULL, PETSC_FALSE, PETSC_FALSE, PETSC_FALSE},
    {"steps", MODEL_INT, OFF(steps), NULL, PETSC_FALSE, PETSC_FALSE, PETSC_FALSE},
    {"nranks", MODEL_INT, OFF(nranks), NULL, PETSC_FALSE, PETSC_FALSE, PETSC_FALSE},
    {"knn", MODEL_INT, OFF(spec.graph.knn), NULL, PETSC_FALSE, PETSC_FALSE, PETSC_FALSE},
    {"scale_neighbor", MODEL_INT, OFF(spec.graph.scale_neighbor), NULL, PETSC_FALSE, PETSC_FALSE,
     PETSC_FALSE},
    {"ransac_iters", MODEL_INT, OFF(spec.align.ransac_iters), NULL, PETSC_FALSE, PETSC_FALSE, PETSC_FALSE},
    {"ransac_points", MODEL_INT, OFF(spec.align.ransac_points), NULL, PETSC_FALSE, PETSC_FALSE, PETSC_FALSE},
    {"lr", MODEL_REAL, OFF(spec.lr), NULL, PETSC_FALSE, PETSC_FALSE, PETSC_FALSE},
    /* files written before the schedule existed trained at a constant rate: lr_final = lr */
    {"lr_final", MODEL_REAL, OFF(spec.lr_final), NULL, PETSC_FALSE, PETSC_TRUE, PETSC_FALSE},
    {"ransac_tol", MODEL_REAL, OFF(spec.align.ransac_tol), NULL, PETSC_FALSE, PETSC_FALSE, PETSC_FALSE},
    {"align_max_cond", MODEL_REAL, OFF(spec.align.max_cond), NULL, PETSC_FALSE, PETSC_FALSE, PETSC_FALSE},
    {"scale", MODEL_ENUM, OFF(spec.graph.scale), BasisScaleTypes, PETSC_FALSE, PETSC_FALSE, PETSC_FALSE},
    {"laplacian", MODEL_ENUM, OFF(spec.graph.laplacian), BasisLaplacianTypes, PETSC_FALSE, PETSC_FALSE,
     PETSC_FALSE},
    {"align", MODEL_ENUM, OFF(spec.align.type), BasisAlignTypes, PETSC_FALSE, PETSC_FALSE, PETSC_FALSE},
    /* files written before guard vectors existed fitted the K batch eigenvectors alone */
    {"align_extra", MODEL_INT, OFF(spec.align.extra), NULL, PETSC_FALSE, PETSC_FALSE, PETSC_TRUE},
    /* files written before landmarks existed have none: embed uses the network's column 0 */
    {"landmarks", MODEL_INT, OFF(spec.L), NULL, PETSC_FALSE, PETSC_FALSE, PETSC_TRUE},
    /* files written before global sampling existed drew from the shards */
    {"sample", MODEL_ENUM, OFF(spec.sample), BasisSampleTypes, PETSC_FALSE, PETSC_TRUE, PETSC_FALSE},
    {"input_scale", MODEL_REAL, OFF(scale), NULL, PETSC_TRUE, PETSC_FALSE, PETSC_FALSE},
    {"target_scale", MODEL_REAL, OFF(target_scale), NULL, PETSC_TRUE, PETSC_FALSE, PETSC_FALSE},
    /* how training ran (the zeroed model's 0 is BASIS_MLP_FLOAT, which older files used) */
    {"mlp_precision", MODEL_ENUM, OFF(mlp_precision), BasisMLPPrecisions, PETSC_TRUE, PETSC_FALSE,
     PETSC_TRUE},
};
#undef OFF
#define MODEL_NFIELDS (sizeof(model_fields) / sizeof(model_fields[0]))

/* enum members are read and written as int */
_Static_assert(sizeof(BasisScaleType) == sizeof(int) && sizeof(BasisLaplacianType) == sizeof(int) &&
                   sizeof(BasisAlignType) == sizeof(int) && sizeof(BasisSampleType) == sizeof(int) &&
                   sizeof(BasisMLPPrecision) == sizeof(int),
               "enum members of BasisModel must be int-sized");

/* Format 1 kept the scalars in two positional attributes; these are their fields in order
   (NULL: the format number). Only the format-1 reader uses them. */
#define MODEL_V1_INTS  "format_N_D_K_l_m_R_seed_step_steps_nranks_knn_scaleneighbor_ransaciters_ransacpoints"
#define MODEL_V1_REALS "scale_targetscale_lr_ransactol_maxcond"
static const char *const model_v1_ints[] = {
    NULL,   "train_size", "features", "dim", "anchors",        "batch",        "reference_size", "seed",
    "step", "steps",      "nranks",   "knn", "scale_neighbor", "ransac_iters", "ransac_points"};
static const char *const model_v1_reals[] = {"input_scale", "target_scale", "lr", "ransac_tol",
                                             "align_max_cond"};

static const ModelField *ModelFieldFind(const char *name)
{
  for (size_t i = 0; i < MODEL_NFIELDS; i++)
    if (!strcmp(model_fields[i].name, name)) return &model_fields[i];
  return NULL;
}

/* Write the fields whose state flag is `state` as attributes of obj. */
static PetscErrorCode ModelWriteFields(hid_t obj, const BasisModel *mo, PetscBool state)
{
  PetscFunctionBeginUser;
  for (size_t i = 0; i < MODEL_NFIELDS; i++) {
    const ModelField *fd = &model_fields[i];
    const void       *p  = (const char *)mo + fd->offset;
    double            v;

    if (fd->state != state) continue;
    switch (fd->type) {
    case MODEL_INT:
      PetscCall(BasisH5AttrWriteInt(obj, fd->name, 1, (const PetscInt *)p));
      break;
    case MODEL_REAL:
      v = (double)*(const PetscReal *)p;
      PetscCall(BasisH5AttrWriteDouble(obj, fd->name, 1, &v));
      break;
    case MODEL_ENUM:
      PetscCall(BasisH5AttrWriteString(obj, fd->name, fd->list[*(const int *)p]));
      break;
    }
  }
  PetscFunctionReturn(0);
}

/*
  BasisModelWriteAttributes - stamp a model's parameters on an HDF5 object (the model
  file's root group; an embedding), one named, typed attribute each: the names listed
  above, without the training state (input_scale, target_scale) and the format version.

  Collective in the HDF5 sense: every rank that has obj's file open calls it with the same
  model.
*/
PetscErrorCode BasisModelWriteAttributes(hid_t obj, const BasisModel *mo)
{
  PetscFunctionBeginUser;
  PetscCall(ModelWriteFields(obj, mo, PETSC_FALSE));
  PetscFunctionReturn(0);
}

/* The model's attributes and datasets into the open file f. Not collective. */
static PetscErrorCode ModelWriteFile(hid_t f, const BasisModel *mo)
{
  PetscInt    K = mo->spec.widths[mo->spec.nlayers], D = mo->spec.D, format = BASIS_MODEL_FORMAT;
  hsize_t     dims[2];
  const hid_t F32 = H5T_IEEE_F32LE, F64 = H5T_IEEE_F64LE, MF = H5T_NATIVE_FLOAT, MD = H5T_NATIVE_DOUBLE;

  PetscFunctionBeginUser;
  PetscCall(BasisH5AttrWriteString(f, "basis_version", BASIS_VERSION));
  PetscCall(BasisH5AttrWriteInt(f, "format_version", 1, &format));
  PetscCall(BasisModelWriteAttributes(f, mo));
  PetscCall(ModelWriteFields(f, mo, PETSC_TRUE));
  PetscCall(BasisH5WriteIntArray(f, "network/widths", mo->spec.nlayers + 1, mo->spec.widths));
  dims[0] = (hsize_t)mo->nparams;
  PetscCall(BasisH5WriteArray(f, "network/params", F32, MF, 1, dims, mo->params));
  dims[0] = (hsize_t)K;
  PetscCall(BasisH5WriteArray(f, "network/output_shift", F64, MD, 1, dims, mo->out_shift));
  PetscCall(BasisH5WriteArray(f, "network/output_scale", F64, MD, 1, dims, mo->out_scale));
  dims[0] = (hsize_t)mo->nparams;
  PetscCall(BasisH5WriteArray(f, "optimizer/adam_m", F32, MF, 1, dims, mo->adam_m));
  PetscCall(BasisH5WriteArray(f, "optimizer/adam_v", F32, MF, 1, dims, mo->adam_v));
  dims[0] = (hsize_t)D;
  PetscCall(BasisH5WriteArray(f, "input/mean", F32, MF, 1, dims, mo->mean));
  PetscCall(BasisH5WriteIntArray(f, "reference/anchors", mo->spec.l, mo->anchors));
  dims[0] = (hsize_t)mo->spec.l, dims[1] = (hsize_t)D;
  PetscCall(BasisH5WriteArray(f, "reference/anchor_features", F32, MF, 2, dims, mo->anchor_x));
  dims[1] = (hsize_t)K;
  PetscCall(BasisH5WriteArray(f, "reference/phi", F64, MD, 2, dims, mo->phi_ref));
  dims[0] = (hsize_t)K;
  PetscCall(BasisH5WriteArray(f, "reference/lambda", F64, MD, 1, dims, mo->lambda_ref));
  if (mo->spec.L > 0) {
    dims[0] = (hsize_t)mo->spec.L, dims[1] = (hsize_t)D;
    PetscCall(BasisH5WriteArray(f, "reference/landmark_features", F32, MF, 2, dims, mo->landmark_x));
    dims[1] = (hsize_t)K;
    if (mo->has_landmark_phi)
      PetscCall(BasisH5WriteArray(f, "reference/landmark_phi", F64, MD, 2, dims, mo->landmark_phi));
  }
  dims[0] = (hsize_t)mo->nranks, dims[1] = 4;
  PetscCall(BasisH5WriteArray(f, "train/rng", H5T_STD_U64LE, H5T_NATIVE_UINT64, 2, dims, mo->rng));
  dims[0] = (hsize_t)PetscMax(mo->steps, 1), dims[1] = BASIS_HISTORY_FIELDS;
  PetscCall(BasisH5WriteArray(f, "train/history", F64, MD, 2, dims, mo->history));
  if (mo->ortho_R) {
    dims[0] = dims[1] = (hsize_t)K;
    PetscCall(BasisH5WriteArray(f, "orthonormalize/R", F64, MD, 2, dims, mo->ortho_R));
    PetscCall(
        BasisH5AttrWriteString(f, "orthonormalize_trivial", mo->ortho_landmarks ? "landmarks" : "network"));
    PetscCall(BasisH5AttrWriteDouble(f, "orthonormalize_landmark_weight", 1, &mo->ortho_landmark_weight));
    PetscCall(BasisH5AttrWriteString(f, "orthonormalize_landmark_values",
                                     BasisLandmarkValuesTypes[mo->ortho_landmark_values]));
  }
  PetscFunctionReturn(0);
}

/* Serial write by one rank; errors are returned, not raised collectively. A failed write
   (a full disk) removes the temporary file before returning: nothing is left behind. */
static PetscErrorCode ModelWriteSerial(const char *path, PetscBool force, const char *const inputs[],
                                       const BasisModel *mo)
{
  BasisOutput    out;
  PetscErrorCode ierr;

  PetscFunctionBeginUser;
  PetscCall(BasisOutputCreate(PETSC_COMM_SELF, path, force, inputs, &out));
  ierr = ModelWriteFile(out.file, mo);
  if (ierr) {
    PetscCall(BasisOutputAbort(&out));
    PetscFunctionReturn(ierr);
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
  PetscCheck(
      !err, comm, PETSC_ERR_FILE_WRITE,
      "writing model file %s failed (see the message above); if its file system is full, free space or "
      "give -model a file elsewhere",
      path);
  PetscCall(PetscLogEventEnd(BASIS_Checkpoint, 0, 0, 0, 0));
  PetscFunctionReturn(0);
}

/* Read one field's attribute into the model; *found false when the attribute is absent. */
static PetscErrorCode ModelFieldRead(hid_t f, const ModelField *fd, BasisModel *mo, PetscBool *found)
{
  void     *p = (char *)mo + fd->offset;
  PetscInt  n = 1, iv;
  double    rv;
  PetscEnum ev;

  PetscFunctionBeginUser;
  switch (fd->type) {
  case MODEL_INT:
    PetscCall(BasisH5AttrReadInt(f, fd->name, &n, &iv));
    if (n == 1) *(PetscInt *)p = iv;
    *found = n == 1 ? PETSC_TRUE : PETSC_FALSE;
    break;
  case MODEL_REAL:
    PetscCall(BasisH5AttrReadDouble(f, fd->name, &n, &rv));
    if (n == 1) *(PetscReal *)p = (PetscReal)rv;
    *found = n == 1 ? PETSC_TRUE : PETSC_FALSE;
    break;
  case MODEL_ENUM:
    PetscCall(BasisH5AttrReadEnum(f, fd->name, fd->list, &ev, found));
    if (*found) *(int *)p = (int)ev;
    break;
  }
  PetscFunctionReturn(0);
}

/* Format 1: the scalars of the two positional attributes; *format = their first entry. */
static PetscErrorCode ModelReadV1Numbers(hid_t f, const char *path, BasisModel *mo, PetscInt *format)
{
  const PetscInt ni = (PetscInt)(sizeof(model_v1_ints) / sizeof(model_v1_ints[0]));
  const PetscInt nr = (PetscInt)(sizeof(model_v1_reals) / sizeof(model_v1_reals[0]));
  PetscInt       ints[15], n = ni, m = nr;
  double         reals[5];

  PetscFunctionBeginUser;
  PetscCall(BasisH5AttrReadInt(f, MODEL_V1_INTS, &n, ints));
  PetscCheck(n > 0, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED,
             "model file %s has no attribute format_version; it is not a basis model", path);
  *format = ints[0];
  if (*format != 1) PetscFunctionReturn(0); /* refused by the caller, naming the format */
  PetscCall(BasisH5AttrReadDouble(f, MODEL_V1_REALS, &m, reals));
  PetscCheck(n == ni && m == nr, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED,
             "model file %s (format 1): attributes %s and %s hold %d and %d values, expected %d and %d; the "
             "file is corrupt",
             path, MODEL_V1_INTS, MODEL_V1_REALS, (int)n, (int)m, (int)ni, (int)nr);
  for (PetscInt i = 1; i < ni; i++)
    *(PetscInt *)((char *)mo + ModelFieldFind(model_v1_ints[i])->offset) = ints[i];
  for (PetscInt i = 0; i < nr; i++)
    *(PetscReal *)((char *)mo + ModelFieldFind(model_v1_reals[i])->offset) = (PetscReal)reals[i];
  /* defaults of the fields that early format-1 files lack */
  mo->spec.lr_final = mo->spec.lr;
  mo->spec.sample   = BASIS_SAMPLE_SHARD;
  PetscFunctionReturn(0);
}

static PetscBool InV1Numbers(const char *name)
{
  for (size_t i = 1; i < sizeof(model_v1_ints) / sizeof(model_v1_ints[0]); i++)
    if (!strcmp(model_v1_ints[i], name)) return PETSC_TRUE;
  for (size_t i = 0; i < sizeof(model_v1_reals) / sizeof(model_v1_reals[0]); i++)
    if (!strcmp(model_v1_reals[i], name)) return PETSC_TRUE;
  return PETSC_FALSE;
}

/* Every scalar parameter, by name (format 2) or partly by position (format 1). */
static PetscErrorCode ModelReadParameters(hid_t f, const char *path, BasisModel *mo)
{
  PetscInt format = 0, n = 1;

  PetscFunctionBeginUser;
  PetscCall(BasisH5AttrReadInt(f, "format_version", &n, &format));
  if (n == 0) PetscCall(ModelReadV1Numbers(f, path, mo, &format));
  PetscCheck(format == BASIS_MODEL_FORMAT || (n == 0 && format == 1), PETSC_COMM_SELF,
             PETSC_ERR_FILE_UNEXPECTED,
             "model file %s has format %d; this basis reads format %d (and the older 1): retrain with this "
             "version",
             path, (int)format, BASIS_MODEL_FORMAT);
  for (size_t i = 0; i < MODEL_NFIELDS; i++) {
    const ModelField *fd    = &model_fields[i];
    PetscBool         found = PETSC_FALSE;

    if (format == 1 && InV1Numbers(fd->name)) continue;
    PetscCall(ModelFieldRead(f, fd, mo, &found));
    PetscCheck(found || (format == 1 && fd->new_in_v1) || fd->new_in_v2, PETSC_COMM_SELF,
               PETSC_ERR_FILE_UNEXPECTED,
               "model file %s has no attribute %s; it is not a basis model or is from another version", path,
               fd->name);
  }
  PetscCheck(mo->spec.D > 0 && mo->spec.graph.K > 0 && mo->spec.l > mo->spec.graph.K &&
                 mo->spec.N >= mo->spec.l && mo->spec.m > mo->spec.l && mo->nranks > 0 && mo->steps >= 0 &&
                 mo->step >= 0 && mo->step <= mo->steps && mo->spec.D < 100000000 &&
                 mo->spec.graph.K < 10000 && mo->spec.l < 100000000 && mo->nranks < 1000000 &&
                 mo->spec.L >= 0 && mo->spec.L <= mo->spec.N,
             PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED,
             "model file %s has inconsistent sizes; it is corrupt", path);
  PetscFunctionReturn(0);
}

/* The network's shape from /network/widths: nlayers, widths, nparams. */
static PetscErrorCode ModelReadShape(hid_t f, const char *path, BasisModel *mo)
{
  hsize_t dims[1];
  int     rank;

  PetscFunctionBeginUser;
  PetscCall(BasisH5ArrayShape(f, "network/widths", 1, &rank, dims));
  PetscCheck(rank == 1 && dims[0] >= 2 && dims[0] <= BASIS_MAX_LAYERS + 1, PETSC_COMM_SELF,
             PETSC_ERR_FILE_UNEXPECTED, "model file %s: /network/widths has %llu entries; corrupt", path,
             (unsigned long long)dims[0]);
  PetscCall(BasisH5ReadArray(f, "network/widths", BASIS_H5T_NATIVE_PETSCINT, 1, dims, mo->spec.widths));
  mo->spec.nlayers = (PetscInt)dims[0] - 1;
  mo->nparams      = 0;
  for (PetscInt i = 0; i <= mo->spec.nlayers; i++) {
    PetscCheck(mo->spec.widths[i] > 0 && mo->spec.widths[i] < 1000000, PETSC_COMM_SELF,
               PETSC_ERR_FILE_UNEXPECTED, "model file %s: layer width %lld is invalid; corrupt", path,
               (long long)mo->spec.widths[i]);
    if (i > 0) mo->nparams += (PetscCount)(mo->spec.widths[i - 1] + 1) * mo->spec.widths[i];
  }
  PetscCheck(mo->spec.widths[0] == mo->spec.D && mo->spec.widths[mo->spec.nlayers] == mo->spec.graph.K,
             PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED,
             "model file %s: network %d -> %d does not match D = %d, K = %d; corrupt", path,
             (int)mo->spec.widths[0], (int)mo->spec.widths[mo->spec.nlayers], (int)mo->spec.D,
             (int)mo->spec.graph.K);
  PetscFunctionReturn(0);
}

/* Every array, its shape checked against the parameters (BasisH5ReadArray). */
static PetscErrorCode ModelReadArrays(hid_t f, BasisModel *mo)
{
  const PetscInt K  = mo->spec.graph.K;
  const hid_t    MF = H5T_NATIVE_FLOAT, MD = H5T_NATIVE_DOUBLE;
  hsize_t        dims[2];
  PetscBool      has;

  PetscFunctionBeginUser;
  dims[0] = (hsize_t)mo->nparams;
  PetscCall(BasisH5ReadArray(f, "network/params", MF, 1, dims, mo->params));
  PetscCall(BasisH5ReadArray(f, "optimizer/adam_m", MF, 1, dims, mo->adam_m));
  PetscCall(BasisH5ReadArray(f, "optimizer/adam_v", MF, 1, dims, mo->adam_v));
  dims[0] = (hsize_t)K;
  PetscCall(BasisH5Has(f, "network/output_scale", &has));
  if (has) { /* else: the output is the embedding */
    PetscCall(BasisH5ReadArray(f, "network/output_shift", MD, 1, dims, mo->out_shift));
    PetscCall(BasisH5ReadArray(f, "network/output_scale", MD, 1, dims, mo->out_scale));
  }
  PetscCall(BasisH5ReadArray(f, "reference/lambda", MD, 1, dims, mo->lambda_ref));
  dims[0] = (hsize_t)mo->spec.D;
  PetscCall(BasisH5ReadArray(f, "input/mean", MF, 1, dims, mo->mean));
  dims[0] = (hsize_t)mo->spec.l;
  PetscCall(BasisH5ReadArray(f, "reference/anchors", BASIS_H5T_NATIVE_PETSCINT, 1, dims, mo->anchors));
  dims[1] = (hsize_t)mo->spec.D;
  PetscCall(BasisH5ReadArray(f, "reference/anchor_features", MF, 2, dims, mo->anchor_x));
  dims[1] = (hsize_t)K;
  PetscCall(BasisH5ReadArray(f, "reference/phi", MD, 2, dims, mo->phi_ref));
  if (mo->spec.L > 0) {
    dims[0] = (hsize_t)mo->spec.L, dims[1] = (hsize_t)mo->spec.D;
    PetscCall(BasisH5ReadArray(f, "reference/landmark_features", MF, 2, dims, mo->landmark_x));
    PetscCall(BasisH5Has(f, "reference/landmark_phi", &mo->has_landmark_phi));
    dims[1] = (hsize_t)K;
    if (mo->has_landmark_phi)
      PetscCall(BasisH5ReadArray(f, "reference/landmark_phi", MD, 2, dims, mo->landmark_phi));
  }
  dims[0] = (hsize_t)mo->nranks, dims[1] = 4;
  PetscCall(BasisH5ReadArray(f, "train/rng", H5T_NATIVE_UINT64, 2, dims, mo->rng));
  dims[0] = (hsize_t)PetscMax(mo->steps, 1), dims[1] = BASIS_HISTORY_FIELDS;
  PetscCall(BasisH5ReadArray(f, "train/history", MD, 2, dims, mo->history));
  PetscCall(BasisH5Has(f, "orthonormalize", &has));
  if (has) {
    dims[0] = dims[1] = (hsize_t)K;
    PetscCall(PetscMalloc1(K * K, &mo->ortho_R));
    PetscCall(BasisH5ReadArray(f, "orthonormalize/R", MD, 2, dims, mo->ortho_R));
    { /* absent from files written before landmarks existed: the network's column 0 */
      char      trivial[16] = "";
      PetscBool found;
      PetscCall(BasisH5AttrReadString(f, "orthonormalize_trivial", sizeof(trivial), trivial, &found));
      mo->ortho_landmarks = found && !strcmp(trivial, "landmarks") ? PETSC_TRUE : PETSC_FALSE;
    }
    { /* absent from files written before the extension existed: the network's columns */
      PetscInt n                = 1;
      mo->ortho_landmark_weight = 0;
      PetscCall(BasisH5AttrReadDouble(f, "orthonormalize_landmark_weight", &n, &mo->ortho_landmark_weight));
    }
    { /* absent from files written before the reference's values were kept: the network's */
      PetscEnum values;
      PetscBool found;
      PetscCall(BasisH5AttrReadEnum(f, "orthonormalize_landmark_values", BasisLandmarkValuesTypes, &values,
                                    &found));
      mo->ortho_landmark_values = found ? (BasisLandmarkValuesType)values : BASIS_LANDMARK_VALUES_NETWORK;
    }
  }
  PetscFunctionReturn(0);
}

/* Refuse a non-finite value in xf[n] (float) or xd[n] (double; the other is NULL). */
static PetscErrorCode CheckFinite(const char *path, const char *name, PetscCount n, const float xf[],
                                  const PetscReal xd[])
{
  PetscCount bad = 0, first = -1;

  PetscFunctionBeginUser;
  for (PetscCount i = 0; i < n; i++)
    if (xf ? !isfinite(xf[i]) : PetscIsInfOrNanReal(xd[i])) {
      if (!bad++) first = i;
    }
  PetscCheck(
      !bad, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED,
      "model file %s: %s holds %lld non-finite value%s (NaN or Inf), the first at index %lld; retrain, "
      "or restore the file",
      path, name, (long long)bad, bad > 1 ? "s" : "", (long long)first);
  PetscFunctionReturn(0);
}

/* The values a model computes with: all finite, scales positive, anchors rows of the data. */
static PetscErrorCode ModelCheckValues(const char *path, const BasisModel *mo)
{
  const PetscInt K = mo->spec.graph.K;

  PetscFunctionBeginUser;
  PetscCall(CheckFinite(path, "/network/params", mo->nparams, mo->params, NULL));
  PetscCall(CheckFinite(path, "/optimizer/adam_m", mo->nparams, mo->adam_m, NULL));
  PetscCall(CheckFinite(path, "/optimizer/adam_v", mo->nparams, mo->adam_v, NULL));
  PetscCall(CheckFinite(path, "/input/mean", mo->spec.D, mo->mean, NULL));
  PetscCall(CheckFinite(path, "/reference/anchor_features", (PetscCount)mo->spec.l * mo->spec.D, mo->anchor_x,
                        NULL));
  PetscCall(CheckFinite(path, "/reference/phi", (PetscCount)mo->spec.l * K, NULL, mo->phi_ref));
  PetscCall(CheckFinite(path, "/reference/landmark_features", (PetscCount)mo->spec.L * mo->spec.D,
                        mo->landmark_x, NULL));
  PetscCall(CheckFinite(path, "/reference/landmark_phi", (PetscCount)mo->spec.L * K, NULL, mo->landmark_phi));
  PetscCall(CheckFinite(path, "/reference/lambda", K, NULL, mo->lambda_ref));
  PetscCall(CheckFinite(path, "/network/output_shift", K, NULL, mo->out_shift));
  PetscCall(CheckFinite(path, "/network/output_scale", K, NULL, mo->out_scale));
  if (mo->ortho_R) PetscCall(CheckFinite(path, "/orthonormalize/R", (PetscCount)K * K, NULL, mo->ortho_R));
  for (PetscInt j = 0; j < K; j++)
    PetscCheck(
        PetscIsNormalReal(mo->out_scale[j]) && mo->out_scale[j] > 0, PETSC_COMM_SELF,
        PETSC_ERR_FILE_UNEXPECTED,
        "model file %s: /network/output_scale holds %g, not a positive number; retrain, or restore the "
        "file",
        path, (double)mo->out_scale[j]);
  PetscCheck(
      PetscIsNormalReal(mo->scale) && mo->scale > 0, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED,
      "model file %s: attribute input_scale is %g, not a positive number; retrain, or restore the file", path,
      (double)mo->scale);
  PetscCheck(
      PetscIsNormalReal(mo->target_scale) && mo->target_scale > 0, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED,
      "model file %s: attribute target_scale is %g, not a positive number; retrain, or restore the file",
      path, (double)mo->target_scale);
  for (PetscInt i = 0; i < mo->spec.l; i++)
    PetscCheck(mo->anchors[i] >= 0 && mo->anchors[i] < mo->spec.N, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED,
               "model file %s: /reference/anchors holds %lld, not a row of the %d training points; corrupt",
               path, (long long)mo->anchors[i], (int)mo->spec.N);
  PetscFunctionReturn(0);
}

static PetscErrorCode ModelReadSerial(const char *path, BasisModel *mo)
{
  hid_t    f;
  PetscInt complete = 0, n = 1;

  PetscFunctionBeginUser;
  PetscCall(PetscMemzero(mo, sizeof(*mo)));
  PetscCall(BasisH5OpenRead(PETSC_COMM_SELF, path, "model", &f));
  PetscCall(BasisH5AttrReadInt(f, "basis_complete", &n, &complete));
  PetscCheck(n == 1 && complete == 1, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED,
             "model file %s is incomplete (its writer was interrupted) or is not a basis model", path);
  /* a file still under its temporary name is refused by BasisH5OpenRead */
  PetscCall(ModelReadParameters(f, path, mo));
  PetscCall(ModelReadShape(f, path, mo));
  PetscCall(BasisModelAllocate(mo));
  PetscCall(ModelReadArrays(f, mo));
  BasisCallH5(H5Fclose(f));
  PetscCall(ModelCheckValues(path, mo));
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
  K         = mo->spec.widths[mo->spec.nlayers];
  has_ortho = head.ortho_R != NULL;
  PetscCallMPI(MPI_Bcast(mo->params, (int)mo->nparams, MPI_FLOAT, 0, comm));
  PetscCallMPI(MPI_Bcast(mo->adam_m, (int)mo->nparams, MPI_FLOAT, 0, comm));
  PetscCallMPI(MPI_Bcast(mo->adam_v, (int)mo->nparams, MPI_FLOAT, 0, comm));
  PetscCallMPI(MPI_Bcast(mo->mean, (int)mo->spec.D, MPI_FLOAT, 0, comm));
  PetscCallMPI(MPI_Bcast(mo->anchors, (int)mo->spec.l, MPIU_INT, 0, comm));
  PetscCallMPI(MPI_Bcast(mo->anchor_x, (int)(mo->spec.l * mo->spec.D), MPI_FLOAT, 0, comm));
  PetscCallMPI(MPI_Bcast(mo->phi_ref, (int)(mo->spec.l * K), MPIU_REAL, 0, comm));
  PetscCallMPI(MPI_Bcast(mo->lambda_ref, (int)K, MPIU_REAL, 0, comm));
  if (mo->spec.L > 0) {
    PetscCallMPI(MPI_Bcast(mo->landmark_x, (int)(mo->spec.L * mo->spec.D), MPI_FLOAT, 0, comm));
    if (mo->has_landmark_phi) /* head carried the flag */
      PetscCallMPI(MPI_Bcast(mo->landmark_phi, (int)(mo->spec.L * K), MPIU_REAL, 0, comm));
  }
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
      (int)mo->spec.D, (int)mo->spec.widths[mo->spec.nlayers], (int)mo->spec.nlayers, (long long)mo->nparams,
      (int)mo->step, (int)mo->steps, (int)mo->nranks));
  PetscCall(PetscPrintf(
      comm,
      "       l = %d anchors, batch m = %d (%s sampling), reference R = %d (%d landmarks), knn %d, %s scale, "
      "%s Laplacian, %s alignment\n",
      (int)mo->spec.l, (int)mo->spec.m, BasisSampleTypes[mo->spec.sample], (int)mo->spec.R, (int)mo->spec.L,
      (int)mo->spec.graph.knn, BasisScaleTypes[mo->spec.graph.scale],
      BasisLaplacianTypes[mo->spec.graph.laplacian], BasisAlignTypes[mo->spec.align.type]));
  PetscFunctionReturn(0);
}

/*
  BasisShardMoments - the global per-feature mean [D] and one scale (RMS deviation over all
  features) of a sharded data set. Collective on comm.
*/
PetscErrorCode BasisShardMoments(MPI_Comm comm, const BasisShard *s, float mean[], PetscReal *scale)
{
  PetscInt D = s->D;
  double  *sum, *sumsq, var = 0.0;

  PetscFunctionBeginUser;
  PetscCall(PetscCalloc2(D, &sum, D, &sumsq));
  for (PetscInt i = 0; i < s->n; i++) {
    const float *x = s->x + (size_t)i * D;
    for (PetscInt j = 0; j < D; j++) sum[j] += x[j], sumsq[j] += (double)x[j] * x[j];
  }
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, sum, (int)D, MPI_DOUBLE, MPI_SUM, comm));
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, sumsq, (int)D, MPI_DOUBLE, MPI_SUM, comm));
  for (PetscInt j = 0; j < D; j++) {
    double mu = sum[j] / s->N;
    mean[j]   = (float)mu;
    var += PetscMax(sumsq[j] / s->N - mu * mu, 0.0);
  }
  *scale = sqrt(var / D);
  PetscCall(PetscFree2(sum, sumsq));
  PetscFunctionReturn(0);
}

/* A row whose squared distance from the mean is more than this many times the average
   counts as outlying; when such rows hold most of the variance, they set the one input
   scale and every other row reaches the network as nearly the same vector (a row x 1e12
   or a -999999 sentinel among 3,000 rows left an embedding of 2 distinct rows, while the
   exact graph, whose rule is local, was right). */
#define BASIS_OUTLIER_FACTOR 100.0

/*
  BasisModelSetNormalisation - the network's input normalisation, (x - mean) / scale, from
  the data: centred and O(1) whatever the units of /features. Warns when a few outlying rows
  set the scale; refuses identical points. Collective on comm; input names the data.
*/
PetscErrorCode BasisModelSetNormalisation(MPI_Comm comm, const BasisShard *s, const char *input,
                                          BasisModel *mo)
{
  const PetscInt D      = s->D;
  double         big[2] = {0, 0}, first = -1; /* outlying rows, their share of the sum; first one */

  PetscFunctionBeginUser;
  PetscCall(BasisShardMoments(comm, s, mo->mean, &mo->scale));
  PetscCheck(mo->scale > 0, comm, PETSC_ERR_ARG_WRONG,
             "input %s: all points are identical (zero variance); there is no graph to embed", input);
  for (PetscInt i = 0; i < s->n; i++) {
    const float *x = s->x + (size_t)i * D;
    double       r = 0;
    for (PetscInt j = 0; j < D; j++) r += PetscSqr((double)x[j] - mo->mean[j]);
    r /= D * PetscSqr(mo->scale); /* 1 on average over the rows */
    if (r > BASIS_OUTLIER_FACTOR) {
      big[0] += 1, big[1] += r / s->N;
      if (first < 0) first = (double)(s->rstart + i);
    }
  }
  if (first < 0) first = PETSC_MAX_REAL;
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, big, 2, MPI_DOUBLE, MPI_SUM, comm));
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &first, 1, MPI_DOUBLE, MPI_MIN, comm));
  if (big[1] > 0.5)
    PetscCall(
        PetscPrintf(comm,
                    "warning: %.0f row(s) of %s (the first is row %.0f) lie more than %g times the average "
                    "squared distance from the mean and hold %.0f%% of the variance: they set the network's "
                    "input scale, and the other rows reach it as nearly one point. Remove or fix them "
                    "(a missing-value code?) before training\n",
                    big[0], input, first, BASIS_OUTLIER_FACTOR, 100 * big[1]));
  PetscFunctionReturn(0);
}

/* The network's input: (x - mean) / scale, row by row (n rows of D). */
void BasisModelNormaliseInput(const BasisModel *mo, PetscInt n, const float x[], float xn[])
{
  const PetscInt D   = mo->spec.D;
  float          inv = (float)(1.0 / mo->scale);

  if (isfinite(inv) && inv >= FLT_MIN) {
    for (PetscInt i = 0; i < n; i++)
      for (PetscInt j = 0; j < D; j++) xn[(size_t)i * D + j] = (x[(size_t)i * D + j] - mo->mean[j]) * inv;
  } else {
    /* features so small (or large) that 1 / scale leaves float32's normal range, e.g.
       denormal data: the same map in double, so the network still sees O(1) inputs */
    for (PetscInt i = 0; i < n; i++)
      for (PetscInt j = 0; j < D; j++)
        xn[(size_t)i * D + j] = (float)(((double)x[(size_t)i * D + j] - mo->mean[j]) / mo->scale);
  }
}

/* The embedding from the network's output, in place: y * out_scale + out_shift per column. */
void BasisModelOutput(const BasisModel *mo, PetscInt n, float y[])
{
  PetscInt K = mo->spec.widths[mo->spec.nlayers];

  for (PetscInt i = 0; i < n; i++)
    for (PetscInt j = 0; j < K; j++)
      y[(size_t)i * K + j] = (float)(y[(size_t)i * K + j] * mo->out_scale[j] + mo->out_shift[j]);
}
