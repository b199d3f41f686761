/*
  report.h - how `basis eval` reports its results (DESIGN.md "Metrics"): the reference
  lines and the aligned table on rank 0, and the same numbers as a JSON file. The result
  structs are plain data filled by the evaluator (eval.h).
*/
#pragma once
#include <basis/output.h>
#include <basis/error.h>

/* At most this many reference graphs per run: a table that still fits a terminal. */
#define BASIS_EVAL_MAX_REFS 4

/* One scored matrix: an embedding or an exact reference. Results are identical on every rank. */
typedef struct {
  char       name[PETSC_MAX_PATH_LEN];
  PetscBool  exact;
  PetscInt   K;
  PetscReal *Y; /* [n][K] this rank's rows */
  PetscReal  dG[BASIS_EVAL_MAX_REFS], theta_norm[BASIS_EVAL_MAX_REFS];
  PetscReal *theta[BASIS_EVAL_MAX_REFS]; /* [min(K, K of the reference)] principal angles */
  PetscReal *sin2[BASIS_EVAL_MAX_REFS];  /* [min(K, K of the reference)] their sin^2, ascending */
  /* d_G over the reference's non-trivial directions (its first column left out), and d_G
     as the published BASiS/SpectralNet tables compute it (DESIGN.md "Metrics") */
  PetscReal dG_nontrivial[BASIS_EVAL_MAX_REFS], dG_published[BASIS_EVAL_MAX_REFS];
  PetscInt  rank_y;                 /* numerical rank of centre(Y) */
  PetscReal dperp, nmi, acc, probe; /* NaN when not computed */
} BasisEvalRow;

/* An exact reference: which graph, where it came from. */
typedef struct {
  char       source[PETSC_MAX_PATH_LEN];
  PetscBool  computed;                         /* by eval from -data, else read from -exact */
  PetscInt   match_batch, knn, scale_neighbor; /* -1 when unknown */
  char       scale[32], laplacian[32];         /* "" when unknown */
  PetscReal *lambda;                           /* [K] eigenvalues, NULL when unknown */
  PetscReal  max_residual;
  PetscInt   row; /* its index in the rows */
} BasisEvalRef;

/* Everything a report shows. */
typedef struct {
  PetscInt            N;
  const char         *labels; /* the file the labels came from, NULL when none */
  PetscInt            classes, clusters, restarts, kmeans_seed;
  PetscReal           probe_test_fraction;
  PetscInt            nrefs, nrows;
  const BasisEvalRef *refs;
  const BasisEvalRow *rows;
} BasisEvalReport;

PetscErrorCode BasisReportView(MPI_Comm comm, const BasisEvalReport *r);
PetscErrorCode BasisReportWriteJson(MPI_Comm comm, BasisOutput *out, const BasisEvalReport *r);
