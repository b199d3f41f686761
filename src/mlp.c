/*
  mlp.c - the network f: R^D -> R^K of DESIGN.md step 5: a ReLU multilayer perceptron in
  float32, its mean-squared-error loss, backpropagation and Adam.

  Layout: widths[0..L] = D, hidden..., K for L weight layers. All parameters live in one
  contiguous float buffer, layer by layer W_0, b_0, W_1, b_1, ..., with W_l stored
  [out][in] row-major (PyTorch's nn.Linear.weight layout). The gradient and the two Adam
  moments are buffers of the same layout, so the gradient is one MPI_Allreduce and a
  checkpoint is four arrays. Activations are row-major [n][width]:
    forward   Z_{l+1} = H_l W_l^T (one sgemm, NoTrans x Trans), H_{l+1} = relu(Z + b_l)
    backward  dW_l = dZ_l^T H_l (Trans x NoTrans), db_l = dZ_l^T 1 (one sgemv),
              dH_l = dZ_l W_l (NoTrans x NoTrans), dZ_{l-1} = dH_l * [H_l > 0]
  Measured with serial OpenBLAS (EPYC, one thread), W stored [out][in] or [in][out] runs
  at the same speed (about 95 GFLOP/s for both test nets), so the PyTorch layout wins on
  familiarity. The bias is written into Z before the GEMM, which adds into it (beta = 1),
  and ReLU is one vectorised pass after it; the ReLU mask comes from the stored
  post-activation (H > 0 iff Z > 0), so only H is kept for backward. A training step is
  within ~10% of its bare GEMMs; float64 GEMMs measured 2x slower, hence float32.

  Rows go through the network in passes of at most BASIS_MLP_CHUNK_ROWS: LossBackward runs
  forward and backward on one pass at a time and accumulates the weight gradients across
  passes (the GEMMs' beta = 1), so the activation buffers hold one pass whatever the batch,
  and the cost per row does not grow with the batch (measured below). All memory is
  allocated in BasisMLPCreate; Forward, LossBackward and AdamStep allocate nothing. Not
  collective: every rank owns a replica, and AdamStep is deterministic, so identical
  gradients give identical weights.

  bfloat16 (-mlp_precision bf16, BasisMLPSetPrecision): the three products of a layer are
  oneDNN matmuls with bfloat16 inputs and float sums; parameters, gradient and Adam moments
  stay float32 (the master copy), so only the products' inputs are rounded (relative
  2^-8 at most). Each Forward and LossBackward call first rounds the weights W_l (not the
  biases) into a bfloat16 copy: the parameters change behind the network's back (Adam,
  the allreduce, checkpoints through BasisMLPGetArrays), and a copy costs one pass over
  them.
    forward   Hb_0 = bf16(x); Hb_{l+1} = relu(Hb_l W_l^T + b_l) in bfloat16 (bias and ReLU
              fused into the matmul), the last layer's output in float
    backward  dZb = bf16(dZ); dW_l = dZb^T Hb_l (float, summed across passes by a sum
              post-op); db_l = dZ^T 1 (sgemv on the float dZ, as in float);
              dH = dZb Wb_l (float); dZ_{l-1} = dH * [Hb_l > 0]
  One primitive per (product, layer, rows, accumulate), made at its first use and kept,
  as in bf16gram.c: after the first step nothing is allocated. The float path is the
  code above unchanged, so float results are bitwise what they were. Run on one OpenMP
  thread, the rank's one core, as the serial OpenBLAS.
*/
#include <basis/mlp.h>
#include <basis/bf16gram.h>
#include <basis/log.h>
#include <cblas.h>
#include <math.h>
#include <oneapi/dnnl/dnnl.h>
#include <omp.h>
#include <unistd.h>

/* Rows per forward/backward pass. The 50-512-512-1024-10 net of docs/performance.md, one
   process, fwd + bwd per row: 48.1 us in one pass of 1024 rows, 50.5 us in one pass of
   4096 (activations of 16 MiB per layer stream through memory in the elementwise passes),
   47.9 / 48.2 / 49.3 us for 4096 rows in passes of 1024 / 512 / 256. */
#define BASIS_MLP_CHUNK_ROWS 1024

const char *const BasisMLPPrecisions[] = {"float", "bf16", "auto", "BasisMLPPrecision", "BASIS_MLP_", NULL};

/* The three products of a layer in bfloat16 (the dataflow at the top of the file). */
typedef enum { MM_FORWARD, MM_BACKWARD_WEIGHTS, MM_BACKWARD_DATA } MatmulKind;
static const char *const MatmulKinds[] = {"forward", "backward-weights", "backward-data"};

/* One cached oneDNN matmul and its memory objects (data handles set per call). */
typedef struct {
  MatmulKind       kind;
  PetscInt         l, rows;
  PetscBool        accumulate; /* dst += product (sum post-op) */
  dnnl_primitive_t prim;
  dnnl_memory_t    src, wei, bias, dst; /* bias: NULL but for MM_FORWARD */
} Matmul;

struct _p_BasisMLP {
  PetscInt    L;         /* number of weight layers */
  PetscInt   *widths;    /* [L+1] */
  PetscInt    max_batch; /* the most rows Forward and LossBackward accept */
  PetscInt    chunk;     /* rows the activation buffers hold: one pass */
  PetscInt    max_width; /* max over widths[1..L]: size of one backward delta row */
  PetscCount  nparams;
  PetscCount *offset; /* [L] offset of W_l in the parameter buffers; b_l follows W_l */
  float      *params, *grad, *adam_m, *adam_v;
  float     **H;        /* H[l], l = 1..L-1: post-ReLU activations [chunk][widths[l]] */
  float      *delta[2]; /* ping-pong backward buffers [chunk][max_width] */
  float      *ones;     /* [chunk] ones: bias gradients as one GEMV */
  float      *work;     /* the one allocation behind H, delta and ones */
  double      bytes;    /* the float state's size in bytes (BasisMLPCreate's memory check) */
  /* -mlp_precision bf16 (BasisMLPSetPrecision); all NULL / 0 in float */
  BasisMLPPrecision precision; /* BASIS_MLP_FLOAT or BASIS_MLP_BF16 */
  dnnl_engine_t     engine;
  dnnl_stream_t     stream;
  PetscCount       *woff;  /* [L] offset of W_l in Wb */
  uint16_t         *Wb;    /* the weights W_l [out][in] in bfloat16, one after another */
  uint16_t        **Hb;    /* Hb[l], l = 0..L-1: layer l's input in bfloat16 [chunk][widths[l]] */
  uint16_t         *dZb;   /* [chunk][max_width] the backward delta in bfloat16 */
  uint16_t         *bwork; /* the one allocation behind Wb, Hb and dZb */
  Matmul           *mm;    /* the primitives made so far */
  PetscInt          nmm, maxmm;
};

/* Refuse a network of nparams parameters (input width D, output K) that needs bytes per
   rank, more than this machine's memory, before asking for them: with the size and the
   option to lower. what: "" for the float state, or what a precision adds to it. Not
   collective; the error is returned, not raised, for the caller to free first. */
static PetscErrorCode CheckMemory(PetscInt D, PetscInt K, PetscCount nparams, double bytes, const char *what)
{
  const double mem = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE);

  if (nparams > PETSC_MAX_INT || (mem > 0 && bytes > mem))
    return PetscError(PETSC_COMM_SELF, __LINE__, PETSC_FUNCTION_NAME, __FILE__, PETSC_ERR_ARG_OUTOFRANGE,
                      PETSC_ERROR_INITIAL,
                      "the network (-hidden widths between D = %d and -dim %d) has %.3g parameters and needs "
                      "%.1f GiB%s per rank, more than this machine's %.1f GiB%s; lower -hidden",
                      (int)D, (int)K, (double)nparams, bytes / 1073741824.0, what, mem / 1073741824.0,
                      nparams > PETSC_MAX_INT ? " (and more than 2^31 parameters)" : "");
  return 0;
}

/*
  BasisMLPCreate - allocate a network with the given layer widths.

  Not collective.

  Input:
    nlayers   - L, the number of weight layers (>= 1)
    widths    - [L+1] D, hidden widths..., K
    max_batch - the largest n that Forward and LossBackward will be given

  Output:
    mlp - the network; parameters are zero until BasisMLPInitialize or a checkpoint fills them
*/
PetscErrorCode BasisMLPCreate(PetscInt nlayers, const PetscInt widths[], PetscInt max_batch, BasisMLP *mlp)
{
  BasisMLP   net;
  PetscCount nparams = 0, nact = 0;
  PetscInt   max_width = 0;

  PetscFunctionBeginUser;
  PetscCheck(nlayers >= 1, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE,
             "The network needs at least one layer, got %d", (int)nlayers);
  PetscCheck(max_batch >= 1, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "max_batch %d must be positive",
             (int)max_batch);
  for (PetscInt l = 0; l <= nlayers; l++)
    PetscCheck(widths[l] >= 1, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE,
               "Layer width %d (entry %d of D, -hidden..., -dim) must be positive", (int)widths[l], (int)l);
  PetscCall(PetscNew(&net));
  net->L         = nlayers;
  net->max_batch = max_batch;
  PetscCall(PetscMalloc2(nlayers + 1, &net->widths, nlayers, &net->offset));
  PetscCall(PetscArraycpy(net->widths, widths, nlayers + 1));
  for (PetscInt l = 0; l < nlayers; l++) {
    net->offset[l] = nparams;
    nparams += (PetscCount)widths[l + 1] * (widths[l] + 1);
    max_width = PetscMax(max_width, widths[l + 1]);
  }
  net->chunk = PetscMin(max_batch, BASIS_MLP_CHUNK_ROWS);
  for (PetscInt l = 1; l < nlayers; l++) nact += (PetscCount)net->chunk * widths[l];
  {
    /* weights, gradient and two Adam moments, plus activations: refuse what cannot fit
       before asking for it, with the size and the option to lower */
    double bytes = 4.0 * sizeof(float) * (double)nparams +
                   sizeof(float) * (double)(nact + (2 * (PetscCount)max_width + 1) * net->chunk);
    PetscErrorCode ierr = CheckMemory(widths[0], widths[nlayers], nparams, bytes, "");
    net->bytes          = bytes;
    if (ierr) {
      PetscCall(PetscFree2(net->widths, net->offset));
      PetscCall(PetscFree(net));
      return ierr;
    }
  }
  net->nparams   = nparams;
  net->max_width = max_width;
  PetscCall(
      PetscCalloc4(nparams, &net->params, nparams, &net->grad, nparams, &net->adam_m, nparams, &net->adam_v));
  PetscCall(PetscMalloc1(nlayers, &net->H));
  PetscCall(PetscMalloc1(nact + (2 * (PetscCount)max_width + 1) * net->chunk, &net->work));
  net->H[0] = NULL; /* H_0 is the caller's input */
  nact      = 0;
  for (PetscInt l = 1; l < nlayers; l++) {
    net->H[l] = net->work + nact;
    nact += (PetscCount)net->chunk * widths[l];
  }
  net->delta[0] = net->work + nact;
  net->delta[1] = net->delta[0] + (PetscCount)net->chunk * max_width;
  net->ones     = net->delta[1] + (PetscCount)net->chunk * max_width;
  for (PetscInt i = 0; i < net->chunk; i++) net->ones[i] = 1.0f;
  *mlp = net;
  PetscFunctionReturn(0);
}

/* Free the bfloat16 state (primitives, buffers, engine); the network is float after it. */
static PetscErrorCode Bf16Free(BasisMLP mlp)
{
  PetscFunctionBeginUser;
  for (PetscInt t = 0; t < mlp->nmm; t++) {
    Matmul *m = &mlp->mm[t];
    BasisCallDnnl(dnnl_primitive_destroy(m->prim));
    BasisCallDnnl(dnnl_memory_destroy(m->src));
    BasisCallDnnl(dnnl_memory_destroy(m->wei));
    if (m->bias) BasisCallDnnl(dnnl_memory_destroy(m->bias));
    BasisCallDnnl(dnnl_memory_destroy(m->dst));
  }
  PetscCall(PetscFree(mlp->mm));
  mlp->nmm = mlp->maxmm = 0;
  PetscCall(PetscFree(mlp->bwork));
  PetscCall(PetscFree2(mlp->woff, mlp->Hb));
  mlp->Wb = mlp->dZb = NULL;
  if (mlp->stream) BasisCallDnnl(dnnl_stream_destroy(mlp->stream));
  if (mlp->engine) BasisCallDnnl(dnnl_engine_destroy(mlp->engine));
  mlp->stream    = NULL;
  mlp->engine    = NULL;
  mlp->precision = BASIS_MLP_FLOAT;
  PetscFunctionReturn(0);
}

/*
  BasisMLPPrecisionResolve - -mlp_precision auto|bf16 made concrete for this machine.

  Collective on comm (every rank ends with the same precision).

  Input/Output:
    precision - auto: bf16 when every rank's CPU has bfloat16 dot-product instructions
                (AVX512-BF16 or AMX, and oneDNN has a bfloat16 matmul there), float
                otherwise; bf16: the same, and where some rank lacks them rank 0 says once
                that the network uses float; float stays float

  Notes:
    All ranks use one precision, so the model records it (the gradients are averaged
    either way, so replicas stay identical). DNNL_MAX_CPU_ISA=AVX2 in the environment
    makes oneDNN report no bfloat16 instructions (tests/cli_mlp_precision.sh).
*/
PetscErrorCode BasisMLPPrecisionResolve(MPI_Comm comm, BasisMLPPrecision *precision)
{
  PetscBool     native;
  const char   *isa;
  BasisBf16Gram probe;
  int           lacks, any;

  PetscFunctionBeginUser;
  if (*precision == BASIS_MLP_FLOAT) PetscFunctionReturn(0);
  PetscCall(BasisBf16GramNative(&native, &isa));
  if (native) { /* ... and oneDNN has a bfloat16 matmul here */
    PetscCall(BasisBf16GramCreate(&probe));
    native = probe ? PETSC_TRUE : PETSC_FALSE;
    PetscCall(BasisBf16GramDestroy(&probe));
  }
  lacks = !native;
  PetscCallMPI(MPI_Allreduce(&lacks, &any, 1, MPI_INT, MPI_MAX, comm));
  if (any && *precision == BASIS_MLP_BF16) /* rank 0 prints: its own ISA if it is one of those without */
    PetscCall(PetscPrintf(
        comm,
        "-mlp_precision bf16: %s%s%s has no bfloat16 dot-product instructions; the network uses float\n",
        lacks ? "this CPU (oneDNN: " : "some rank's CPU", lacks ? isa : "", lacks ? ")" : ""));
  *precision = any ? BASIS_MLP_FLOAT : BASIS_MLP_BF16;
  PetscFunctionReturn(0);
}

/*
  BasisMLPSetPrecision - run the network's products in float32 or in bfloat16.

  Not collective.

  Input:
    precision - BASIS_MLP_FLOAT (the default after Create) or BASIS_MLP_BF16; auto is
                BasisMLPPrecisionResolve's to decide, before this

  Notes:
    Call it after Create, before the first Forward or LossBackward. bf16 allocates the
    bfloat16 weights, activations (one pass) and delta, and a oneDNN engine (one OpenMP
    thread); it does not check the CPU: oneDNN emulates bfloat16 on AVX-512 CPUs without
    the instructions, slowly. The command-line route is BasisMLPPrecisionResolve, which
    does check, then this. Parameters, gradient and Adam moments are float32 in both.
*/
PetscErrorCode BasisMLPSetPrecision(BasisMLP mlp, BasisMLPPrecision precision)
{
  const PetscInt *w  = mlp->widths;
  PetscCount      nw = 0, nh = 0;

  PetscFunctionBeginUser;
  PetscCheck(precision == BASIS_MLP_FLOAT || precision == BASIS_MLP_BF16, PETSC_COMM_SELF,
             PETSC_ERR_ARG_OUTOFRANGE, "network precision %d is neither float nor bf16 (resolve auto first)",
             (int)precision);
  if (precision == mlp->precision) PetscFunctionReturn(0);
  PetscCall(Bf16Free(mlp));
  if (precision == BASIS_MLP_FLOAT) PetscFunctionReturn(0);
  PetscCall(PetscMalloc2(mlp->L, &mlp->woff, mlp->L, &mlp->Hb)); /* Bf16Free frees them on error */
  for (PetscInt l = 0; l < mlp->L; l++) {
    mlp->woff[l] = nw;
    nw += (PetscCount)w[l + 1] * w[l];
    nh += (PetscCount)mlp->chunk * w[l];
  }
  { /* the bfloat16 copies on top of the float state BasisMLPCreate checked */
    const double bytes =
        mlp->bytes + sizeof(uint16_t) * (double)(nw + nh + (PetscCount)mlp->chunk * mlp->max_width);
    PetscCall(CheckMemory(w[0], w[mlp->L], mlp->nparams, bytes, " with its bfloat16 copies"));
  }
  PetscCall(PetscMalloc1(nw + nh + (PetscCount)mlp->chunk * mlp->max_width, &mlp->bwork));
  mlp->Wb = mlp->bwork;
  nh      = nw;
  for (PetscInt l = 0; l < mlp->L; l++) {
    mlp->Hb[l] = mlp->bwork + nh;
    nh += (PetscCount)mlp->chunk * w[l];
  }
  mlp->dZb = mlp->bwork + nh;
  omp_set_num_threads(1);
  BasisCallDnnl(dnnl_engine_create(&mlp->engine, dnnl_cpu, 0));
  BasisCallDnnl(dnnl_stream_create(&mlp->stream, mlp->engine, dnnl_stream_default_flags));
  mlp->precision = BASIS_MLP_BF16;
  PetscFunctionReturn(0);
}

/* BasisMLPGetPrecision - BASIS_MLP_FLOAT or BASIS_MLP_BF16 (never auto). Not collective. */
PetscErrorCode BasisMLPGetPrecision(BasisMLP mlp, BasisMLPPrecision *precision)
{
  PetscFunctionBeginUser;
  *precision = mlp->precision;
  PetscFunctionReturn(0);
}

/* BasisMLPDestroy - free the network; NULL-tolerant. Not collective. */
PetscErrorCode BasisMLPDestroy(BasisMLP *mlp)
{
  PetscFunctionBeginUser;
  if (!mlp || !*mlp) PetscFunctionReturn(0);
  PetscCall(Bf16Free(*mlp));
  PetscCall(PetscFree4((*mlp)->params, (*mlp)->grad, (*mlp)->adam_m, (*mlp)->adam_v));
  PetscCall(PetscFree((*mlp)->work));
  PetscCall(PetscFree((*mlp)->H));
  PetscCall(PetscFree2((*mlp)->widths, (*mlp)->offset));
  PetscCall(PetscFree(*mlp));
  PetscFunctionReturn(0);
}

/*
  BasisMLPInitialize - draw initial weights and zero the gradient and Adam moments.

  Not collective; ranks that pass the same stream get the same network.

  Input/Output:
    rng - advanced by one draw per parameter, in buffer order (W_0, b_0, W_1, ...)

  Notes:
    PyTorch's default nn.Linear initialisation, which the authors' code uses:
    kaiming_uniform_(a = sqrt(5)) for W, i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and the
    same bound for b. (He-uniform with gain sqrt(2/(1 + a^2)) = sqrt(1/3).)
*/
PetscErrorCode BasisMLPInitialize(BasisMLP mlp, BasisRng *rng)
{
  PetscFunctionBeginUser;
  for (PetscInt l = 0; l < mlp->L; l++) {
    PetscCount n     = (PetscCount)mlp->widths[l + 1] * (mlp->widths[l] + 1);
    double     bound = 1.0 / sqrt((double)mlp->widths[l]);
    float     *p     = mlp->params + mlp->offset[l];

    for (PetscCount i = 0; i < n; i++) p[i] = (float)(bound * (2.0 * BasisRngUniform(rng) - 1.0));
  }
  PetscCall(PetscArrayzero(mlp->grad, mlp->nparams));
  PetscCall(PetscArrayzero(mlp->adam_m, mlp->nparams));
  PetscCall(PetscArrayzero(mlp->adam_v, mlp->nparams));
  PetscFunctionReturn(0);
}

/*
  BasisMLPGetSizes - the architecture and the length of the flat buffers. Not collective.

  Output (each may be NULL):
    nlayers - L
    widths  - [L+1] D, hidden..., K (owned by mlp)
    nparams - length of each of the four buffers of BasisMLPGetArrays
*/
PetscErrorCode BasisMLPGetSizes(BasisMLP mlp, PetscInt *nlayers, const PetscInt **widths, PetscCount *nparams)
{
  PetscFunctionBeginUser;
  if (nlayers) *nlayers = mlp->L;
  if (widths) *widths = mlp->widths;
  if (nparams) *nparams = mlp->nparams;
  PetscFunctionReturn(0);
}

/*
  BasisMLPGetArrays - the flat buffers, for the gradient allreduce and checkpoints.

  Not collective. Each is [nparams] floats, W_0 [out][in], b_0 [out], W_1, b_1, ...; the
  arrays stay owned by mlp and may be read or written in place. Any output may be NULL.
*/
PetscErrorCode BasisMLPGetArrays(BasisMLP mlp, float **params, float **grad, float **adam_m, float **adam_v)
{
  PetscFunctionBeginUser;
  if (params) *params = mlp->params;
  if (grad) *grad = mlp->grad;
  if (adam_m) *adam_m = mlp->adam_m;
  if (adam_v) *adam_v = mlp->adam_v;
  PetscFunctionReturn(0);
}

/* Elementwise loops run their first multiple of BASIS_MLP_VB iterations in a separate
   loop: GCC's -O2 vectoriser (the "very cheap" cost model) only vectorises loops that need
   no scalar epilogue, and this form gives it one (16 = one AVX-512 vector of floats, two
   AVX2 ones). The scalar tail handles the rest with the same expression. */
#define BASIS_MLP_VB 16

/* x = max(x, 0) */
static inline void Relu(PetscCount n, float *restrict x)
{
  PetscCount nb = n & ~(PetscCount)(BASIS_MLP_VB - 1), i;

  for (i = 0; i < nb; i++) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
  for (; i < n; i++) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

/* d = d where h > 0, else 0 (ReLU backward from the post-activation h) */
static inline void ReluMask(PetscCount n, const float *restrict h, float *restrict d)
{
  PetscCount nb = n & ~(PetscCount)(BASIS_MLP_VB - 1), i;

  for (i = 0; i < nb; i++) d[i] = h[i] > 0.0f ? d[i] : 0.0f;
  for (; i < n; i++) d[i] = h[i] > 0.0f ? d[i] : 0.0f;
}

/* Z[n][out] = b in every row: the bias enters through the GEMM's beta = 1, which also
   spares OpenBLAS the pass that zeroes C for beta = 0. */
static inline PetscErrorCode FillBias(PetscInt n, PetscInt out, const float b[], float Z[])
{
  PetscFunctionBeginUser;
  for (PetscInt i = 0; i < n; i++) PetscCall(PetscArraycpy(Z + (PetscCount)i * out, b, out));
  PetscFunctionReturn(0);
}

/* Forward through all layers for one pass of n <= mlp->chunk rows; the linear output goes
   to y [n][K]. Hidden activations stay in mlp->H for backward. */
static PetscErrorCode ForwardInternal(BasisMLP mlp, PetscInt n, const float x[], float y[])
{
  const PetscInt *w     = mlp->widths;
  PetscLogDouble  flops = 0.0;

  PetscFunctionBeginUser;
  PetscCall(PetscLogEventBegin(BASIS_Forward, 0, 0, 0, 0));
  for (PetscInt l = 0; l < mlp->L; l++) {
    const PetscInt in = w[l], out = w[l + 1];
    const float   *Hin = l ? mlp->H[l] : x, *W = mlp->params + mlp->offset[l], *b = W + (PetscCount)out * in;
    float         *Z = l + 1 < mlp->L ? mlp->H[l + 1] : y;

    PetscCall(FillBias(n, out, b, Z));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0f, Hin, in, W, in, 1.0f, Z, out);
    if (l + 1 < mlp->L) Relu((PetscCount)n * out, Z);
    flops += 2.0 * n * in * out;
  }
  PetscCall(PetscLogFlops(flops));
  PetscCall(PetscLogEventEnd(BASIS_Forward, 0, 0, 0, 0));
  PetscFunctionReturn(0);
}

/* A 2-D memory descriptor of the given sizes, strides and type. */
static PetscErrorCode Desc(dnnl_memory_desc_t *md, dnnl_dim_t d0, dnnl_dim_t d1, dnnl_dim_t s0, dnnl_dim_t s1,
                           dnnl_data_type_t type)
{
  dnnl_dims_t dims = {d0, d1}, strides = {s0, s1};

  PetscFunctionBeginUser;
  BasisCallDnnl(dnnl_memory_desc_init_by_strides(md, 2, dims, type, strides));
  PetscFunctionReturn(0);
}

/* Make the matmul of one (kind, layer, rows, accumulate), all row-major, in = widths[l],
   out = widths[l+1], r = rows:
     MM_FORWARD          Hb_l [r][in] x W_l^T (the bfloat16 W_l [out][in] read with strides
                         1, in) + b_l [1][out] -> [r][out], ReLU fused and bfloat16 for a
                         hidden layer, float for the last
     MM_BACKWARD_WEIGHTS dZb^T (dZb [r][out] read with strides 1, out) x Hb_l [r][in] ->
                         dW_l [out][in] float; accumulate: dW_l += (sum post-op)
     MM_BACKWARD_DATA    dZb [r][out] x Wb_l [out][in] -> dH [r][in] float */
static PetscErrorCode MatmulCreate(BasisMLP mlp, MatmulKind kind, PetscInt l, PetscInt rows,
                                   PetscBool accumulate, Matmul *m)
{
  const dnnl_dim_t      in = mlp->widths[l], out = mlp->widths[l + 1], r = rows;
  const PetscBool       hidden = (PetscBool)(l + 1 < mlp->L);
  dnnl_memory_desc_t    smd, wmd, bmd, dmd;
  dnnl_matmul_desc_t    desc;
  dnnl_primitive_attr_t attr;
  dnnl_post_ops_t       ops;
  dnnl_primitive_desc_t pd;
  const char           *impl = NULL;

  PetscFunctionBeginUser;
  BasisCallDnnl(dnnl_primitive_attr_create(&attr));
  BasisCallDnnl(dnnl_post_ops_create(&ops));
  switch (kind) {
  case MM_FORWARD:
    PetscCall(Desc(&smd, r, in, in, 1, dnnl_bf16));
    PetscCall(Desc(&wmd, in, out, 1, in, dnnl_bf16));
    PetscCall(Desc(&bmd, 1, out, out, 1, dnnl_f32));
    PetscCall(Desc(&dmd, r, out, out, 1, hidden ? dnnl_bf16 : dnnl_f32));
    if (hidden) BasisCallDnnl(dnnl_post_ops_append_eltwise(ops, 1.0f, dnnl_eltwise_relu, 0.0f, 0.0f));
    break;
  case MM_BACKWARD_WEIGHTS:
    PetscCall(Desc(&smd, out, r, 1, out, dnnl_bf16));
    PetscCall(Desc(&wmd, r, in, in, 1, dnnl_bf16));
    PetscCall(Desc(&dmd, out, in, in, 1, dnnl_f32));
    if (accumulate) BasisCallDnnl(dnnl_post_ops_append_sum(ops, 1.0f));
    break;
  case MM_BACKWARD_DATA:
    PetscCall(Desc(&smd, r, out, out, 1, dnnl_bf16));
    PetscCall(Desc(&wmd, out, in, in, 1, dnnl_bf16));
    PetscCall(Desc(&dmd, r, in, in, 1, dnnl_f32));
    break;
  }
  BasisCallDnnl(dnnl_primitive_attr_set_post_ops(attr, ops));
  BasisCallDnnl(dnnl_matmul_desc_init(&desc, &smd, &wmd, kind == MM_FORWARD ? &bmd : NULL, &dmd));
  BasisCallDnnl(dnnl_primitive_desc_create(&pd, &desc, attr, mlp->engine, NULL));
  BasisCallDnnl(dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, (void *)&impl));
  PetscCall(PetscInfo(NULL, "bfloat16 %s product of layer %d, %d rows%s: oneDNN %s\n", MatmulKinds[kind],
                      (int)l, (int)rows, accumulate ? ", accumulating" : "", impl ? impl : "(unknown)"));
  BasisCallDnnl(dnnl_primitive_create(&m->prim, pd));
  BasisCallDnnl(dnnl_primitive_desc_destroy(pd));
  BasisCallDnnl(dnnl_post_ops_destroy(ops));
  BasisCallDnnl(dnnl_primitive_attr_destroy(attr));
  BasisCallDnnl(dnnl_memory_create(&m->src, &smd, mlp->engine, DNNL_MEMORY_NONE));
  BasisCallDnnl(dnnl_memory_create(&m->wei, &wmd, mlp->engine, DNNL_MEMORY_NONE));
  m->bias = NULL;
  if (kind == MM_FORWARD) BasisCallDnnl(dnnl_memory_create(&m->bias, &bmd, mlp->engine, DNNL_MEMORY_NONE));
  BasisCallDnnl(dnnl_memory_create(&m->dst, &dmd, mlp->engine, DNNL_MEMORY_NONE));
  m->kind       = kind;
  m->l          = l;
  m->rows       = rows;
  m->accumulate = accumulate;
  PetscFunctionReturn(0);
}

/* Run the matmul (kind, l, rows, accumulate) on the given buffers (bias: MM_FORWARD only),
   making it at its first use. */
static PetscErrorCode MatmulRun(BasisMLP mlp, MatmulKind kind, PetscInt l, PetscInt rows,
                                PetscBool accumulate, const void *src, const void *wei, const float *bias,
                                void *dst)
{
  Matmul         *m = NULL;
  dnnl_exec_arg_t args[4];
  int             nargs = 0;

  PetscFunctionBeginUser;
  for (PetscInt t = 0; t < mlp->nmm && !m; t++) {
    Matmul *c = &mlp->mm[t];
    if (c->kind == kind && c->l == l && c->rows == rows && c->accumulate == accumulate) m = c;
  }
  if (!m) {
    if (mlp->nmm == mlp->maxmm) {
      mlp->maxmm = PetscMax(16, 2 * mlp->maxmm);
      PetscCall(PetscRealloc(sizeof(Matmul) * (size_t)mlp->maxmm, &mlp->mm));
    }
    m = &mlp->mm[mlp->nmm];
    PetscCall(MatmulCreate(mlp, kind, l, rows, accumulate, m));
    mlp->nmm++;
  }
  BasisCallDnnl(dnnl_memory_set_data_handle(m->src, (void *)src));
  BasisCallDnnl(dnnl_memory_set_data_handle(m->wei, (void *)wei));
  BasisCallDnnl(dnnl_memory_set_data_handle(m->dst, dst));
  args[nargs].arg = DNNL_ARG_SRC, args[nargs++].memory = m->src;
  args[nargs].arg = DNNL_ARG_WEIGHTS, args[nargs++].memory = m->wei;
  if (m->bias) {
    BasisCallDnnl(dnnl_memory_set_data_handle(m->bias, (void *)bias));
    args[nargs].arg = DNNL_ARG_BIAS, args[nargs++].memory = m->bias;
  }
  args[nargs].arg = DNNL_ARG_DST, args[nargs++].memory = m->dst;
  BasisCallDnnl(dnnl_primitive_execute(m->prim, mlp->stream, nargs, args));
  BasisCallDnnl(dnnl_stream_wait(mlp->stream));
  PetscFunctionReturn(0);
}

/* The bfloat16 copy of every W_l, from the float parameters as they are now (logged as
   forward work). */
static PetscErrorCode Bf16RefreshWeights(BasisMLP mlp)
{
  PetscFunctionBeginUser;
  PetscCall(PetscLogEventBegin(BASIS_Forward, 0, 0, 0, 0));
  for (PetscInt l = 0; l < mlp->L; l++)
    BasisBf16Round((size_t)mlp->widths[l + 1] * mlp->widths[l], mlp->params + mlp->offset[l],
                   mlp->Wb + mlp->woff[l]);
  PetscCall(PetscLogEventEnd(BASIS_Forward, 0, 0, 0, 0));
  PetscFunctionReturn(0);
}

/* ForwardInternal in bfloat16: the layers' inputs go to mlp->Hb (Hb[0] = x rounded), the
   last layer's output, in float, to y [n][K]. */
static PetscErrorCode Bf16Forward(BasisMLP mlp, PetscInt n, const float x[], float y[])
{
  const PetscInt *w     = mlp->widths;
  PetscLogDouble  flops = 0.0;

  PetscFunctionBeginUser;
  PetscCall(PetscLogEventBegin(BASIS_Forward, 0, 0, 0, 0));
  BasisBf16Round((size_t)n * w[0], x, mlp->Hb[0]);
  for (PetscInt l = 0; l < mlp->L; l++) {
    const PetscInt in = w[l], out = w[l + 1];
    const float   *b = mlp->params + mlp->offset[l] + (PetscCount)out * in;

    PetscCall(MatmulRun(mlp, MM_FORWARD, l, n, PETSC_FALSE, mlp->Hb[l], mlp->Wb + mlp->woff[l], b,
                        l + 1 < mlp->L ? (void *)mlp->Hb[l + 1] : (void *)y));
    flops += 2.0 * n * in * out;
  }
  PetscCall(PetscLogFlops(flops));
  PetscCall(PetscLogEventEnd(BASIS_Forward, 0, 0, 0, 0));
  PetscFunctionReturn(0);
}

/* d = d where the bfloat16 h > 0 (as a signed 16-bit integer: positive, not +0; -0 and
   negatives are not), else 0; and db = bf16(d) */
static inline void Bf16ReluMask(PetscCount n, const uint16_t *restrict h, float *restrict d)
{
  PetscCount nb = n & ~(PetscCount)(BASIS_MLP_VB - 1), i;

  for (i = 0; i < nb; i++) d[i] = (int16_t)h[i] > 0 ? d[i] : 0.0f;
  for (; i < n; i++) d[i] = (int16_t)h[i] > 0 ? d[i] : 0.0f;
}

/* The backward pass of LossBackward in bfloat16 for one pass of rows rows, after
   Bf16Forward: dZ [rows][K] holds d loss / d y on entry; the gradient is overwritten
   (accumulate false: the first pass) or added to. Logs flops; the caller owns the event. */
static PetscErrorCode Bf16Backward(BasisMLP mlp, PetscInt rows, PetscBool accumulate, PetscLogDouble *flops)
{
  const PetscInt *w  = mlp->widths;
  float          *dZ = mlp->delta[0], *dH = mlp->delta[1], *tmp;
  const float     beta = accumulate ? 1.0f : 0.0f;

  PetscFunctionBeginUser;
  for (PetscInt l = mlp->L - 1; l >= 0; l--) {
    const PetscInt in = w[l], out = w[l + 1];
    float         *dW = mlp->grad + mlp->offset[l], *db = dW + (PetscCount)out * in;

    BasisBf16Round((size_t)rows * out, dZ, mlp->dZb);
    PetscCall(MatmulRun(mlp, MM_BACKWARD_WEIGHTS, l, rows, accumulate, mlp->dZb, mlp->Hb[l], NULL, dW));
    cblas_sgemv(CblasRowMajor, CblasTrans, rows, out, 1.0f, dZ, out, mlp->ones, 1, beta, db, 1);
    *flops += 2.0 * rows * in * out + 2.0 * rows * out;
    if (l == 0) break; /* no gradient with respect to the input */
    PetscCall(
        MatmulRun(mlp, MM_BACKWARD_DATA, l, rows, PETSC_FALSE, mlp->dZb, mlp->Wb + mlp->woff[l], NULL, dH));
    *flops += 2.0 * rows * in * out;
    Bf16ReluMask((PetscCount)rows * in, mlp->Hb[l], dH);
    tmp = dZ, dZ = dH, dH = tmp;
  }
  PetscFunctionReturn(0);
}

/*
  BasisMLPForward - evaluate the network on a block of points (inference).

  Not collective.

  Input:
    n - number of rows, 0 <= n <= max_batch
    x - [n][D] row-major inputs
  Output:
    y - [n][K] row-major outputs (must not alias x)

  Notes:
    Reuses the activation buffers, so it overwrites what LossBackward left there.
*/
PetscErrorCode BasisMLPForward(BasisMLP mlp, PetscInt n, const float x[], float y[])
{
  PetscFunctionBeginUser;
  PetscCheck(n >= 0 && n <= mlp->max_batch, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE,
             "Forward on %d rows; the network was created for at most %d", (int)n, (int)mlp->max_batch);
  if (mlp->precision == BASIS_MLP_BF16 && n > 0) PetscCall(Bf16RefreshWeights(mlp));
  for (PetscInt i0 = 0; i0 < n; i0 += mlp->chunk) {
    const PetscInt rows = PetscMin(mlp->chunk, n - i0);
    const float   *xc   = x + (PetscCount)i0 * mlp->widths[0];
    float         *yc   = y + (PetscCount)i0 * mlp->widths[mlp->L];

    if (mlp->precision == BASIS_MLP_BF16)
      PetscCall(Bf16Forward(mlp, rows, xc, yc));
    else
      PetscCall(ForwardInternal(mlp, rows, xc, yc));
  }
  PetscFunctionReturn(0);
}

/*
  BasisMLPLossBackward - loss on a batch and its gradient with respect to all parameters.

  Not collective.

  Input:
    n      - batch rows, 1 <= n <= max_batch
    x      - [n][D] row-major inputs
    target - [n][K] row-major targets
  Output:
    loss - (1/n) sum_i ||f(x_i) - target_i||^2: squared error summed over the K outputs,
           averaged over the batch (accumulated in double)
    the gradient buffer (BasisMLPGetArrays) is overwritten with d loss / d params

  Notes:
    Not checked for Inf/NaN here: the trainer checks the mean gradient after the
    allreduce, so every rank reaches the same verdict.
*/
PetscErrorCode BasisMLPLossBackward(BasisMLP mlp, PetscInt n, const float x[], const float target[],
                                    float *loss)
{
  const PetscInt *w = mlp->widths;
  const PetscInt  L = mlp->L, K = w[L];
  const float     scale = (float)(2.0 / n); /* d/dy of (1/n) ||y - t||^2 */
  double          sum   = 0.0;

  PetscFunctionBeginUser;
  PetscCheck(n >= 1 && n <= mlp->max_batch, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE,
             "LossBackward on %d rows; the network was created for 1 to %d", (int)n, (int)mlp->max_batch);
  if (mlp->precision == BASIS_MLP_BF16) PetscCall(Bf16RefreshWeights(mlp));
  for (PetscInt i0 = 0; i0 < n; i0 += mlp->chunk) {
    const PetscInt rows = PetscMin(mlp->chunk, n - i0);
    const float   *xc = x + (PetscCount)i0 * w[0], *tc = target + (PetscCount)i0 * K;
    const float    beta = i0 ? 1.0f : 0.0f; /* the first pass overwrites the gradient, later ones add */
    float         *dZ = mlp->delta[0], *dH = mlp->delta[1];
    PetscLogDouble flops = 0.0;

    if (mlp->precision == BASIS_MLP_BF16)
      PetscCall(Bf16Forward(mlp, rows, xc, dZ));
    else
      PetscCall(ForwardInternal(mlp, rows, xc, dZ));
    PetscCall(PetscLogEventBegin(BASIS_Backward, 0, 0, 0, 0));
    for (PetscCount i = 0; i < (PetscCount)rows * K; i++) {
      float r = dZ[i] - tc[i];
      sum += (double)r * r;
      dZ[i] = scale * r;
    }
    if (mlp->precision == BASIS_MLP_BF16)
      PetscCall(Bf16Backward(mlp, rows, (PetscBool)(i0 > 0), &flops));
    else {
      for (PetscInt l = L - 1; l >= 0; l--) {
        const PetscInt in = w[l], out = w[l + 1];
        const float   *Hin = l ? mlp->H[l] : xc, *W = mlp->params + mlp->offset[l];
        float         *dW = mlp->grad + mlp->offset[l], *db = dW + (PetscCount)out * in, *tmp;

        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, rows, 1.0f, dZ, out, Hin, in, beta, dW,
                    in);
        cblas_sgemv(CblasRowMajor, CblasTrans, rows, out, 1.0f, dZ, out, mlp->ones, 1, beta, db, 1);
        flops += 2.0 * rows * in * out + 2.0 * rows * out;
        if (l == 0) break; /* no gradient with respect to the input */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, in, out, 1.0f, dZ, out, W, in, 0.0f, dH,
                    in);
        flops += 2.0 * rows * in * out;
        ReluMask((PetscCount)rows * in, Hin, dH);
        tmp = dZ, dZ = dH, dH = tmp;
      }
    }
    PetscCall(PetscLogFlops(flops + 3.0 * rows * K));
    PetscCall(PetscLogEventEnd(BASIS_Backward, 0, 0, 0, 0));
  }
  *loss = (float)(sum / n);
  PetscFunctionReturn(0);
}

/* The Adam update of n parameters with the constants of one step. The vector and the tail
   loop evaluate the same expression. sqrtf only vectorises when the library is built with
   -fno-math-errno (v >= 0, so sqrtf never sets errno; without the flag GCC keeps a scalar
   call path: measured 1.8 ms instead of 0.5 ms for 729k parameters). */
static void AdamLoop(PetscCount n, float b1, float b2, float c1, float c2, float step_size,
                     float inv_sqrt_bc2, float eps, float *restrict p, float *restrict m, float *restrict v,
                     const float *restrict g)
{
  PetscCount nb = n & ~(PetscCount)(BASIS_MLP_VB - 1), i;

#define BASIS_ADAM_UPDATE(i)                                                                                 \
  do {                                                                                                       \
    float mi = b1 * m[i] + c1 * g[i], vi = b2 * v[i] + c2 * g[i] * g[i];                                     \
    m[i] = mi;                                                                                               \
    v[i] = vi;                                                                                               \
    p[i] -= step_size * mi / (sqrtf(vi) * inv_sqrt_bc2 + eps);                                               \
  } while (0)
  for (i = 0; i < nb; i++) BASIS_ADAM_UPDATE(i);
  for (; i < n; i++) BASIS_ADAM_UPDATE(i);
#undef BASIS_ADAM_UPDATE
}

/*
  BasisMLPAdamStep - one Adam update of the parameters from the gradient buffer.

  Not collective; deterministic (fixed order, no threads), so ranks holding the same
  gradient compute bitwise the same parameters.

  Input:
    lr   - learning rate
    step - 1-based count of updates so far including this one (bias correction)

  Notes:
    Kingma & Ba with PyTorch's defaults: beta1 = 0.9, beta2 = 0.999, eps = 1e-8 added to
    sqrt(v_hat), as in torch.optim.Adam, so a run compares with the authors' code:
      m = b1 m + (1-b1) g,  v = b2 v + (1-b2) g^2,
      p -= lr / (1-b1^t) * m / (sqrt(v) / sqrt(1-b2^t) + eps).
*/
PetscErrorCode BasisMLPAdamStep(BasisMLP mlp, PetscReal lr, PetscInt step)
{
  const double beta1 = 0.9, beta2 = 0.999, eps = 1e-8; /* PyTorch / Kingma-Ba defaults */

  PetscFunctionBeginUser;
  PetscCheck(step >= 1, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "Adam step count %d must be at least 1",
             (int)step);
  PetscCall(PetscLogEventBegin(BASIS_Adam, 0, 0, 0, 0));
  AdamLoop(mlp->nparams, (float)beta1, (float)beta2, (float)(1.0 - beta1), (float)(1.0 - beta2),
           (float)(lr / (1.0 - pow(beta1, (double)step))),
           (float)(1.0 / sqrt(1.0 - pow(beta2, (double)step))), (float)eps, mlp->params, mlp->adam_m,
           mlp->adam_v, mlp->grad);
  PetscCall(PetscLogFlops(12.0 * mlp->nparams));
  PetscCall(PetscLogEventEnd(BASIS_Adam, 0, 0, 0, 0));
  PetscFunctionReturn(0);
}
