/*
  report.c - the report of `basis eval` (include/basis/report.h): one line per reference
  graph, an aligned table (a row per scored matrix, d_G and sqrt(sum theta^2) against every
  reference, then d_perp, NMI, ACC and the linear probe) and notes, printed on rank 0; and
  the same numbers as JSON.

  The JSON is written by rank 0 alone (the results are identical on every rank) to
  "<path>.partial" and renamed, so a reader never sees half a file; the verdict is
  broadcast so that every rank raises the same error. Numbers that were not computed are
  "-" in the table and null in JSON. Collective on comm.
*/
#include <basis/report.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Table rows are cut to this many characters of the name, on the left, where long paths
   differ least. */
#define BASIS_REPORT_NAME_WIDTH 48

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

/* "[a, b, ...]" of n numbers, or null when v is NULL. */
static void JsonNumbers(FILE *f, PetscInt n, const PetscReal v[])
{
  if (!v) {
    fprintf(f, "null");
    return;
  }
  fprintf(f, "[");
  for (PetscInt i = 0; i < n; i++) {
    if (i) fprintf(f, ", ");
    JsonNumber(f, v[i]);
  }
  fprintf(f, "]");
}

static void JsonReference(FILE *f, const BasisEvalReport *r, PetscInt j)
{
  const BasisEvalRef *ref = &r->refs[j];

  fprintf(f, "%s\n    {\"name\": \"%c\", \"row\": %d, \"source\": ", j ? "," : "", (char)('A' + j),
          (int)ref->row);
  JsonString(f, ref->source);
  fprintf(f, ", \"computed\": %s, \"match_batch\": ", ref->computed ? "true" : "false");
  JsonInt(f, ref->match_batch);
  fprintf(f, ", \"knn\": ");
  JsonInt(f, ref->knn);
  fprintf(f, ", \"scale_neighbor\": ");
  JsonInt(f, ref->scale_neighbor);
  fprintf(f, ", \"scale\": ");
  JsonString(f, ref->scale);
  fprintf(f, ", \"laplacian\": ");
  JsonString(f, ref->laplacian);
  fprintf(f, ", \"K\": %d, \"eigenvalues\": ", (int)r->rows[ref->row].K);
  JsonNumbers(f, r->rows[ref->row].K, ref->lambda);
  fprintf(f, "}");
}

/* One array per reference of row w's per-angle values a[j] [min(K, K of reference j)]. */
static void JsonPerReference(FILE *f, const BasisEvalReport *r, const BasisEvalRow *w,
                             PetscReal *const a[BASIS_EVAL_MAX_REFS])
{
  fprintf(f, "[");
  for (PetscInt j = 0; j < r->nrefs; j++) {
    if (j) fprintf(f, ", ");
    JsonNumbers(f, PetscMin(w->K, r->rows[r->refs[j].row].K), a[j]);
  }
  fprintf(f, "]");
}

static void JsonRow(FILE *f, const BasisEvalReport *r, PetscInt i)
{
  const BasisEvalRow *w = &r->rows[i];
  PetscReal           v[BASIS_EVAL_MAX_REFS];

  fprintf(f, "%s\n    {\"name\": ", i ? "," : "");
  JsonString(f, w->name);
  fprintf(f, ", \"kind\": \"%s\", \"K\": %d, \"rank\": %d,\n     \"d_G\": ", w->exact ? "exact" : "embedding",
          (int)w->K, (int)w->rank_y);
  JsonNumbers(f, r->nrefs, w->dG);
  fprintf(f, ",\n     \"d_G_nontrivial\": ");
  JsonNumbers(f, r->nrefs, w->dG_nontrivial);
  fprintf(f, ",\n     \"d_G_published\": ");
  JsonNumbers(f, r->nrefs, w->dG_published);
  fprintf(f, ",\n     \"sin2\": ");
  JsonPerReference(f, r, w, w->sin2);
  fprintf(f, ",\n     \"sqrt_sum_theta2\": ");
  JsonNumbers(f, r->nrefs, w->theta_norm);
  fprintf(f, ",\n     \"theta\": ");
  JsonPerReference(f, r, w, w->theta);
  v[0] = w->dperp, v[1] = w->nmi, v[2] = w->acc, v[3] = w->probe;
  fprintf(f, ",\n     \"d_perp\": ");
  JsonNumber(f, v[0]);
  fprintf(f, ", \"nmi\": ");
  JsonNumber(f, v[1]);
  fprintf(f, ", \"acc\": ");
  JsonNumber(f, v[2]);
  fprintf(f, ", \"probe\": ");
  JsonNumber(f, v[3]);
  fprintf(f, "}");
}

static void JsonReport(FILE *f, const BasisEvalReport *r)
{
  fprintf(f, "{\n  \"basis_version\": \"%s\",\n  \"N\": %d,\n  \"labels\": ", BASIS_VERSION, (int)r->N);
  if (r->labels)
    JsonString(f, r->labels);
  else
    fprintf(f, "null");
  fprintf(f, ",\n  \"classes\": ");
  JsonInt(f, r->labels ? r->classes : -1);
  fprintf(f, ",\n  \"clusters\": ");
  JsonInt(f, r->labels ? r->clusters : -1);
  /* "seed": the key of the k-means seed since the first version; readers rely on it */
  fprintf(f, ",\n  \"restarts\": %d,\n  \"seed\": %d,\n  \"probe_test_fraction\": %g,\n  \"references\": [",
          (int)r->restarts, (int)r->kmeans_seed, (double)r->probe_test_fraction);
  for (PetscInt j = 0; j < r->nrefs; j++) JsonReference(f, r, j);
  fprintf(f, "\n  ],\n  \"rows\": [");
  for (PetscInt i = 0; i < r->nrows; i++) JsonRow(f, r, i);
  fprintf(f, "\n  ]\n}\n");
}

/*
  BasisReportWriteJson - the report as JSON into an output reserved with BasisOutputReserve
  (its lock taken, its temporary name chosen): rank 0 writes out->tmp, then the output is
  committed (renamed) or, on failure, aborted.

  Collective on comm (the verdict is broadcast; a failure is an error on every rank and
  leaves no file).
*/
PetscErrorCode BasisReportWriteJson(MPI_Comm comm, BasisOutput *out, const BasisEvalReport *r)
{
  PetscMPIInt rank;
  int         err = 0;

  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  if (rank == 0) {
    FILE *f = fopen(out->tmp, "wx"); /* exclusive: never truncate a file that is not ours */
    if (!f)
      err = errno;
    else {
      JsonReport(f, r);
      if (ferror(f)) err = EIO;
      if (fclose(f) && !err) err = errno;
    }
  }
  PetscCallMPI(MPI_Bcast(&err, 1, MPI_INT, 0, comm));
  if (err) PetscCall(BasisOutputAbort(out));
  PetscCheck(!err, comm, PETSC_ERR_FILE_WRITE, "cannot write %s: %s; free space or choose another -json",
             out->path, strerror(err));
  PetscCall(BasisOutputCommit(out));
  PetscFunctionReturn(0);
}

static void FormatValue(char *buf, size_t len, PetscReal v)
{
  if (PetscAbsReal(v) < 5e-5) v = 0; /* rounds to 0.0000: no "-0.0000" for rounding noise */
  if (PetscIsInfOrNanReal(v))
    PetscSNPrintf(buf, len, "%s", "-");
  else
    PetscSNPrintf(buf, len, "%.4f", (double)v);
}

/* The aligned table (PetscPrintf prints on rank 0 of comm only). */
static PetscErrorCode PrintTable(MPI_Comm comm, const BasisEvalReport *r)
{
  size_t w = 9;
  char   line[4096], cell[64];

  PetscFunctionBeginUser;
  for (PetscInt i = 0; i < r->nrows; i++) w = PetscMax(w, strlen(r->rows[i].name));
  w = PetscMin(w, BASIS_REPORT_NAME_WIDTH);
  PetscCall(PetscSNPrintf(line, sizeof(line), "%-*s %3s", (int)w, "row", "K"));
  for (PetscInt j = 0; j < r->nrefs; j++) {
    PetscSNPrintf(cell, sizeof(cell), " %7s%c %7s%c %7s%c %7s%c", "d_G:", (char)('A' + j),
                  "ntr:", (char)('A' + j), "pub:", (char)('A' + j), "theta:", (char)('A' + j));
    PetscCall(PetscStrlcat(line, cell, sizeof(line)));
  }
  PetscCall(PetscStrlcat(line, "   d_perp     NMI     ACC   probe\n", sizeof(line)));
  PetscCall(PetscPrintf(comm, "%s", line));
  for (PetscInt i = 0; i < r->nrows; i++) {
    const BasisEvalRow *row  = &r->rows[i];
    size_t              len  = strlen(row->name);
    const char         *name = len > w ? row->name + (len - w) : row->name;
    char                v[4][32];

    PetscCall(PetscSNPrintf(line, sizeof(line), "%-*s %3d", (int)w, name, (int)row->K));
    for (PetscInt j = 0; j < r->nrefs; j++) {
      FormatValue(v[0], sizeof(v[0]), row->dG[j]);
      FormatValue(v[1], sizeof(v[1]), row->dG_nontrivial[j]);
      FormatValue(v[2], sizeof(v[2]), row->dG_published[j]);
      FormatValue(v[3], sizeof(v[3]), row->theta_norm[j]);
      PetscSNPrintf(cell, sizeof(cell), " %8s %8s %8s %8s", v[0], v[1], v[2], v[3]);
      PetscCall(PetscStrlcat(line, cell, sizeof(line)));
    }
    FormatValue(v[0], sizeof(v[0]), row->dperp);
    FormatValue(v[1], sizeof(v[1]), row->nmi);
    FormatValue(v[2], sizeof(v[2]), row->acc);
    FormatValue(v[3], sizeof(v[3]), row->probe);
    PetscSNPrintf(cell, sizeof(cell), " %8s %7s %7s %7s\n", v[0], v[1], v[2], v[3]);
    PetscCall(PetscStrlcat(line, cell, sizeof(line)));
    PetscCall(PetscPrintf(comm, "%s", line));
  }
  PetscFunctionReturn(0);
}

/* Every embedding's sin^2 of the principal angles against each reference, ascending. */
static PetscErrorCode PrintAngles(MPI_Comm comm, const BasisEvalReport *r)
{
  PetscFunctionBeginUser;
  for (PetscInt i = 0; i < r->nrows; i++) {
    const BasisEvalRow *row = &r->rows[i];
    if (row->exact) continue;
    for (PetscInt j = 0; j < r->nrefs; j++) {
      PetscInt n = PetscMin(row->K, r->rows[r->refs[j].row].K);
      PetscCall(PetscPrintf(comm, "eval: sin^2 %s vs %c:", row->name, (char)('A' + j)));
      for (PetscInt t = 0; t < n; t++) PetscCall(PetscPrintf(comm, " %.4f", (double)row->sin2[j][t]));
      PetscCall(PetscPrintf(comm, "\n"));
    }
  }
  PetscFunctionReturn(0);
}

/*
  BasisReportView - the reference graphs, the table and the notes on collapsed embeddings,
  printed on rank 0.

  Collective on comm (PetscPrintf).
*/
PetscErrorCode BasisReportView(MPI_Comm comm, const BasisEvalReport *r)
{
  PetscFunctionBeginUser;
  for (PetscInt j = 0; j < r->nrefs; j++) {
    const BasisEvalRef *ref       = &r->refs[j];
    char                desc[128] = "graph not recorded";
    if (ref->knn > 0)
      PetscCall(PetscSNPrintf(desc, sizeof(desc), "%s knn %d, scale_neighbor %d, scale %s, laplacian %s",
                              ref->match_batch > 0 ? "density-matched," : "same-k,", (int)ref->knn,
                              (int)ref->scale_neighbor, ref->scale[0] ? ref->scale : "?",
                              ref->laplacian[0] ? ref->laplacian : "?"));
    PetscCall(PetscPrintf(comm, "eval: reference %c = %s: %s%s\n", (char)('A' + j), r->rows[ref->row].name,
                          desc, ref->computed ? "" : " (read)"));
  }
  PetscCall(PrintTable(comm, r));
  PetscCall(PetscPrintf(comm,
                        "eval: d_G = sum sin^2 of the principal angles (DESIGN.md); ntr = d_G over the "
                        "reference's non-trivial directions; pub = d_G as the published BASiS/SpectralNet "
                        "tables compute it; theta = sqrt(sum theta^2)\n"));
  PetscCall(PrintAngles(comm, r));
  for (PetscInt i = 0; i < r->nrows; i++) {
    const BasisEvalRow *row = &r->rows[i];
    if (!row->exact && row->rank_y < row->K - 1)
      PetscCall(PetscPrintf(comm,
                            "eval: note: %s spans only %d dimensions after centring (of %d columns): columns "
                            "have collapsed\n",
                            row->name, (int)row->rank_y, (int)row->K));
  }
  PetscFunctionReturn(0);
}
