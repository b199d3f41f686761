/*
  train.c - `basis train`: data-parallel BASiS training (DESIGN.md steps 1-5).

  Set-up (collective): read this rank's shard, the input normalisation (global feature
  means and one global scale, by allreduce), the reference set and anchors (ref.c), and
  the reference eigenspace Phi_ref by SLEPc -- or all of it from a checkpoint (-resume).

  Every step, on every rank: batch = the l anchors (first rows) + (m - l) rows drawn
  without replacement, with the rank's own random stream, from the non-anchor rows of the
  whole data set and fetched from the ranks that hold them (one MPI_Alltoall of counts and
  two MPI_Alltoallv, of row numbers and of rows: FetchRows), or with -sample shard from
  this rank's own rows only (DESIGN.md step 3 as written, no communication; on a data set
  whose shards are not much larger than a batch it makes the result depend on the rank
  count: docs/quality.md). Then, independently: the batch graph's K eigenvectors
  (graph.c); the affine map T fitted on the anchors to Phi_ref (align.c); targets Y =
  [Phi_B, 1] T^T, standardised column by column (ComputeOutputMap); MSE loss and
  backward (mlp.c). Then the step's one reduction: ONE MPI_Iallreduce of a
  single buffer holding the flattened gradient followed by a small tail of diagnostics
  (loss, residual, condition number, inliers, stop flag), so the step's statistics and
  the "stop on signal" decision ride along for free. While it is in flight the rank
  prepares the next step's batch (draw, fetch, graph, eigenvectors, targets: none of it
  depends on the weights), calling MPI_Test between those phases so that Open MPI moves
  the reduction on; then it waits for it. Adam then runs identically on every rank, so
  all replicas hold bitwise identical weights (tested).

  The embedding is the network's output mapped back to the aligned eigenvectors' units
  (times sqrt(R), so entries are O(1)): BasisModelOutput. d_G sees no affine map; d_perp
  and k-means see the embedding, not the standardised output.

  Checkpoints (model.c) hold the weights, Adam moments, the step, every rank's random
  stream and the diagnostics history; -resume continues bit-for-bit. SIGUSR1 or SIGTERM
  makes training write a checkpoint at the end of the current step and exit with
  status BASIS_EXIT_CHECKPOINTED (jobs/ requeue on it).
*/
#include <basis/train.h>
#include <basis/eigensolver.h>
#include <basis/error.h>
#include <basis/landmark.h>
#include <basis/log.h>
#include <basis/options.h>
#include <basis/output.h>
#include <basis/ref.h>
#include <basis/sample.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int BasisExitStatus = 0;

/* A run's planned steps: 10^7 is 12 days at 0.1 s a step, and a 320 MB history in every
   checkpoint; "-steps 2000000000" would ask for 64 GB of it. */
#define MAX_STEPS 10000000
/* The default reference and landmark counts in batches of m: R = min(N, 32 m) and L =
   min(R, 4 m) (BasisTrainerSetUp has the measurements). -help states them from here. */
#define REFERENCE_BATCHES 32
#define LANDMARK_BATCHES  4
static const char reference_size_help[] =
    "Reference set size R (0: min(N, " PetscStringize(REFERENCE_BATCHES) " x -batch))";
static const char landmarks_help[] =
    "Reference rows kept for embed's trivial eigenvector of -laplacian sym "
    "(-1: min(R, " PetscStringize(LANDMARK_BATCHES) " x -batch); 0: none, embed uses the network's)";

static volatile sig_atomic_t stop_requested = 0;
static void                  OnStopSignal(int sig)
{
  (void)sig;
  stop_requested = 1;
}

/* Tail of the reduced buffer: per-step diagnostics, summed over ranks. */
enum { TAIL_LOSS, TAIL_RESIDUAL, TAIL_COND, TAIL_INLIERS, TAIL_STOP, TAIL_FAILED, TAIL_SIZE };

/* The summary's phases: the training stage's log events behind each (-log_view has them
   all; BasisInitialize turns PETSc's logging on, so they are timed in every run). */
static const struct {
  const char    *name;
  PetscLogEvent *events[2];
} phases[] = {
    {"sample", {&BASIS_Sample, NULL}},         {"graph+eig", {&BASIS_BatchGraph, &BASIS_BatchEig}},
    {"align", {&BASIS_Align, NULL}},           {"fwd+bwd", {&BASIS_Forward, &BASIS_Backward}},
    {"allreduce", {&BASIS_GradReduce, NULL}},  {"adam", {&BASIS_Adam, NULL}},
    {"checkpoint", {&BASIS_Checkpoint, NULL}},
};

struct _p_BasisTrainer {
  MPI_Comm    comm;
  PetscMPIInt size, rank;
  /* options */
  char        input[PETSC_MAX_PATH_LEN], model_path[PETSC_MAX_PATH_LEN];
  PetscBool   force, resume, monitor, standardize, overlap;
  PetscBool   precision_given; /* -mlp_precision on the command line (else -resume adopts the model's) */
  PetscBool   steps_given;     /* -steps on the command line (else -resume keeps the checkpoint's) */
  BasisOutput model_hold;      /* -model's lock, held from set-up to destroy (BasisOutputHold) */
  PetscInt    monitor_every, checkpoint_every;
  PetscInt    checkpoint_step; /* step of the last checkpoint in model_path, -1: none yet */
  PetscInt    staged_step;     /* step of the checkpoint copied into model, not yet written, -1: none */
  PetscInt    hidden[BASIS_MAX_LAYERS], nhidden;
  /* state */
  BasisModel      model; /* parameters, reference, and (at checkpoints) the training state */
  BasisShard      shard;
  BasisMLP        mlp;
  BasisBatchGraph bg;
  BasisSampler    sampler; /* draws and fetches the batch's m - l new rows */
  BasisRng        rng;     /* this rank's batch stream */
  /* the prepared batch (PrepareBatch): drawn, its targets in yb, waiting for the weights
     of its step; rng_before is the stream as it was before its draws, which is what a
     checkpoint keeps while a batch is prepared, so that -resume draws it again */
  PetscBool       prepared;
  BasisRng        rng_before;
  PetscErrorCode  prep_err;      /* non-zero: its graph or alignment failed on this rank, */
  char            prep_msg[512]; /*   saying this (printed by the step that uses the batch) */
  BasisAlignStats prep_stats;
  float          *xraw, *xn, *yb;       /* [m][D] batch as read, [m][D] normalised, [m][K] targets */
  PetscReal      *phi_b, *lambda_b, *T; /* [m][Kb], [Kb], [K][Kb+1]; Kb = K + -align_extra */
  float          *reduce;               /* [nparams + TAIL_SIZE] gradient + diagnostics */
  PetscBool       setup;
};

/*
  BasisTrainerCreate - an empty trainer with the code defaults (DESIGN.md, from the
  authors' code; m, R and the learning rate changed by measurement, docs/quality.md): l = 250,
  m = 1024, R = min(N, 32 m), 1000 steps, lr 2e-3 decayed to 0 along a half cosine,
  hidden 256,512,512,256, -mlp_precision auto (bfloat16 products where the CPU has them).

  Collective on comm.
*/
PetscErrorCode BasisTrainerCreate(MPI_Comm comm, BasisTrainer *tr)
{
  BasisTrainer t;

  PetscFunctionBeginUser;
  PetscCall(PetscNew(&t));
  t->comm = comm;
  PetscCallMPI(MPI_Comm_size(comm, &t->size));
  PetscCallMPI(MPI_Comm_rank(comm, &t->rank));
  PetscCall(PetscStrncpy(t->model_path, "model.h5", sizeof(t->model_path)));
  t->monitor          = PETSC_TRUE;
  t->standardize      = PETSC_TRUE;
  t->overlap          = PETSC_TRUE;
  t->monitor_every    = 50;
  t->checkpoint_every = 200;
  t->checkpoint_step  = -1;
  t->staged_step      = -1;
  /* authors: 256,512,512,256. 1024,256,256 (at 1600 steps) was our default while the network
     carried every column of the embedding: out of sample its wide first layer took d_G 0.238
     -> 0.203 (docs/quality.md "Width"). Since embed takes 0.75 of columns 1.. from the
     reference's eigenvectors at the landmarks, the network matters little (out of sample,
     seeds 42 7 3: ntr 0.0422 0.0561 0.0542 here against 0.0412 0.0546 0.0533) and the
     wide network's 1600 steps took 2x issue 19's time bar where the CPU lacks bfloat16
     (docs/quality.md "A cheaper network, a larger reference") */
  t->nhidden   = 4;
  t->hidden[0] = 256, t->hidden[1] = 512, t->hidden[2] = 512, t->hidden[3] = 256;
  BasisGraphParamsDefault(&t->model.spec.graph);
  BasisAlignParamsDefault(&t->model.spec.align);
  /* DESIGN.md: from the rank's shard; from the whole data set measured better at 4 ranks
     on MNIST-10k (d_G 0.20 -> 0.13, docs/quality.md) */
  t->model.spec.sample = BASIS_SAMPLE_GLOBAL;
  t->model.spec.l      = 250;
  t->model.spec.m      = 1024; /* authors: 512; 1024 measured better per second (docs/quality.md) */
  t->model.spec.R      = 0;    /* 0: min(N, 32 m), decided when N is known (BasisTrainerSetUp) */
  t->model.spec.L      = -1;   /* -1: min(R, 4 m) for -laplacian sym, decided with R */
  /* authors: 1000. Before embed extended the reference's values, Fashion-MNIST-70k was still
     learning at 1000 (seed 42: d_G 0.142 -> 0.111 at 1500) and the default was 1600; with
     the extension carrying most of the columns, 1000 steps cost out of sample ntr ~0.001
     (docs/quality.md) and keep training within issue 19's 1.5x of the old 1000 steps on
     CPUs without bfloat16 too. */
  t->model.steps = 1000;
  /* authors: constant 1e-4. A cosine decay from 1e-3 to 0 cut d_G on MNIST-10k from
     0.40 to 0.24 and on Fashion-MNIST-10k from 0.62 to 0.22 at the same cost; with the
     guard vectors of -align_extra, starting at 2e-3 did better on every row (seed 42:
     MNIST-10k 0.106 -> 0.099, Fashion-10k 0.076 -> 0.065, Fashion-70k 0.160 -> 0.142,
     out of sample 0.274 -> 0.272; 5e-4 gave 0.122 on MNIST-10k; docs/quality.md) */
  t->model.spec.lr       = 2e-3;
  t->model.spec.lr_final = 0;
  t->model.spec.seed     = 42;
  /* bfloat16 products where the CPU has them: d_G within -0.0004..+0.0008 of float's at
     every seed measured (MNIST-10k and Fashion-70k, seeds 42 7 3; the seeds' spread is
     0.0025 and 0.0125) at 26-38% less time per step (docs/performance.md "Network in
     bfloat16"); -mlp_precision float is the float network bit for bit */
  t->model.mlp_precision = BASIS_MLP_AUTO;
  *tr                    = t;
  PetscFunctionReturn(0);
}

/*
  BasisTrainerSetFromOptions - read the options database (the command line wins).

  Collective. Options: -input -model -force -resume -anchors -batch -sample -reference_size
  -steps -lr -hidden -seed -checkpoint_every -train_monitor -monitor_every -mlp_precision,
  the graph options (-dim -knn -scale_neighbor -scale -laplacian) and the alignment
  options.
*/
PetscErrorCode BasisTrainerSetFromOptions(BasisTrainer t)
{
  char        hidden[256] = "";
  BasisModel *mo          = &t->model;

  PetscFunctionBeginUser;
  for (PetscInt i = 0; i < t->nhidden; i++) /* the default shown by -help: the Create's widths */
    PetscCall(PetscSNPrintf(hidden + strlen(hidden), sizeof(hidden) - strlen(hidden), "%s%d", i ? "," : "",
                            (int)t->hidden[i]));
  PetscOptionsBegin(t->comm, NULL, "basis train: learn the spectral embedding with BASiS", NULL);
  PetscCall(PetscOptionsString("-input", "Training data (HDF5 with /features)", NULL, t->input, t->input,
                               sizeof(t->input), NULL));
  PetscCall(PetscOptionsString("-model", "Model/checkpoint file to write", NULL, t->model_path, t->model_path,
                               sizeof(t->model_path), NULL));
  PetscCall(PetscOptionsBool("-force", "Overwrite an existing -model", NULL, t->force, &t->force, NULL));
  PetscCall(PetscOptionsBool("-resume", "Continue from the checkpoint in -model if it exists", NULL,
                             t->resume, &t->resume, NULL));
  PetscCall(PetscOptionsInt("-anchors", "Number of anchors l", NULL, mo->spec.l, &mo->spec.l, NULL));
  PetscCall(PetscOptionsInt("-batch", "Batch size m, anchors included", NULL, mo->spec.m, &mo->spec.m, NULL));
  PetscCall(BasisOptionsEnum("-sample",
                             "Where a rank draws its batch: global (all ranks' rows, fetched every step) or "
                             "shard (its own rows, no communication)",
                             NULL, BasisSampleTypes, (PetscEnum)mo->spec.sample,
                             (PetscEnum *)&mo->spec.sample, NULL));
  PetscCall(PetscOptionsInt("-reference_size", reference_size_help, NULL, mo->spec.R, &mo->spec.R, NULL));
  PetscCall(PetscOptionsInt("-landmarks", landmarks_help, NULL, mo->spec.L, &mo->spec.L, NULL));
  PetscCall(PetscOptionsInt("-steps", "Training steps", NULL, mo->steps, &mo->steps, &t->steps_given));
  PetscCall(PetscOptionsReal("-lr", "Adam learning rate (at the first step)", NULL, mo->spec.lr, &mo->spec.lr,
                             NULL));
  PetscCall(PetscOptionsReal("-lr_final",
                             "Learning rate at the last step, reached along a half cosine (= -lr: constant)",
                             NULL, mo->spec.lr_final, &mo->spec.lr_final, NULL));
  PetscCall(
      PetscOptionsBool("-standardize_targets",
                       "Train on column-standardised targets (false: on the aligned vectors as they are)",
                       NULL, t->standardize, &t->standardize, NULL));
  PetscCall(PetscOptionsString("-hidden", "Hidden layer widths, comma separated", NULL, hidden, hidden,
                               sizeof(hidden), NULL));
  PetscCall(PetscOptionsInt("-seed", "Random seed (anchors, reference, init, batches)", NULL, mo->spec.seed,
                            &mo->spec.seed, NULL));
  PetscCall(PetscOptionsInt("-checkpoint_every",
                            "Write a checkpoint every this many steps (0: only at the end)", NULL,
                            t->checkpoint_every, &t->checkpoint_every, NULL));
  PetscCall(
      PetscOptionsBool("-train_monitor", "Print progress on rank 0", NULL, t->monitor, &t->monitor, NULL));
  PetscCall(PetscOptionsInt("-monitor_every", "Steps between progress lines", NULL, t->monitor_every,
                            &t->monitor_every, NULL));
  PetscCall(PetscOptionsBool("-train_overlap",
                             "Prepare the next batch while the gradient allreduce is in flight (the weights "
                             "are the same either way)",
                             NULL, t->overlap, &t->overlap, NULL));
  PetscCall(BasisOptionsEnum("-mlp_precision",
                             "Network products: float, bf16 (bfloat16 inputs, float sums and weights; "
                             "oneDNN), auto (bf16 where the CPU has bfloat16 dot products)",
                             NULL, BasisMLPPrecisions, (PetscEnum)mo->mlp_precision,
                             (PetscEnum *)&mo->mlp_precision, &t->precision_given));
  PetscCall(BasisGraphParamsSetFromOptions(t->comm, &mo->spec.graph));
  PetscCall(BasisAlignParamsSetFromOptions(t->comm, &mo->spec.align));
  PetscOptionsEnd();
  PetscCall(BasisMLPPrecisionResolve(t->comm, &mo->mlp_precision));
  PetscCall(BasisParseIntList(t->comm, "-hidden", hidden, BASIS_MAX_LAYERS - 1, &t->nhidden, t->hidden));
  PetscCheck(mo->spec.graph.K >= 1, t->comm, PETSC_ERR_ARG_OUTOFRANGE, "-dim %d must be at least 1",
             (int)mo->spec.graph.K);
  PetscCheck(mo->spec.l >= mo->spec.graph.K + 1, t->comm, PETSC_ERR_ARG_OUTOFRANGE,
             "-anchors %d must be at least -dim + 1 = %d (the affine fit has K + 1 unknowns per output)",
             (int)mo->spec.l, (int)mo->spec.graph.K + 1);
  PetscCheck(mo->spec.m > mo->spec.l, t->comm, PETSC_ERR_ARG_OUTOFRANGE,
             "-batch %d must be larger than -anchors %d (a batch is the anchors plus new points)",
             (int)mo->spec.m, (int)mo->spec.l);
  PetscCheck(mo->spec.m >= mo->spec.l + mo->spec.graph.K, t->comm, PETSC_ERR_ARG_OUTOFRANGE,
             "-batch %d must be at least -anchors + -dim = %d", (int)mo->spec.m,
             (int)(mo->spec.l + mo->spec.graph.K));
  PetscCheck(mo->spec.graph.knn < mo->spec.m, t->comm, PETSC_ERR_ARG_OUTOFRANGE,
             "-knn %d must be smaller than -batch %d", (int)mo->spec.graph.knn, (int)mo->spec.m);
  PetscCheck(mo->spec.R == 0 || mo->spec.R >= mo->spec.l, t->comm, PETSC_ERR_ARG_OUTOFRANGE,
             "-reference_size %d must be at least -anchors %d (the anchors are part of the reference set)",
             (int)mo->spec.R, (int)mo->spec.l);
  PetscCheck(mo->spec.L >= -1, t->comm, PETSC_ERR_ARG_OUTOFRANGE,
             "-landmarks %d must be at least 0 (or -1: the default)", (int)mo->spec.L);
  PetscCheck(mo->spec.L <= 0 || mo->spec.graph.laplacian == BASIS_LAPLACIAN_SYM, t->comm,
             PETSC_ERR_ARG_INCOMP,
             "-landmarks applies to -laplacian sym only (the trivial eigenvector of -laplacian %s is "
             "constant); use -landmarks 0",
             BasisLaplacianTypes[mo->spec.graph.laplacian]);
  PetscCheck(mo->steps >= 1 && mo->steps <= MAX_STEPS, t->comm, PETSC_ERR_ARG_OUTOFRANGE,
             "-steps %d must be from 1 to %d (every checkpoint holds a history of %d bytes per planned step)",
             (int)mo->steps, MAX_STEPS, (int)(BASIS_HISTORY_FIELDS * sizeof(PetscReal)));
  PetscCheck(mo->spec.lr > 0 && PetscIsNormalReal(mo->spec.lr), t->comm, PETSC_ERR_ARG_OUTOFRANGE,
             "-lr %g must be positive", (double)mo->spec.lr);
  PetscCheck(mo->spec.lr_final >= 0 && mo->spec.lr_final <= mo->spec.lr, t->comm, PETSC_ERR_ARG_OUTOFRANGE,
             /* false for NaN */ "-lr_final %g must be between 0 and -lr %g", (double)mo->spec.lr_final,
             (double)mo->spec.lr);
  PetscCheck(t->checkpoint_every >= 0, t->comm, PETSC_ERR_ARG_OUTOFRANGE, "-checkpoint_every must be >= 0");
  PetscCheck(t->monitor_every >= 1, t->comm, PETSC_ERR_ARG_OUTOFRANGE, "-monitor_every must be >= 1");
  PetscCall(BasisAlignResolveExtra(t->comm, &mo->spec.align, mo->spec.l, mo->spec.m, mo->spec.graph.K));
  PetscFunctionReturn(0);
}

/*
  The map from the network's output to the embedding (DESIGN.md step 5 with one change,
  docs/quality.md "Standardised targets"). The embedding's units are the aligned
  eigenvectors times target_scale = sqrt(R): Phi_ref has unit-norm columns over R points,
  so this makes its entries O(1). With -standardize_targets (default) the network learns
  each column standardised by Phi_ref's mean and standard deviation over the anchors and
  the model maps its output back (out_scale, out_shift). Without it the columns' scales
  differ a lot: the trivial eigenvector D^1/2 1 of the sym Laplacian is nearly constant,
  so its centred part -- a full direction of the centred span d_G measures -- is ~7x
  smaller than the other columns, and the plain MSE left it the largest error (MNIST-10k
  d_G 0.24 -> 0.16 standardised). A column constant over the anchors (the trivial vector
  of rw or unnormalized) keeps the floor of 1% of an entry's RMS as its scale.
*/
static PetscErrorCode ComputeOutputMap(BasisTrainer t)
{
  BasisModel *mo = &t->model;
  PetscInt    l = mo->spec.l, K = mo->spec.graph.K;

  PetscFunctionBeginUser;
  mo->target_scale = PetscSqrtReal((PetscReal)mo->spec.R);
  if (!t->standardize) PetscFunctionReturn(0); /* BasisModelAllocate's identity map */
  for (PetscInt j = 0; j < K; j++) {
    PetscReal mean = 0, var = 0;

    for (PetscInt a = 0; a < l; a++) mean += mo->phi_ref[a * K + j] / l;
    for (PetscInt a = 0; a < l; a++) var += PetscSqr(mo->phi_ref[a * K + j] - mean) / l;
    mo->out_shift[j] = mo->target_scale * mean;
    mo->out_scale[j] = PetscMax(mo->target_scale * PetscSqrtReal(var), 0.01);
  }
  PetscFunctionReturn(0);
}

/*
  CheckSameInput - refuse to resume checkpoint ck on an -input that is not the data it was
  trained on, though of the same N x D (another file, the same one shifted or reordered): its
  anchor rows must be the checkpoint's bit for bit and its per-feature means the same (to
  the rounding of a sum). Collective.
*/
static PetscErrorCode CheckSameInput(BasisTrainer t, const BasisModel *ck)
{
  PetscInt  l = ck->spec.l, D = ck->spec.D, *idx, *pos, bad_row = -1, bad_col = -1;
  float    *rows, *mean;
  PetscReal scale;

  PetscFunctionBeginUser;
  PetscCall(PetscMalloc4(l, &idx, l, &pos, (size_t)l * D, &rows, D, &mean));
  for (PetscInt a = 0; a < l; a++) idx[a] = ck->anchors[a], pos[a] = a;
  PetscCall(PetscSortIntWithArray(l, idx, pos)); /* BasisShardGatherRows wants sorted rows */
  PetscCall(BasisShardGatherRows(t->comm, &t->shard, l, idx, rows));
  for (PetscInt a = 0; a < l && bad_row < 0; a++)
    if (memcmp(rows + (size_t)a * D, ck->anchor_x + (size_t)pos[a] * D, (size_t)D * sizeof(float)))
      bad_row = idx[a];
  PetscCall(BasisShardMoments(t->comm, &t->shard, mean, &scale));
  for (PetscInt j = 0; j < D && bad_col < 0; j++) /* the same rows summed: equal up to the order */
    if (PetscAbsReal((PetscReal)mean[j] - ck->mean[j]) > 1e-6 * (PetscAbsReal(ck->mean[j]) + ck->scale))
      bad_col = j;
  PetscCall(PetscFree4(idx, pos, rows, mean));
  PetscCheck(bad_row < 0, t->comm, PETSC_ERR_ARG_INCOMP,
             "-input %s is not the data checkpoint %s was trained on: its row %d (an anchor) differs; resume "
             "with the same -input, or train anew with -force",
             t->input, t->model_path, (int)bad_row);
  PetscCheck(bad_col < 0, t->comm, PETSC_ERR_ARG_INCOMP,
             "-input %s is not the data checkpoint %s was trained on: the mean of feature %d differs; resume "
             "with the same -input, or train anew with -force",
             t->input, t->model_path, (int)bad_col);
  PetscFunctionReturn(0);
}

/* How embed will form the trivial direction from this model (model.c
   BasisLandmarksCreateFromModel), said once at the start so a poor fit is seen before training. */
static PetscErrorCode ViewLandmarks(BasisTrainer t)
{
  BasisLandmarks          lm;
  BasisLandmarksFitResult fit;
  const char             *why;
  PetscInt                L, k;

  PetscFunctionBeginUser;
  if (t->model.spec.L == 0) {
    if (t->model.spec.graph.laplacian == BASIS_LAPLACIAN_SYM)
      PetscCall(PetscPrintf(t->comm, "train: no landmarks (-landmarks 0, or a checkpoint from before they "
                                     "existed): embed will use the network's first column\n"));
    PetscFunctionReturn(0);
  }
  PetscCall(BasisLandmarksCreateFromModel(&t->model, &lm, &fit, &why));
  if (!lm) {
    PetscCall(PetscPrintf(t->comm, "train: warning: embed will use the network's first column: %s\n", why));
    PetscFunctionReturn(0);
  }
  PetscCall(BasisLandmarksGetSize(lm, &L, &k));
  PetscCall(PetscPrintf(t->comm,
                        "train: %d landmarks (k = %d) for embed's columns (-trivial, -landmark_weight); "
                        "sqrt(degree) against the reference's at the anchors: r = %.4f\n",
                        (int)L, (int)k, (double)fit.r));
  if (!t->model.has_landmark_phi)
    PetscCall(PetscPrintf(t->comm,
                          "train: the checkpoint keeps no reference values at the landmarks (written "
                          "before they were kept): embed will extend the network's outputs there\n"));
  PetscCall(BasisLandmarksDestroy(&lm));
  PetscFunctionReturn(0);
}

/* Fresh start: reference eigenspace, network initialisation, random streams. */
static PetscErrorCode StartFresh(BasisTrainer t)
{
  BasisModel    *mo = &t->model;
  const PetscInt l = mo->spec.l, L = mo->spec.L, D = mo->spec.D, K = mo->spec.graph.K;
  PetscInt      *ref_idx, *pos; /* [l + L]: the anchors' rows of the reference set, then the landmarks' */
  float         *ref_x;
  PetscReal     *phi;
  float         *params, *grad, *am, *av;
  BasisRng       init;
  double         t0;

  PetscFunctionBeginUser;
  PetscCall(PetscMalloc4(mo->spec.R, &ref_idx, l + L, &pos, (size_t)mo->spec.R * D, &ref_x,
                         (size_t)(l + L) * K, &phi));
  PetscCall(BasisReferenceSample(mo->spec.N, mo->spec.R, l, L, mo->spec.seed, ref_idx, pos));
  PetscCall(BasisShardGatherRows(t->comm, &t->shard, mo->spec.R, ref_idx, ref_x));
  for (PetscInt a = 0; a < l; a++) {
    mo->anchors[a] = ref_idx[pos[a]];
    PetscCall(PetscArraycpy(mo->anchor_x + (size_t)a * D, ref_x + (size_t)pos[a] * D, D));
  }
  for (PetscInt j = 0; j < L; j++)
    PetscCall(PetscArraycpy(mo->landmark_x + (size_t)j * D, ref_x + (size_t)pos[l + j] * D, D));
  PetscCall(PetscPrintf(t->comm, "train: reference eigenspace of %d points (%d anchors), K = %d, by SLEPc\n",
                        (int)mo->spec.R, (int)l, (int)K));
  t0 = MPI_Wtime(); /* one solve gives the reference's vectors at the anchors and the landmarks */
  PetscCall(BasisReferenceSolve(t->comm, &mo->spec.graph, mo->spec.m, mo->spec.R, D, ref_x, l + L, pos, phi,
                                mo->lambda_ref));
  PetscCall(PetscArraycpy(mo->phi_ref, phi, (size_t)l * K));
  PetscCall(PetscArraycpy(mo->landmark_phi, phi + (size_t)l * K, (size_t)L * K));
  mo->has_landmark_phi = L > 0 ? PETSC_TRUE : PETSC_FALSE;
  PetscCall(PetscPrintf(t->comm, "train: reference solved in %.1f s; eigenvalues %.4g ... %.4g\n",
                        MPI_Wtime() - t0, (double)mo->lambda_ref[0], (double)mo->lambda_ref[K - 1]));
  PetscCall(PetscFree4(ref_idx, pos, ref_x, phi));
  PetscCall(BasisModelSetNormalisation(t->comm, &t->shard, t->input, &t->model));
  PetscCall(ComputeOutputMap(t));
  PetscCall(ViewLandmarks(t));

  BasisRngSeed(&init, (uint64_t)mo->spec.seed, BASIS_STREAM_INIT);
  PetscCall(BasisMLPInitialize(t->mlp, &init));
  PetscCall(BasisMLPGetArrays(t->mlp, &params, &grad, &am, &av));
  PetscCall(PetscArrayzero(am, mo->nparams));
  PetscCall(PetscArrayzero(av, mo->nparams));
  BasisRngSeed(&t->rng, (uint64_t)mo->spec.seed, BASIS_STREAM_BATCH + (uint64_t)t->rank);
  mo->step = 0;
  PetscFunctionReturn(0);
}

/* Adopt the specification of the checkpoint in -model (it wins over the command line,
   except -steps, which may extend the run, -batch_solver and -knn_gemm, which are how, not
   what); called before anything is allocated. Without -steps the run ends where the
   checkpoint's was planned to (its learning-rate schedule spans those steps). The network's precision, which
   changes the weights, is the checkpoint's unless -mlp_precision is given: a run requeued on a node without
   bfloat16 instructions says so and goes on in float, rather than switching silently. */
static PetscErrorCode AdoptCheckpointParameters(BasisTrainer t, const BasisModel *ck)
{
  BasisModel *mo = &t->model;

  PetscFunctionBeginUser;
  PetscCheck(ck->spec.N == t->shard.N && ck->spec.D == t->shard.D, t->comm, PETSC_ERR_ARG_INCOMP,
             "checkpoint %s was trained on %d x %d data but -input %s is %d x %d; resume with the same input",
             t->model_path, (int)ck->spec.N, (int)ck->spec.D, t->input, (int)t->shard.N, (int)t->shard.D);
  PetscCall(CheckSameInput(t, ck));
  if (!t->steps_given) mo->steps = ck->steps;
  PetscCheck(mo->steps >= ck->steps, t->comm, PETSC_ERR_ARG_OUTOFRANGE,
             "-steps %d is fewer than the %d steps checkpoint %s was planned for; leave -steps out to finish "
             "them, or give more to extend the run",
             (int)mo->steps, (int)ck->steps, t->model_path);
  PetscCheck(
      ck->nranks == t->size, t->comm, PETSC_ERR_ARG_INCOMP,
      "checkpoint %s was written by %d ranks; resume with %d ranks (each rank's random stream is saved)",
      t->model_path, (int)ck->nranks, (int)ck->nranks);
  {
    /* the specification whole; the batch solver and the kNN's product precision are how,
       not what, and are not stored: keep the command line's (resume with the same
       -batch_solver for bitwise continuation; -knn_gemm never changes the lists) */
    BasisBatchSolverType solver = mo->spec.graph.batch_solver;
    BasisKnnGemmType     gemm   = mo->spec.graph.knn_gemm;
    mo->spec                    = ck->spec;
    mo->spec.graph.batch_solver = solver;
    mo->spec.graph.knn_gemm     = gemm;
  }
  if (!t->precision_given && mo->mlp_precision != ck->mlp_precision) {
    mo->mlp_precision = ck->mlp_precision;
    PetscCall(BasisMLPPrecisionResolve(t->comm, &mo->mlp_precision));
  }
  PetscFunctionReturn(0);
}

/* Copy the checkpoint's state (weights, Adam moments, random stream, reference, history)
   into the freshly allocated trainer. */
static PetscErrorCode AdoptCheckpointState(BasisTrainer t, const BasisModel *ck)
{
  BasisModel *mo = &t->model;
  float      *params, *grad, *am, *av;

  PetscFunctionBeginUser;
  PetscCall(BasisMLPGetArrays(t->mlp, &params, &grad, &am, &av));
  PetscCall(PetscArraycpy(params, ck->params, ck->nparams));
  PetscCall(PetscArraycpy(am, ck->adam_m, ck->nparams));
  PetscCall(PetscArraycpy(av, ck->adam_v, ck->nparams));
  PetscCall(PetscArraycpy(t->rng.s, ck->rng + 4 * t->rank, 4));
  mo->scale        = ck->scale;
  mo->target_scale = ck->target_scale;
  PetscCall(PetscArraycpy(mo->mean, ck->mean, ck->spec.D));
  PetscCall(PetscArraycpy(mo->anchors, ck->anchors, ck->spec.l));
  PetscCall(PetscArraycpy(mo->anchor_x, ck->anchor_x, (size_t)ck->spec.l * ck->spec.D));
  PetscCall(PetscArraycpy(mo->phi_ref, ck->phi_ref, (size_t)ck->spec.l * ck->spec.graph.K));
  PetscCall(PetscArraycpy(mo->lambda_ref, ck->lambda_ref, ck->spec.graph.K));
  PetscCall(PetscArraycpy(mo->landmark_x, ck->landmark_x, (size_t)ck->spec.L * ck->spec.D));
  PetscCall(PetscArraycpy(mo->landmark_phi, ck->landmark_phi, (size_t)ck->spec.L * ck->spec.graph.K));
  mo->has_landmark_phi = ck->has_landmark_phi;
  PetscCall(PetscArraycpy(mo->out_shift, ck->out_shift, ck->spec.graph.K));
  PetscCall(PetscArraycpy(mo->out_scale, ck->out_scale, ck->spec.graph.K));
  PetscCall(PetscArraycpy(mo->history, ck->history, (size_t)ck->steps * BASIS_HISTORY_FIELDS));
  mo->step           = ck->step;
  t->checkpoint_step = ck->step;
  PetscCall(PetscPrintf(t->comm,
                        "train: resuming %s at step %d of %d (the checkpoint's parameters are used)\n",
                        t->model_path, (int)mo->step, (int)mo->steps));
  PetscFunctionReturn(0);
}

/*
  BasisTrainerSetUp - read the data, then start fresh or from a checkpoint.

  Collective. Refuses (on every rank) an input too small for the parameters, an existing
  -model without -force or -resume, and shards too small to draw a batch from.
*/
PetscErrorCode BasisTrainerSetUp(BasisTrainer t)
{
  BasisModel *mo = &t->model;
  BasisInput  in;
  PetscInt    K = mo->spec.graph.K, Kb;
  BasisModel  ck;
  PetscBool   have_checkpoint = PETSC_FALSE;
  const char *inputs[]        = {t->input, NULL};

  PetscFunctionBeginUser;
  PetscCall(BasisInputOpen(t->comm, t->input, &in));
  mo->spec.N = in.N, mo->spec.D = in.D;
  PetscCheck(mo->spec.l <= mo->spec.N, t->comm, PETSC_ERR_ARG_OUTOFRANGE,
             "-anchors %d exceeds the %d points of input %s; use a smaller -anchors (and -batch)",
             (int)mo->spec.l, (int)mo->spec.N, t->input);
  /* Default reference: 32 batches' worth of points, density-matched (k_R = k R / m). On
     MNIST-10k 16 batches cut d_G from 0.87 (R = m) to 0.69 (docs/quality.md); on
     Fashion-MNIST-70k 24 instead of 16 took d_G over the non-trivial directions from 0.054
     to 0.047 ("The reference set's size"); since embed extends the reference's values at
     the landmarks, 32 instead of 24 took it out of sample from 0.0508 to 0.0441 (seeds 42 7
     3) for a solve of ~40 s instead of ~21 s at 2 ranks ("A cheaper network, a larger
     reference"). Its kNN costs O(R^2 D), so it is capped rather than the whole data set. */
  if (mo->spec.R == 0)
    mo->spec.R = PetscMax(PetscMin(mo->spec.N, REFERENCE_BATCHES * mo->spec.m), mo->spec.l);
  /* Default landmarks (src/landmark.c): 4 batches' worth of the reference rows. Out of
     sample on Fashion-MNIST the trivial direction's sin^2 was 0.113 from the network and
     0.065, 0.034, 0.024 from 2, 4, 8 m landmarks (docs/quality.md "The trivial direction
     from landmarks"); embed pays 2 D L flops per point for them. */
  if (mo->spec.L < 0)
    mo->spec.L = mo->spec.graph.laplacian == BASIS_LAPLACIAN_SYM
                     ? PetscMin(mo->spec.R, LANDMARK_BATCHES * mo->spec.m)
                     : 0;
  PetscCheck(
      mo->spec.L <= mo->spec.R, t->comm, PETSC_ERR_ARG_OUTOFRANGE,
      "-landmarks %d exceeds the reference set's %d rows they are drawn from; use -landmarks %d or less "
      "(or a larger -reference_size)",
      (int)mo->spec.L, (int)mo->spec.R, (int)mo->spec.R);
  {
    BasisGraphParams lp;
    BasisGraphParamsMatched(&mo->spec.graph, mo->spec.L, mo->spec.m, &lp);
    PetscCheck(mo->spec.L == 0 || mo->spec.L > lp.knn, t->comm, PETSC_ERR_ARG_OUTOFRANGE,
               "-landmarks %d is too few for their density-matched graph (k = %d); use more, or 0 for none",
               (int)mo->spec.L, (int)lp.knn);
  }
  PetscCheck(mo->spec.N >= mo->spec.m, t->comm, PETSC_ERR_ARG_OUTOFRANGE,
             "input %s has %d points, fewer than -batch %d (a batch holds -batch distinct points); use "
             "-batch %d or less",
             t->input, (int)mo->spec.N, (int)mo->spec.m, (int)mo->spec.N);
  PetscCheck(mo->spec.N >= mo->spec.R, t->comm, PETSC_ERR_ARG_OUTOFRANGE,
             "input %s has %d points, fewer than -reference_size %d; use -reference_size %d or less",
             t->input, (int)mo->spec.N, (int)mo->spec.R, (int)mo->spec.N);
  if (t->resume) {
    int exists = 0;
    if (t->rank == 0) exists = access(t->model_path, F_OK) == 0;
    PetscCallMPI(MPI_Bcast(&exists, 1, MPI_INT, 0, t->comm));
    have_checkpoint = exists ? PETSC_TRUE : PETSC_FALSE;
  }
  /* Refuse a bad output path before reading gigabytes, and hold -model until the end: no
     other run writes it between this run's checkpoints. A resumed run replaces its own
     checkpoint, so it needs no -force. */
  PetscCall(BasisOutputHold(t->comm, "-model", t->model_path, (PetscBool)(t->force || have_checkpoint),
                            inputs, &t->model_hold));
  PetscCall(BasisInputReadShard(&in, &t->shard));
  PetscCall(BasisInputClose(&in));

  if (have_checkpoint) {
    PetscCall(BasisModelRead(t->comm, t->model_path, &ck));
    PetscCall(AdoptCheckpointParameters(t, &ck));
    K = mo->spec.graph.K;
  } else {
    mo->spec.nlayers   = t->nhidden + 1;
    mo->spec.widths[0] = mo->spec.D;
    for (PetscInt i = 0; i < t->nhidden; i++) mo->spec.widths[i + 1] = t->hidden[i];
    mo->spec.widths[mo->spec.nlayers] = K;
  }
  mo->nranks = t->size;
  /* the sampler's shards and the solvers' options, checked on every rank before the reference
     solve and step 1 */
  PetscCall(BasisSamplerCheckShards(t->comm, mo->spec.sample, &t->shard, mo->spec.l, mo->spec.m));
  if (!have_checkpoint) PetscCall(BasisEigensolverCheckOptions(t->comm, "ref_", K, mo->spec.R, "-dim"));
  PetscCall(BasisEigensolverCheckOptions(t->comm, "batch_", K + mo->spec.align.extra, mo->spec.m,
                                         "-dim + -align_extra"));
  PetscCall(BasisMLPCreate(mo->spec.nlayers, mo->spec.widths, mo->spec.m, &t->mlp));
  PetscCall(BasisMLPSetPrecision(t->mlp, mo->mlp_precision));
  {
    PetscInt        nl;
    const PetscInt *w;
    PetscCall(BasisMLPGetSizes(t->mlp, &nl, &w, &mo->nparams));
  }
  PetscCall(BasisModelAllocate(mo));
  if (have_checkpoint) {
    PetscCall(AdoptCheckpointState(t, &ck));
    PetscCall(BasisModelFree(&ck));
  } else
    PetscCall(StartFresh(t));

  PetscCall(BasisSamplerCreate(t->comm, mo->spec.sample, &t->shard, mo->spec.l, mo->anchors, mo->spec.m,
                               &t->sampler));
  Kb = K + mo->spec.align.extra;
  { /* the batch solve computes the Kb = K + -align_extra eigenpairs the alignment fits */
    BasisGraphParams batch = mo->spec.graph;
    batch.K                = Kb;
    PetscCall(BasisBatchGraphCreate(&batch, mo->spec.m, mo->spec.D, &t->bg));
  }
  PetscCall(PetscMalloc6((size_t)mo->spec.m * mo->spec.D, &t->xraw, (size_t)mo->spec.m * mo->spec.D, &t->xn,
                         (size_t)mo->spec.m * K, &t->yb, (size_t)mo->spec.m * Kb, &t->phi_b, Kb, &t->lambda_b,
                         K * (Kb + 1), &t->T));
  PetscCall(PetscMalloc1(mo->nparams + TAIL_SIZE, &t->reduce));
  /* the anchors are the first l rows of every batch */
  PetscCall(PetscArraycpy(t->xraw, mo->anchor_x, (size_t)mo->spec.l * mo->spec.D));
  BasisModelNormaliseInput(mo, mo->spec.l, mo->anchor_x, t->xn);
  t->setup = PETSC_TRUE;
  PetscFunctionReturn(0);
}

/*
  Checkpoints. The weights of step s are only known to be sound once step s + 1 has
  computed a finite loss and gradient with them: an update that blows the weights up (too
  large an -lr) is finite itself and diverges one step later. So a periodic checkpoint is
  staged at the end of its step (StageCheckpoint: the training state copied into the
  model) and written by the next step once its verdict is in (CommitCheckpoint); a step
  that diverges discards it, and -model keeps what it held: the last sound checkpoint, or
  the file that was there before a -force run. The last step's model and a checkpoint on
  a stop signal are written at once (WriteCheckpoint): no step follows to judge them.
*/
static PetscErrorCode StageCheckpoint(BasisTrainer t)
{
  BasisModel *mo = &t->model;
  float      *params, *grad, *am, *av;

  PetscFunctionBeginUser;
  PetscCall(BasisMLPGetArrays(t->mlp, &params, &grad, &am, &av));
  PetscCall(PetscArraycpy(mo->params, params, mo->nparams));
  PetscCall(PetscArraycpy(mo->adam_m, am, mo->nparams));
  PetscCall(PetscArraycpy(mo->adam_v, av, mo->nparams));
  PetscCallMPI(MPI_Gather(t->prepared ? t->rng_before.s : t->rng.s, 4, MPI_UINT64_T, mo->rng, 4, MPI_UINT64_T,
                          0, t->comm));
  t->staged_step = mo->step;
  PetscFunctionReturn(0);
}

/* Write the staged checkpoint (rank 0), atomically. The model still describes its step:
   the steps after it have not yet changed mo->step or its history. */
static PetscErrorCode CommitCheckpoint(BasisTrainer t)
{
  BasisModel *mo       = &t->model;
  const char *inputs[] = {t->input, NULL};

  PetscFunctionBeginUser;
  PetscCheck(t->staged_step == mo->step, PETSC_COMM_SELF, PETSC_ERR_PLIB,
             "checkpoint of step %d staged, committed at step %d", (int)t->staged_step, (int)mo->step);
  /* -model is this run's to replace once it holds a checkpoint of it (written or resumed);
     before that, a file that appeared there since set-up (not from basis: the lock is held)
     is replaced only with -force */
  PetscCall(
      BasisModelWrite(t->comm, t->model_path, (PetscBool)(t->force || t->checkpoint_step >= 0), inputs, mo));
  t->checkpoint_step = mo->step;
  t->staged_step     = -1;
  PetscFunctionReturn(0);
}

static PetscErrorCode WriteCheckpoint(BasisTrainer t)
{
  PetscFunctionBeginUser;
  PetscCall(StageCheckpoint(t));
  PetscCall(CommitCheckpoint(t));
  PetscFunctionReturn(0);
}

/* Let a reduction in flight progress (Open MPI moves non-blocking collectives on only
   inside MPI calls). */
static PetscErrorCode Progress(MPI_Request *req)
{
  int done;

  PetscFunctionBeginUser;
  if (req && *req != MPI_REQUEST_NULL) PetscCallMPI(MPI_Test(req, &done, MPI_STATUS_IGNORE));
  PetscFunctionReturn(0);
}

/* Steps 2-3 of a training step, on this rank alone: batch eigenvectors, alignment and
   targets. Errors are returned, not raised on the communicator. */
static PetscErrorCode LocalTargets(BasisTrainer t, MPI_Request *req, BasisAlignStats *stats)
{
  BasisModel    *mo = &t->model;
  const PetscInt l = mo->spec.l, m = mo->spec.m, K = mo->spec.graph.K, Kb = K + mo->spec.align.extra;

  PetscFunctionBeginUser;
  /* the batch graph's eigenvectors, on the features as given (the graph rule is defined
     on the data, not on the network's normalised input) */
  PetscCall(BasisBatchGraphEmbed(t->bg, t->xraw, t->phi_b, t->lambda_b));
  PetscCall(Progress(req));
  /* align to the reference on the anchors, targets for the whole batch */
  PetscCall(BasisAlignFit(&mo->spec.align, l, K, Kb, mo->phi_ref, t->phi_b, &t->rng, t->T, stats));
  PetscCall(BasisAlignApply(m, K, Kb, t->T, t->phi_b, t->yb));
  for (PetscInt i = 0; i < m; i++) /* the network's targets: the embedding before BasisModelOutput */
    for (PetscInt j = 0; j < K; j++)
      t->yb[i * K + j] = (float)((t->yb[i * K + j] * mo->target_scale - mo->out_shift[j]) / mo->out_scale[j]);
  PetscFunctionReturn(0);
}

/* The learning rate of step s (0-based) of mo->steps: a half cosine from lr down to
   lr_final, which ends the run with small updates so that the final weights average
   over many batches instead of following the last few (docs/quality.md). */
static PetscReal LearningRate(const BasisModel *mo, PetscInt s)
{
  PetscReal frac = mo->steps > 1 ? (PetscReal)s / (PetscReal)(mo->steps - 1) : 0.0;
  return mo->spec.lr_final + 0.5 * (mo->spec.lr - mo->spec.lr_final) * (1.0 + PetscCosReal(PETSC_PI * frac));
}

/* An error handler that keeps an error's first message in ctx (char[512]) and prints
   nothing: PrepareBatch's, whose failures the step that uses the batch reports. */
static PetscErrorCode KeepFirstMessage(MPI_Comm comm, int line, const char *fun, const char *file,
                                       PetscErrorCode n, PetscErrorType p, const char *mess, void *ctx)
{
  (void)comm, (void)line, (void)fun, (void)file;
  if (p == PETSC_ERROR_INITIAL) snprintf((char *)ctx, 512, "%s", mess && mess[0] ? mess : "(no message)");
  return n;
}

/*
  PrepareBatch - step 1-3 of the next training step: draw and fetch its batch, then (on
  this rank alone) its eigenvectors and targets. Collective (the fetch). Nothing here
  depends on the weights, so it runs while the previous step's reduction req (or
  MPI_REQUEST_NULL / NULL) is in flight, testing it between phases. A failure of the
  graph or the alignment is kept in prep_err for the step to report, not raised.
*/
static PetscErrorCode PrepareBatch(BasisTrainer t, MPI_Request *req)
{
  BasisModel *mo = &t->model;
  PetscInt    l = mo->spec.l, m = mo->spec.m, D = mo->spec.D;

  PetscFunctionBeginUser;
  t->rng_before = t->rng;
  /* 1. batch: anchors (rows [0, l), filled at set-up) + m - l fresh rows */
  PetscCall(PetscLogEventBegin(BASIS_Sample, 0, 0, 0, 0));
  PetscCall(BasisSamplerDraw(t->sampler, &t->rng, t->xraw + (size_t)l * D));
  BasisModelNormaliseInput(mo, m - l, t->xraw + (size_t)l * D, t->xn + (size_t)l * D);
  PetscCall(Progress(req));
  PetscCall(PetscLogEventEnd(BASIS_Sample, 0, 0, 0, 0));
  /* 2-3 can fail on one rank only (a batch whose graph is degenerate, an alignment
     refused as ill-conditioned): that rank keeps its reason, and the step that uses the
     batch prints it, contributes a zero gradient and raises a flag that rides in the
     allreduce, so every rank stops with the same error instead of waiting in the
     collective. Printed here, a reason could come before the verdict of the step still
     in flight and be counted with it. */
  t->prep_msg[0] = 0;
  PetscCall(PetscPushErrorHandler(KeepFirstMessage, t->prep_msg));
  t->prep_err = LocalTargets(t, req, &t->prep_stats);
  PetscCall(PetscPopErrorHandler());
  t->prepared = PETSC_TRUE;
  PetscFunctionReturn(0);
}

/* One training step on the prepared batch; prepares the next one while the gradient is
   reduced. On return t->reduce holds the mean gradient and diagnostics. */
static PetscErrorCode Step(BasisTrainer t)
{
  BasisModel     *mo = &t->model;
  BasisAlignStats stats;
  float          *params, *grad, *am, *av, loss = 0;
  PetscErrorCode  ierr;
  MPI_Request     req;

  PetscFunctionBeginUser;
  PetscCheck(t->prepared, PETSC_COMM_SELF, PETSC_ERR_PLIB, "no batch prepared for step %d",
             (int)mo->step + 1);
  t->prepared = PETSC_FALSE;
  stats       = t->prep_stats;
  /* 4. loss and gradient on the normalised batch */
  ierr = t->prep_err ? t->prep_err : BasisMLPLossBackward(t->mlp, mo->spec.m, t->xn, t->yb, &loss);
  PetscCall(BasisMLPGetArrays(t->mlp, &params, &grad, &am, &av));
  if (ierr) {
    if (t->prep_err) { /* this rank's reason, as an error on it alone would print it */
      char why[600];
      PetscCall(PetscSNPrintf(why, sizeof(why), "the batch of step %d: %s", (int)mo->step + 1, t->prep_msg));
      (void)BasisErrorHandler(PETSC_COMM_SELF, __LINE__, PETSC_FUNCTION_NAME, __FILE__, ierr,
                              PETSC_ERROR_INITIAL, why, NULL);
    }
    PetscCall(PetscArrayzero(grad, mo->nparams));
    loss = 0, stats.residual = stats.cond = 0, stats.inliers = 0;
  }
  /* 5. the step's one allreduce: gradient + diagnostics, overlapped with the next batch */
  PetscCall(PetscArraycpy(t->reduce, grad, mo->nparams));
  t->reduce[mo->nparams + TAIL_LOSS]     = loss;
  t->reduce[mo->nparams + TAIL_RESIDUAL] = (float)stats.residual;
  t->reduce[mo->nparams + TAIL_COND]     = (float)stats.cond;
  t->reduce[mo->nparams + TAIL_INLIERS]  = (float)stats.inliers;
  t->reduce[mo->nparams + TAIL_STOP]     = stop_requested ? 1.0f : 0.0f;
  t->reduce[mo->nparams + TAIL_FAILED]   = ierr ? 1.0f : 0.0f;
  PetscCallMPI(MPI_Iallreduce(MPI_IN_PLACE, t->reduce, (int)(mo->nparams + TAIL_SIZE), MPI_FLOAT, MPI_SUM,
                              t->comm, &req));
  if (t->overlap && mo->step + 1 < mo->steps) PetscCall(PrepareBatch(t, &req));
  PetscCall(PetscLogEventBegin(BASIS_GradReduce, 0, 0, 0, 0));
  PetscCallMPI(MPI_Wait(&req, MPI_STATUS_IGNORE));
  PetscCall(PetscLogEventEnd(BASIS_GradReduce, 0, 0, 0, 0));
  {
    const float inv   = 1.0f / (float)t->size;
    double      sumsq = 0.0;
    for (PetscCount i = 0; i < mo->nparams; i++) {
      grad[i] = t->reduce[i] * inv;
      sumsq += (double)grad[i] * grad[i];
    }
    /* the reduced data are the same everywhere, so every rank reaches the same verdict.
       A -resume would meet the same batch again (or, after divergence, keep the
       checkpoint's -lr), so the advice is to retrain. */
    if (t->reduce[mo->nparams + TAIL_FAILED] != 0 || !isfinite(sumsq) ||
        !isfinite(t->reduce[mo->nparams + TAIL_LOSS])) {
      const char *force                         = t->checkpoint_step >= 0 || t->force ? " with -force" : "";
      char        kept[PETSC_MAX_PATH_LEN + 64] = "no checkpoint was written";
      if (t->checkpoint_step >= 0)
        PetscCall(PetscSNPrintf(kept, sizeof(kept), "the last good checkpoint (step %d) is kept in %s",
                                (int)t->checkpoint_step, t->model_path));
      PetscCheck(t->reduce[mo->nparams + TAIL_FAILED] == 0, t->comm, PETSC_ERR_NOT_CONVERGED,
                 "training step %d failed on %d rank(s) (the reason is printed above by each); %s; fix what "
                 "the reason names and retrain%s",
                 (int)mo->step + 1, (int)t->reduce[mo->nparams + TAIL_FAILED], kept, force);
      SETERRQ(t->comm, PETSC_ERR_FP,
              "training diverged at step %d (non-finite loss or gradient) with -lr %g; %s; lower -lr and "
              "retrain%s",
              (int)mo->step + 1, (double)mo->spec.lr, kept, force);
    }
  }
  /* the staged checkpoint's weights have just given a finite loss and gradient */
  if (t->staged_step >= 0) PetscCall(CommitCheckpoint(t));
  /* 6. identical Adam update on every rank */
  PetscCall(BasisMLPAdamStep(t->mlp, LearningRate(mo, mo->step), mo->step + 1));
  {
    PetscReal *h = mo->history + (size_t)mo->step * BASIS_HISTORY_FIELDS;
    for (int f = 0; f < BASIS_HISTORY_FIELDS; f++) h[f] = t->reduce[mo->nparams + f] / t->size;
  }
  mo->step++;
  if (!t->overlap && mo->step < mo->steps) PetscCall(PrepareBatch(t, NULL));
  PetscFunctionReturn(0);
}

/*
  BasisTrainerRun - train to the planned number of steps, checkpointing on the way.

  Collective. On SIGUSR1/SIGTERM: checkpoint at the end of the step, set
  BasisExitStatus = BASIS_EXIT_CHECKPOINTED and return.
*/
PetscErrorCode BasisTrainerRun(BasisTrainer t)
{
  BasisModel *mo    = &t->model;
  double      start = MPI_Wtime();
  PetscInt    first = mo->step;

  PetscFunctionBeginUser;
  PetscCheck(t->setup, t->comm, PETSC_ERR_ORDER, "call BasisTrainerSetUp first");
  if (mo->step == mo->steps) { /* -resume of a finished run: the file stays as it is */
    PetscCall(PetscPrintf(
        t->comm, "train: %s has finished its %d steps; nothing to train (-steps N, N > %d, trains on)\n",
        t->model_path, (int)mo->steps, (int)mo->steps));
    PetscFunctionReturn(0);
  }
  signal(SIGUSR1, OnStopSignal);
  signal(SIGTERM, OnStopSignal);
  PetscCall(PetscLogStagePush(BASIS_StageTrain));
  PetscCall(PetscPrintf(t->comm, "train: %d steps, batch %d (%d anchors) per rank, %d ranks, network %d",
                        (int)(mo->steps - mo->step), (int)mo->spec.m, (int)mo->spec.l, t->size,
                        (int)mo->spec.widths[0]));
  for (PetscInt i = 1; i <= mo->spec.nlayers; i++)
    PetscCall(PetscPrintf(t->comm, "-%d", (int)mo->spec.widths[i]));
  PetscCall(PetscPrintf(t->comm, " (%lld parameters%s); alignment fits %d + %d batch eigenvectors\n",
                        (long long)mo->nparams,
                        mo->mlp_precision == BASIS_MLP_BF16 ? ", bfloat16 products" : "",
                        (int)mo->spec.graph.K, (int)mo->spec.align.extra));
  if (mo->step < mo->steps) PetscCall(PrepareBatch(t, NULL));
  while (mo->step < mo->steps) {
    PetscBool stop;
    PetscCall(Step(t));
    stop = t->reduce[mo->nparams + TAIL_STOP] > 0 ? PETSC_TRUE : PETSC_FALSE;
    if (t->monitor && (mo->step % t->monitor_every == 0 || mo->step == mo->steps || mo->step == first + 1)) {
      const PetscReal *h   = mo->history + (size_t)(mo->step - 1) * BASIS_HISTORY_FIELDS;
      double           now = MPI_Wtime(), rate = (mo->step - first) / (now - start);
      PetscCall(PetscPrintf(
          t->comm, "  step %6d  loss %.4e  align residual %.3e  cond %.1f  %.2f steps/s  %.0f s left\n",
          (int)mo->step, (double)h[0], (double)h[1], (double)h[2], rate, (mo->steps - mo->step) / rate));
    }
    if (stop) {
      PetscCall(WriteCheckpoint(t));
      PetscCall(PetscPrintf(
          t->comm, "train: stopped by signal after step %d; checkpoint %s written; rerun with -resume\n",
          (int)mo->step, t->model_path));
      BasisExitStatus = BASIS_EXIT_CHECKPOINTED;
      break;
    }
    if (t->checkpoint_every > 0 && mo->step % t->checkpoint_every == 0 && mo->step < mo->steps)
      PetscCall(StageCheckpoint(t));
  }
  if (mo->step == mo->steps) PetscCall(WriteCheckpoint(t));
  PetscCall(PetscLogStagePop());
  {
    double   total = MPI_Wtime() - start;
    PetscInt done  = mo->step - first;
    PetscCall(PetscPrintf(
        t->comm, "train: %d steps in %.1f s (%.3f s/step, %.0f new points/s over all ranks); per step:",
        (int)done, total, done ? total / done : 0.0,
        done ? done * (double)(mo->spec.m - mo->spec.l) * t->size / total : 0.0));
    for (size_t p = 0; p < sizeof(phases) / sizeof(phases[0]); p++) {
      double secs = 0;
      for (int e = 0; e < 2 && phases[p].events[e]; e++) {
        PetscEventPerfInfo info;
        PetscCall(PetscLogEventGetPerfInfo(BASIS_StageTrain, *phases[p].events[e], &info));
        secs += info.time;
      }
      PetscCall(PetscPrintf(t->comm, " %s %.1f ms%s", phases[p].name, done ? 1e3 * secs / done : 0.0,
                            p + 1 < sizeof(phases) / sizeof(phases[0]) ? "," : "\n"));
    }
    if (mo->step == mo->steps) PetscCall(PetscPrintf(t->comm, "train: model written to %s\n", t->model_path));
  }
  PetscFunctionReturn(0);
}

PetscErrorCode BasisTrainerGetModel(BasisTrainer t, const BasisModel **model)
{
  PetscFunctionBeginUser;
  *model = &t->model;
  PetscFunctionReturn(0);
}

PetscErrorCode BasisTrainerDestroy(BasisTrainer *tr)
{
  BasisTrainer t = *tr;

  PetscFunctionBeginUser;
  if (!t) PetscFunctionReturn(0);
  if (t->setup) PetscCall(PetscFree6(t->xraw, t->xn, t->yb, t->phi_b, t->lambda_b, t->T));
  PetscCall(PetscFree(t->reduce));
  PetscCall(BasisSamplerDestroy(&t->sampler));
  PetscCall(BasisBatchGraphDestroy(&t->bg));
  PetscCall(BasisMLPDestroy(&t->mlp));
  PetscCall(BasisShardDestroy(&t->shard));
  if (t->model.params) PetscCall(BasisModelFree(&t->model));
  BasisOutputRelease(&t->model_hold);
  PetscCall(PetscFree(*tr));
  PetscFunctionReturn(0);
}

/* BasisTrainMain - `basis train`. Collective on comm. */
PetscErrorCode BasisTrainMain(MPI_Comm comm)
{
  BasisTrainer t;
  PetscBool    help;

  PetscFunctionBeginUser;
  PetscCall(BasisTrainerCreate(comm, &t));
  PetscCall(BasisTrainerSetFromOptions(t));
  PetscCall(BasisHelpRequested(&help));
  if (!help) {
    PetscCall(BasisTrainerSetUp(t));
    PetscCall(BasisTrainerRun(t));
  }
  PetscCall(BasisTrainerDestroy(&t));
  PetscFunctionReturn(0);
}
