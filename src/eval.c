/*
  eval.c - `basis eval`: score embeddings against exact eigenvectors (DESIGN.md "Metrics").

  Inputs: one or more embeddings (/embedding from `basis embed`, or /exact/vectors so that
  an exact file can itself be scored), all of the same N points in the same order, and the
  exact eigenvectors either read from a `basis exact` file (-exact) or computed here from
  the data (-data) with the ring kNN and SLEPc of exact.c. With -data the reference graphs
  are the density-matched one for the model's batch size m (k N / m neighbours: what a
  model trained on batches of m learns) and the same-k one; -match_batch picks others.
  One kNN search with the largest k serves every reference graph (a list of k' > k
  neighbours holds the k nearest first).

  Every row (each embedding, then each exact reference) gets: d_G and sqrt(sum theta^2)
  against every reference, d_perp, and, when labels exist, NMI and ACC of k-means and the
  accuracy of a linear probe (metrics.c). Rows are distributed in contiguous blocks; every
  metric is collective and returns the same value on every rank. Rank 0 prints an aligned
  table and writes the same numbers as JSON (temporary name, then rename).
  Collective on comm.
*/
#include <basis/exact.h>
#include <basis/options.h>
#include <basis/output.h>
#include <basis/metrics.h>
#include <basis/model.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* At most this many embeddings per run and reference graphs per run: a table that still
   fits a terminal. */
#define BASIS_EVAL_MAX_INPUTS 16
#define BASIS_EVAL_MAX_REFS   4
/* Class labels are counted with a histogram of this many bins: far above any class count,
   it refuses label columns that are really row identifiers. */
#define BASIS_EVAL_MAX_LABEL 1000000

/* One scored matrix: an embedding or an exact reference. */
typedef struct {
  char       name[PETSC_MAX_PATH_LEN];
  PetscBool  exact;
  PetscInt   K;
  PetscReal *Y; /* [n][K] this rank's rows */
  /* results, identical on every rank */
  PetscReal dG[BASIS_EVAL_MAX_REFS], theta_norm[BASIS_EVAL_MAX_REFS], *theta[BASIS_EVAL_MAX_REFS];
  PetscInt  rank_y;
  PetscReal dperp, nmi, acc, probe;
} EvalRow;

/* An exact reference: which graph, where it came from. */
typedef struct {
  char             source[PETSC_MAX_PATH_LEN];
  PetscBool        computed;                         /* here from -data, else read from -exact */
  PetscInt         match_batch, knn, scale_neighbor; /* -1 when unknown */
  char             scale[32], laplacian[32];
  BasisGraphParams p;
  PetscReal       *lambda; /* [K], NULL when unknown */
  PetscReal        max_residual;
  PetscInt         row; /* its index in the rows */
} EvalRef;

/* Read an integer attribute of up to nmax values; *n = 0 when absent. Not collective in
   the MPI sense (HDF5 metadata, the same on every rank). */
static PetscErrorCode AttrReadInts(hid_t obj, const char *name, PetscInt nmax, PetscInt v[], PetscInt *n)
{
  hid_t     attr, space, type;
  hssize_t  npoints;
  long long buf[16];

  PetscFunctionBeginUser;
  *n = 0;
  if (H5Aexists(obj, name) <= 0) PetscFunctionReturn(0);
  attr = H5Aopen(obj, name, H5P_DEFAULT);
  BasisCallH5(attr);
  space = H5Aget_space(attr);
  type  = H5Aget_type(attr);
  BasisCallH5(space);
  BasisCallH5(type);
  npoints = H5Sget_simple_extent_npoints(space);
  if (H5Tget_class(type) == H5T_INTEGER && npoints >= 1 && npoints <= 16 && npoints <= nmax) {
    BasisCallH5(H5Aread(attr, H5T_NATIVE_LLONG, buf));
    for (hssize_t i = 0; i < npoints; i++) v[i] = (PetscInt)buf[i];
    *n = (PetscInt)npoints;
  }
  BasisCallH5(H5Tclose(type));
  BasisCallH5(H5Sclose(space));
  BasisCallH5(H5Aclose(attr));
  PetscFunctionReturn(0);
}

/* Read a fixed-length string attribute; buf unchanged when absent or not a short string. */
static PetscErrorCode AttrReadString(hid_t obj, const char *name, char buf[], size_t len)
{
  hid_t attr, type;

  PetscFunctionBeginUser;
  if (H5Aexists(obj, name) <= 0) PetscFunctionReturn(0);
  attr = H5Aopen(obj, name, H5P_DEFAULT);
  BasisCallH5(attr);
  type = H5Aget_type(attr);
  BasisCallH5(type);
  if (H5Tget_class(type) == H5T_STRING && H5Tis_variable_str(type) == 0 && H5Tget_size(type) < len) {
    size_t size = H5Tget_size(type);
    BasisCallH5(H5Aread(attr, type, buf));
    buf[size] = 0;
  }
  BasisCallH5(H5Tclose(type));
  BasisCallH5(H5Aclose(attr));
  PetscFunctionReturn(0);
}

static PetscBool H5Has(hid_t file, const char *group, const char *name)
{
  if (group && H5Lexists(file, group, H5P_DEFAULT) <= 0) return PETSC_FALSE;
  return H5Lexists(file, name, H5P_DEFAULT) > 0 ? PETSC_TRUE : PETSC_FALSE;
}

/*
  OpenMatrix - open the N x K matrix of an embedding (/embedding, else /exact/vectors) or,
  with exact_only, of an exact file (/exact/vectors). Collective on comm; errors name the
  file and what it should contain.
*/
static PetscErrorCode OpenMatrix(MPI_Comm comm, const char *path, PetscBool exact_only, hid_t *file,
                                 hid_t *dset, PetscInt *N, PetscInt *K)
{
  const char *name = NULL;
  hid_t       space, type;
  hsize_t     dims[2] = {0, 0};
  int         ndims;
  H5T_class_t cls;

  PetscFunctionBeginUser;
  PetscCall(BasisH5OpenRead(comm, path, exact_only ? "exact" : "embedding", file));
  if (!exact_only && H5Has(*file, NULL, "embedding"))
    name = "embedding";
  else if (H5Has(*file, "exact", "exact/vectors"))
    name = "exact/vectors";
  PetscCheck(name, comm, PETSC_ERR_FILE_UNEXPECTED, "%s has no dataset %s; give a file written by %s", path,
             exact_only ? "/exact/vectors" : "/embedding (or /exact/vectors)",
             exact_only ? "basis exact" : "basis embed (or basis exact)");
  *dset = H5Dopen2(*file, name, H5P_DEFAULT);
  BasisCheckAll(comm, *dset >= 0, PETSC_ERR_FILE_UNEXPECTED, "%s: /%s is not a dataset", path, name);
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
  *N = (PetscInt)dims[0];
  *K = (PetscInt)dims[1];
  PetscFunctionReturn(0);
}

/* Rows [rstart, rstart + n) of an opened matrix as double, checked finite (agreed). */
static PetscErrorCode ReadMatrixRows(MPI_Comm comm, const char *path, hid_t dset, PetscInt rstart, PetscInt n,
                                     PetscInt K, PetscReal **Y)
{
  long long bad = 0, first = PETSC_MAX_INT;

  PetscFunctionBeginUser;
  PetscCall(PetscMalloc1((size_t)PetscMax(n, 1) * K, Y));
  PetscCall(BasisH5ReadRows(comm, dset, rstart, n, K, H5T_NATIVE_DOUBLE, *Y));
  for (size_t i = 0; i < (size_t)n * K; i++)
    if (PetscIsInfOrNanReal((*Y)[i])) {
      if (!bad++) first = rstart + (long long)(i / (size_t)K);
    }
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &bad, 1, MPI_LONG_LONG, MPI_SUM, comm));
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &first, 1, MPI_LONG_LONG, MPI_MIN, comm));
  PetscCheck(!bad, comm, PETSC_ERR_FP,
             "%s has %lld non-finite values (NaN/Inf), the first in row %lld; the model may have diverged",
             path, bad, first);
  PetscFunctionReturn(0);
}

/* This rank's rows of /labels of an open file, if it has a valid one. Collective. */
static PetscErrorCode ReadLabels(MPI_Comm comm, hid_t file, const char *path, PetscInt N, PetscInt rstart,
                                 PetscInt n, int labels[], PetscBool *found)
{
  hid_t       dset, space, type;
  int         ndims;
  hsize_t     dims[2] = {0, 1};
  H5T_class_t cls;

  PetscFunctionBeginUser;
  *found = PETSC_FALSE;
  if (!H5Has(file, NULL, "labels")) PetscFunctionReturn(0);
  dset = H5Dopen2(file, "labels", H5P_DEFAULT);
  BasisCheckAll(comm, dset >= 0, PETSC_ERR_FILE_UNEXPECTED, "%s: /labels is not a dataset", path);
  space = H5Dget_space(dset);
  BasisCallH5(space);
  ndims = H5Sget_simple_extent_ndims(space);
  if (ndims >= 1 && ndims <= 2) BasisCallH5(H5Sget_simple_extent_dims(space, dims, NULL));
  BasisCallH5(H5Sclose(space));
  type = H5Dget_type(dset);
  BasisCallH5(type);
  cls = H5Tget_class(type);
  BasisCallH5(H5Tclose(type));
  PetscCheck(cls == H5T_INTEGER, comm, PETSC_ERR_FILE_UNEXPECTED,
             "%s: /labels must hold integer class ids; found another type", path);
  PetscCheck((ndims == 1 || (ndims == 2 && dims[1] == 1)) && dims[0] == (hsize_t)N, comm,
             PETSC_ERR_FILE_UNEXPECTED, "%s: /labels has %llu entries but the embeddings have %d rows", path,
             (unsigned long long)(ndims >= 1 ? dims[0] : 0), (int)N);
  PetscCall(BasisH5ReadRows(comm, dset, rstart, n, 1, H5T_NATIVE_INT, labels));
  BasisCallH5(H5Dclose(dset));
  *found = PETSC_TRUE;
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

/* JSON: a string with quotes and backslashes escaped; a number, or null when not finite. */
static void JsonString(FILE *f, const char *s)
{
  fputc('"', f);
  for (; *s; s++) {
    if (*s == '"' || *s == '\\')
      fprintf(f, "\\%c", *s);
    else if ((unsigned char)*s < 0x20)
      fprintf(f, "\\u%04x", (unsigned)*s);
    else
      fputc(*s, f);
  }
  fputc('"', f);
}

static void JsonNumber(FILE *f, PetscReal v)
{
  if (PetscIsInfOrNanReal(v))
    fprintf(f, "null");
  else
    fprintf(f, "%.10g", (double)v);
}

static void JsonInt(FILE *f, PetscInt v)
{
  if (v < 0)
    fprintf(f, "null");
  else
    fprintf(f, "%d", (int)v);
}

/* Write the results as JSON: rank 0 writes "<path>.partial" and renames it. Collective
   (the verdict is broadcast). */
static PetscErrorCode WriteJson(MPI_Comm comm, const char *path, PetscInt N, const char *label_source,
                                PetscInt nclasses, PetscInt clusters, PetscInt restarts, PetscInt seed,
                                PetscReal test_fraction, PetscInt nrefs, const EvalRef refs[], PetscInt nrows,
                                const EvalRow rows[])
{
  PetscMPIInt rank;
  int         err = 0;
  char        tmp[PETSC_MAX_PATH_LEN + 16];

  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  if (rank == 0) {
    FILE *f;
    PetscCall(PetscSNPrintf(tmp, sizeof(tmp), "%s.partial", path));
    f = fopen(tmp, "w");
    if (!f)
      err = errno;
    else {
      fprintf(f, "{\n  \"basis_version\": \"%s\",\n  \"N\": %d,\n  \"labels\": ", BASIS_VERSION, (int)N);
      if (label_source)
        JsonString(f, label_source);
      else
        fprintf(f, "null");
      fprintf(f, ",\n  \"classes\": ");
      JsonInt(f, label_source ? nclasses : -1);
      fprintf(f, ",\n  \"clusters\": ");
      JsonInt(f, label_source ? clusters : -1);
      fprintf(f,
              ",\n  \"restarts\": %d,\n  \"seed\": %d,\n  \"probe_test_fraction\": %g,\n  \"references\": [",
              (int)restarts, (int)seed, (double)test_fraction);
      for (PetscInt j = 0; j < nrefs; j++) {
        const EvalRef *r = &refs[j];
        fprintf(f, "%s\n    {\"name\": \"%c\", \"row\": %d, \"source\": ", j ? "," : "", (char)('A' + j),
                (int)r->row);
        JsonString(f, r->source);
        fprintf(f, ", \"computed\": %s, \"match_batch\": ", r->computed ? "true" : "false");
        JsonInt(f, r->match_batch);
        fprintf(f, ", \"knn\": ");
        JsonInt(f, r->knn);
        fprintf(f, ", \"scale_neighbor\": ");
        JsonInt(f, r->scale_neighbor);
        fprintf(f, ", \"scale\": ");
        JsonString(f, r->scale);
        fprintf(f, ", \"laplacian\": ");
        JsonString(f, r->laplacian);
        fprintf(f, ", \"K\": %d, \"eigenvalues\": ", (int)rows[r->row].K);
        if (r->lambda) {
          fprintf(f, "[");
          for (PetscInt i = 0; i < rows[r->row].K; i++) {
            if (i) fprintf(f, ", ");
            JsonNumber(f, r->lambda[i]);
          }
          fprintf(f, "]");
        } else
          fprintf(f, "null");
        fprintf(f, "}");
      }
      fprintf(f, "\n  ],\n  \"rows\": [");
      for (PetscInt i = 0; i < nrows; i++) {
        const EvalRow *w = &rows[i];
        fprintf(f, "%s\n    {\"name\": ", i ? "," : "");
        JsonString(f, w->name);
        fprintf(f, ", \"kind\": \"%s\", \"K\": %d, \"rank\": %d,\n     \"d_G\": [",
                w->exact ? "exact" : "embedding", (int)w->K, (int)w->rank_y);
        for (PetscInt j = 0; j < nrefs; j++) {
          if (j) fprintf(f, ", ");
          JsonNumber(f, w->dG[j]);
        }
        fprintf(f, "],\n     \"sqrt_sum_theta2\": [");
        for (PetscInt j = 0; j < nrefs; j++) {
          if (j) fprintf(f, ", ");
          JsonNumber(f, w->theta_norm[j]);
        }
        fprintf(f, "],\n     \"theta\": [");
        for (PetscInt j = 0; j < nrefs; j++) {
          PetscInt nt = PetscMin(w->K, rows[refs[j].row].K);
          fprintf(f, "%s[", j ? ", " : "");
          for (PetscInt t = 0; t < nt; t++) {
            if (t) fprintf(f, ", ");
            JsonNumber(f, w->theta[j][t]);
          }
          fprintf(f, "]");
        }
        fprintf(f, "],\n     \"d_perp\": ");
        JsonNumber(f, w->dperp);
        fprintf(f, ", \"nmi\": ");
        JsonNumber(f, w->nmi);
        fprintf(f, ", \"acc\": ");
        JsonNumber(f, w->acc);
        fprintf(f, ", \"probe\": ");
        JsonNumber(f, w->probe);
        fprintf(f, "}");
      }
      fprintf(f, "\n  ]\n}\n");
      if (ferror(f)) err = EIO;
      if (fclose(f) && !err) err = errno;
      if (!err && rename(tmp, path)) err = errno;
      if (err) unlink(tmp);
    }
  }
  PetscCallMPI(MPI_Bcast(&err, 1, MPI_INT, 0, comm));
  PetscCheck(!err, comm, PETSC_ERR_FILE_WRITE, "cannot write %s: %s; choose another -json", path,
             strerror(err));
  PetscFunctionReturn(0);
}

static void FormatValue(char *buf, size_t len, PetscReal v)
{
  if (PetscIsInfOrNanReal(v))
    PetscSNPrintf(buf, len, "%s", "-");
  else
    PetscSNPrintf(buf, len, "%.4f", (double)v);
}

/* The aligned table on rank 0 (PetscPrintf prints on rank 0 of comm only). */
static PetscErrorCode PrintTable(MPI_Comm comm, PetscInt nrefs, const EvalRef refs[], PetscInt nrows,
                                 const EvalRow rows[])
{
  size_t w = 9;
  char   line[4096], cell[64];

  PetscFunctionBeginUser;
  for (PetscInt i = 0; i < nrows; i++) w = PetscMax(w, strlen(rows[i].name));
  w = PetscMin(w, 48); /* long paths are cut on the left, where they differ least */
  PetscCall(PetscSNPrintf(line, sizeof(line), "%-*s %3s", (int)w, "row", "K"));
  for (PetscInt j = 0; j < nrefs; j++) {
    PetscSNPrintf(cell, sizeof(cell), " %7s%c %7s%c", "d_G:", (char)('A' + j), "theta:", (char)('A' + j));
    PetscCall(PetscStrlcat(line, cell, sizeof(line)));
  }
  PetscCall(PetscStrlcat(line, "   d_perp     NMI     ACC   probe\n", sizeof(line)));
  PetscCall(PetscPrintf(comm, "%s", line));
  for (PetscInt i = 0; i < nrows; i++) {
    const EvalRow *r    = &rows[i];
    size_t         len  = strlen(r->name);
    const char    *name = len > w ? r->name + (len - w) : r->name;
    char           v[4][32];

    PetscCall(PetscSNPrintf(line, sizeof(line), "%-*s %3d", (int)w, name, (int)r->K));
    for (PetscInt j = 0; j < nrefs; j++) {
      FormatValue(v[0], sizeof(v[0]), r->dG[j]);
      FormatValue(v[1], sizeof(v[1]), r->theta_norm[j]);
      PetscSNPrintf(cell, sizeof(cell), " %8s %8s", v[0], v[1]);
      PetscCall(PetscStrlcat(line, cell, sizeof(line)));
    }
    FormatValue(v[0], sizeof(v[0]), r->dperp);
    FormatValue(v[1], sizeof(v[1]), r->nmi);
    FormatValue(v[2], sizeof(v[2]), r->acc);
    FormatValue(v[3], sizeof(v[3]), r->probe);
    PetscSNPrintf(cell, sizeof(cell), " %8s %7s %7s %7s\n", v[0], v[1], v[2], v[3]);
    PetscCall(PetscStrlcat(line, cell, sizeof(line)));
    PetscCall(PetscPrintf(comm, "%s", line));
  }
  PetscFunctionReturn(0);
}

/*
  BasisEvalMain - `basis eval`.

  Collective on comm.

  Options: -input EMB[,EMB2,...] (-exact EXACT | -data DATA [-match_batch m[,m2]] [-model M]
  and the graph rule -dim -knn -scale_neighbor -scale -laplacian, -exact_eps_*) -clusters
  -restarts -probe_test_fraction -seed -json -force (an existing -json is replaced only with -force)

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
  char        label_source[PETSC_MAX_PATH_LEN] = "";
  PetscInt    ninputs = BASIS_EVAL_MAX_INPUTS, match[BASIS_EVAL_MAX_REFS] = {0}, nmatch = BASIS_EVAL_MAX_REFS;
  PetscInt    clusters = 0, restarts = 10, seed = 0, N = -1, Kmax = 0, nrefs = 0, nrows = 0, nclasses = 0;
  PetscInt    rstart = 0, n = 0, *gidx = NULL;
  PetscReal   test_fraction = 0.2;
  PetscBool   match_set, input_set, help, have_labels = PETSC_FALSE, force = PETSC_FALSE;
  PetscMPIInt size, rank;
  BasisGraphParams p;
  EvalRow          rows[BASIS_EVAL_MAX_INPUTS + BASIS_EVAL_MAX_REFS];
  EvalRef          refs[BASIS_EVAL_MAX_REFS];
  int             *labels = NULL, *assign;
  PetscInt         emb_attrs[8], nemb_attrs = 0;
  char             emb_laplacian[32] = "";
  double           t0                = MPI_Wtime();

  PetscFunctionBeginUser;
  PetscCall(PetscMemzero(rows, sizeof(rows)));
  PetscCall(PetscMemzero(refs, sizeof(refs)));
  PetscOptionsBegin(comm, NULL, "basis eval: score embeddings against exact eigenvectors", NULL);
  PetscCall(PetscOptionsStringArray("-input",
                                    "Embeddings to score (/embedding or /exact/vectors), comma-separated",
                                    NULL, input_list, &ninputs, &input_set));
  PetscCall(PetscOptionsString("-exact", "Exact eigenvectors from basis exact (/exact/vectors)", NULL,
                               exact_path, exact_path, sizeof(exact_path), NULL));
  PetscCall(PetscOptionsString("-data", "Or: the data (/features); the exact eigenvectors are computed here",
                               NULL, data_path, data_path, sizeof(data_path), NULL));
  PetscCall(
      PetscOptionsIntArray("-match_batch",
                           "With -data: batch sizes of the density-matched reference graphs, 0 = same-k "
                           "(default: the model's m and 0)",
                           NULL, match, &nmatch, &match_set));
  PetscCall(PetscOptionsString("-model", "Model file: its batch size m and graph rule (with -data)", NULL,
                               model_path, model_path, sizeof(model_path), NULL));
  PetscCall(PetscOptionsInt("-clusters", "k-means clusters (0: the number of distinct labels)", NULL,
                            clusters, &clusters, NULL));
  PetscCall(
      PetscOptionsInt("-restarts", "k-means restarts (k-means++ seedings)", NULL, restarts, &restarts, NULL));
  PetscCall(PetscOptionsReal("-probe_test_fraction", "Fraction of rows held out to score the linear probe",
                             NULL, test_fraction, &test_fraction, NULL));
  PetscCall(PetscOptionsInt("-seed", "Random seed of k-means", NULL, seed, &seed, NULL));
  PetscCall(PetscOptionsString("-json", "JSON output (default: <first input>.eval.json)", NULL, json, json,
                               sizeof(json), NULL));
  PetscCall(PetscOptionsBool("-force", "Overwrite an existing -json", NULL, force, &force, NULL));
  PetscOptionsEnd();
  if (!match_set) nmatch = 0;
  if (!input_set) ninputs = 0;
  PetscCall(BasisHelpRequested(&help));
  if (help) {
    BasisGraphParamsDefault(&p);
    PetscOptionsBegin(comm, NULL, "basis eval: graph rule of the exact eigenvectors computed with -data",
                      NULL);
    PetscCall(BasisGraphParamsSetFromOptions(comm, &p));
    PetscOptionsEnd();
    PetscCall(PetscPrintf(comm, "  -exact_eps_*: SLEPc options of the exact eigensolver (with -data)\n"));
    for (PetscInt i = 0; i < ninputs; i++) PetscCall(PetscFree(input_list[i]));
    PetscFunctionReturn(0);
  }
  PetscCheck(ninputs >= 1, comm, PETSC_ERR_ARG_WRONG, "no embedding given: pass -input EMB.h5[,EMB2.h5,...]");
  PetscCheck(!(exact_path[0] && data_path[0]), comm, PETSC_ERR_ARG_WRONG,
             "give either -exact EXACT.h5 or -data DATA.h5, not both");
  PetscCheck(exact_path[0] || data_path[0], comm, PETSC_ERR_ARG_WRONG,
             "no reference: pass -exact EXACT.h5 (from basis exact) or -data DATA.h5 (computed here)");
  PetscCheck(!(nmatch && exact_path[0]), comm, PETSC_ERR_ARG_WRONG,
             "-match_batch chooses the graph computed from -data; with -exact the graph is the one in %s",
             exact_path);
  for (PetscInt j = 0; j < nmatch; j++)
    PetscCheck(match[j] >= 0, comm, PETSC_ERR_ARG_OUTOFRANGE,
               "-match_batch %d must be a batch size (> 0) or 0 for the same-k graph", (int)match[j]);
  PetscCheck(clusters >= 0, comm, PETSC_ERR_ARG_OUTOFRANGE,
             "-clusters %d must be positive (or 0: one per class)", (int)clusters);
  PetscCheck(restarts >= 1, comm, PETSC_ERR_ARG_OUTOFRANGE, "-restarts %d must be at least 1", (int)restarts);
  PetscCheck(test_fraction > 0 && test_fraction < 1, comm, PETSC_ERR_ARG_OUTOFRANGE,
             "-probe_test_fraction %g must lie strictly between 0 and 1", (double)test_fraction);
  if (!json[0]) PetscCall(PetscSNPrintf(json, sizeof(json), "%s.eval.json", input_list[0]));
  { /* the report may not replace a file this command reads, nor an old report without -force */
    const char *inputs[BASIS_EVAL_MAX_INPUTS + 4];
    PetscInt    k = 0;
    for (PetscInt i = 0; i < ninputs; i++) inputs[k++] = input_list[i];
    inputs[k++] = exact_path, inputs[k++] = data_path, inputs[k++] = model_path, inputs[k] = NULL;
    PetscCall(BasisOutputCheckPathOption(comm, "-json", json, force, inputs));
  }
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCallMPI(MPI_Comm_rank(comm, &rank));

  /* the embeddings: shapes first (N must agree), then this rank's rows */
  for (PetscInt i = 0; i < ninputs; i++) {
    hid_t    file, dset;
    PetscInt Ni, Ki;

    PetscCall(OpenMatrix(comm, input_list[i], PETSC_FALSE, &file, &dset, &Ni, &Ki));
    if (i == 0) {
      N = Ni;
      PetscCheck(N >= size, comm, PETSC_ERR_ARG_SIZ,
                 "%s has %d row%s but the run has %d ranks; use at most %d rank%s", input_list[0], (int)N,
                 N == 1 ? "" : "s", (int)size, (int)N, N == 1 ? "" : "s");
      BasisBlockRange(N, size, rank, &rstart, &n);
      PetscCall(PetscMalloc3(PetscMax(n, 1), &labels, PetscMax(n, 1), &assign, PetscMax(n, 1), &gidx));
      for (PetscInt r = 0; r < n; r++) gidx[r] = rstart + r;
      PetscCall(AttrReadInts(dset, "model_step_l_m_R_seed_knn_scaleneighbor", 8, emb_attrs, &nemb_attrs));
      PetscCall(AttrReadString(dset, "laplacian", emb_laplacian, sizeof(emb_laplacian)));
    }
    PetscCheck(Ni == N, comm, PETSC_ERR_ARG_SIZ,
               "%s has %d rows but %s has %d; every embedding must hold the same points in the same order",
               input_list[i], (int)Ni, input_list[0], (int)N);
    PetscCall(PetscStrncpy(rows[nrows].name, input_list[i], sizeof(rows[nrows].name)));
    rows[nrows].K = Ki;
    PetscCall(ReadMatrixRows(comm, input_list[i], dset, rstart, n, Ki, &rows[nrows].Y));
    if (!have_labels) {
      PetscCall(ReadLabels(comm, file, input_list[i], N, rstart, n, labels, &have_labels));
      if (have_labels) PetscCall(PetscStrncpy(label_source, input_list[i], sizeof(label_source)));
    }
    BasisCallH5(H5Dclose(dset));
    BasisCallH5(H5Fclose(file));
    Kmax = PetscMax(Kmax, Ki);
    nrows++;
  }

  if (exact_path[0]) { /* the reference from a basis exact file */
    hid_t    file, dset;
    PetscInt Ne, Ke, v[1], nv;
    EvalRef *r = &refs[nrefs];

    PetscCall(OpenMatrix(comm, exact_path, PETSC_TRUE, &file, &dset, &Ne, &Ke));
    PetscCheck(Ne == N, comm, PETSC_ERR_ARG_SIZ,
               "exact file %s has %d rows but embedding %s has %d; compare embeddings of the same points",
               exact_path, (int)Ne, input_list[0], (int)N);
    PetscCall(PetscStrncpy(r->source, exact_path, sizeof(r->source)));
    r->match_batch = r->knn = r->scale_neighbor = -1;
    PetscCall(AttrReadInts(dset, "match_batch", 1, v, &nv));
    if (nv) r->match_batch = v[0];
    PetscCall(AttrReadInts(dset, "knn", 1, v, &nv));
    if (nv) r->knn = v[0];
    PetscCall(AttrReadInts(dset, "scale_neighbor", 1, v, &nv));
    if (nv) r->scale_neighbor = v[0];
    PetscCall(AttrReadString(dset, "scale", r->scale, sizeof(r->scale)));
    PetscCall(AttrReadString(dset, "laplacian", r->laplacian, sizeof(r->laplacian)));
    if (H5Has(file, "exact", "exact/values")) {
      hid_t    eset  = H5Dopen2(file, "exact/values", H5P_DEFAULT);
      hid_t    space = H5Dget_space(eset);
      hssize_t npts  = H5Sget_simple_extent_npoints(space);
      BasisCallH5(H5Sclose(space));
      if (npts == Ke) {
        PetscCall(PetscMalloc1(Ke, &r->lambda));
        PetscCall(BasisH5ReadRows(comm, eset, 0, Ke, 1, H5T_NATIVE_DOUBLE, r->lambda));
      }
      BasisCallH5(H5Dclose(eset));
    }
    r->row = nrows;
    PetscCall(PetscSNPrintf(rows[nrows].name, sizeof(rows[nrows].name), "exact:A (%s)", exact_path));
    rows[nrows].exact = PETSC_TRUE;
    rows[nrows].K     = Ke;
    PetscCall(ReadMatrixRows(comm, exact_path, dset, rstart, n, Ke, &rows[nrows].Y));
    if (!have_labels) {
      PetscCall(ReadLabels(comm, file, exact_path, N, rstart, n, labels, &have_labels));
      if (have_labels) PetscCall(PetscStrncpy(label_source, exact_path, sizeof(label_source)));
    }
    BasisCallH5(H5Dclose(dset));
    BasisCallH5(H5Fclose(file));
    nrows++, nrefs++;
  } else { /* computed here from the data */
    BasisInput in;
    BasisShard shard;
    BasisKnn   knn;
    PetscInt   kmax = 0, m_default = 0, model_D = 0;
    double     tk0, tk1;

    BasisGraphParamsDefault(&p);
    if (model_path[0]) {
      BasisModel mo;
      PetscCall(BasisModelRead(comm, model_path, &mo));
      p         = mo.graph;
      m_default = mo.m;
      model_D   = mo.D;
      PetscCall(BasisModelFree(&mo));
    } else if (nemb_attrs >= 7) { /* the model's m and graph, as basis embed recorded them */
      m_default        = emb_attrs[2];
      p.knn            = emb_attrs[5];
      p.scale_neighbor = emb_attrs[6];
      for (PetscInt l = 0; l < 3; l++)
        if (!strcmp(emb_laplacian, BasisLaplacianTypes[l])) p.laplacian = (BasisLaplacianType)l;
    }
    p.K = Kmax;
    PetscOptionsBegin(comm, NULL, "basis eval: graph rule of the exact eigenvectors computed with -data",
                      NULL);
    PetscCall(BasisGraphParamsSetFromOptions(comm, &p));
    PetscOptionsEnd();
    if (!nmatch) {
      if (m_default > 0) match[nmatch++] = m_default;
      match[nmatch++] = 0;
    }
    PetscCall(BasisInputOpen(comm, data_path, &in));
    PetscCheck(
        !model_D || in.D == model_D, comm, PETSC_ERR_ARG_INCOMP,
        "-data %s has D = %d features but -model %s was trained on D = %d; give the model of these data",
        data_path, (int)in.D, model_path, (int)model_D);
    PetscCheck(in.N == N, comm, PETSC_ERR_ARG_SIZ,
               "data %s has %d points but embedding %s has %d rows; evaluate an embedding of these data",
               data_path, (int)in.N, input_list[0], (int)N);
    PetscCall(BasisInputReadShard(&in, &shard));
    if (!have_labels && in.has_labels) {
      PetscCall(PetscArraycpy(labels, shard.labels, n));
      PetscCall(PetscStrncpy(label_source, data_path, sizeof(label_source)));
      have_labels = PETSC_TRUE;
    }
    for (PetscInt j = 0; j < nmatch; j++) {
      EvalRef *r = &refs[nrefs + j];
      BasisGraphParamsMatched(&p, N, match[j], &r->p);
      PetscCheck(
          r->p.knn < N, comm, PETSC_ERR_ARG_OUTOFRANGE,
          "-match_batch %d asks for %d neighbours per point but %s has only %d points; raise -match_batch",
          (int)match[j], (int)r->p.knn, data_path, (int)N);
      kmax = PetscMax(kmax, r->p.knn);
    }
    PetscCall(PetscPrintf(comm,
                          "eval: exact eigenvectors of %s (%d points), kNN with k = %d for %d graph%s\n",
                          data_path, (int)N, (int)kmax, (int)nmatch, nmatch > 1 ? "s" : ""));
    tk0 = MPI_Wtime();
    PetscCall(BasisExactKnn(comm, &shard, kmax, &knn));
    tk1 = MPI_Wtime();
    PetscCall(PetscPrintf(comm, "eval: kNN in %.1f s\n", tk1 - tk0));
    for (PetscInt j = 0; j < nmatch; j++, nrefs++) {
      EvalRef   *r = &refs[nrefs];
      EvalRow   *w = &rows[nrows];
      PetscReal *residual;
      double     ts = MPI_Wtime();

      PetscCall(PetscStrncpy(r->source, data_path, sizeof(r->source)));
      r->computed       = PETSC_TRUE;
      r->match_batch    = match[j];
      r->knn            = r->p.knn;
      r->scale_neighbor = r->p.scale_neighbor;
      PetscCall(PetscStrncpy(r->scale, BasisScaleTypes[r->p.scale], sizeof(r->scale)));
      PetscCall(PetscStrncpy(r->laplacian, BasisLaplacianTypes[r->p.laplacian], sizeof(r->laplacian)));
      PetscCall(PetscMalloc1(r->p.K, &r->lambda));
      PetscCall(PetscMalloc1(r->p.K, &residual));
      PetscCall(PetscMalloc1((size_t)PetscMax(n, 1) * r->p.K, &w->Y));
      PetscCall(BasisExactSolveKnn(comm, BASIS_EXACT_PREFIX, &shard, &r->p, &knn, w->Y, r->lambda, residual));
      for (PetscInt t = 0; t < r->p.K; t++) r->max_residual = PetscMax(r->max_residual, residual[t]);
      PetscCall(PetscFree(residual));
      w->exact = PETSC_TRUE;
      w->K     = r->p.K;
      r->row   = nrows++;
      if (match[j])
        PetscCall(PetscSNPrintf(w->name, sizeof(w->name), "exact:%c (m = %d, knn %d)", (char)('A' + nrefs),
                                (int)match[j], (int)r->p.knn));
      else
        PetscCall(PetscSNPrintf(w->name, sizeof(w->name), "exact:%c (same k, knn %d)", (char)('A' + nrefs),
                                (int)r->p.knn));
      PetscCall(PetscPrintf(comm, "eval: %s: graph + eigensolve in %.1f s, largest residual %.1e\n", w->name,
                            MPI_Wtime() - ts, (double)r->max_residual));
    }
    PetscCall(BasisKnnDestroy(&knn));
    PetscCall(BasisShardDestroy(&shard));
    PetscCall(BasisInputClose(&in));
  }

  if (have_labels) {
    PetscCall(CountClasses(comm, label_source, n, labels, &nclasses));
    if (!clusters) clusters = nclasses;
    PetscCheck(clusters <= N, comm, PETSC_ERR_ARG_OUTOFRANGE, "-clusters %d exceeds the %d points",
               (int)clusters, (int)N);
  }
  PetscCall(PetscPrintf(comm, "eval: %d points, %d embedding%s, %d reference%s", (int)N, (int)ninputs,
                        ninputs > 1 ? "s" : "", (int)nrefs, nrefs > 1 ? "s" : ""));
  if (have_labels)
    PetscCall(PetscPrintf(comm, "; labels from %s: %d classes, k-means %d clusters x %d restarts\n",
                          label_source, (int)nclasses, (int)clusters, (int)restarts));
  else
    PetscCall(PetscPrintf(
        comm, "\neval: note: no /labels in the inputs%s: NMI, ACC and the linear probe are skipped\n",
        data_path[0] ? " or the data" : " or the exact file"));

  /* the metrics: every row against every reference */
  for (PetscInt i = 0; i < nrows; i++) {
    EvalRow *w = &rows[i];
    for (PetscInt j = 0; j < nrefs; j++) {
      const EvalRow *v = &rows[refs[j].row];
      PetscReal      s = 0;

      PetscCall(PetscCalloc1(PetscMin(w->K, v->K), &w->theta[j]));
      PetscCall(BasisMetricGrassmannRanks(comm, n, w->K, w->Y, v->K, v->Y, &w->dG[j], w->theta[j], &w->rank_y,
                                          NULL));
      for (PetscInt t = 0; t < PetscMin(w->K, v->K); t++) s += w->theta[j][t] * w->theta[j][t];
      w->theta_norm[j] = PetscSqrtReal(s);
    }
    PetscCall(BasisMetricOrthogonality(comm, n, w->K, w->Y, &w->dperp));
    w->nmi = w->acc = w->probe = NAN; /* "-" in the table, null in JSON */
    if (have_labels) {
      PetscReal inertia;
      PetscCall(BasisKMeans(comm, n, w->K, w->Y, clusters, restarts, seed, assign, &inertia));
      PetscCall(BasisMetricNMI(comm, n, labels, assign, &w->nmi));
      PetscCall(BasisMetricACC(comm, n, labels, assign, &w->acc));
      PetscCall(BasisLinearProbe(comm, n, w->K, w->Y, labels, gidx, test_fraction, &w->probe));
    }
  }

  for (PetscInt j = 0; j < nrefs; j++) {
    const EvalRef *r         = &refs[j];
    char           desc[128] = "graph not recorded";
    if (r->knn > 0)
      PetscCall(PetscSNPrintf(desc, sizeof(desc), "%s knn %d, scale_neighbor %d, scale %s, laplacian %s",
                              r->match_batch > 0 ? "density-matched," : "same-k,", (int)r->knn,
                              (int)r->scale_neighbor, r->scale[0] ? r->scale : "?",
                              r->laplacian[0] ? r->laplacian : "?"));
    PetscCall(PetscPrintf(comm, "eval: reference %c = %s: %s%s\n", (char)('A' + j), rows[r->row].name, desc,
                          r->computed ? "" : " (read)"));
  }
  PetscCall(PrintTable(comm, nrefs, refs, nrows, rows));
  for (PetscInt i = 0; i < nrows; i++)
    if (!rows[i].exact && rows[i].rank_y < rows[i].K - 1)
      PetscCall(
          PetscPrintf(comm,
                      "eval: note: %s spans only %d dimensions after centring (of %d columns): columns have "
                      "collapsed\n",
                      rows[i].name, (int)rows[i].rank_y, (int)rows[i].K));
  PetscCall(WriteJson(comm, json, N, have_labels ? label_source : NULL, nclasses, clusters, restarts, seed,
                      test_fraction, nrefs, refs, nrows, rows));
  PetscCall(PetscPrintf(comm, "eval: wrote %s (%.1f s)\n", json, MPI_Wtime() - t0));

  for (PetscInt i = 0; i < nrows; i++) {
    PetscCall(PetscFree(rows[i].Y));
    for (PetscInt j = 0; j < nrefs; j++) PetscCall(PetscFree(rows[i].theta[j]));
  }
  for (PetscInt j = 0; j < nrefs; j++) PetscCall(PetscFree(refs[j].lambda));
  for (PetscInt i = 0; i < ninputs; i++) PetscCall(PetscFree(input_list[i]));
  PetscCall(PetscFree3(labels, assign, gidx));
  PetscFunctionReturn(0);
}
