/*
  eval.h - the evaluator (DESIGN.md "Metrics"): embeddings scored against exact
  eigenvectors, read from a `basis exact` file or computed from the data, and `basis eval`,
  its thin driver.

  Lifecycle (PETSc style):
    BasisEvaluatorCreate(comm, &ev);
    BasisEvaluatorAddEmbedding(ev, "emb.h5");      one or more, all of the same N points
    BasisEvaluatorSetModel(ev, "model.h5");        optional: the m and graph rule of -data
    BasisEvaluatorSetFromOptions(ev);              after the above: they give the defaults
    BasisEvaluatorAddReferenceFile(ev, "exact.h5") or BasisEvaluatorAddReferenceData(ev, "data.h5");
    BasisEvaluatorCompute(ev);
    BasisEvaluatorView(ev);  BasisEvaluatorWriteJson(ev, &out);   out from BasisOutputReserve
    BasisEvaluatorDestroy(&ev);
*/
#pragma once
#include <basis/output.h>
#include <basis/report.h>

/* At most this many embeddings per run: a table that still fits a terminal. */
#define BASIS_EVAL_MAX_INPUTS 16

typedef struct _p_BasisEvaluator *BasisEvaluator;

PetscErrorCode BasisEvaluatorCreate(MPI_Comm comm, BasisEvaluator *ev);
PetscErrorCode BasisEvaluatorAddEmbedding(BasisEvaluator ev, const char *path);
PetscErrorCode BasisEvaluatorSetModel(BasisEvaluator ev, const char *path);
PetscErrorCode BasisEvaluatorSetFromOptions(BasisEvaluator ev);
PetscErrorCode BasisEvaluatorAddReferenceFile(BasisEvaluator ev, const char *path);
PetscErrorCode BasisEvaluatorAddReferenceData(BasisEvaluator ev, const char *path);
PetscErrorCode BasisEvaluatorCompute(BasisEvaluator ev);
PetscErrorCode BasisEvaluatorGetReport(BasisEvaluator ev, BasisEvalReport *report);
PetscErrorCode BasisEvaluatorView(BasisEvaluator ev);
PetscErrorCode BasisEvaluatorWriteJson(BasisEvaluator ev, BasisOutput *out);
PetscErrorCode BasisEvaluatorDestroy(BasisEvaluator *ev);

PetscErrorCode BasisEvalMain(MPI_Comm comm);
