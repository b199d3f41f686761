/*
  sample.c - the batch sampler (DESIGN.md step 3).

  A batch is the l anchors plus m - l rows drawn without replacement, with the rank's own
  random stream, from the non-anchor rows. Both samplings are one mechanism: a rank draws
  positions in a slice [draw0, draw0 + ndraw) of the numbering of all non-anchor rows --
  the whole numbering (-sample global) or its own shard's part of it (-sample shard) --
  and BasisNthNotIn (rng.c) turns each position into a global row. The anchors are never
  drawn: a point twice in one batch would collapse its graph.

  -sample global fetches the drawn rows from the ranks that own them (FetchRows: one
  MPI_Alltoall of counts, then MPI_Alltoallv of row numbers and of the rows themselves),
  so every call of BasisSamplerDraw is collective. -sample shard copies from the rank's
  own rows and communicates nothing; it makes the result depend on the rank count when
  shards are not much larger than a batch (docs/quality.md).
*/
#include <basis/sample.h>
#include <basis/error.h>

const char *const BasisSampleTypes[] = {"global", "shard", "BasisSampleType", "BASIS_SAMPLE_", NULL};

struct _p_BasisSampler {
  MPI_Comm          comm;
  PetscMPIInt       size;
  BasisSampleType   type;
  const BasisShard *shard; /* the caller's; must outlive the sampler */
  PetscInt          l, m;
  const PetscInt   *anchors; /* [l] sorted global rows, the caller's */
  /* a batch draws from the non-anchor rows numbered draw0 .. draw0 + ndraw - 1 */
  PetscInt  draw0, ndraw;
  PetscInt *pick; /* [m - l] this draw, as global rows (sorted) */
  /* -sample global, in rows: counts and displacements of the rows this rank asks of each
     rank and gives to each; the rows it serves (grown when a draw asks for more) */
  PetscMPIInt *ask, *askat, *give, *giveat; /* [size] each */
  PetscInt    *serve, nserve_max;           /* [nserve_max] global rows asked of this rank */
  float       *served;                      /* [nserve_max][D] their features */
  MPI_Datatype row;                         /* D floats */
};

/*
  BasisSamplerCreate - a sampler of the m - l new rows of each batch.

  Collective on comm.

  Input:
    type    - BASIS_SAMPLE_GLOBAL or BASIS_SAMPLE_SHARD
    shard   - this rank's rows (kept by reference)
    l       - number of anchors; anchors [l] their global rows, sorted (kept by reference)
    m       - batch size, anchors included

  Notes:
    With -sample shard every rank must hold at least m - l non-anchor rows; refused on
    every rank otherwise, naming the options that fix it.
*/
/* The one refusal of -sample shard: some rank's shard has fewer than m - l points to draw. */
static PetscErrorCode CheckShardDraws(MPI_Comm comm, PetscInt ndraw, PetscInt l, PetscInt m)
{
  PetscInt min_draw;

  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Allreduce(&ndraw, &min_draw, 1, MPIU_INT, MPI_MIN, comm));
  PetscCheck(min_draw >= m - l, comm, PETSC_ERR_ARG_OUTOFRANGE,
             "a rank holds only %d non-anchor points but each batch draws -batch - -anchors = %d from its "
             "shard (-sample shard); use -sample global, fewer ranks or a smaller -batch",
             (int)min_draw, (int)(m - l));
  PetscFunctionReturn(0);
}

/*
  BasisSamplerCheckShards - before the anchors are known: refuse -sample shard when a shard
  is too small whatever the anchors (its whole size below m - l), so the run stops before
  the reference solve. BasisSamplerCreate checks exactly. Collective.
*/
PetscErrorCode BasisSamplerCheckShards(MPI_Comm comm, BasisSampleType type, const BasisShard *shard,
                                       PetscInt l, PetscInt m)
{
  PetscFunctionBeginUser;
  if (type == BASIS_SAMPLE_SHARD) PetscCall(CheckShardDraws(comm, shard->n, l, m));
  PetscFunctionReturn(0);
}

PetscErrorCode BasisSamplerCreate(MPI_Comm comm, BasisSampleType type, const BasisShard *shard, PetscInt l,
                                  const PetscInt anchors[], PetscInt m, BasisSampler *sampler)
{
  BasisSampler s;

  PetscFunctionBeginUser;
  PetscCall(PetscNew(&s));
  s->comm = comm, s->type = type, s->shard = shard, s->l = l, s->m = m, s->anchors = anchors;
  s->row = MPI_DATATYPE_NULL;
  PetscCallMPI(MPI_Comm_size(comm, &s->size));
  if (type == BASIS_SAMPLE_GLOBAL) {
    s->draw0 = 0, s->ndraw = shard->N - l;
    PetscCall(PetscMalloc4(s->size, &s->ask, s->size, &s->askat, s->size, &s->give, s->size, &s->giveat));
    PetscCallMPI(MPI_Type_contiguous((int)shard->D, MPI_FLOAT, &s->row));
    PetscCallMPI(MPI_Type_commit(&s->row));
  } else {
    PetscInt a0 = 0, a1; /* anchors before the shard, before its end */
    while (a0 < l && anchors[a0] < shard->rstart) a0++;
    for (a1 = a0; a1 < l && anchors[a1] < shard->rstart + shard->n;) a1++;
    s->draw0 = shard->rstart - a0, s->ndraw = shard->n - (a1 - a0);
    PetscCall(CheckShardDraws(comm, s->ndraw, l, m));
  }
  PetscCall(PetscMalloc1(m - l, &s->pick));
  *sampler = s;
  PetscFunctionReturn(0);
}

/*
  FetchRows - the rows pick [m - l] (sorted global rows) from the ranks that hold them,
  into x [m - l][D].

  Collective. The rows asked of each rank are contiguous in pick and arrive in its order:
  counts (MPI_Alltoall), row numbers (MPI_Alltoallv), then the rows straight into the
  batch (MPI_Alltoallv with a D-float datatype). A rank serves m - l rows per step on
  average; its buffer grows when a draw asks for more.
*/
static PetscErrorCode FetchRows(BasisSampler s, float x[])
{
  const BasisShard *sh = s->shard;
  const PetscInt    n = s->m - s->l, D = sh->D;
  PetscInt          nserve = 0;

  PetscFunctionBeginUser;
  for (PetscMPIInt r = 0; r < s->size; r++) { /* rank r holds rows [rs, rs + nr) */
    PetscInt rs, nr, i = r ? s->askat[r - 1] + s->ask[r - 1] : 0, c = 0;
    BasisBlockRange(sh->N, s->size, r, &rs, &nr);
    while (i + c < n && s->pick[i + c] < rs + nr) c++;
    s->askat[r] = (PetscMPIInt)i;
    s->ask[r]   = (PetscMPIInt)c;
  }
  PetscCallMPI(MPI_Alltoall(s->ask, 1, MPI_INT, s->give, 1, MPI_INT, s->comm));
  for (PetscMPIInt r = 0; r < s->size; r++) {
    s->giveat[r] = (PetscMPIInt)nserve;
    nserve += s->give[r];
  }
  if (nserve > s->nserve_max) {
    s->nserve_max = PetscMax(nserve, 2 * n);
    PetscCall(PetscFree2(s->serve, s->served));
    PetscCall(PetscMalloc2(s->nserve_max, &s->serve, (size_t)s->nserve_max * D, &s->served));
  }
  PetscCallMPI(
      MPI_Alltoallv(s->pick, s->ask, s->askat, MPIU_INT, s->serve, s->give, s->giveat, MPIU_INT, s->comm));
  for (PetscInt i = 0; i < nserve; i++)
    PetscCall(PetscArraycpy(s->served + (size_t)i * D, sh->x + (size_t)(s->serve[i] - sh->rstart) * D, D));
  PetscCallMPI(MPI_Alltoallv(s->served, s->give, s->giveat, s->row, x, s->ask, s->askat, s->row, s->comm));
  PetscFunctionReturn(0);
}

/*
  BasisSamplerDraw - draw the next batch's m - l new rows and place their features in x.

  Collective on the sampler's comm with -sample global (the fetch); not collective with
  -sample shard.

  Input/Output:
    rng - this rank's batch stream; advanced by the draw
  Output:
    x   - [m - l][D] features of the drawn rows, in increasing row order
*/
PetscErrorCode BasisSamplerDraw(BasisSampler s, BasisRng *rng, float x[])
{
  const BasisShard *sh = s->shard;
  const PetscInt    n = s->m - s->l, D = sh->D;

  PetscFunctionBeginUser;
  PetscCall(BasisRngSample(rng, s->ndraw, n, s->pick));
  for (PetscInt i = 0; i < n; i++) s->pick[i] = BasisNthNotIn(s->l, s->anchors, s->draw0 + s->pick[i]);
  if (s->type == BASIS_SAMPLE_GLOBAL)
    PetscCall(FetchRows(s, x));
  else
    for (PetscInt i = 0; i < n; i++)
      PetscCall(PetscArraycpy(x + (size_t)i * D, sh->x + (size_t)(s->pick[i] - sh->rstart) * D, D));
  PetscFunctionReturn(0);
}

/* BasisSamplerDestroy - free a sampler; NULL-tolerant. Not collective. */
PetscErrorCode BasisSamplerDestroy(BasisSampler *sampler)
{
  BasisSampler s = *sampler;

  PetscFunctionBeginUser;
  if (!s) PetscFunctionReturn(0);
  PetscCall(PetscFree(s->pick));
  PetscCall(PetscFree4(s->ask, s->askat, s->give, s->giveat));
  PetscCall(PetscFree2(s->serve, s->served));
  if (s->row != MPI_DATATYPE_NULL) PetscCallMPI(MPI_Type_free(&s->row));
  PetscCall(PetscFree(*sampler));
  PetscFunctionReturn(0);
}
