/*
  bf16gram.c - the batch kNN's Gram products in bfloat16 through oneDNN (issue 20): the
  points are rounded once to bfloat16 (round to nearest, ties to even, here, so the
  rounding is the one the margin in knn.c assumes), and each product -2 X_a X_b^T is one
  oneDNN matmul with bfloat16 source and weights and a float destination. oneDNN picks its
  kernel from the CPU at run time; where the CPU has bfloat16 dot-product instructions
  (AVX512-BF16, AMX) a product runs at twice the float rate. The values only select kNN
  candidates (knn.c proves the margin; every candidate is recomputed exactly), so nothing
  here needs to be reproducible bit for bit, but it is: one thread, a fixed kernel.

  One matmul primitive per shape (rows, cols, D, row stride of G), made at its first use
  and kept: a batch kNN needs a dozen shapes at most, and making a primitive costs far
  more than running a small one. Not collective: one object per rank's batch graph.
  Debian's oneDNN runs on OpenMP; it is held to one thread, as the serial OpenBLAS is, so
  that ranks sharing a node do not oversubscribe its cores.
*/
#include <basis/bf16gram.h>
#include <oneapi/dnnl/dnnl.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

typedef struct {
  PetscInt         rows, cols, D, ldg;
  dnnl_primitive_t prim;
  dnnl_memory_t    src, wei, dst;
} Bf16Shape;

struct _p_BasisBf16Gram {
  dnnl_engine_t engine;
  dnnl_stream_t stream;
  uint16_t     *xb;  /* [n][D] the points in bfloat16 */
  size_t        nxb; /* capacity of xb */
  PetscInt      n, D;
  Bf16Shape    *shapes;
  PetscInt      nshapes, maxshapes;
};

/*
  BasisBf16GramNative - whether oneDNN finds bfloat16 dot-product instructions on this CPU.

  Not collective. Output: native; isa (may be NULL), the effective ISA's name.
*/
PetscErrorCode BasisBf16GramNative(PetscBool *native, const char **isa)
{
  const dnnl_cpu_isa_t e = dnnl_get_effective_cpu_isa();

  PetscFunctionBeginUser;
  /* the ISA values are bit masks, each containing those it extends: avx512_core_bf16 =
     0xe7 is contained in avx512_core_amx = 0x3e7, but not in avx2_vnni = 0x407 */
  *native = ((e & dnnl_cpu_isa_avx512_core_bf16) == dnnl_cpu_isa_avx512_core_bf16) ? PETSC_TRUE : PETSC_FALSE;
  if (isa) {
    switch (e) {
    case dnnl_cpu_isa_avx512_core_amx:
      *isa = "avx512_core_amx";
      break;
    case dnnl_cpu_isa_avx512_core_bf16:
      *isa = "avx512_core_bf16";
      break;
    case dnnl_cpu_isa_avx512_core_vnni:
      *isa = "avx512_core_vnni";
      break;
    case dnnl_cpu_isa_avx512_core:
      *isa = "avx512_core";
      break;
    case dnnl_cpu_isa_avx2_vnni:
      *isa = "avx2_vnni";
      break;
    case dnnl_cpu_isa_avx2:
      *isa = "avx2";
      break;
    default:
      *isa = "older than avx2";
      break;
    }
  }
  PetscFunctionReturn(0);
}

/* Whether oneDNN has a bfloat16 matmul on this CPU (with the native instructions or
   without them), asked with a 1 x 1 x 1 product. */
static PetscBool MatmulSupported(dnnl_engine_t engine)
{
  dnnl_dims_t           one = {1, 1};
  dnnl_memory_desc_t    a, c;
  dnnl_matmul_desc_t    mm;
  dnnl_primitive_desc_t pd;

  if (dnnl_memory_desc_init_by_strides(&a, 2, one, dnnl_bf16, one) != dnnl_success ||
      dnnl_memory_desc_init_by_strides(&c, 2, one, dnnl_f32, one) != dnnl_success ||
      dnnl_matmul_desc_init(&mm, &a, &a, NULL, &c) != dnnl_success ||
      dnnl_primitive_desc_create(&pd, &mm, NULL, engine, NULL) != dnnl_success)
    return PETSC_FALSE;
  (void)dnnl_primitive_desc_destroy(pd);
  return PETSC_TRUE;
}

/*
  BasisBf16GramCreate - a CPU engine and stream of oneDNN, or NULL in *g where oneDNN has no
  bfloat16 matmul on this CPU (the caller uses float then).

  Not collective. Notes: sets the OpenMP thread count of the calling thread to 1 (oneDNN's
  threads; nothing else in basis uses OpenMP threads).
*/
PetscErrorCode BasisBf16GramCreate(BasisBf16Gram *g)
{
  BasisBf16Gram b;

  PetscFunctionBeginUser;
  *g = NULL;
  PetscCall(PetscNew(&b));
  omp_set_num_threads(1);
  BasisCallDnnl(dnnl_engine_create(&b->engine, dnnl_cpu, 0));
  BasisCallDnnl(dnnl_stream_create(&b->stream, b->engine, dnnl_stream_default_flags));
  if (MatmulSupported(b->engine))
    *g = b;
  else
    PetscCall(BasisBf16GramDestroy(&b));
  PetscFunctionReturn(0);
}

/* float -> bfloat16, round to nearest, ties to even, and a result below 2^-126 in magnitude
   (subnormal) flushed to zero, as the bfloat16 instructions would read it anyway: so the
   values the kernel multiplies are exactly these (finite input; Inf stays Inf). */
static inline uint16_t ToBf16(float v)
{
  uint32_t u;

  memcpy(&u, &v, sizeof u);
  u += 0x7fffu + ((u >> 16) & 1u);
  u >>= 16;
  return (uint16_t)((u & 0x7f80u) ? u : (u & 0x8000u));
}

void BasisBf16Round(size_t n, const float x[], uint16_t xb[])
{
#pragma omp simd
  for (size_t i = 0; i < n; i++) xb[i] = ToBf16(x[i]);
}

static inline float FromBf16(uint16_t b)
{
  const uint32_t u = (uint32_t)b << 16;
  float          v;

  memcpy(&v, &u, sizeof v);
  return v;
}

/*
  BasisBf16GramSetPoints - keep x [n][D] rounded to bfloat16 for the products that follow.

  Not collective. Input: xn [n], the squared norms of x in double. Output: rho, an upper
  bound on ||x^_i - x_i|| / ||x_i|| over the points (x^ the rounded points; 0 for x_i = 0),
  at most 2^-8 unless a point has coordinates below 2^-126 (flushed). The buffer grows
  when needed and is reused.

  Notes: x_d - x^_d is exact in float and its square in double, and the sum of D of them in
  double, in any order (vector lanes here), is within D 2^-53 of its value, as is xn (knn.c
  sums it in lanes too): rho^2 is the largest ratio times 1 + 2^-30 while D < 2^22.
*/
/* Round rows x [n][D] into the kept rows i0 .. i0 + n; the bound rho of their rounding. */
static void RoundRows(BasisBf16Gram g, PetscInt i0, PetscInt n, const float x[], const PetscReal xn[],
                      PetscReal *rho)
{
  const PetscInt D    = g->D;
  PetscReal      rho2 = 0;

  BasisBf16Round((size_t)n * D, x, g->xb + (size_t)i0 * D);
  for (PetscInt i = 0; i < n; i++) {
    const float    *xi = x + (size_t)i * D;
    const uint16_t *bi = g->xb + (size_t)(i0 + i) * D;
    PetscReal       r2 = 0;

#pragma omp simd reduction(+ : r2)
    for (PetscInt d = 0; d < D; d++) {
      const PetscReal e = (PetscReal)(xi[d] - FromBf16(bi[d]));
      r2 += e * e;
    }
    if (xn[i] > 0) rho2 = PetscMax(rho2, r2 / xn[i]);
  }
  *rho = PetscSqrtReal(rho2 * (1 + 0x1p-30));
}

PetscErrorCode BasisBf16GramSetPoints(BasisBf16Gram g, PetscInt n, PetscInt D, const float x[],
                                      const PetscReal xn[], PetscReal *rho)
{
  const size_t nd = (size_t)n * D;

  PetscFunctionBeginUser;
  if (g->nxb < nd) {
    PetscCall(PetscFree(g->xb));
    PetscCall(PetscMalloc1(nd, &g->xb));
    g->nxb = nd;
  }
  g->n = n;
  g->D = D;
  RoundRows(g, 0, n, x, xn, rho);
  PetscFunctionReturn(0);
}

/*
  BasisBf16GramSetRows - replace the kept rows i0 .. i0 + n by x [n][D] rounded to bfloat16
  (a block of queries against kept points: the landmark degrees, landmark.c).

  Not collective. Input: xn [n] their squared norms. Output: rho, the bound of
  BasisBf16GramSetPoints for these rows. The rows must lie within the points kept.
*/
PetscErrorCode BasisBf16GramSetRows(BasisBf16Gram g, PetscInt i0, PetscInt n, const float x[],
                                    const PetscReal xn[], PetscReal *rho)
{
  PetscFunctionBeginUser;
  PetscCheck(i0 >= 0 && i0 + n <= g->n, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE,
             "rows %d..%d outside the %d points kept", (int)i0, (int)(i0 + n), (int)g->n);
  RoundRows(g, i0, n, x, xn, rho);
  PetscFunctionReturn(0);
}

/* The matmul of one shape: src [rows][D] bf16 (row stride D), weights the D x cols matrix
   X_b^T read from X_b [cols][D] as stored (strides 1, D), dst [rows][ldg] float, times -2
   (an output scale: a power of two, exact). */
static PetscErrorCode ShapeCreate(BasisBf16Gram g, PetscInt rows, PetscInt cols, PetscInt ldg, Bf16Shape *s)
{
  const dnnl_dim_t D  = g->D;
  dnnl_dims_t      sd = {rows, D}, ss = {D, 1}, wd = {D, cols}, ws = {1, D}, dd = {rows, cols}, ds = {ldg, 1};
  dnnl_memory_desc_t    smd, wmd, dmd;
  dnnl_matmul_desc_t    mm;
  dnnl_primitive_attr_t attr;
  dnnl_primitive_desc_t pd;
  const float           minus2 = -2.0f;

  PetscFunctionBeginUser;
  BasisCallDnnl(dnnl_memory_desc_init_by_strides(&smd, 2, sd, dnnl_bf16, ss));
  BasisCallDnnl(dnnl_memory_desc_init_by_strides(&wmd, 2, wd, dnnl_bf16, ws));
  BasisCallDnnl(dnnl_memory_desc_init_by_strides(&dmd, 2, dd, dnnl_f32, ds));
  BasisCallDnnl(dnnl_matmul_desc_init(&mm, &smd, &wmd, NULL, &dmd));
  BasisCallDnnl(dnnl_primitive_attr_create(&attr));
  BasisCallDnnl(dnnl_primitive_attr_set_output_scales(attr, 1, 0, &minus2));
  BasisCallDnnl(dnnl_primitive_desc_create(&pd, &mm, attr, g->engine, NULL));
  BasisCallDnnl(dnnl_primitive_attr_destroy(attr));
  BasisCallDnnl(dnnl_primitive_create(&s->prim, pd));
  BasisCallDnnl(dnnl_primitive_desc_destroy(pd));
  BasisCallDnnl(dnnl_memory_create(&s->src, &smd, g->engine, DNNL_MEMORY_NONE));
  BasisCallDnnl(dnnl_memory_create(&s->wei, &wmd, g->engine, DNNL_MEMORY_NONE));
  BasisCallDnnl(dnnl_memory_create(&s->dst, &dmd, g->engine, DNNL_MEMORY_NONE));
  s->rows = rows;
  s->cols = cols;
  s->D    = g->D;
  s->ldg  = ldg;
  PetscFunctionReturn(0);
}

/* The kept primitive of a shape, made at its first use. */
static PetscErrorCode ShapeGet(BasisBf16Gram g, PetscInt rows, PetscInt cols, PetscInt ldg, Bf16Shape **s)
{
  PetscFunctionBeginUser;
  for (PetscInt t = 0; t < g->nshapes; t++) {
    Bf16Shape *c = &g->shapes[t];
    if (c->rows == rows && c->cols == cols && c->D == g->D && c->ldg == ldg) {
      *s = c;
      PetscFunctionReturn(0);
    }
  }
  if (g->nshapes == g->maxshapes) {
    g->maxshapes = PetscMax(16, 2 * g->maxshapes);
    PetscCall(PetscRealloc(sizeof(Bf16Shape) * (size_t)g->maxshapes, &g->shapes));
  }
  *s = &g->shapes[g->nshapes];
  PetscCall(ShapeCreate(g, rows, cols, ldg, *s));
  g->nshapes++;
  PetscFunctionReturn(0);
}

/*
  BasisBf16GramProduct - G = -2 X[i0 .. i0 + rows) X[j0 .. j0 + cols)^T of the points kept
  by BasisBf16GramSetPoints, in float, row stride ldg.

  Not collective. Every product of two bfloat16 values is exact in float; they are summed
  in float in the kernel's order (the error bound is in knn.c). Flops are logged.
*/
PetscErrorCode BasisBf16GramProduct(BasisBf16Gram g, PetscInt i0, PetscInt rows, PetscInt j0, PetscInt cols,
                                    float G[], PetscInt ldg)
{
  Bf16Shape      *s = NULL;
  dnnl_exec_arg_t args[3];

  PetscFunctionBeginUser;
  PetscCheck(i0 >= 0 && j0 >= 0 && i0 + rows <= g->n && j0 + cols <= g->n && ldg >= cols, PETSC_COMM_SELF,
             PETSC_ERR_ARG_OUTOFRANGE, "Gram product rows %d..%d x columns %d..%d outside the %d points",
             (int)i0, (int)(i0 + rows), (int)j0, (int)(j0 + cols), (int)g->n);
  if (rows == 0 || cols == 0) PetscFunctionReturn(0);
  PetscCall(ShapeGet(g, rows, cols, ldg, &s));
  BasisCallDnnl(dnnl_memory_set_data_handle(s->src, g->xb + (size_t)i0 * g->D));
  BasisCallDnnl(dnnl_memory_set_data_handle(s->wei, g->xb + (size_t)j0 * g->D));
  BasisCallDnnl(dnnl_memory_set_data_handle(s->dst, G));
  args[0].arg    = DNNL_ARG_SRC;
  args[0].memory = s->src;
  args[1].arg    = DNNL_ARG_WEIGHTS;
  args[1].memory = s->wei;
  args[2].arg    = DNNL_ARG_DST;
  args[2].memory = s->dst;
  BasisCallDnnl(dnnl_primitive_execute(s->prim, g->stream, 3, args));
  BasisCallDnnl(dnnl_stream_wait(g->stream));
  PetscCall(PetscLogFlops(2.0 * rows * cols * g->D));
  PetscFunctionReturn(0);
}

/*
  BasisBf16GramDestroy - free the points, the primitives, the stream and the engine. Not
  collective; NULL-tolerant.
*/
PetscErrorCode BasisBf16GramDestroy(BasisBf16Gram *g)
{
  BasisBf16Gram b;

  PetscFunctionBeginUser;
  if (!g || !*g) PetscFunctionReturn(0);
  b = *g;
  for (PetscInt t = 0; t < b->nshapes; t++) {
    BasisCallDnnl(dnnl_primitive_destroy(b->shapes[t].prim));
    BasisCallDnnl(dnnl_memory_destroy(b->shapes[t].src));
    BasisCallDnnl(dnnl_memory_destroy(b->shapes[t].wei));
    BasisCallDnnl(dnnl_memory_destroy(b->shapes[t].dst));
  }
  PetscCall(PetscFree(b->shapes));
  PetscCall(PetscFree(b->xb));
  if (b->stream) BasisCallDnnl(dnnl_stream_destroy(b->stream));
  if (b->engine) BasisCallDnnl(dnnl_engine_destroy(b->engine));
  PetscCall(PetscFree(*g));
  PetscFunctionReturn(0);
}
