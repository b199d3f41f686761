/*
  embed.c - the embedder (include/basis/embed.h) and `basis embed`, its driver: run the
  trained network over any data set with the model's D (DESIGN.md step 6) and write
  /embedding (N x K, float32) collectively.

  BasisEmbedderApply maps rows x [n][D] to y [n][K]: the model's input normalisation, the
  network's forward pass (BLAS GEMM) in chunks of at most -chunk rows, the model's output
  map (standardised targets back to the embedding's units) and, with -orthonormalize, the
  map y <- y R^-1. It is not collective: tests and other commands embed rows in memory.

  The driver streams every rank's contiguous block of rows in chunks: collective read,
  Apply, collective write. Memory per rank is bounded by the chunk, not by N. The training
  data are not needed: the model file carries everything.

  -orthonormalize compute: the network's raw output is close to, but not exactly,
  orthogonal. This mode holds the rank's K-column output (4 K bytes per point), forms the
  Gram matrix G = Y^T Y by one allreduce, factors G = R^T R (Cholesky) and writes Y R^-1,
  whose columns are orthonormal over the whole data set; R is stored in the model file so
  that `-orthonormalize stored` applies the same map to new data (streaming again).

  The output's attributes name every parameter (`batch`, `knn`, ...; DESIGN.md "Files").
*/
#include <basis/embed.h>
#include <basis/landmark.h>
#include <basis/log.h>
#include <basis/options.h>
#include <basis/output.h>
#include <basis/h5io.h>
#include <basis/mlp.h>
#include <petscblaslapack.h>
#include <string.h>
#include <sys/stat.h>

/* Layout version of the embedding file's attributes: 1 (no attribute) = the positional
   `model_step_l_m_R_seed_knn_scaleneighbor`; 2 = one named attribute per parameter. */
#define BASIS_EMBEDDING_FORMAT 2

/* Rows per rank per read/forward/write: 8192 rows of D = 784 are 25 MB of float32, large
   enough that the GEMMs run near peak, small enough for any node. */
#define BASIS_EMBED_CHUNK 8192

/* -landmark_weight: the share of the landmarks' extension in columns 1..K-1
   (docs/quality.md "The other columns from landmarks"). */
#define BASIS_EMBED_LANDMARK_WEIGHT 0.75

/* Seconds between progress lines (rank 0). */
#define BASIS_EMBED_PROGRESS_SECONDS 5.0

const char *const BasisOrthoTypes[]   = {"none", "compute", "stored", "BasisOrthoType", "BASIS_ORTHO_", NULL};
const char *const BasisTrivialTypes[] = {"landmarks", "network", "BasisTrivialType", "BASIS_TRIVIAL_", NULL};

struct _p_BasisEmbedder {
  MPI_Comm                comm;
  const BasisModel       *model; /* borrowed: the caller keeps it alive */
  char                    name[PETSC_MAX_PATH_LEN];
  PetscInt                D, K, chunk, capacity; /* capacity: rows the MLP and xn hold now */
  BasisOrthoType          ortho;
  BasisMLPPrecision       precision; /* -mlp_precision, resolved */
  BasisMLP                mlp;
  float                  *xn;            /* [capacity][D] normalised input */
  PetscReal              *R;             /* [K][K] upper triangular, row-major; NULL: no orthonormalisation */
  BasisTrivialType        trivial;       /* -trivial, as asked */
  PetscBool               trivial_given; /*   on the command line (then landmarks must exist) */
  PetscReal               weight;        /* -landmark_weight, as asked */
  PetscBool               weight_given;  /*   on the command line (then landmarks must exist) */
  BasisLandmarks          lm;            /* the landmarks' graph; NULL: the network's columns */
  PetscBool               col0;          /* column 0 from landmark degrees (-trivial landmarks) */
  PetscReal               used_weight;   /* columns 1.. extended from the landmarks with this weight */
  BasisLandmarkValuesType values;        /* -landmark_values, as asked */
  PetscBool               values_given;
  BasisLandmarkValuesType used_values; /*   as used: network where the model keeps no reference values,
                                              or when nothing is extended */
  PetscReal               ext_r;       /*   and the extension's worst fit at the landmarks */
  BasisLandmarksFitResult fit;
  const char             *why;      /* why not, when the landmarks were asked for and lm is NULL */
  BasisKnnGemmType        knn_gemm; /* -knn_gemm: precision of the landmark products (same degrees) */
  PetscBool               setup;
};

/* y [n][K] <- y R^-1 with R upper triangular [K][K] row-major: forward substitution on
   each row (solve z R = y). */
static void ApplyInverseR(PetscInt n, PetscInt K, const PetscReal R[], float y[])
{
  for (PetscInt i = 0; i < n; i++) {
    float *yi = y + (size_t)i * K;
    for (PetscInt j = 0; j < K; j++) {
      double s = yi[j];
      for (PetscInt p = 0; p < j; p++) s -= (double)yi[p] * R[p * K + j];
      yi[j] = (float)(s / R[j * K + j]);
    }
  }
}

/* G = sum over all ranks of Y^T Y, then R with R^T R = G. Collective on comm. */
static PetscErrorCode ComputeR(MPI_Comm comm, PetscInt n, PetscInt K, const float Y[], PetscReal R[])
{
  PetscBLASInt nK, info;

  PetscFunctionBeginUser;
  PetscCall(PetscArrayzero(R, K * K));
  for (PetscInt i = 0; i < n; i++)
    for (PetscInt a = 0; a < K; a++)
      for (PetscInt b = a; b < K; b++) R[a * K + b] += (double)Y[(size_t)i * K + a] * Y[(size_t)i * K + b];
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, R, (int)(K * K), MPIU_REAL, MPIU_SUM, comm));
  /* Row-major upper triangle = column-major lower triangle: factor as "L" in LAPACK's
     view, which is R^T in ours, so R is the row-major upper factor. */
  PetscCall(PetscBLASIntCast(K, &nK));
  LAPACKpotrf_("L", &nK, R, &nK, &info);
  PetscCheck(info == 0, comm, PETSC_ERR_NOT_CONVERGED,
             "cannot orthonormalise: the embedding's Gram matrix is singular (column %d is dependent); the "
             "model may "
             "be undertrained",
             (int)info);
  for (PetscInt a = 0; a < K; a++)
    for (PetscInt b = 0; b < a; b++) R[a * K + b] = 0.0;
  PetscFunctionReturn(0);
}

/*
  BasisEmbedderCreate - an embedder with no model yet (defaults: -chunk 8192,
  -orthonormalize none, -mlp_precision float, -trivial landmarks, -landmark_weight 0.75,
  -landmark_values reference, -knn_gemm auto).

  Collective on comm (keeps comm for the collective BasisEmbedderOrthonormalize).
*/
PetscErrorCode BasisEmbedderCreate(MPI_Comm comm, BasisEmbedder *e)
{
  PetscFunctionBeginUser;
  PetscCall(PetscNew(e));
  (*e)->comm      = comm;
  (*e)->chunk     = BASIS_EMBED_CHUNK;
  (*e)->ortho     = BASIS_ORTHO_NONE;
  (*e)->precision = BASIS_MLP_FLOAT;
  (*e)->trivial   = BASIS_TRIVIAL_LANDMARKS;
  (*e)->weight    = BASIS_EMBED_LANDMARK_WEIGHT;
  (*e)->values    = BASIS_LANDMARK_VALUES_REFERENCE;
  (*e)->knn_gemm  = BASIS_KNN_GEMM_AUTO;
  PetscFunctionReturn(0);
}

/*
  BasisEmbedderSetModel - the model to apply (borrowed: keep it alive until Destroy).

  Not collective. Input: name - how messages name the model (its file), may be NULL.
*/
PetscErrorCode BasisEmbedderSetModel(BasisEmbedder e, const BasisModel *model, const char *name)
{
  PetscFunctionBeginUser;
  e->model = model;
  e->D     = model->spec.D;
  e->K     = model->spec.widths[model->spec.nlayers];
  e->setup = PETSC_FALSE;
  PetscCall(PetscStrncpy(e->name, name ? name : "(in memory)", sizeof(e->name)));
  PetscFunctionReturn(0);
}

/*
  BasisEmbedderSetFromOptions - read the embedder's options.

  Collective on the embedder's comm (same options, same verdict on every rank).
  Options: -chunk n (rows per forward pass, >= 1), -orthonormalize none|compute|stored,
  -mlp_precision float|bf16|auto (the network's products; default float whatever train
  used: inference precision is the user's choice), -trivial landmarks|network,
  -landmark_weight w, -landmark_values reference|network, -knn_gemm float|bf16|auto (the
  landmark products; the same columns either way)
*/
PetscErrorCode BasisEmbedderSetFromOptions(BasisEmbedder e)
{
  PetscFunctionBeginUser;
  PetscOptionsBegin(e->comm, NULL, "Embedder: the trained network applied to rows", NULL);
  /* at most 1e8 rows: more than any rank's shard needs, and a typo like -chunk 1e10 is
     refused instead of wrapping */
  PetscCall(BasisOptionsInt("-chunk", "Rows per rank per read/forward/write", NULL, e->chunk, &e->chunk, NULL,
                            1, 100000000));
  PetscCall(BasisOptionsEnum("-orthonormalize", "Map the output to orthonormal columns", NULL,
                             BasisOrthoTypes, (PetscEnum)e->ortho, (PetscEnum *)&e->ortho, NULL));
  PetscCall(
      BasisOptionsEnum("-mlp_precision",
                       "Network products: float, bf16 (bfloat16 inputs, float sums; oneDNN), auto (bf16 "
                       "where the CPU has bfloat16 dot products)",
                       NULL, BasisMLPPrecisions, (PetscEnum)e->precision, (PetscEnum *)&e->precision, NULL));
  PetscCall(
      BasisOptionsEnum("-knn_gemm",
                       "Precision of the landmark distance products: float, bf16, auto (bf16 where the CPU "
                       "has bfloat16 dot products); the degrees are the same in every case",
                       NULL, BasisKnnGemmTypes, (PetscEnum)e->knn_gemm, (PetscEnum *)&e->knn_gemm, NULL));
  PetscCall(BasisOptionsEnum("-trivial",
                             "Column 0 (the trivial eigenvector of -laplacian sym): landmarks (each point's "
                             "degree among the model's landmarks, where it has them) or network",
                             NULL, BasisTrivialTypes, (PetscEnum)e->trivial, (PetscEnum *)&e->trivial,
                             &e->trivial_given));
  PetscCall(
      PetscOptionsReal("-landmark_weight",
                       "Columns 1..K-1 = (1 - w) network + w (the extension of the values at the model's "
                       "landmarks, -landmark_values, through each point's graph weights); 0: the network's",
                       NULL, e->weight, &e->weight, &e->weight_given));
  PetscCall(BasisOptionsEnum(
      "-landmark_values",
      "What the landmarks carry into columns 1..K-1: reference (the reference's eigenvectors "
      "there, where the model keeps them) or network (the network's outputs there)",
      NULL, BasisLandmarkValuesTypes, (PetscEnum)e->values, (PetscEnum *)&e->values, &e->values_given));
  PetscOptionsEnd();
  PetscCheck(e->weight >= 0 && e->weight <= 1, e->comm, PETSC_ERR_ARG_OUTOFRANGE,
             "-landmark_weight %g is not in [0, 1]: 0 keeps the network's columns, 1 takes their extension "
             "from the landmarks alone",
             (double)e->weight);
  PetscCall(BasisMLPPrecisionResolve(e->comm, &e->precision));
  PetscFunctionReturn(0);
}

static PetscErrorCode EnsureCapacity(BasisEmbedder e, PetscInt rows);

/* The values at the model's landmarks that columns 1..K-1 extend (BasisLandmarksSetValues),
   in the embedding's units: the reference's eigenvectors there (-landmark_values reference,
   where the model keeps them: exact for the reference graph, the same for every seed's
   network) or the network's outputs there. Every rank computes all of them, the same on
   each, so the embedding does not depend on the rank count. Collective only in its error:
   an explicit -landmark_values reference that the model cannot give. */
static PetscErrorCode SetLandmarkValues(BasisEmbedder e)
{
  const BasisModel *mo = e->model;
  const PetscInt    L = mo->spec.L, K = e->K;
  PetscReal        *f;

  PetscFunctionBeginUser;
  PetscCheck(mo->has_landmark_phi || !(e->values_given && e->values == BASIS_LANDMARK_VALUES_REFERENCE),
             e->comm, PETSC_ERR_ARG_INCOMP,
             "-landmark_values reference: model %s keeps no /reference/landmark_phi (trained, or resumed "
             "from a checkpoint, before basis kept it); train it again, or use -landmark_values network",
             e->name);
  PetscCall(PetscMalloc1((size_t)L * K, &f));
  e->used_values = e->values == BASIS_LANDMARK_VALUES_REFERENCE && mo->has_landmark_phi
                       ? BASIS_LANDMARK_VALUES_REFERENCE
                       : BASIS_LANDMARK_VALUES_NETWORK;
  if (e->used_values == BASIS_LANDMARK_VALUES_REFERENCE) {
    /* the frame and units the network is trained to: the reference's, times target_scale */
    for (size_t i = 0; i < (size_t)L * K; i++) f[i] = mo->target_scale * mo->landmark_phi[i];
  } else {
    float *y;
    PetscCall(EnsureCapacity(e, PetscMin(L, e->chunk)));
    PetscCall(PetscMalloc1((size_t)e->capacity * K, &y));
    for (PetscInt lo = 0; lo < L; lo += e->capacity) {
      const PetscInt cnt = PetscMin(e->capacity, L - lo);
      BasisModelNormaliseInput(mo, cnt, mo->landmark_x + (size_t)lo * e->D, e->xn);
      PetscCall(BasisMLPForward(e->mlp, cnt, e->xn, y));
      BasisModelOutput(mo, cnt, y);
      for (size_t i = 0; i < (size_t)cnt * K; i++) f[(size_t)lo * K + i] = y[i];
    }
    PetscCall(PetscFree(y));
  }
  PetscCall(BasisLandmarksSetValues(e->lm, K, f, e->weight, &e->ext_r));
  PetscCall(PetscFree(f));
  e->used_weight = e->weight;
  PetscFunctionReturn(0);
}

/*
  BasisEmbedderSetUp - check the model and take its stored orthonormalisation if asked.

  Collective on the embedder's comm (the model is the same on every rank). Errors: an
  untrained model, -orthonormalize stored without a stored R or with another source of
  columns than R's, -trivial landmarks or -landmark_weight w > 0 given for a model without
  usable landmarks, -landmark_values reference given for a model that keeps no reference
  values there (by default such a model gets the network's columns, or the extension of
  the network's outputs).
*/
PetscErrorCode BasisEmbedderSetUp(BasisEmbedder e)
{
  const BasisModel *mo = e->model;

  PetscFunctionBeginUser;
  PetscCheck(mo, e->comm, PETSC_ERR_ORDER, "BasisEmbedderSetModel must come before BasisEmbedderSetUp");
  PetscCheck(e->ortho != BASIS_ORTHO_STORED || mo->ortho_R, e->comm, PETSC_ERR_ARG_WRONG,
             "model %s has no stored orthonormalisation; run embed once with -orthonormalize compute",
             e->name);
  PetscCheck(mo->step > 0, e->comm, PETSC_ERR_ARG_WRONG, "model %s has not been trained (step 0)", e->name);
  PetscCall(PetscFree(e->R));
  if (e->ortho == BASIS_ORTHO_STORED) {
    PetscCall(PetscMalloc1(e->K * e->K, &e->R));
    PetscCall(PetscArraycpy(e->R, mo->ortho_R, e->K * e->K));
  }
  PetscCall(BasisLandmarksDestroy(&e->lm));
  e->why = NULL, e->col0 = PETSC_FALSE, e->used_weight = 0, e->used_values = BASIS_LANDMARK_VALUES_NETWORK;
  if (e->trivial == BASIS_TRIVIAL_LANDMARKS || (e->weight > 0 && e->K > 1)) {
    PetscMPIInt usable;
    PetscCall(BasisLandmarksCreateFromModel(mo, &e->lm, &e->fit, &e->why));
    /* the same model gives the same verdict on every rank; agreed all the same, so that a
       borderline fit on a node with another libm cannot split the ranks */
    usable = e->lm != NULL;
    PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &usable, 1, MPI_INT, MPI_MIN, e->comm));
    if (!usable && e->lm) {
      PetscCall(BasisLandmarksDestroy(&e->lm));
      e->why = "the ranks disagree on the landmarks' fit";
    }
    PetscCheck(e->lm || !(e->trivial_given && e->trivial == BASIS_TRIVIAL_LANDMARKS), e->comm,
               PETSC_ERR_ARG_INCOMP,
               "-trivial landmarks: model %s cannot give them: %s; use -trivial network", e->name, e->why);
    PetscCheck(e->lm || !(e->weight_given && e->weight > 0), e->comm, PETSC_ERR_ARG_INCOMP,
               "-landmark_weight %g: model %s has no usable landmarks: %s; use -landmark_weight 0",
               (double)e->weight, e->name, e->why);
    if (e->lm) {
      PetscCall(BasisLandmarksSetGemm(e->lm, e->knn_gemm, NULL));
      e->col0 = e->trivial == BASIS_TRIVIAL_LANDMARKS ? PETSC_TRUE : PETSC_FALSE;
      if (e->weight > 0 && e->K > 1) PetscCall(SetLandmarkValues(e));
    }
  }
  PetscCheck(
      e->ortho != BASIS_ORTHO_STORED || e->col0 == mo->ortho_landmarks, e->comm, PETSC_ERR_ARG_INCOMP,
      "model %s's stored orthonormalisation was computed with -trivial %s, this embed uses -trivial %s; "
      "embed with -trivial %s, or run -orthonormalize compute again",
      e->name, mo->ortho_landmarks ? "landmarks" : "network", e->col0 ? "landmarks" : "network",
      mo->ortho_landmarks ? "landmarks" : "network");
  PetscCheck(
      e->ortho != BASIS_ORTHO_STORED || e->used_weight == mo->ortho_landmark_weight, e->comm,
      PETSC_ERR_ARG_INCOMP,
      "model %s's stored orthonormalisation was computed with -landmark_weight %g, this embed uses %g; "
      "embed with -landmark_weight %g, or run -orthonormalize compute again",
      e->name, (double)mo->ortho_landmark_weight, (double)e->used_weight, (double)mo->ortho_landmark_weight);
  /* after the weight's check: with the weights equal, the values are all that can differ */
  PetscCheck(
      e->ortho != BASIS_ORTHO_STORED || e->used_values == mo->ortho_landmark_values, e->comm,
      PETSC_ERR_ARG_INCOMP,
      "model %s's stored orthonormalisation was computed with -landmark_values %s, this embed uses %s; "
      "embed with -landmark_values %s, or run -orthonormalize compute again",
      e->name, BasisLandmarkValuesTypes[mo->ortho_landmark_values], BasisLandmarkValuesTypes[e->used_values],
      BasisLandmarkValuesTypes[mo->ortho_landmark_values]);
  e->setup = PETSC_TRUE;
  PetscFunctionReturn(0);
}

/* BasisEmbedderView - where the columns come from, a line or two on rank 0. Collective. */
PetscErrorCode BasisEmbedderView(BasisEmbedder e)
{
  PetscInt L, k;

  PetscFunctionBeginUser;
  if (!e->lm) {
    if (e->why && e->model->spec.graph.laplacian == BASIS_LAPLACIAN_SYM)
      PetscCall(PetscPrintf(e->comm, "embed: the network's columns: %s\n", e->why));
    PetscFunctionReturn(0);
  }
  PetscCall(BasisLandmarksGetSize(e->lm, &L, &k));
  if (e->col0)
    PetscCall(
        PetscPrintf(e->comm,
                    "embed: column 0 (the trivial eigenvector) from each point's degree among %d landmarks "
                    "(k = %d; -trivial network for the network's)\n",
                    (int)L, (int)k));
  if (e->used_weight > 0)
    PetscCall(
        PetscPrintf(e->comm,
                    "embed: columns 1..%d = %.2f x the network's + %.2f x the extension of %s at the %d "
                    "landmarks (fit r >= %.3f there; -landmark_weight 0 for the network's)\n",
                    (int)e->K - 1, (double)(1 - e->used_weight), (double)e->used_weight,
                    e->used_values == BASIS_LANDMARK_VALUES_REFERENCE ? "the reference's vectors"
                                                                      : "the network's outputs",
                    (int)L, (double)e->ext_r));
  if (e->used_weight > 0 && e->used_values != e->values)
    PetscCall(
        PetscPrintf(e->comm,
                    "embed: (model %s keeps no reference values at its landmarks, trained before basis kept "
                    "them: the network's outputs there are extended instead; train again for them)\n",
                    e->name));
  PetscFunctionReturn(0);
}

/* BasisEmbedderUsesLandmarks - whether column 0 comes from the landmarks, the weight of the
   landmarks' extension in columns 1..K-1 (0: none) and what it extends (network when
   nothing is). Not collective. */
PetscErrorCode BasisEmbedderUsesLandmarks(BasisEmbedder e, PetscBool *col0, PetscReal *weight,
                                          BasisLandmarkValuesType *values)
{
  PetscFunctionBeginUser;
  if (values) *values = e->used_values;
  if (col0) *col0 = e->col0;
  if (weight) *weight = e->used_weight;
  PetscFunctionReturn(0);
}

/* BasisEmbedderGetSizes - D (input features), K (output columns), -chunk. Not collective. */
PetscErrorCode BasisEmbedderGetSizes(BasisEmbedder e, PetscInt *D, PetscInt *K, PetscInt *chunk)
{
  PetscFunctionBeginUser;
  if (D) *D = e->D;
  if (K) *K = e->K;
  if (chunk) *chunk = e->chunk;
  PetscFunctionReturn(0);
}

/* BasisEmbedderGetOrthoType - the -orthonormalize mode. Not collective. */
PetscErrorCode BasisEmbedderGetOrthoType(BasisEmbedder e, BasisOrthoType *ortho)
{
  PetscFunctionBeginUser;
  *ortho = e->ortho;
  PetscFunctionReturn(0);
}

/* The network and the normalisation buffer for at least `rows` rows (at most -chunk). */
static PetscErrorCode EnsureCapacity(BasisEmbedder e, PetscInt rows)
{
  float *params;

  PetscFunctionBeginUser;
  if (rows <= e->capacity) PetscFunctionReturn(0);
  PetscCall(BasisMLPDestroy(&e->mlp));
  PetscCall(PetscFree(e->xn));
  PetscCall(BasisMLPCreate(e->model->spec.nlayers, e->model->spec.widths, rows, &e->mlp));
  PetscCall(BasisMLPSetPrecision(e->mlp, e->precision));
  PetscCall(BasisMLPGetArrays(e->mlp, &params, NULL, NULL, NULL));
  PetscCall(PetscArraycpy(params, e->model->params, e->model->nparams));
  PetscCall(PetscMalloc1((size_t)rows * e->D, &e->xn));
  e->capacity = rows;
  PetscFunctionReturn(0);
}

/*
  BasisEmbedderApply - embed n rows: y = f((x - mean) / scale) * out_scale + out_shift,
  column 0 from the landmarks where the embedder uses them (-trivial), columns 1.. blended
  with their extension from the landmarks (-landmark_weight), then y R^-1 when an orthonormalisation
  is set (-orthonormalize stored, or after BasisEmbedderOrthonormalize).

  Not collective. Input: x [n][D] raw features (n may be 0). Output: y [n][K].

  Notes:
    Runs in chunks of at most -chunk rows; the network is sized for the first call's
    min(n, chunk) rows and grows when a later call needs more. Logged as BASIS_Embed.
*/
PetscErrorCode BasisEmbedderApply(BasisEmbedder e, PetscInt n, const float x[], float y[])
{
  const BasisModel *mo = e->model;

  PetscFunctionBeginUser;
  PetscCheck(e->setup, PETSC_COMM_SELF, PETSC_ERR_ORDER, "call BasisEmbedderSetUp before BasisEmbedderApply");
  if (n <= 0) PetscFunctionReturn(0);
  PetscCall(EnsureCapacity(e, PetscMin(n, e->chunk)));
  PetscCall(PetscLogEventBegin(BASIS_Embed, 0, 0, 0, 0));
  for (PetscInt lo = 0; lo < n; lo += e->chunk) {
    PetscInt cnt = PetscMin(e->chunk, n - lo);
    float   *yc  = y + (size_t)lo * e->K;

    BasisModelNormaliseInput(mo, cnt, x + (size_t)lo * e->D, e->xn);
    PetscCall(BasisMLPForward(e->mlp, cnt, e->xn, yc));
    BasisModelOutput(mo, cnt, yc);
    if (e->lm) PetscCall(BasisLandmarksColumn(e->lm, e->col0 ? &e->fit : NULL, cnt, e->xn, e->K, yc));
    if (e->R) ApplyInverseR(cnt, e->K, e->R, yc);
  }
  PetscCall(PetscLogEventEnd(BASIS_Embed, 0, 0, 0, 0));
  PetscFunctionReturn(0);
}

/*
  BasisEmbedderOrthonormalize - -orthonormalize compute: R with R^T R = Y^T Y over all
  ranks' rows, and y <- y R^-1 in place; later Apply calls apply the same R.

  Collective on the embedder's comm. Input/Output: y [n][K], this rank's rows of the whole
  embedding as Apply returned them (without an orthonormalisation).
*/
PetscErrorCode BasisEmbedderOrthonormalize(BasisEmbedder e, PetscInt n, float y[])
{
  PetscFunctionBeginUser;
  PetscCheck(!e->R, e->comm, PETSC_ERR_ORDER, "the embedder already applies an orthonormalisation");
  PetscCall(PetscMalloc1(e->K * e->K, &e->R));
  PetscCall(ComputeR(e->comm, n, e->K, y, e->R));
  ApplyInverseR(n, e->K, e->R, y);
  PetscFunctionReturn(0);
}

/* BasisEmbedderGetOrthonormalization - R [K][K] applied after the network, or NULL. Not collective. */
PetscErrorCode BasisEmbedderGetOrthonormalization(BasisEmbedder e, const PetscReal **R)
{
  PetscFunctionBeginUser;
  *R = e->R;
  PetscFunctionReturn(0);
}

/* BasisEmbedderDestroy - free the embedder (NULL-tolerant); the model stays the caller's. */
PetscErrorCode BasisEmbedderDestroy(BasisEmbedder *e)
{
  PetscFunctionBeginUser;
  if (!*e) PetscFunctionReturn(0);
  PetscCall(BasisMLPDestroy(&(*e)->mlp));
  PetscCall(PetscFree((*e)->xn));
  PetscCall(PetscFree((*e)->R));
  PetscCall(BasisLandmarksDestroy(&(*e)->lm));
  PetscCall(PetscFree(*e));
  PetscFunctionReturn(0);
}

/* The attributes of /embedding: what it was computed from and how (DESIGN.md "Files"). */
static PetscErrorCode WriteEmbeddingAttrs(hid_t dset, BasisEmbedder e, const char *model_path,
                                          const BasisInput *in)
{
  const PetscInt   format = BASIS_EMBEDDING_FORMAT;
  const PetscReal *R;

  PetscFunctionBeginUser;
  PetscCall(BasisH5AttrWriteInt(dset, "format_version", 1, &format));
  PetscCall(BasisH5AttrWriteString(dset, "model", model_path));
  PetscCall(BasisH5AttrWriteString(dset, "input", in->path));
  PetscCall(BasisH5AttrWriteInt(dset, "N", 1, &in->N));
  PetscCall(BasisH5AttrWriteString(dset, "orthonormalize", BasisOrthoTypes[e->ortho]));
  PetscCall(BasisH5AttrWriteString(dset, "mlp_precision", BasisMLPPrecisions[e->precision]));
  PetscCall(BasisH5AttrWriteString(
      dset, "trivial", BasisTrivialTypes[e->col0 ? BASIS_TRIVIAL_LANDMARKS : BASIS_TRIVIAL_NETWORK]));
  PetscCall(BasisH5AttrWriteDouble(dset, "landmark_weight", 1, &e->used_weight));
  PetscCall(BasisH5AttrWriteString(dset, "landmark_values", BasisLandmarkValuesTypes[e->used_values]));
  PetscCall(BasisH5AttrWriteString(dset, "basis_version", BASIS_VERSION));
  PetscCall(
      BasisModelWriteAttributes(dset, e->model)); /* the model's parameters, by the model file's names */
  PetscCall(BasisEmbedderGetOrthonormalization(e, &R));
  if (R) PetscCall(BasisH5AttrWriteDouble(dset, "orthonormalize_R", e->K * e->K, R));
  PetscFunctionReturn(0);
}

/* A progress line on rank 0 every BASIS_EMBED_PROGRESS_SECONDS. */
static PetscErrorCode Progress(MPI_Comm comm, PetscInt done, PetscInt n, double t0, double *tlast)
{
  double now = MPI_Wtime(), frac = (double)done / PetscMax(n, 1);

  PetscFunctionBeginUser;
  if (now - *tlast > BASIS_EMBED_PROGRESS_SECONDS) {
    PetscCall(PetscPrintf(comm, "embed: %5.1f%% of rank 0's rows, %.0f s elapsed, ~%.0f s left\n", 100 * frac,
                          now - t0, (now - t0) * (1 - frac) / PetscMax(frac, 1e-9)));
    *tlast = now;
  }
  PetscFunctionReturn(0);
}

/*
  EmbedRows - embed this rank's rows [rstart, rstart + n) of the input into dset, chunk by
  chunk (with -orthonormalize compute: all of them first, then R, then one write).
  Collective on comm.
*/
static PetscErrorCode EmbedRows(MPI_Comm comm, BasisEmbedder e, BasisInput *in, PetscInt rstart, PetscInt n,
                                hid_t dset)
{
  PetscInt       D, K, chunk, nchunks, done = 0;
  BasisOrthoType ortho;
  float         *x, *y, *Y = NULL;
  double         t0 = MPI_Wtime(), tlast = t0;

  PetscFunctionBeginUser;
  PetscCall(BasisEmbedderGetSizes(e, &D, &K, &chunk));
  PetscCall(BasisEmbedderGetOrthoType(e, &ortho));
  chunk = PetscMin(chunk, PetscMax(n, 1));
  PetscCall(PetscMalloc2((size_t)chunk * D, &x, (size_t)chunk * K, &y));
  if (ortho == BASIS_ORTHO_COMPUTE) PetscCall(PetscMalloc1((size_t)PetscMax(n, 1) * K, &Y));
  nchunks = (n + chunk - 1) / chunk;
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &nchunks, 1, MPIU_INT, MPI_MAX, comm));
  for (PetscInt c = 0; c < nchunks; c++) {
    PetscInt lo = PetscMin(c * chunk, n), cnt = PetscMin(chunk, n - lo);

    PetscCall(BasisInputRead(in, rstart + lo, cnt, x));
    PetscCall(BasisEmbedderApply(e, cnt, x, Y ? Y + (size_t)lo * K : y));
    if (!Y) PetscCall(BasisH5WriteRows(comm, dset, rstart + lo, cnt, K, H5T_NATIVE_FLOAT, y));
    done += cnt;
    PetscCall(Progress(comm, done, n, t0, &tlast));
  }
  if (Y) {
    PetscCall(BasisEmbedderOrthonormalize(e, n, Y));
    PetscCall(BasisH5WriteRows(comm, dset, rstart, n, K, H5T_NATIVE_FLOAT, Y));
  }
  PetscCall(PetscFree2(x, y));
  PetscCall(PetscFree(Y));
  PetscFunctionReturn(0);
}

/* Rank 0's view of which file is at path and its state (device, inode, size, mtime), so a
   model replaced while embed ran (a checkpoint of a training run) is noticed. Collective. */
static PetscErrorCode ModelIdentity(MPI_Comm comm, const char *path, long long id[5])
{
  PetscMPIInt rank;
  struct stat st;

  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  for (int i = 0; i < 5; i++) id[i] = -1;
  if (rank == 0 && !stat(path, &st)) {
    id[0] = (long long)st.st_dev, id[1] = (long long)st.st_ino, id[2] = (long long)st.st_size;
    id[3] = (long long)st.st_mtim.tv_sec, id[4] = (long long)st.st_mtim.tv_nsec;
  }
  PetscCallMPI(MPI_Bcast(id, 5, MPI_LONG_LONG, 0, comm));
  PetscFunctionReturn(0);
}

/*
  BasisEmbedMain - `basis embed`: embed -input with -model into -output (/embedding, and
  /labels copied from the input).

  Collective on comm. Options: -model -input -output -force, and the embedder's -chunk
  -orthonormalize. With -orthonormalize compute the model file is rewritten with R, so it is
  checked as an output before the work, and R is stored before the embedding is committed:
  a model that cannot be written, or was replaced meanwhile, leaves no embedding behind.
*/
PetscErrorCode BasisEmbedMain(MPI_Comm comm)
{
  char model_path[PETSC_MAX_PATH_LEN] = "model.h5", input[PETSC_MAX_PATH_LEN] = "",
       output[PETSC_MAX_PATH_LEN] = "embedding.h5";
  PetscBool      force            = PETSC_FALSE, help;
  PetscInt       K, rstart, n;
  BasisOrthoType ortho;
  BasisEmbedder  e;
  BasisModel     mo;
  BasisInput     in;
  BasisOutput    out;
  PetscMPIInt    size, rank;
  hid_t          dset;
  double         t0 = MPI_Wtime();
  const char    *inputs[3], *minputs[2];
  long long      model_id[5], model_now[5];

  PetscFunctionBeginUser;
  PetscOptionsBegin(comm, NULL, "basis embed: embed data with a trained model", NULL);
  PetscCall(PetscOptionsString("-model", "Model file from basis train", NULL, model_path, model_path,
                               sizeof(model_path), NULL));
  PetscCall(PetscOptionsString("-input", "Data to embed (HDF5 with /features, same D as the model)", NULL,
                               input, input, sizeof(input), NULL));
  PetscCall(PetscOptionsString("-output", "Output HDF5 file (/embedding)", NULL, output, output,
                               sizeof(output), NULL));
  PetscCall(PetscOptionsBool("-force", "Overwrite an existing output", NULL, force, &force, NULL));
  PetscOptionsEnd();
  PetscCall(BasisEmbedderCreate(comm, &e));
  PetscCall(BasisEmbedderSetFromOptions(e));
  PetscCall(BasisHelpRequested(&help));
  if (help) {
    PetscCall(BasisEmbedderDestroy(&e));
    PetscFunctionReturn(0);
  }
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCallMPI(MPI_Comm_rank(comm, &rank));

  inputs[0] = input, inputs[1] = model_path, inputs[2] = NULL;
  minputs[0] = input, minputs[1] = NULL;
  PetscCall(BasisOutputCheckPath(comm, output, force, inputs));
  PetscCall(BasisEmbedderGetOrthoType(e, &ortho));
  if (ortho == BASIS_ORTHO_COMPUTE) PetscCall(ModelIdentity(comm, model_path, model_id));
  PetscCall(BasisModelRead(comm, model_path, &mo));
  PetscCall(BasisInputOpen(comm, input, &in));
  PetscCheck(
      in.D == mo.spec.D, comm, PETSC_ERR_ARG_INCOMP,
      "input %s has D = %d features but model %s was trained on D = %d; embed data with the model's features",
      input, (int)in.D, model_path, (int)mo.spec.D);
  PetscCall(BasisEmbedderSetModel(e, &mo, model_path));
  PetscCall(BasisEmbedderSetUp(e));
  PetscCall(BasisEmbedderView(e));
  PetscCall(BasisEmbedderGetSizes(e, NULL, &K, NULL));
  /* R goes into the model: can it be written (not held by a training run)? */
  if (ortho == BASIS_ORTHO_COMPUTE)
    PetscCall(BasisOutputCheckPathOption(comm, "-model (-orthonormalize compute stores R in it)", model_path,
                                         PETSC_TRUE, minputs));

  PetscCall(PetscLogStagePush(BASIS_StageEmbed));
  BasisBlockRange(in.N, size, rank, &rstart, &n);
  PetscCall(BasisOutputCreate(comm, output, force, inputs, &out));
  PetscCall(BasisH5CreateMatrix(out.file, "embedding", in.N, K, H5T_IEEE_F32LE, &dset));
  PetscCall(EmbedRows(comm, e, &in, rstart, n, dset));
  PetscCall(WriteEmbeddingAttrs(dset, e, model_path, &in));
  BasisCallH5(H5Dclose(dset));
  PetscCall(BasisInputCopyLabels(&in, out.file)); /* so `basis eval` needs only this file */
  if (ortho == BASIS_ORTHO_COMPUTE) {             /* store R in the model for -orthonormalize stored */
    const PetscReal *R;

    PetscCall(ModelIdentity(comm, model_path, model_now));
    PetscCheck(!memcmp(model_id, model_now, sizeof(model_id)), comm, PETSC_ERR_FILE_UNEXPECTED,
               "model %s was replaced while embed ran (by a training run's checkpoint?); its R would not "
               "match it, so neither R nor %s is written: rerun embed on the model as it is now",
               model_path, output);
    PetscCall(BasisEmbedderGetOrthonormalization(e, &R));
    PetscCall(PetscFree(mo.ortho_R));
    PetscCall(PetscMalloc1(K * K, &mo.ortho_R));
    PetscCall(PetscArraycpy(mo.ortho_R, R, K * K));
    PetscCall(BasisEmbedderUsesLandmarks(e, &mo.ortho_landmarks, &mo.ortho_landmark_weight,
                                         &mo.ortho_landmark_values));
    PetscCall(BasisModelWrite(comm, model_path, PETSC_TRUE, minputs, &mo));
    PetscCall(PetscPrintf(
        comm, "embed: stored the orthonormalisation in %s (-orthonormalize stored reuses it)\n", model_path));
  }
  PetscCall(BasisOutputCommit(&out));
  PetscCall(PetscLogStagePop());
  {
    double secs = MPI_Wtime() - t0;
    PetscCall(PetscPrintf(comm, "embed: %d x %d written to %s in %.1f s (%.0f points/s)\n", (int)in.N, (int)K,
                          output, secs, in.N / secs));
  }
  PetscCall(BasisEmbedderDestroy(&e));
  PetscCall(BasisInputClose(&in));
  PetscCall(BasisModelFree(&mo));
  PetscFunctionReturn(0);
}
