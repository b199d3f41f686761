/*
  eval.c - the evaluator (include/basis/eval.h) and `basis eval`, its driver: score
  embeddings against exact eigenvectors (DESIGN.md "Metrics").

  Inputs: one or more embeddings (/embedding from `basis embed`, or /exact/vectors so that
  an exact file can itself be scored), all of the same N points in the same order, and the
  exact eigenvectors either read from a `basis exact` file or computed here from the data
  with the ring kNN and SLEPc of exact.c. Computed, the reference graphs are the
  density-matched one for the model's batch size m (k N / m neighbours: what a model
  trained on batches of m learns) and the same-k one; -match_batch picks others. One kNN
  search with the largest k serves every reference graph (a list of k' > k neighbours
  holds the k nearest first).

  Data identity: every file records the data it describes (`input`, N, and for embeddings
  the model's D). A different N or D is an error that names both files. A different input
  path with the same N and D is a warning only: a user who moved or copied the data gets
  a note, not a refusal, while a user who mixed up two data sets of the same shape (the
  MNIST and Fashion-MNIST test sets are both 10000 x 784) is told which files disagree.

  Every row (each embedding, then each exact reference) gets: d_G and sqrt(sum theta^2)
  against every reference, d_perp, and, when labels exist, NMI and ACC of k-means and the
  accuracy of a linear probe (metrics.c). Rows are distributed in contiguous blocks; every
  metric is collective and returns the same value on every rank. The report (table and
  JSON) is report.c's. Collective on comm throughout.
*/
#include <basis/eval.h>
#include <basis/exact.h>
#include <basis/log.h>
#include <basis/metrics.h>
#include <basis/model.h>
#include <basis/options.h>
#include <basis/output.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Class labels are counted with a histogram of this many bins: far above any class count,
   it refuses label columns that are really row identifiers. */
#define BASIS_EVAL_MAX_LABEL 1000000

/* What a file says about the data it describes. */
typedef struct {
  char     file[PETSC_MAX_PATH_LEN];  /* the file that records it */
  char     input[PETSC_MAX_PATH_LEN]; /* the data it was computed from; "" when not recorded */
  PetscInt N, D;                      /* D < 0 when not recorded */
} EvalIdentity;

struct _p_BasisEvaluator {
  MPI_Comm    comm;
  PetscMPIInt size, rank;
  /* options (BasisEvaluatorSetFromOptions) */
  PetscInt         clusters, restarts, kmeans_seed, match[BASIS_EVAL_MAX_REFS], nmatch;
  PetscReal        test_fraction;
  BasisGraphParams graph; /* base rule of computed references: model's, recorded, or default */
  /* what the first embedding and the model record */
  PetscBool    recorded, have_model;
  PetscInt     m_default, model_D;
  char         model_path[PETSC_MAX_PATH_LEN];
  EvalIdentity id; /* of the first embedding */
  /* the scored rows and the references */
  PetscInt     N, rstart, n, Kmax, nrows, nrefs, nclasses;
  BasisEvalRow rows[BASIS_EVAL_MAX_INPUTS + BASIS_EVAL_MAX_REFS];
  BasisEvalRef refs[BASIS_EVAL_MAX_REFS];
  int         *labels, *assign;
  PetscInt    *gidx;
  PetscBool    have_labels;
  char         label_source[PETSC_MAX_PATH_LEN];
};

/*
  BasisEvaluatorCreate - an empty evaluator (defaults: -clusters 0 = one per class,
  -restarts 10, -probe_test_fraction 0.2, -kmeans_seed 0, the default graph rule).

  Collective on comm.
*/
PetscErrorCode BasisEvaluatorCreate(MPI_Comm comm, BasisEvaluator *ev)
{
  PetscFunctionBeginUser;
  PetscCall(PetscNew(ev));
  (*ev)->comm          = comm;
  (*ev)->restarts      = 10;
  (*ev)->test_fraction = 0.2;
  (*ev)->N             = -1;
  BasisGraphParamsDefault(&(*ev)->graph);
  PetscCallMPI(MPI_Comm_size(comm, &(*ev)->size));
  PetscCallMPI(MPI_Comm_rank(comm, &(*ev)->rank));
  PetscFunctionReturn(0);
}

/* Whether two recorded paths name the same file: the same string, or the same real path
   (rank 0 looks; every rank gets its verdict). Collective on comm. */
static PetscErrorCode SameFile(MPI_Comm comm, const char *a, const char *b, PetscBool *same)
{
  PetscMPIInt rank;
  int         s = 0;

  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  if (rank == 0) {
    char ra[PATH_MAX], rb[PATH_MAX];
    s = !strcmp(a, b) || (realpath(a, ra) && realpath(b, rb) && !strcmp(ra, rb));
  }
  PetscCallMPI(MPI_Bcast(&s, 1, MPI_INT, 0, comm));
  *same = s ? PETSC_TRUE : PETSC_FALSE;
  PetscFunctionReturn(0);
}

/*
  CheckIdentity - b must describe the data of the first embedding: the same D (an error
  naming both files), and the same recorded input (a warning: files get moved). The
  callers have checked N with their own messages. Collective.
*/
static PetscErrorCode CheckIdentity(BasisEvaluator ev, const EvalIdentity *b)
{
  const EvalIdentity *a = &ev->id;
  PetscBool           same;
  char                dims[64] = "";

  PetscFunctionBeginUser;
  PetscCheck(a->D < 0 || b->D < 0 || a->D == b->D, ev->comm, PETSC_ERR_ARG_INCOMP,
             "%s describes data with D = %d features but %s data with D = %d; they are not the same data: "
             "score an embedding against references of the data it was computed from",
             a->file, (int)a->D, b->file, (int)b->D);
  if (!a->input[0] || !b->input[0]) PetscFunctionReturn(0);
  PetscCall(SameFile(ev->comm, a->input, b->input, &same));
  if (same) PetscFunctionReturn(0);
  if (a->D >= 0 && b->D >= 0) PetscCall(PetscSNPrintf(dims, sizeof(dims), " and D = %d", (int)a->D));
  PetscCall(PetscPrintf(ev->comm,
                        "eval: warning: %s was computed from %s but %s from %s; N = %d%s agree, so this is "
                        "fine if one is a moved or copied file, otherwise give files of the same data\n",
                        a->file, a->input, b->file, b->input, (int)b->N, dims));
  PetscFunctionReturn(0);
}

/* The identity an embedding or exact file records on its dataset. Not collective. */
static PetscErrorCode ReadIdentity(hid_t dset, const char *path, PetscInt N, EvalIdentity *id)
{
  PetscInt  nv = 1;
  PetscBool found;

  PetscFunctionBeginUser;
  PetscCall(PetscStrncpy(id->file, path, sizeof(id->file)));
  PetscCall(BasisH5AttrReadString(dset, "input", sizeof(id->input), id->input, &found));
  if (!found) id->input[0] = 0;
  id->N = N;
  PetscCall(BasisH5AttrReadInt(dset, "features", &nv, &id->D));
  if (!nv) id->D = -1;
  PetscFunctionReturn(0);
}

/*
  ReadRecordedGraph - the model's m and graph rule as `basis embed` recorded them on the
  first embedding: named attributes (format_version 2), else the positional attribute of
  earlier versions, `model_step_l_m_R_seed_knn_scaleneighbor`. Not collective.
*/
static PetscErrorCode ReadRecordedGraph(BasisEvaluator ev, hid_t dset)
{
  BasisGraphParams *p = &ev->graph;
  PetscInt          v[8], nv = 1, nk = 1, ns = 1;
  char              text[32];
  PetscBool         found, known;
  PetscEnum         value;

  PetscFunctionBeginUser;
  PetscCall(BasisH5AttrReadInt(dset, "batch", &nv, &ev->m_default));
  if (nv) {
    PetscCall(BasisH5AttrReadInt(dset, "knn", &nk, &v[5]));
    PetscCall(BasisH5AttrReadInt(dset, "scale_neighbor", &ns, &v[6]));
    ev->recorded = nk && ns ? PETSC_TRUE : PETSC_FALSE;
    PetscCall(BasisH5AttrReadString(dset, "scale", sizeof(text), text, &found));
    if (found) PetscCall(PetscEnumFind(BasisScaleTypes, text, &value, &known));
    if (found && known) p->scale = (BasisScaleType)value;
  } else {
    nv = 8;
    PetscCall(BasisH5AttrReadInt(dset, "model_step_l_m_R_seed_knn_scaleneighbor", &nv, v));
    ev->recorded  = nv >= 7 ? PETSC_TRUE : PETSC_FALSE;
    ev->m_default = ev->recorded ? v[2] : 0;
  }
  if (!ev->recorded) PetscFunctionReturn(0);
  p->knn            = v[5];
  p->scale_neighbor = v[6];
  PetscCall(BasisH5AttrReadString(dset, "laplacian", sizeof(text), text, &found));
  if (found) PetscCall(PetscEnumFind(BasisLaplacianTypes, text, &value, &known));
  if (found && known) p->laplacian = (BasisLaplacianType)value;
  PetscFunctionReturn(0);
}

/*
  OpenScored - open the N x K matrix of an embedding (/embedding, else /exact/vectors) or,
  with exact_only, of an exact file (/exact/vectors). Collective; errors name the file and
  what it should contain.
*/
static PetscErrorCode OpenScored(MPI_Comm comm, const char *path, PetscBool exact_only, hid_t *file,
                                 hid_t *dset, PetscInt *N, PetscInt *K)
{
  const char *name = NULL;
  PetscBool   has_embedding, has_vectors;

  PetscFunctionBeginUser;
  PetscCall(BasisH5OpenRead(comm, path, exact_only ? "exact" : "embedding", file));
  PetscCall(BasisH5Has(*file, "embedding", &has_embedding));
  PetscCall(BasisH5Has(*file, "exact/vectors", &has_vectors));
  if (!exact_only && has_embedding)
    name = "embedding";
  else if (has_vectors)
    name = "exact/vectors";
  PetscCheck(name, comm, PETSC_ERR_FILE_UNEXPECTED, "%s has no dataset %s; give a file written by %s", path,
             exact_only ? "/exact/vectors" : "/embedding (or /exact/vectors)",
             exact_only ? "basis exact" : "basis embed (or basis exact)");
  PetscCall(BasisH5MatrixOpen(comm, *file, path, name, dset, N, K));
  PetscFunctionReturn(0);
}

/* The first file fixes N and this rank's rows. Collective. */
static PetscErrorCode SetRows(BasisEvaluator ev, const char *path, PetscInt N)
{
  PetscFunctionBeginUser;
  ev->N = N;
  PetscCheck(N >= ev->size, ev->comm, PETSC_ERR_ARG_SIZ,
             "%s has %d row%s but the run has %d ranks; use at most %d rank%s", path, (int)N,
             N == 1 ? "" : "s", (int)ev->size, (int)N, N == 1 ? "" : "s");
  BasisBlockRange(N, ev->size, ev->rank, &ev->rstart, &ev->n);
  PetscCall(PetscMalloc3(PetscMax(ev->n, 1), &ev->labels, PetscMax(ev->n, 1), &ev->assign, PetscMax(ev->n, 1),
                         &ev->gidx));
  for (PetscInt r = 0; r < ev->n; r++) ev->gidx[r] = ev->rstart + r;
  PetscFunctionReturn(0);
}

/* This rank's rows of an open matrix into the next row, and the file's labels if none
   were found yet. Collective. */
static PetscErrorCode ReadScored(BasisEvaluator ev, const char *path, hid_t file, hid_t dset, PetscInt K,
                                 BasisEvalRow *w)
{
  PetscFunctionBeginUser;
  w->K = K;
  PetscCall(BasisH5MatrixReadRows(ev->comm, path, dset, ev->rstart, ev->n, K, &w->Y));
  if (!ev->have_labels) {
    PetscCall(BasisH5LabelsRead(ev->comm, file, path, ev->N, "the embedding", ev->rstart, ev->n, ev->labels,
                                &ev->have_labels));
    if (ev->have_labels) PetscCall(PetscStrncpy(ev->label_source, path, sizeof(ev->label_source)));
  }
  ev->Kmax = PetscMax(ev->Kmax, K);
  PetscFunctionReturn(0);
}

/*
  BasisEvaluatorAddEmbedding - add an embedding to score: /embedding of a `basis embed`
  file, or /exact/vectors of a `basis exact` file.

  Collective on the evaluator's comm. The first one fixes N and the rows of each rank, and
  supplies the defaults it records (the model's m and graph rule, its data); every later
  one must have N rows and describe the same data.
*/
PetscErrorCode BasisEvaluatorAddEmbedding(BasisEvaluator ev, const char *path)
{
  hid_t        file, dset;
  PetscInt     N, K;
  EvalIdentity id;

  PetscFunctionBeginUser;
  PetscCheck(ev->nrefs == 0, ev->comm, PETSC_ERR_ORDER, "add the embeddings before the references");
  PetscCheck(ev->nrows < BASIS_EVAL_MAX_INPUTS, ev->comm, PETSC_ERR_ARG_OUTOFRANGE,
             "at most %d embeddings per run", BASIS_EVAL_MAX_INPUTS);
  PetscCall(OpenScored(ev->comm, path, PETSC_FALSE, &file, &dset, &N, &K));
  PetscCall(ReadIdentity(dset, path, N, &id));
  if (ev->N < 0) {
    PetscCall(SetRows(ev, path, N));
    PetscCall(ReadRecordedGraph(ev, dset));
    ev->id = id;
  }
  PetscCheck(N == ev->N, ev->comm, PETSC_ERR_ARG_SIZ,
             "%s has %d rows but %s has %d; every embedding must hold the same points in the same order",
             path, (int)N, ev->id.file, (int)ev->N);
  PetscCall(CheckIdentity(ev, &id));
  PetscCall(PetscStrncpy(ev->rows[ev->nrows].name, path, sizeof(ev->rows[ev->nrows].name)));
  PetscCall(ReadScored(ev, path, file, dset, K, &ev->rows[ev->nrows]));
  BasisCallH5(H5Dclose(dset));
  BasisCallH5(H5Fclose(file));
  ev->nrows++;
  PetscFunctionReturn(0);
}

/*
  BasisEvaluatorSetModel - take the batch size m, graph rule and D of a model file: the
  defaults of references computed from the data (they win over what the embedding records).

  Collective on the evaluator's comm.
*/
PetscErrorCode BasisEvaluatorSetModel(BasisEvaluator ev, const char *path)
{
  BasisModel mo;

  PetscFunctionBeginUser;
  PetscCall(BasisModelRead(ev->comm, path, &mo));
  ev->graph      = mo.spec.graph;
  ev->m_default  = mo.spec.m;
  ev->model_D    = mo.spec.D;
  ev->have_model = PETSC_TRUE;
  PetscCall(PetscStrncpy(ev->model_path, path, sizeof(ev->model_path)));
  PetscCall(BasisModelFree(&mo));
  PetscFunctionReturn(0);
}

/*
  BasisEvaluatorSetFromOptions - read the evaluator's options, once.

  Collective on the evaluator's comm. Call it after the embeddings and the model: the graph
  rule's defaults are the model's (else the one recorded on the first embedding), -dim's the
  largest K of the embeddings; the command line wins.

  Options: -match_batch m[,m2] (computed references: density-matched to batches of m, 0 =
  same k; default the model's m and 0), -clusters, -restarts, -probe_test_fraction,
  -kmeans_seed (formerly -seed), the graph rule (-dim -knn -scale_neighbor -scale -laplacian).
*/
PetscErrorCode BasisEvaluatorSetFromOptions(BasisEvaluator ev)
{
  PetscBool match_set, has_kmeans_seed;

  PetscFunctionBeginUser;
  if (ev->Kmax > 0) ev->graph.K = ev->Kmax;
  ev->nmatch = BASIS_EVAL_MAX_REFS; /* a longer -match_batch is refused by BasisEvalMain, before any work */
  PetscOptionsBegin(ev->comm, NULL, "basis eval: scores and the reference graphs computed with -data", NULL);
  PetscCall(
      PetscOptionsIntArray("-match_batch",
                           "With -data: batch sizes of the density-matched reference graphs, 0 = same-k "
                           "(default: the model's m and 0)",
                           NULL, ev->match, &ev->nmatch, &match_set));
  PetscCall(PetscOptionsInt("-clusters", "k-means clusters (0: the number of distinct labels)", NULL,
                            ev->clusters, &ev->clusters, NULL));
  PetscCall(PetscOptionsInt("-restarts", "k-means restarts (k-means++ seedings)", NULL, ev->restarts,
                            &ev->restarts, NULL));
  PetscCall(PetscOptionsReal("-probe_test_fraction", "Fraction of rows held out to score the linear probe",
                             NULL, ev->test_fraction, &ev->test_fraction, NULL));
  /* -seed is the old name of -kmeans_seed (0.2). One options file often serves every
     command (jobs/pipeline.opts): when it sets both, -seed is train's and -kmeans_seed wins
     here, without a warning; -seed alone still seeds k-means, with PETSc's deprecation
     warning (the rule of generate's -data_seed). */
  PetscCall(PetscOptionsHasName(NULL, NULL, "-kmeans_seed", &has_kmeans_seed));
  if (!has_kmeans_seed)
    PetscCall(PetscOptionsDeprecated(
        "-seed", "-kmeans_seed", "0.2",
        "the k-means seed of eval is -kmeans_seed; -seed is the training seed of train"));
  PetscCall(PetscOptionsInt("-kmeans_seed", "Random seed of k-means", NULL, ev->kmeans_seed, &ev->kmeans_seed,
                            NULL));
  PetscCall(BasisGraphParamsSetFromOptions(ev->comm, &ev->graph));
  PetscOptionsEnd();
  if (!match_set) ev->nmatch = 0;
  for (PetscInt j = 0; j < ev->nmatch; j++)
    PetscCheck(ev->match[j] >= 0, ev->comm, PETSC_ERR_ARG_OUTOFRANGE,
               "-match_batch %d must be a batch size (> 0) or 0 for the same-k graph", (int)ev->match[j]);
  PetscCheck(ev->clusters >= 0, ev->comm, PETSC_ERR_ARG_OUTOFRANGE,
             "-clusters %d must be positive (or 0: one per class)", (int)ev->clusters);
  PetscCheck(ev->restarts >= 1, ev->comm, PETSC_ERR_ARG_OUTOFRANGE, "-restarts %d must be at least 1",
             (int)ev->restarts);
  PetscCheck(ev->test_fraction > 0 && ev->test_fraction < 1, ev->comm, PETSC_ERR_ARG_OUTOFRANGE,
             "-probe_test_fraction %g must lie strictly between 0 and 1", (double)ev->test_fraction);
  PetscFunctionReturn(0);
}

/* /exact/values of an exact file when it holds K values, else NULL. Collective. */
static PetscErrorCode ReadEigenvalues(MPI_Comm comm, hid_t file, PetscInt K, PetscReal **lambda)
{
  hid_t     eset, space;
  hssize_t  npts;
  PetscBool has;

  PetscFunctionBeginUser;
  *lambda = NULL;
  PetscCall(BasisH5Has(file, "exact/values", &has));
  if (!has) PetscFunctionReturn(0);
  eset = H5Dopen2(file, "exact/values", H5P_DEFAULT);
  BasisCallH5(eset);
  space = H5Dget_space(eset);
  BasisCallH5(space);
  npts = H5Sget_simple_extent_npoints(space);
  BasisCallH5(H5Sclose(space));
  if (npts == K) {
    PetscCall(PetscMalloc1(K, lambda));
    PetscCall(BasisH5ReadRows(comm, eset, 0, K, 1, H5T_NATIVE_DOUBLE, *lambda));
  }
  BasisCallH5(H5Dclose(eset));
  PetscFunctionReturn(0);
}

/* The graph a `basis exact` file records on /exact/vectors (named attributes). Not collective. */
static PetscErrorCode ReadExactGraph(hid_t dset, BasisEvalRef *r)
{
  const char *names[] = {"match_batch", "knn", "scale_neighbor"};
  PetscInt   *vals[]  = {&r->match_batch, &r->knn, &r->scale_neighbor};
  PetscBool   found;

  PetscFunctionBeginUser;
  for (PetscInt i = 0; i < 3; i++) {
    PetscInt nv = 1;
    PetscCall(BasisH5AttrReadInt(dset, names[i], &nv, vals[i]));
    if (!nv) *vals[i] = -1;
  }
  PetscCall(BasisH5AttrReadString(dset, "scale", sizeof(r->scale), r->scale, &found));
  PetscCall(BasisH5AttrReadString(dset, "laplacian", sizeof(r->laplacian), r->laplacian, &found));
  PetscFunctionReturn(0);
}

/*
  BasisEvaluatorAddReferenceFile - the exact eigenvectors of a `basis exact` file
  (/exact/vectors, with /exact/values and the graph it records) as the reference.

  Collective on the evaluator's comm. The file must have N rows and describe the
  embeddings' data; -match_batch does not apply (the graph is the file's).
*/
PetscErrorCode BasisEvaluatorAddReferenceFile(BasisEvaluator ev, const char *path)
{
  hid_t         file, dset;
  PetscInt      N, K;
  EvalIdentity  id;
  BasisEvalRef *r = &ev->refs[ev->nrefs];
  BasisEvalRow *w = &ev->rows[ev->nrows];

  PetscFunctionBeginUser;
  PetscCheck(ev->N > 0, ev->comm, PETSC_ERR_ORDER, "add an embedding before the references");
  PetscCheck(ev->nrefs < BASIS_EVAL_MAX_REFS, ev->comm, PETSC_ERR_ARG_OUTOFRANGE,
             "at most %d references per run", BASIS_EVAL_MAX_REFS);
  PetscCheck(!ev->nmatch, ev->comm, PETSC_ERR_ARG_WRONG,
             "-match_batch chooses the graph computed from -data; with -exact the graph is the one in %s",
             path);
  PetscCall(OpenScored(ev->comm, path, PETSC_TRUE, &file, &dset, &N, &K));
  PetscCheck(N == ev->N, ev->comm, PETSC_ERR_ARG_SIZ,
             "exact file %s has %d rows but embedding %s has %d; compare embeddings of the same points", path,
             (int)N, ev->id.file, (int)ev->N);
  PetscCall(ReadIdentity(dset, path, N, &id));
  PetscCall(CheckIdentity(ev, &id));
  PetscCall(PetscStrncpy(r->source, path, sizeof(r->source)));
  PetscCall(ReadExactGraph(dset, r));
  PetscCall(ReadEigenvalues(ev->comm, file, K, &r->lambda));
  r->row = ev->nrows;
  PetscCall(PetscSNPrintf(w->name, sizeof(w->name), "exact:%c (%s)", (char)('A' + ev->nrefs), path));
  w->exact = PETSC_TRUE;
  PetscCall(ReadScored(ev, path, file, dset, K, w));
  BasisCallH5(H5Dclose(dset));
  BasisCallH5(H5Fclose(file));
  ev->nrows++, ev->nrefs++;
  PetscFunctionReturn(0);
}

/* The exact eigenpairs of one graph from the kNN lists: a reference and its row. Collective. */
static PetscErrorCode SolveReference(BasisEvaluator ev, const char *path, const BasisShard *shard,
                                     const BasisKnn *knn, PetscInt m, const BasisGraphParams *p)
{
  BasisEvalRef *r      = &ev->refs[ev->nrefs];
  BasisEvalRow *w      = &ev->rows[ev->nrows];
  char          letter = (char)('A' + ev->nrefs);
  PetscReal    *residual;
  double        ts = MPI_Wtime();

  PetscFunctionBeginUser;
  PetscCall(PetscStrncpy(r->source, path, sizeof(r->source)));
  r->computed       = PETSC_TRUE;
  r->match_batch    = m;
  r->knn            = p->knn;
  r->scale_neighbor = p->scale_neighbor;
  PetscCall(PetscStrncpy(r->scale, BasisScaleTypes[p->scale], sizeof(r->scale)));
  PetscCall(PetscStrncpy(r->laplacian, BasisLaplacianTypes[p->laplacian], sizeof(r->laplacian)));
  PetscCall(PetscMalloc1(p->K, &r->lambda));
  PetscCall(PetscMalloc1(p->K, &residual));
  PetscCall(PetscMalloc1((size_t)PetscMax(ev->n, 1) * p->K, &w->Y));
  PetscCall(BasisExactSolveKnn(ev->comm, BASIS_EXACT_PREFIX, shard, p, knn, w->Y, r->lambda, residual));
  for (PetscInt t = 0; t < p->K; t++) r->max_residual = PetscMax(r->max_residual, residual[t]);
  PetscCall(PetscFree(residual));
  w->exact = PETSC_TRUE;
  w->K     = p->K;
  r->row   = ev->nrows++;
  ev->nrefs++;
  if (m)
    PetscCall(
        PetscSNPrintf(w->name, sizeof(w->name), "exact:%c (m = %d, knn %d)", letter, (int)m, (int)p->knn));
  else
    PetscCall(PetscSNPrintf(w->name, sizeof(w->name), "exact:%c (same k, knn %d)", letter, (int)p->knn));
  PetscCall(PetscPrintf(ev->comm, "eval: %s: graph + eigensolve in %.1f s, largest residual %.1e\n", w->name,
                        MPI_Wtime() - ts, (double)r->max_residual));
  PetscFunctionReturn(0);
}

/* Open -data and check it against the model and the embeddings. Collective. */
static PetscErrorCode OpenData(BasisEvaluator ev, const char *path, BasisInput *in)
{
  EvalIdentity id;

  PetscFunctionBeginUser;
  PetscCall(BasisInputOpen(ev->comm, path, in));
  PetscCheck(!ev->have_model || in->D == ev->model_D, ev->comm, PETSC_ERR_ARG_INCOMP,
             "-data %s has D = %d features but -model %s was trained on D = %d; give the model of these data",
             path, (int)in->D, ev->model_path, (int)ev->model_D);
  PetscCheck(in->N == ev->N, ev->comm, PETSC_ERR_ARG_SIZ,
             "data %s has %d points but embedding %s has %d rows; evaluate an embedding of these data", path,
             (int)in->N, ev->id.file, (int)ev->N);
  PetscCall(PetscStrncpy(id.file, path, sizeof(id.file)));
  PetscCall(PetscStrncpy(id.input, path, sizeof(id.input)));
  id.N = in->N, id.D = in->D;
  PetscCall(CheckIdentity(ev, &id));
  PetscFunctionReturn(0);
}

/*
  BasisEvaluatorAddReferenceData - compute the references from the data: the exact
  eigenvectors of one graph per -match_batch value (default: the model's m, then the
  same-k graph), all from one kNN search.

  Collective on the evaluator's comm. The data must have N points and be the embeddings'
  data (BasisEvaluatorSetModel: and the model's D). Eigensolver options: -exact_eps_*.
*/
PetscErrorCode BasisEvaluatorAddReferenceData(BasisEvaluator ev, const char *path)
{
  BasisInput       in;
  BasisShard       shard;
  BasisKnn         knn;
  BasisGraphParams p[BASIS_EVAL_MAX_REFS];
  PetscInt         kmax = 0;
  double           tk0;

  PetscFunctionBeginUser;
  PetscCheck(ev->N > 0, ev->comm, PETSC_ERR_ORDER, "add an embedding before the references");
  if (!ev->nmatch) {
    if (ev->m_default > 0) ev->match[ev->nmatch++] = ev->m_default;
    ev->match[ev->nmatch++] = 0;
  }
  PetscCheck(ev->nrefs + ev->nmatch <= BASIS_EVAL_MAX_REFS, ev->comm, PETSC_ERR_ARG_OUTOFRANGE,
             "at most %d references per run", BASIS_EVAL_MAX_REFS);
  PetscCall(OpenData(ev, path, &in));
  PetscCall(BasisInputReadShard(&in, &shard));
  if (!ev->have_labels && in.has_labels) {
    PetscCall(PetscArraycpy(ev->labels, shard.labels, ev->n));
    PetscCall(PetscStrncpy(ev->label_source, path, sizeof(ev->label_source)));
    ev->have_labels = PETSC_TRUE;
  }
  for (PetscInt j = 0; j < ev->nmatch; j++) {
    BasisGraphParamsMatched(&ev->graph, ev->N, ev->match[j], &p[j]);
    PetscCheck(
        p[j].knn < ev->N, ev->comm, PETSC_ERR_ARG_OUTOFRANGE,
        "-match_batch %d asks for %d neighbours per point but %s has only %d points; raise -match_batch",
        (int)ev->match[j], (int)p[j].knn, path, (int)ev->N);
    kmax = PetscMax(kmax, p[j].knn);
  }
  PetscCall(PetscPrintf(ev->comm,
                        "eval: exact eigenvectors of %s (%d points), kNN with k = %d for %d graph%s\n", path,
                        (int)ev->N, (int)kmax, (int)ev->nmatch, ev->nmatch > 1 ? "s" : ""));
  tk0 = MPI_Wtime();
  PetscCall(BasisExactKnn(ev->comm, &shard, kmax, &knn));
  PetscCall(PetscPrintf(ev->comm, "eval: kNN in %.1f s\n", MPI_Wtime() - tk0));
  for (PetscInt j = 0; j < ev->nmatch; j++)
    PetscCall(SolveReference(ev, path, &shard, &knn, ev->match[j], &p[j]));
  PetscCall(BasisKnnDestroy(&knn));
  PetscCall(BasisShardDestroy(&shard));
  PetscCall(BasisInputClose(&in));
  PetscFunctionReturn(0);
}

/* Number of distinct labels; errors for negative or huge values. Collective. */
static PetscErrorCode CountClasses(MPI_Comm comm, const char *source, PetscInt n, const int labels[],
                                   PetscInt *nclasses)
{
  int  lo = PETSC_MAX_INT, hi = -1, range[2];
  int *hist;

  PetscFunctionBeginUser;
  for (PetscInt i = 0; i < n; i++) lo = PetscMin(lo, labels[i]), hi = PetscMax(hi, labels[i]);
  range[0] = -lo, range[1] = hi;
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, range, 2, MPI_INT, MPI_MAX, comm));
  PetscCheck(range[0] <= 0, comm, PETSC_ERR_ARG_OUTOFRANGE,
             "/labels of %s contain the negative value %d; class labels must be integers 0, 1, 2, ...",
             source, -range[0]);
  PetscCheck(range[1] < BASIS_EVAL_MAX_LABEL, comm, PETSC_ERR_ARG_OUTOFRANGE,
             "/labels of %s contain the value %d, out of range (at most %d): are they class labels?", source,
             range[1], BASIS_EVAL_MAX_LABEL - 1);
  PetscCall(PetscCalloc1(range[1] + 1, &hist));
  for (PetscInt i = 0; i < n; i++) hist[labels[i]] = 1;
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, hist, range[1] + 1, MPI_INT, MPI_MAX, comm));
  *nclasses = 0;
  for (int c = 0; c <= range[1]; c++) *nclasses += hist[c];
  PetscCall(PetscFree(hist));
  PetscFunctionReturn(0);
}

/* Every metric of one row: against every reference, then d_perp and the label scores. Collective. */
static PetscErrorCode ScoreRow(BasisEvaluator ev, BasisEvalRow *w)
{
  PetscFunctionBeginUser;
  for (PetscInt j = 0; j < ev->nrefs; j++) {
    const BasisEvalRow *v = &ev->rows[ev->refs[j].row];
    PetscReal           s = 0;

    PetscCall(PetscCalloc1(PetscMin(w->K, v->K), &w->theta[j]));
    PetscCall(PetscCalloc1(PetscMin(w->K, v->K), &w->sin2[j]));
    PetscCall(BasisMetricGrassmannAngles(ev->comm, ev->n, w->K, w->Y, v->K, v->Y, &w->dG[j], w->theta[j],
                                         w->sin2[j], &w->rank_y, NULL));
    w->dG_nontrivial[j] = NAN; /* a reference of one column has no non-trivial direction */
    if (v->K >= 2)
      PetscCall(BasisMetricGrassmannNontrivial(ev->comm, ev->n, w->K, w->Y, v->K, v->Y, &w->dG_nontrivial[j],
                                               NULL, NULL, NULL, NULL));
    PetscCall(BasisMetricGrassmannPublished(ev->comm, ev->n, w->K, w->Y, v->K, v->Y, &w->dG_published[j]));
    for (PetscInt t = 0; t < PetscMin(w->K, v->K); t++) s += w->theta[j][t] * w->theta[j][t];
    w->theta_norm[j] = PetscSqrtReal(s);
  }
  PetscCall(BasisMetricOrthogonality(ev->comm, ev->n, w->K, w->Y, &w->dperp));
  w->nmi = w->acc = w->probe = NAN; /* "-" in the table, null in JSON */
  if (ev->have_labels) {
    PetscReal inertia;
    PetscCall(BasisKMeans(ev->comm, ev->n, w->K, w->Y, ev->clusters, ev->restarts, ev->kmeans_seed,
                          ev->assign, &inertia));
    PetscCall(BasisMetricNMI(ev->comm, ev->n, ev->labels, ev->assign, &w->nmi));
    PetscCall(BasisMetricACC(ev->comm, ev->n, ev->labels, ev->assign, &w->acc));
    PetscCall(
        BasisLinearProbe(ev->comm, ev->n, w->K, w->Y, ev->labels, ev->gidx, ev->test_fraction, &w->probe));
  }
  PetscFunctionReturn(0);
}

/*
  BasisEvaluatorCompute - score every row (embeddings, then references) against every
  reference: d_G and its angles, d_perp, and with labels NMI, ACC (k-means with -clusters,
  -restarts, -kmeans_seed) and the linear probe.

  Collective on the evaluator's comm; the results are identical on every rank.
*/
PetscErrorCode BasisEvaluatorCompute(BasisEvaluator ev)
{
  PetscFunctionBeginUser;
  PetscCheck(ev->nrefs > 0, ev->comm, PETSC_ERR_ORDER, "add a reference before BasisEvaluatorCompute");
  if (ev->have_labels) {
    PetscCall(CountClasses(ev->comm, ev->label_source, ev->n, ev->labels, &ev->nclasses));
    if (!ev->clusters) ev->clusters = ev->nclasses;
    PetscCheck(ev->clusters <= ev->N, ev->comm, PETSC_ERR_ARG_OUTOFRANGE,
               "-clusters %d exceeds the %d points", (int)ev->clusters, (int)ev->N);
  }
  PetscCall(PetscPrintf(ev->comm, "eval: %d points, %d embedding%s, %d reference%s", (int)ev->N,
                        (int)(ev->nrows - ev->nrefs), ev->nrows - ev->nrefs > 1 ? "s" : "", (int)ev->nrefs,
                        ev->nrefs > 1 ? "s" : ""));
  if (ev->have_labels)
    PetscCall(PetscPrintf(ev->comm, "; labels from %s: %d classes, k-means %d clusters x %d restarts\n",
                          ev->label_source, (int)ev->nclasses, (int)ev->clusters, (int)ev->restarts));
  else
    PetscCall(PetscPrintf(
        ev->comm, "\neval: note: no /labels in the inputs%s: NMI, ACC and the linear probe are skipped\n",
        ev->refs[0].computed ? " or the data" : " or the exact file"));
  for (PetscInt i = 0; i < ev->nrows; i++) PetscCall(ScoreRow(ev, &ev->rows[i]));
  PetscFunctionReturn(0);
}

/* BasisEvaluatorGetReport - the results as plain data (valid until Destroy). Not collective. */
PetscErrorCode BasisEvaluatorGetReport(BasisEvaluator ev, BasisEvalReport *report)
{
  PetscFunctionBeginUser;
  report->N                   = ev->N;
  report->labels              = ev->have_labels ? ev->label_source : NULL;
  report->classes             = ev->nclasses;
  report->clusters            = ev->clusters;
  report->restarts            = ev->restarts;
  report->kmeans_seed         = ev->kmeans_seed;
  report->probe_test_fraction = ev->test_fraction;
  report->nrefs               = ev->nrefs;
  report->nrows               = ev->nrows;
  report->refs                = ev->refs;
  report->rows                = ev->rows;
  PetscFunctionReturn(0);
}

/* BasisEvaluatorView - the references and the table on rank 0 (report.c). Collective. */
PetscErrorCode BasisEvaluatorView(BasisEvaluator ev)
{
  BasisEvalReport report;

  PetscFunctionBeginUser;
  PetscCall(BasisEvaluatorGetReport(ev, &report));
  PetscCall(BasisReportView(ev->comm, &report));
  PetscFunctionReturn(0);
}

/* BasisEvaluatorWriteJson - the results as JSON into out (BasisOutputReserve; report.c).
   Collective. */
PetscErrorCode BasisEvaluatorWriteJson(BasisEvaluator ev, BasisOutput *out)
{
  BasisEvalReport report;

  PetscFunctionBeginUser;
  PetscCall(BasisEvaluatorGetReport(ev, &report));
  PetscCall(BasisReportWriteJson(ev->comm, out, &report));
  PetscFunctionReturn(0);
}

/* BasisEvaluatorDestroy - free the evaluator (NULL-tolerant). Not collective. */
PetscErrorCode BasisEvaluatorDestroy(BasisEvaluator *ev)
{
  PetscFunctionBeginUser;
  if (!*ev) PetscFunctionReturn(0);
  for (PetscInt i = 0; i < (*ev)->nrows; i++) {
    PetscCall(PetscFree((*ev)->rows[i].Y));
    for (PetscInt j = 0; j < BASIS_EVAL_MAX_REFS; j++) {
      PetscCall(PetscFree((*ev)->rows[i].theta[j]));
      PetscCall(PetscFree((*ev)->rows[i].sin2[j]));
    }
  }
  for (PetscInt j = 0; j < (*ev)->nrefs; j++) PetscCall(PetscFree((*ev)->refs[j].lambda));
  PetscCall(PetscFree3((*ev)->labels, (*ev)->assign, (*ev)->gidx));
  PetscCall(PetscFree(*ev));
  PetscFunctionReturn(0);
}

/*
  BasisEvalMain - `basis eval`.

  Collective on comm.

  Options: -input EMB[,EMB2,...] (-exact EXACT | -data DATA [-model M]) -json -force (an
  existing -json is replaced only with -force), and the evaluator's (BasisEvaluatorSetFromOptions).

  Notes:
    The reference graphs with -data: -match_batch lists batch sizes (0 = same-k graph).
    Default: the model's m (-model, else the m recorded on the first /embedding) and the
    same-k graph; just the same-k graph when no m is known. The base graph rule is the
    model's (or the one recorded on the embedding); command-line options override it, and
    -dim defaults to the largest K of the embeddings.
*/
PetscErrorCode BasisEvalMain(MPI_Comm comm)
{
  char *input_list[BASIS_EVAL_MAX_INPUTS];
  char  exact_path[PETSC_MAX_PATH_LEN] = "", data_path[PETSC_MAX_PATH_LEN] = "",
       model_path[PETSC_MAX_PATH_LEN] = "", json[PETSC_MAX_PATH_LEN] = "";
  PetscInt       ninputs = BASIS_EVAL_MAX_INPUTS;
  PetscBool      input_set, help, force = PETSC_FALSE;
  BasisEvaluator ev;
  double         t0 = MPI_Wtime();

  PetscFunctionBeginUser;
  PetscCall(BasisOptionsCheckListLength(comm, "-input", BASIS_EVAL_MAX_INPUTS));
  /* -match_batch is the evaluator's (BasisEvaluatorSetFromOptions), read after the inputs: count it now */
  PetscCall(BasisOptionsCheckListLength(comm, "-match_batch", BASIS_EVAL_MAX_REFS));
  PetscOptionsBegin(comm, NULL, "basis eval: score embeddings against exact eigenvectors", NULL);
  PetscCall(PetscOptionsStringArray("-input",
                                    "Embeddings to score (/embedding or /exact/vectors), comma-separated",
                                    NULL, input_list, &ninputs, &input_set));
  PetscCall(PetscOptionsString("-exact", "Exact eigenvectors from basis exact (/exact/vectors)", NULL,
                               exact_path, exact_path, sizeof(exact_path), NULL));
  PetscCall(PetscOptionsString("-data", "Or: the data (/features); the exact eigenvectors are computed here",
                               NULL, data_path, data_path, sizeof(data_path), NULL));
  PetscCall(PetscOptionsString("-model", "Model file: its batch size m and graph rule (with -data)", NULL,
                               model_path, model_path, sizeof(model_path), NULL));
  PetscCall(PetscOptionsString("-json", "JSON output (default: <first input>.eval.json)", NULL, json, json,
                               sizeof(json), NULL));
  PetscCall(PetscOptionsBool("-force", "Overwrite an existing -json", NULL, force, &force, NULL));
  PetscOptionsEnd();
  if (!input_set) ninputs = 0;
  PetscCall(BasisEvaluatorCreate(comm, &ev));
  PetscCall(BasisHelpRequested(&help));
  if (help) {
    PetscCall(BasisEvaluatorSetFromOptions(ev));
    PetscCall(PetscPrintf(comm, "  -exact_eps_*: SLEPc options of the exact eigensolver (with -data)\n"));
  } else {
    const char *inputs[BASIS_EVAL_MAX_INPUTS + 4];
    BasisOutput jout; /* the -json report, reserved (locked) before the work */
    PetscInt    k = 0;

    PetscCheck(ninputs >= 1, comm, PETSC_ERR_ARG_WRONG,
               "no embedding given: pass -input EMB.h5[,EMB2.h5,...]");
    PetscCheck(!(exact_path[0] && data_path[0]), comm, PETSC_ERR_ARG_WRONG,
               "give either -exact EXACT.h5 or -data DATA.h5, not both");
    PetscCheck(exact_path[0] || data_path[0], comm, PETSC_ERR_ARG_WRONG,
               "no reference: pass -exact EXACT.h5 (from basis exact) or -data DATA.h5 (computed here)");
    if (!json[0]) PetscCall(PetscSNPrintf(json, sizeof(json), "%s.eval.json", input_list[0]));
    /* the report may not replace a file this command reads, nor an old report without -force */
    for (PetscInt i = 0; i < ninputs; i++) inputs[k++] = input_list[i];
    inputs[k++] = exact_path, inputs[k++] = data_path, inputs[k++] = model_path, inputs[k] = NULL;
    PetscCall(BasisOutputReserve(comm, "-json", json, force, inputs, &jout));

    PetscCall(PetscLogStagePush(BASIS_StageEval));
    for (PetscInt i = 0; i < ninputs; i++) PetscCall(BasisEvaluatorAddEmbedding(ev, input_list[i]));
    if (data_path[0] && model_path[0]) PetscCall(BasisEvaluatorSetModel(ev, model_path));
    PetscCall(BasisEvaluatorSetFromOptions(ev));
    if (exact_path[0])
      PetscCall(BasisEvaluatorAddReferenceFile(ev, exact_path));
    else
      PetscCall(BasisEvaluatorAddReferenceData(ev, data_path));
    PetscCall(BasisEvaluatorCompute(ev));
    PetscCall(PetscLogStagePop());
    PetscCall(BasisEvaluatorView(ev));
    PetscCall(BasisEvaluatorWriteJson(ev, &jout));
    PetscCall(PetscPrintf(comm, "eval: wrote %s (%.1f s)\n", json, MPI_Wtime() - t0));
  }
  PetscCall(BasisEvaluatorDestroy(&ev));
  for (PetscInt i = 0; i < ninputs; i++) PetscCall(PetscFree(input_list[i]));
  PetscFunctionReturn(0);
}
