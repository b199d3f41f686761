/*
  test_train - integration tests of the BASiS trainer (DESIGN.md steps 1-6):
   1. after training, every rank's weights are bitwise identical (replicas never drift);
   2. a model written and read back embeds bitwise identically to the trained network;
      and -train_overlap 0 (the next batch prepared after the allreduce, not during it)
      trains bitwise the same weights;
   3. on a small generated data set, the trained embedding is within a d_G threshold of
      the exact eigenvectors of the density-matched graph, computed here by dense
      LAPACK (the batch graph path run on all N points);
      and with -mlp_precision bf16: replicas bitwise identical, the same d_G threshold;
   4. the same with the sym Laplacian, whose threshold only the standardised targets
      (-standardize_targets, the default) meet;
   5. batches come from the whole data set whatever the row order: on the same data sorted
      by their first feature (each rank's shard is one stretch of the manifold) d_G stays
      below DG_THRESHOLD_SORTED. At 1 rank the two samplings must give bitwise identical
      weights.
  Also BasisNthNotIn (which numbers the rows a batch may draw: all but the anchors) against
  a count. Run at 1, 2 and 4 ranks. Silent on success.
*/
#include <basis/embed.h>
#include <basis/generate.h>
#include <basis/output.h>
#include <basis/h5io.h>
#include <basis/metrics.h>
#include <basis/train.h>
#include "check.h"
#include <slepcsys.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Data: a 4-class Gaussian mixture on a curved 2-D manifold in 8-D (basis generate
   -type manifold): one connected graph with a clear spectral gap after K = 4. */
#define N_POINTS 1600
#define K_DIM    4
#define D_DIM    8
/* Threshold on d_G = sum sin^2(theta) over the K - 1 = 3 centred directions (max 3).
   Trained runs score 0.019-0.027 at 1, 2 and 4 ranks. The test uses -laplacian rw, whose
   trivial eigenvector is constant and vanishes under centring; with sym, the trivial
   eigenvector sqrt(degree) leaves its ~5% degree fluctuation as a fourth direction after
   centring, a small one that the plain MSE learns badly: see docs/quality.md. */
#define DG_THRESHOLD 0.15
/* Test 4 (sym): trained runs score 0.44-0.48 with standardised targets and 0.86-0.89 with
   the plain MSE (-standardize_targets false) at 1, 2 and 4 ranks. */
#define DG_THRESHOLD_SYM 0.65
/* Test 5 (sorted rows, rw): 0.020-0.021 at 1, 2 and 4 ranks; with -sample shard, where a
   rank's batches come from its stretch only, 0.081 at 2 ranks and 0.364 at 4. */
#define DG_THRESHOLD_SORTED 0.06

static PetscErrorCode WriteData(MPI_Comm comm, const char *path)
{
  PetscMPIInt size, rank;

  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  PetscCall(PetscOptionsSetValue(NULL, "-type", "manifold"));
  PetscCall(PetscOptionsSetValue(NULL, "-n", "1600"));
  PetscCall(PetscOptionsSetValue(NULL, "-d", "8"));
  PetscCall(PetscOptionsSetValue(NULL, "-classes", "4"));
  PetscCall(PetscOptionsSetValue(NULL, "-noise", "0.05"));
  PetscCall(PetscOptionsSetValue(NULL, "-force", "1"));
  PetscCall(PetscOptionsSetValue(NULL, "-output", path));
  PetscCall(BasisGenerateMain(comm));
  PetscFunctionReturn(0);
}

/* This rank's n rows x embedded by the model through the embedder that basis embed uses. */
static PetscErrorCode EmbedRows(const BasisModel *mo, PetscInt n, const float x[], PetscReal Y[])
{
  PetscInt      K = mo->spec.widths[mo->spec.nlayers];
  BasisEmbedder e;
  float        *y;

  PetscFunctionBeginUser;
  PetscCall(PetscMalloc1((size_t)PetscMax(n, 1) * K, &y));
  PetscCall(BasisEmbedderCreate(PETSC_COMM_SELF, &e));
  PetscCall(BasisEmbedderSetModel(e, mo, NULL));
  PetscCall(BasisEmbedderSetUp(e));
  PetscCall(BasisEmbedderApply(e, n, x, y));
  PetscCall(BasisEmbedderDestroy(&e));
  for (PetscInt i = 0; i < n * K; i++) Y[i] = y[i];
  PetscCall(PetscFree(y));
  PetscFunctionReturn(0);
}

/* d_G of this rank's embedded rows Y to the exact eigenvectors of the density-matched
   graph of all N points all_x (dense LAPACK; every rank computes them, keeps its rows). */
static PetscErrorCode DistanceToExact(MPI_Comm comm, const BasisModel *mo, const float all_x[],
                                      const BasisShard *shard, const PetscReal Y[], PetscReal *dG)
{
  BasisBatchGraph  bg;
  BasisGraphParams matched;
  PetscReal       *V_all, lambda[K_DIM];

  PetscFunctionBeginUser;
  PetscCall(PetscMalloc1((size_t)N_POINTS * K_DIM, &V_all));
  BasisGraphParamsMatched(&mo->spec.graph, N_POINTS, mo->spec.m, &matched);
  matched.batch_solver = BASIS_BATCH_DENSE; /* the reference: LAPACK, to full accuracy */
  PetscCall(BasisBatchGraphCreate(&matched, N_POINTS, D_DIM, &bg));
  PetscCall(BasisBatchGraphEmbed(bg, all_x, V_all, lambda));
  PetscCall(BasisBatchGraphDestroy(&bg));
  PetscCall(
      BasisMetricGrassmann(comm, shard->n, K_DIM, Y, K_DIM, V_all + (size_t)shard->rstart * K_DIM, dG, NULL));
  PetscCall(PetscFree(V_all));
  PetscFunctionReturn(0);
}

/* all_x [N][D] (the same on every rank) sorted by its first feature, written to path as
   a data set (/features only), and kept in sorted [N][D]. */
static PetscErrorCode WriteSortedData(MPI_Comm comm, const float all_x[], const char *path, float sorted[])
{
  PetscReal  *key;
  PetscInt   *perm, rstart, n;
  PetscMPIInt size, rank;
  BasisOutput out;
  hid_t       dset;

  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  PetscCall(PetscMalloc2(N_POINTS, &key, N_POINTS, &perm));
  for (PetscInt i = 0; i < N_POINTS; i++) key[i] = all_x[(size_t)i * D_DIM], perm[i] = i;
  PetscCall(PetscSortRealWithPermutation(N_POINTS, key, perm));
  for (PetscInt i = 0; i < N_POINTS; i++)
    PetscCall(PetscArraycpy(sorted + (size_t)i * D_DIM, all_x + (size_t)perm[i] * D_DIM, D_DIM));
  BasisBlockRange(N_POINTS, size, rank, &rstart, &n);
  PetscCall(BasisOutputCreate(comm, path, PETSC_TRUE, NULL, &out));
  PetscCall(BasisH5CreateMatrix(out.file, "features", N_POINTS, D_DIM, H5T_IEEE_F32LE, &dset));
  PetscCall(
      BasisH5WriteRows(comm, dset, rstart, n, D_DIM, H5T_NATIVE_FLOAT, sorted + (size_t)rstart * D_DIM));
  BasisCallH5(H5Dclose(dset));
  PetscCall(BasisOutputCommit(&out));
  PetscCall(PetscFree2(key, perm));
  PetscFunctionReturn(0);
}

/* Check d_G <= limit (the message names what, with a hint); prints d_G when verbose. */
static PetscErrorCode CheckDistance(MPI_Comm comm, const char *what, const char *hint, PetscReal dG,
                                    PetscReal limit)
{
  PetscFunctionBeginUser;
  PetscCall(BasisTestCheck(comm, (PetscBool)(dG <= limit), "d_G%s is %.3f > %.2f%s", what, (double)dG,
                           (double)limit, hint));
  if (PetscDefined(USE_DEBUG) || getenv("BASIS_TEST_VERBOSE"))
    PetscCall(PetscPrintf(comm, "d_G%s = %.4f\n", what, (double)dG));
  PetscFunctionReturn(0);
}

/* BasisNthNotIn against counting, on random sorted skip lists (with runs and a leading 0). */
static PetscErrorCode CheckNthNotIn(MPI_Comm comm)
{
  BasisRng rng;
  PetscInt skip[40], fails = 0;

  PetscFunctionBeginUser;
  BasisRngSeed(&rng, 5, 0);
  for (int trial = 0; trial < 50; trial++) {
    PetscInt n = BasisRngInt(&rng, 41), top = n + BasisRngInt(&rng, 60);
    PetscCall(BasisRngSample(&rng, top, n, skip));
    for (PetscInt p = 0, g = 0; p < top - n + 5; p++, g++) { /* g: the p-th integer not in skip */
      for (PetscInt s = 0; s < n; s++)
        if (skip[s] == g) g++;
      if (BasisNthNotIn(n, skip, p) != g) fails++;
    }
  }
  PetscCall(BasisTestCheck(comm, (PetscBool)(fails == 0), "BasisNthNotIn differs from counting in %d cases",
                           (int)fails));
  PetscFunctionReturn(0);
}

/* Train with the options set now and embed this rank's rows with the result. */
static PetscErrorCode TrainAndEmbed(MPI_Comm comm, const BasisShard *shard, BasisTrainer *tr, PetscReal Y[])
{
  const BasisModel *mo;

  PetscFunctionBeginUser;
  PetscCall(BasisTrainerCreate(comm, tr));
  PetscCall(BasisTrainerSetFromOptions(*tr));
  PetscCall(BasisTrainerSetUp(*tr));
  PetscCall(BasisTrainerRun(*tr));
  PetscCall(BasisTrainerGetModel(*tr, &mo));
  PetscCall(EmbedRows(mo, shard->n, shard->x, Y));
  PetscFunctionReturn(0);
}

int main(int argc, char **argv)
{
  MPI_Comm          comm;
  PetscMPIInt       size, rank;
  char              data[PETSC_MAX_PATH_LEN], model[PETSC_MAX_PATH_LEN];
  BasisTrainer      tr;
  const BasisModel *mo;
  BasisModel        back;
  BasisInput        in;
  BasisShard        shard;
  BasisTrainer      tr_sym, tr_sorted;
  BasisShard        sorted;
  float            *root_params, *all_x, *sorted_x;
  PetscReal        *Y, *Y_back, dG;

  PetscCall(SlepcInitialize(&argc, &argv, NULL, NULL));
  PetscCall(BasisInitialize());
  comm = PETSC_COMM_WORLD;
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  PetscCall(PetscSNPrintf(data, sizeof(data), "test_train_np%d_data.h5", size));
  PetscCall(PetscSNPrintf(model, sizeof(model), "test_train_np%d_model.h5", size));
  PetscCall(WriteData(comm, data));
  PetscCall(CheckNthNotIn(comm));

  /* train: small network, batches of 200 with 60 anchors; 2-4 ranks see more data per
     step, so fewer steps per rank would do, but the same count keeps the test simple */
  PetscCall(PetscOptionsSetValue(NULL, "-input", data));
  PetscCall(PetscOptionsSetValue(NULL, "-model", model));
  PetscCall(PetscOptionsSetValue(NULL, "-dim", "4"));
  PetscCall(PetscOptionsSetValue(NULL, "-laplacian", "rw"));
  PetscCall(PetscOptionsSetValue(NULL, "-anchors", "60"));
  PetscCall(PetscOptionsSetValue(NULL, "-batch", "200"));
  PetscCall(PetscOptionsSetValue(NULL, "-hidden", "64,64"));
  PetscCall(PetscOptionsSetValue(NULL, "-lr", "2e-3"));
  PetscCall(PetscOptionsSetValue(NULL, "-steps", "400"));
  PetscCall(PetscOptionsSetValue(NULL, "-checkpoint_every", "0"));
  PetscCall(PetscOptionsSetValue(NULL, "-train_monitor", "0"));
  PetscCall(BasisInputOpen(comm, data, &in));
  PetscCall(BasisInputReadShard(&in, &shard));
  PetscCall(BasisInputClose(&in));
  PetscCall(PetscMalloc3((size_t)shard.n * K_DIM, &Y, (size_t)shard.n * K_DIM, &Y_back,
                         (size_t)N_POINTS * D_DIM, &all_x));
  PetscCall(TrainAndEmbed(comm, &shard, &tr, Y));
  PetscCall(BasisTrainerGetModel(tr, &mo));

  /* 1. replicas bitwise identical: compare with rank 0's weights */
  PetscCall(PetscMalloc1(mo->nparams, &root_params));
  PetscCall(PetscArraycpy(root_params, mo->params, mo->nparams));
  PetscCallMPI(MPI_Bcast(root_params, (int)mo->nparams, MPI_FLOAT, 0, comm));
  {
    int differ = memcmp(root_params, mo->params, sizeof(float) * (size_t)mo->nparams) != 0;
    PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &differ, 1, MPI_INT, MPI_SUM, comm));
    PetscCall(BasisTestCheck(comm, (PetscBool)(differ == 0),
                             "weights differ from rank 0's on %d rank(s) after training", differ));
  }

  /* 2. the model file reproduces the network exactly */
  PetscCall(BasisModelRead(comm, model, &back));
  PetscCall(EmbedRows(&back, shard.n, shard.x, Y_back));
  {
    int differ = memcmp(Y, Y_back, sizeof(PetscReal) * (size_t)shard.n * K_DIM) != 0;
    PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &differ, 1, MPI_INT, MPI_SUM, comm));
    PetscCall(BasisTestCheck(comm, (PetscBool)(differ == 0),
                             "embedding from the saved model differs from the trained network's"));
  }

  /* 2b. the next batch prepared while the allreduce is in flight (the default) or after
     it (-train_overlap 0): the same draws in the same order, so bitwise the same weights */
  {
    BasisTrainer      tr_serial;
    const BasisModel *mo_serial;
    int               differ;

    PetscCall(PetscSNPrintf(model, sizeof(model), "test_train_np%d_model_serial.h5", size));
    PetscCall(PetscOptionsSetValue(NULL, "-model", model));
    PetscCall(PetscOptionsSetValue(NULL, "-train_overlap", "0"));
    PetscCall(TrainAndEmbed(comm, &shard, &tr_serial, Y_back));
    PetscCall(BasisTrainerGetModel(tr_serial, &mo_serial));
    differ = memcmp(mo->params, mo_serial->params, sizeof(float) * (size_t)mo->nparams) != 0;
    PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &differ, 1, MPI_INT, MPI_SUM, comm));
    PetscCall(BasisTestCheck(comm, (PetscBool)(differ == 0),
                             "-train_overlap 0 trained different weights on %d rank(s)", differ));
    PetscCall(BasisTrainerDestroy(&tr_serial));
    PetscCall(PetscOptionsClearValue(NULL, "-train_overlap"));
  }

  /* 3. d_G against the exact eigenvectors of the density-matched graph on all N points */
  {
    int *counts, *displs;
    PetscCall(PetscMalloc2(size, &counts, size, &displs));
    for (int r = 0; r < size; r++) {
      PetscInt st, cnt;
      BasisBlockRange(N_POINTS, size, r, &st, &cnt);
      counts[r] = (int)(cnt * D_DIM), displs[r] = (int)(st * D_DIM);
    }
    PetscCallMPI(
        MPI_Allgatherv(shard.x, (int)(shard.n * D_DIM), MPI_FLOAT, all_x, counts, displs, MPI_FLOAT, comm));
    PetscCall(PetscFree2(counts, displs));
  }
  PetscCall(DistanceToExact(comm, mo, all_x, &shard, Y, &dG));
  PetscCall(CheckDistance(comm, "", " (trained embedding against the exact eigenvectors)", dG, DG_THRESHOLD));

  /* 3b. -mlp_precision bf16 (float where the CPU has no bfloat16 dot products): replicas
     still bitwise identical (the mean gradient and Adam are the same on every rank, the
     bfloat16 products deterministic), and the same d_G threshold */
  {
    BasisTrainer      tr_bf16;
    const BasisModel *mo_bf16;
    int               differ;

    PetscCall(PetscSNPrintf(model, sizeof(model), "test_train_np%d_model_bf16.h5", size));
    PetscCall(PetscOptionsSetValue(NULL, "-model", model));
    PetscCall(PetscOptionsSetValue(NULL, "-mlp_precision", "bf16"));
    PetscCall(TrainAndEmbed(comm, &shard, &tr_bf16, Y_back));
    PetscCall(BasisTrainerGetModel(tr_bf16, &mo_bf16));
    PetscCall(PetscArraycpy(root_params, mo_bf16->params, mo_bf16->nparams));
    PetscCallMPI(MPI_Bcast(root_params, (int)mo_bf16->nparams, MPI_FLOAT, 0, comm));
    differ = memcmp(root_params, mo_bf16->params, sizeof(float) * (size_t)mo_bf16->nparams) != 0;
    PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &differ, 1, MPI_INT, MPI_SUM, comm));
    PetscCall(BasisTestCheck(comm, (PetscBool)(differ == 0),
                             "-mlp_precision bf16: weights differ from rank 0's on %d rank(s) after training",
                             differ));
    PetscCall(DistanceToExact(comm, mo_bf16, all_x, &shard, Y_back, &dG));
    PetscCall(CheckDistance(comm, " (-mlp_precision bf16)", "", dG, DG_THRESHOLD));
    PetscCall(BasisTrainerDestroy(&tr_bf16));
    PetscCall(PetscOptionsClearValue(NULL, "-mlp_precision"));
  }

  /* 4. the sym Laplacian, the default: the same data and options otherwise */
  PetscCall(PetscSNPrintf(model, sizeof(model), "test_train_np%d_model_sym.h5", size));
  PetscCall(PetscOptionsSetValue(NULL, "-model", model));
  PetscCall(PetscOptionsSetValue(NULL, "-laplacian", "sym"));
  PetscCall(TrainAndEmbed(comm, &shard, &tr_sym, Y));
  {
    const BasisModel *mo_sym;
    PetscCall(BasisTrainerGetModel(tr_sym, &mo_sym));
    PetscCall(DistanceToExact(comm, mo_sym, all_x, &shard, Y, &dG));
  }
  PetscCall(CheckDistance(comm, " (sym)", "", dG, DG_THRESHOLD_SYM));
  PetscCall(BasisTrainerDestroy(&tr_sym));

  /* 5. the data sorted by their first feature: rank r's shard is one stretch of it */
  PetscCall(PetscMalloc1((size_t)N_POINTS * D_DIM, &sorted_x));
  PetscCall(PetscSNPrintf(data, sizeof(data), "test_train_np%d_sorted.h5", size));
  PetscCall(WriteSortedData(comm, all_x, data, sorted_x));
  sorted   = shard;
  sorted.x = sorted_x + (size_t)shard.rstart * D_DIM;
  PetscCall(PetscOptionsSetValue(NULL, "-input", data));
  PetscCall(PetscSNPrintf(model, sizeof(model), "test_train_np%d_model_sorted.h5", size));
  PetscCall(PetscOptionsSetValue(NULL, "-model", model));
  PetscCall(PetscOptionsSetValue(NULL, "-laplacian", "rw"));
  PetscCall(TrainAndEmbed(comm, &sorted, &tr_sorted, Y));
  PetscCall(BasisTrainerGetModel(tr_sorted, &mo));
  PetscCall(DistanceToExact(comm, mo, sorted_x, &sorted, Y, &dG));
  PetscCall(
      CheckDistance(comm, " (sorted data)", " (batches drawn from one shard?)", dG, DG_THRESHOLD_SORTED));
  if (size == 1) { /* one shard: the global draw must pick the very rows the shard draw does */
    BasisTrainer      tr_shard;
    const BasisModel *mo_shard;

    PetscCall(PetscOptionsSetValue(NULL, "-sample", "shard"));
    PetscCall(TrainAndEmbed(comm, &sorted, &tr_shard, Y_back));
    PetscCall(BasisTrainerGetModel(tr_shard, &mo_shard));
    PetscCall(BasisTestCheck(
        comm, (PetscBool)(!memcmp(mo->params, mo_shard->params, sizeof(float) * (size_t)mo->nparams)),
        "on one rank, -sample global and -sample shard trained differently"));
    PetscCall(BasisTrainerDestroy(&tr_shard));
    PetscCall(PetscOptionsClearValue(NULL, "-sample"));
  }
  PetscCall(BasisTrainerDestroy(&tr_sorted));
  PetscCall(PetscFree(sorted_x));

  PetscCall(PetscFree3(Y, Y_back, all_x));
  PetscCall(PetscFree(root_params));
  PetscCall(BasisShardDestroy(&shard));
  PetscCall(BasisModelFree(&back));
  PetscCall(BasisTrainerDestroy(&tr));
  PetscCall(SlepcFinalize());
  return BasisTestFailures() ? 1 : 0;
}
