/*
  test_model - the model file (src/model.c) across formats, at 1, 2 and 4 ranks:
    1. tests/data/model-format1.h5, written by the pre-redesign binary (positional
       attributes, format 1; the commands in tests/data/README.md), loads with today's
       reader and every field holds the value that run wrote: scalars exactly, arrays
       through their sums (1e-12 relative) and a few entries exactly. Every parameter in
       that file differs from its default, so a reader that takes a wrong position or a
       default fails here.
    2. round trip of the current format: the model written and read back is bitwise the
       same in every field, and the file carries each parameter as a named attribute.
  Silent on success; every verdict is agreed over the ranks (tests/check.h).
  Usage: test_model PATH/model-format1.h5
*/
#include <basis/model.h>
#include <basis/h5io.h>
#include <slepcsys.h>
#include "check.h"
#include <string.h>

/* One scalar of the fixture: an integer field compared exactly, a real one within rtol
   relative to max(1, |want|) (0: exactly; a NaN fails). */
typedef struct {
  const char *what;
  long long   got, want;
} IntField;
typedef struct {
  const char *what;
  double      got, want, rtol;
} RealField;

static PetscErrorCode ExpectInts(MPI_Comm comm, size_t n, const IntField f[])
{
  PetscFunctionBeginUser;
  for (size_t i = 0; i < n; i++)
    PetscCall(BasisTestCheck(comm, (PetscBool)(f[i].got == f[i].want), "format 1: %s = %lld, expected %lld",
                             f[i].what, f[i].got, f[i].want));
  PetscFunctionReturn(0);
}

static PetscErrorCode ExpectReals(MPI_Comm comm, size_t n, const RealField f[])
{
  PetscFunctionBeginUser;
  for (size_t i = 0; i < n; i++)
    PetscCall(BasisTestCheck(
        comm,
        (PetscBool)(PetscAbsReal(f[i].got - f[i].want) <= f[i].rtol * PetscMax(1.0, PetscAbsReal(f[i].want))),
        "format 1: %s = %.17g, expected %.17g", f[i].what, f[i].got, f[i].want));
  PetscFunctionReturn(0);
}

static double SumF(PetscCount n, const float x[])
{
  double s = 0;
  for (PetscCount i = 0; i < n; i++) s += x[i];
  return s;
}

static double SumD(PetscCount n, const PetscReal x[])
{
  double s = 0;
  for (PetscCount i = 0; i < n; i++) s += x[i];
  return s;
}

/* 1. The format-1 fixture, field by field (values from h5py on the committed file). */
static PetscErrorCode CheckFormat1(MPI_Comm comm, const char *path, BasisModel *mo)
{
  const PetscInt anchors[32] = {17,  32,  40,  46,  50,  86,  107, 112, 115, 117, 125,
                                161, 206, 232, 234, 281, 282, 286, 289, 291, 333, 365,
                                376, 390, 397, 410, 429, 451, 497, 507, 524, 525};
  const uint64_t rng[8]      = {0x6803cf2340c3a492ULL, 0xca05ba51fb9b4d4eULL, 0x16296abd23353df2ULL,
                                0x480a3527d6a62b2fULL, 0x5aae1933994bd55fULL, 0x9f0a6eabffbba7eeULL,
                                0x4e81c49dbe0697a5ULL, 0xaf3b0114428bfa86ULL};
  const double   tol         = 1e-12; /* sums of the same values in another order */

  const int before = BasisTestFailures();

  PetscFunctionBeginUser;
  PetscCall(BasisModelRead(comm, path, mo));
  {
    const IntField  ints[]  = {{"N", mo->spec.N, 600},
                               {"D", mo->spec.D, 8},
                               {"K", mo->spec.graph.K, 4},
                               {"l", mo->spec.l, 32},
                               {"m", mo->spec.m, 128},
                               {"R", mo->spec.R, 200},
                               {"seed", mo->spec.seed, 7},
                               {"step", mo->step, 5},
                               {"steps", mo->steps, 5},
                               {"nranks", mo->nranks, 2},
                               {"knn", mo->spec.graph.knn, 8},
                               {"scale_neighbor", mo->spec.graph.scale_neighbor, 5},
                               {"ransac_iters", mo->spec.align.ransac_iters, 30},
                               {"ransac_points", mo->spec.align.ransac_points, 12},
                               {"align_extra (absent: 0)", mo->spec.align.extra, 0},
                               {"landmarks (absent: 0)", mo->spec.L, 0},
                               {"mlp_precision (absent: float)", mo->mlp_precision, BASIS_MLP_FLOAT},
                               {"scale", mo->spec.graph.scale, BASIS_SCALE_MEDIAN},
                               {"laplacian", mo->spec.graph.laplacian, BASIS_LAPLACIAN_RW},
                               {"align", mo->spec.align.type, BASIS_ALIGN_RANSAC},
                               {"sample", mo->spec.sample, BASIS_SAMPLE_SHARD}};
    const RealField reals[] = {{"input scale", mo->scale, 0.23829636429990095, 0},
                               {"target_scale", mo->target_scale, 14.142135623730951, 0},
                               {"lr", mo->spec.lr, 0.002, 0},
                               {"lr_final", mo->spec.lr_final, 0.0005, 0},
                               {"ransac_tol", mo->spec.align.ransac_tol, 0.2, 0},
                               {"max_cond", mo->spec.align.max_cond, 1e7, 0}};
    const IntField  shape[] = {{"nlayers", mo->spec.nlayers, 2},
                               {"widths[0]", mo->spec.widths[0], 8},
                               {"widths[1]", mo->spec.widths[1], 8},
                               {"widths[2]", mo->spec.widths[2], 4},
                               {"nparams", mo->nparams, 108}};
    PetscCall(ExpectInts(comm, PETSC_STATIC_ARRAY_LENGTH(ints), ints));
    PetscCall(ExpectReals(comm, PETSC_STATIC_ARRAY_LENGTH(reals), reals));
    PetscCall(ExpectInts(comm, PETSC_STATIC_ARRAY_LENGTH(shape), shape));
  }
  /* the arrays' sizes depend on the above (failures are agreed: every rank returns here) */
  if (BasisTestFailures() != before) PetscFunctionReturn(0);
  for (PetscInt i = 0; i < 32; i++)
    PetscCall(BasisTestCheck(comm, (PetscBool)(mo->anchors[i] == anchors[i]),
                             "format 1: anchors[%d] = %lld, expected %lld", (int)i, (long long)mo->anchors[i],
                             (long long)anchors[i]));
  for (PetscInt i = 0; i < 8; i++)
    PetscCall(BasisTestCheck(comm, (PetscBool)(mo->rng[i] == rng[i]), "format 1: rng[%d] differs", (int)i));
  {
    const RealField arrays[] = {
        {"params[0]", mo->params[0], -0.0581890232861042, 0},
        {"mean[0]", mo->mean[0], -0.11889425665140152, 0},
        {"lambda[3]", mo->lambda_ref[3], 0.0417457834448286, 0},
        {"sum params", SumF(mo->nparams, mo->params), 1.6051523047499359, tol},
        {"sum adam_m", SumF(mo->nparams, mo->adam_m), -0.56891403628105763, tol},
        {"sum adam_v", SumF(mo->nparams, mo->adam_v), 0.059928047725227973, tol},
        {"sum mean", SumF(mo->spec.D, mo->mean), -1.312104863114655, tol},
        {"sum anchor_x", SumF(32 * 8, mo->anchor_x), -43.938649803109001, tol},
        {"sum phi_ref", SumD(32 * 4, mo->phi_ref), 2.2902386653805591, tol},
        {"sum lambda_ref", SumD(4, mo->lambda_ref), 0.06233228080473352, tol},
        {"sum out_shift", SumD(4, mo->out_shift), 1.0121520567663884, tol},
        {"sum out_scale", SumD(4, mo->out_scale), 3.2066427078986957, tol},
        {"sum history", SumD(5 * BASIS_HISTORY_FIELDS, mo->history), 183.09260017797351, tol}};
    PetscCall(ExpectReals(comm, PETSC_STATIC_ARRAY_LENGTH(arrays), arrays));
  }
  {
    const int had = BasisTestFailures();
    PetscCall(
        BasisTestCheck(comm, (PetscBool)(mo->ortho_R != NULL), "format 1: /orthonormalize/R was not read"));
    PetscCall(BasisTestCheck(comm,
                             (PetscBool)(!mo->ortho_landmarks && mo->ortho_landmark_weight == 0 &&
                                         mo->ortho_landmark_values == BASIS_LANDMARK_VALUES_NETWORK),
                             "format 1: R read as computed with the landmarks' columns"));
    if (BasisTestFailures() == had) { /* agreed: R was read on every rank */
      const RealField r = {"sum ortho_R", SumD(16, mo->ortho_R), 24.834079655815792, tol};
      PetscCall(ExpectReals(comm, 1, &r));
    }
  }
  PetscFunctionReturn(0);
}

/* Bitwise comparison of two models, field by field. */
static PetscErrorCode CompareModels(MPI_Comm comm, const BasisModel *a, const BasisModel *b)
{
  const PetscInt K = a->spec.graph.K;
  int            same;

  PetscFunctionBeginUser;
#define SAME(x)          ((a)->x == (b)->x)
#define SAME_SPEC(x)     SAME(spec.x)
#define SAME_ARRAY(x, n) (!memcmp((a)->x, (b)->x, sizeof(*(a)->x) * (size_t)(n)))
  same = SAME_SPEC(N) && SAME_SPEC(D) && SAME_SPEC(graph.K) && SAME_SPEC(l) && SAME_SPEC(m) && SAME_SPEC(R) &&
         SAME_SPEC(L) && SAME_SPEC(seed) && SAME(step) && SAME(steps) && SAME(nranks) &&
         SAME_SPEC(graph.knn) && SAME_SPEC(graph.scale_neighbor) && SAME_SPEC(graph.scale) &&
         SAME_SPEC(graph.laplacian) && SAME_SPEC(align.type) && SAME_SPEC(align.ransac_iters) &&
         SAME_SPEC(align.ransac_points) && SAME_SPEC(align.extra) && SAME_SPEC(align.ransac_tol) &&
         SAME_SPEC(align.max_cond) && SAME_SPEC(sample) && SAME(scale) && SAME(target_scale) &&
         SAME(mlp_precision) && SAME_SPEC(lr) && SAME_SPEC(lr_final) && SAME_SPEC(nlayers) && SAME(nparams) &&
         SAME_ARRAY(spec.widths, a->spec.nlayers + 1);
  if (same)
    same = SAME_ARRAY(params, a->nparams) && SAME_ARRAY(adam_m, a->nparams) &&
           SAME_ARRAY(adam_v, a->nparams) && SAME_ARRAY(mean, a->spec.D) && SAME_ARRAY(anchors, a->spec.l) &&
           SAME_ARRAY(anchor_x, a->spec.l * a->spec.D) && SAME_ARRAY(phi_ref, a->spec.l * K) &&
           SAME_ARRAY(lambda_ref, K) && SAME_ARRAY(landmark_x, a->spec.L * a->spec.D) &&
           SAME(has_landmark_phi) && (!a->has_landmark_phi || SAME_ARRAY(landmark_phi, a->spec.L * K)) &&
           SAME_ARRAY(out_shift, K) && SAME_ARRAY(out_scale, K) && SAME_ARRAY(rng, 4 * a->nranks) &&
           SAME_ARRAY(history, PetscMax(a->steps, 1) * BASIS_HISTORY_FIELDS) && !a->ortho_R == !b->ortho_R &&
           (!a->ortho_R || (SAME_ARRAY(ortho_R, K * K) && SAME(ortho_landmarks) &&
                            SAME(ortho_landmark_weight) && SAME(ortho_landmark_values)));
#undef SAME
#undef SAME_SPEC
#undef SAME_ARRAY
  PetscCall(
      BasisTestCheck(comm, (PetscBool)same, "round trip: the model read back differs from the one written"));
  PetscFunctionReturn(0);
}

/* The written file names its parameters: a few of them read back by name, and no
   attribute whose name spells a schema. */
static PetscErrorCode CheckNamedAttributes(MPI_Comm comm, const char *path)
{
  hid_t     f;
  PetscInt  n = 1, v = 0;
  char      s[32] = "";
  PetscBool found;

  PetscFunctionBeginUser;
  PetscCall(BasisH5OpenRead(comm, path, "model", &f));
  PetscCall(BasisH5AttrReadInt(f, "format_version", &n, &v));
  PetscCall(BasisTestCheck(comm, (PetscBool)(n == 1 && v == BASIS_MODEL_FORMAT),
                           "round trip: %s does not name its parameters (format_version)", path));
  n = 1;
  PetscCall(BasisH5AttrReadInt(f, "batch", &n, &v));
  PetscCall(BasisTestCheck(comm, (PetscBool)(n == 1 && v == 128),
                           "round trip: %s does not name its parameters (batch)", path));
  n = 1;
  PetscCall(BasisH5AttrReadInt(f, "align_extra", &n, &v));
  PetscCall(BasisTestCheck(comm, (PetscBool)(n == 1 && v == 3),
                           "round trip: %s does not name its parameters (align_extra)", path));
  n = 1;
  PetscCall(BasisH5AttrReadInt(f, "landmarks", &n, &v));
  PetscCall(BasisTestCheck(comm, (PetscBool)(n == 1 && v == 5),
                           "round trip: %s does not name its parameters (landmarks)", path));
  PetscCall(BasisH5AttrReadString(f, "laplacian", sizeof(s), s, &found));
  PetscCall(BasisTestCheck(comm, (PetscBool)(found && !strcmp(s, "rw")),
                           "round trip: %s does not name its parameters (laplacian)", path));
  PetscCall(BasisTestCheck(comm,
                           (PetscBool)(H5Aexists(f, "format_N_D_K_l_m_R_seed_step_steps_nranks_knn_"
                                                    "scaleneighbor_ransaciters_ransacpoints") == 0 &&
                                       H5Aexists(f, "scale_targetscale_lr_ransactol_maxcond") == 0),
                           "round trip: %s does not name its parameters (a positional attribute)", path));
  BasisCallH5(H5Fclose(f));
  PetscFunctionReturn(0);
}

int main(int argc, char **argv)
{
  BasisModel  v1, back;
  char        path[PETSC_MAX_PATH_LEN];
  PetscMPIInt size;

  PetscCall(SlepcInitialize(&argc, &argv, NULL, NULL));
  PetscCall(BasisInitialize());
  PetscCheck(argc > 1, PETSC_COMM_WORLD, PETSC_ERR_ARG_WRONG, "usage: test_model PATH/model-format1.h5");
  PetscCallMPI(MPI_Comm_size(PETSC_COMM_WORLD, &size));
  PetscCall(CheckFormat1(PETSC_COMM_WORLD, argv[1], &v1));
  if (!BasisTestFailures()) { /* agreed: every rank writes, or none */
    const char *inputs[] = {argv[1], NULL};
    PetscCall(PetscSNPrintf(path, sizeof(path), "test_model_np%d.h5", size));
    v1.spec.align.extra      = 3; /* fields format 1 lacks, written and read back by name */
    v1.spec.L                = 5;
    v1.ortho_landmarks       = PETSC_TRUE;
    v1.ortho_landmark_weight = 0.625;
    PetscCall(PetscFree(v1.landmark_x));
    PetscCall(PetscMalloc1(5 * v1.spec.D, &v1.landmark_x));
    for (PetscInt i = 0; i < 5 * v1.spec.D; i++) v1.landmark_x[i] = 0.25f * (float)i - 3.0f;
    PetscCall(PetscFree(v1.landmark_phi));
    PetscCall(PetscMalloc1(5 * v1.spec.graph.K, &v1.landmark_phi));
    for (PetscInt i = 0; i < 5 * v1.spec.graph.K; i++) v1.landmark_phi[i] = 0.125 * (PetscReal)i - 1.0;
    v1.has_landmark_phi      = PETSC_TRUE;
    v1.ortho_landmark_values = BASIS_LANDMARK_VALUES_REFERENCE;
    PetscCall(BasisModelWrite(PETSC_COMM_WORLD, path, PETSC_TRUE, inputs, &v1));
    PetscCall(BasisModelRead(PETSC_COMM_WORLD, path, &back));
    PetscCall(CompareModels(PETSC_COMM_WORLD, &v1, &back));
    PetscCall(CheckNamedAttributes(PETSC_COMM_WORLD, path));
    PetscCall(BasisModelFree(&back));
    /* landmarks without the reference's values there (a model trained before they were
       kept): none written, none read back, and R's values recorded as the network's */
    v1.has_landmark_phi      = PETSC_FALSE;
    v1.ortho_landmark_values = BASIS_LANDMARK_VALUES_NETWORK;
    PetscCall(BasisModelWrite(PETSC_COMM_WORLD, path, PETSC_TRUE, inputs, &v1));
    PetscCall(BasisModelRead(PETSC_COMM_WORLD, path, &back));
    PetscCall(CompareModels(PETSC_COMM_WORLD, &v1, &back));
    PetscCall(BasisModelFree(&back));
  }
  PetscCall(BasisModelFree(&v1));
  PetscCall(SlepcFinalize());
  return BasisTestFailures() ? 1 : 0;
}
