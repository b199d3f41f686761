/*
  cluster.c - clustering and classification scores of an embedding (DESIGN.md "Metrics",
  used by `basis eval`): k-means, NMI and ACC against labels, and a linear probe.

  Every function takes this rank's rows of a row-major matrix and returns the same result
  on every rank. Communication is a few small allreduces: k-means centre sums,
  contingency tables, normal equations. Small dense factorisations (Cholesky) run on
  rank 0 and are broadcast, so every rank uses bitwise identical factors.

  Clustering: Lloyd's k-means with greedy k-means++ seeding and several restarts, NMI
  with arithmetic-mean normalisation and ACC by Hungarian matching (scikit-learn's
  defaults, so numbers compare with the literature). Linear probe: ridge least squares
  onto one-hot targets, a closed form that needs one allreduce. The subspace measures
  (d_G, d_perp) live in metrics.c.
*/
#include <basis/cluster.h>
#include <basis/log.h>
#include <petscblaslapack.h>
#include <math.h>
#include <stdint.h>

/* Lloyd iterations per restart and the centre-shift tolerance relative to the mean
   variance of the data: scikit-learn's defaults (max_iter=300, tol=1e-4). */
#define BASIS_KMEANS_MAX_IT 300
#define BASIS_KMEANS_TOL    1e-4
/* Largest contingency table (labels x clusters) the clustering metrics build, 80 MB of
   counts per rank: far above any real class count, it refuses label columns that are
   really row identifiers. */
#define BASIS_MAX_CONTINGENCY 10000000
/* Ridge of the linear probe relative to the unit variance of a standardised column: it
   only matters for collinear columns (a collapsed embedding), where it keeps the normal
   equations positive definite, and moves a well-posed fit by ~1e-6 relative. */
#define BASIS_PROBE_RIDGE 1e-6

/* Total rows over comm and the global index of this rank's first row (ranks hold
   consecutive blocks in rank order). */
static PetscErrorCode GlobalRows(MPI_Comm comm, PetscInt n, PetscInt64 *N, PetscInt64 *start)
{
  PetscInt64  nl = n, s = 0;
  PetscMPIInt rank;

  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  PetscCallMPI(MPI_Allreduce(&nl, N, 1, MPIU_INT64, MPI_SUM, comm));
  if (start) {
    PetscCallMPI(MPI_Exscan(&nl, &s, 1, MPIU_INT64, MPI_SUM, comm));
    *start = rank == 0 ? 0 : s; /* MPI_Exscan leaves rank 0's result undefined */
  }
  PetscFunctionReturn(0);
}

/* State of one k-means run over this rank's rows. */
typedef struct {
  MPI_Comm         comm;
  PetscInt         n, dim, k;
  PetscInt64       N, rstart;
  const PetscReal *Y;       /* [n][dim] */
  PetscReal       *centres; /* [k][dim], identical on every rank */
  PetscReal       *d2;      /* [n] squared distance to the nearest centre */
  int             *label;   /* [n] nearest centre */
} KMeans;

static inline PetscReal Dist2(PetscInt dim, const PetscReal x[], const PetscReal c[])
{
  PetscReal s = 0.0;

  for (PetscInt d = 0; d < dim; d++) s += (x[d] - c[d]) * (x[d] - c[d]);
  return s;
}

/* Copy the rows with global indices g [m] to rows [m][dim] on every rank: the owner
   contributes the row, the others zeros, and a sum (exact: one non-zero term) spreads it. */
static PetscErrorCode FetchRows(KMeans *km, PetscInt m, const PetscInt64 g[], PetscReal rows[])
{
  PetscFunctionBeginUser;
  PetscCall(PetscArrayzero(rows, m * km->dim));
  for (PetscInt l = 0; l < m; l++)
    if (g[l] >= km->rstart && g[l] < km->rstart + km->n)
      PetscCall(PetscArraycpy(rows + l * km->dim, km->Y + (size_t)(g[l] - km->rstart) * km->dim, km->dim));
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, rows, (int)(m * km->dim), MPIU_REAL, MPIU_SUM, km->comm));
  PetscFunctionReturn(0);
}

/*
  KMeansPlusPlus - greedy k-means++ seeding (Arthur & Vassilvitskii 2007; scikit-learn's
  variant): the first centre is a uniform draw; each next one is the best, by the
  potential sum_x D(x)^2 it leaves, of 2 + ln k candidates drawn with probability
  proportional to D(x)^2 over all ranks.

  Collective. A draw u is shared by all ranks (same stream); the target t = u sum D^2 falls
  in one rank's range of the prefix sums (MPI_Exscan in rank order = global row order),
  and that rank names the point. The choice is therefore that of a serial run on the
  concatenated rows, up to the rounding of prefix sums at a rank boundary.
*/
static PetscErrorCode KMeansPlusPlus(KMeans *km, BasisRng *rng)
{
  PetscInt    dim = km->dim, ntrials = 2 + (PetscInt)PetscLogReal((PetscReal)km->k);
  PetscInt64 *cand;
  PetscReal  *cum, *rows, *pot, *u;

  PetscFunctionBeginUser;
  PetscCall(PetscMalloc5(ntrials + 1, &cand, km->n, &cum, ntrials * dim, &rows, ntrials, &pot, ntrials, &u));
  cand[0] = PetscMin((PetscInt64)(BasisRngUniform(rng) * (PetscReal)km->N), km->N - 1);
  PetscCall(FetchRows(km, 1, cand, km->centres));
  for (PetscInt i = 0; i < km->n; i++) km->d2[i] = Dist2(dim, km->Y + (size_t)i * dim, km->centres);
  for (PetscInt c = 1; c < km->k; c++) {
    PetscReal local = 0.0, prefix = 0.0, total;
    PetscInt  best = 0;

    for (PetscInt i = 0; i < km->n; i++) cum[i] = (local += km->d2[i]);
    PetscCallMPI(MPI_Exscan(&local, &prefix, 1, MPIU_REAL, MPIU_SUM, km->comm));
    if (km->rstart == 0) prefix = 0.0; /* undefined on rank 0 (and on leading empty ranks: 0 anyway) */
    PetscCallMPI(MPI_Allreduce(&local, &total, 1, MPIU_REAL, MPIU_SUM, km->comm));
    for (PetscInt l = 0; l < ntrials; l++) u[l] = BasisRngUniform(rng);
    for (PetscInt l = 0; l < ntrials; l++) {
      PetscReal t = u[l] * total - prefix; /* target within this rank's range */

      cand[l] = INT64_MAX;
      if (!(total > 0))
        cand[l] = PetscMin((PetscInt64)(u[l] * (PetscReal)km->N), km->N - 1); /* all points are centres */
      else if (km->n > 0 && t >= 0 && t < cum[km->n - 1]) {
        PetscInt lo = 0, hi = km->n - 1; /* first i with cum[i] > t: never a point with D = 0 */
        while (lo < hi) {
          PetscInt mid = (lo + hi) / 2;
          if (cum[mid] > t)
            hi = mid;
          else
            lo = mid + 1;
        }
        cand[l] = km->rstart + lo;
      }
    }
    /* fallback when rounding at a rank boundary leaves t unclaimed: the last point with D > 0 */
    cand[ntrials] = INT64_MAX;
    for (PetscInt i = km->n - 1; i >= 0; i--)
      if (km->d2[i] > 0) {
        cand[ntrials] = -(km->rstart + i);
        break;
      }
    PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, cand, (int)(ntrials + 1), MPIU_INT64, MPI_MIN, km->comm));
    for (PetscInt l = 0; l < ntrials; l++)
      if (cand[l] == INT64_MAX) cand[l] = -cand[ntrials];
    PetscCall(FetchRows(km, ntrials, cand, rows));
    for (PetscInt l = 0; l < ntrials; l++) {
      pot[l] = 0.0;
      for (PetscInt i = 0; i < km->n; i++)
        pot[l] += PetscMin(km->d2[i], Dist2(dim, km->Y + (size_t)i * dim, rows + l * dim));
    }
    PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, pot, (int)ntrials, MPIU_REAL, MPIU_SUM, km->comm));
    for (PetscInt l = 1; l < ntrials; l++)
      if (pot[l] < pot[best]) best = l;
    PetscCall(PetscArraycpy(km->centres + c * dim, rows + best * dim, dim));
    for (PetscInt i = 0; i < km->n; i++)
      km->d2[i] = PetscMin(km->d2[i], Dist2(dim, km->Y + (size_t)i * dim, km->centres + c * dim));
  }
  PetscCall(PetscFree5(cand, cum, rows, pot, u));
  PetscFunctionReturn(0);
}

/* E-step: label each row with its nearest centre (lowest index on ties). Collective:
   returns the global number of changed labels and the inertia. */
static PetscErrorCode KMeansAssign(KMeans *km, PetscInt64 *changes, PetscReal *inertia)
{
  PetscReal buf[2] = {0.0, 0.0}; /* changes (exact in a double below 2^53), inertia */

  PetscFunctionBeginUser;
  for (PetscInt i = 0; i < km->n; i++) {
    const PetscReal *x    = km->Y + (size_t)i * km->dim;
    int              best = 0;
    PetscReal        bd   = Dist2(km->dim, x, km->centres);

    for (PetscInt c = 1; c < km->k; c++) {
      PetscReal d = Dist2(km->dim, x, km->centres + c * km->dim);
      if (d < bd) bd = d, best = (int)c;
    }
    if (km->label[i] != best) buf[0] += 1.0;
    km->label[i] = best;
    km->d2[i]    = bd;
    buf[1] += bd;
  }
  PetscCall(PetscLogFlops(3.0 * km->n * km->k * km->dim));
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, buf, 2, MPIU_REAL, MPIU_SUM, km->comm));
  *changes = (PetscInt64)buf[0];
  *inertia = buf[1];
  PetscFunctionReturn(0);
}

/* M-step: centres = means of their rows (one allreduce of sums and counts). A centre
   left without rows moves to the row farthest from its centre (scikit-learn's rule),
   chosen over all ranks, lowest global index on ties. Collective: returns the sum of
   squared centre moves. */
static PetscErrorCode KMeansUpdate(KMeans *km, PetscReal *shift)
{
  PetscInt   k = km->k, dim = km->dim;
  PetscReal *buf, *row, move = 0.0;

  PetscFunctionBeginUser;
  PetscCall(PetscCalloc1(k * (dim + 1), &buf));
  PetscCall(PetscMalloc1(dim, &row));
  for (PetscInt i = 0; i < km->n; i++) {
    PetscReal *sum = buf + km->label[i] * dim;
    for (PetscInt d = 0; d < dim; d++) sum[d] += km->Y[(size_t)i * dim + d];
    buf[k * dim + km->label[i]] += 1.0; /* counts exact in a double below 2^53 */
  }
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, buf, (int)(k * (dim + 1)), MPIU_REAL, MPIU_SUM, km->comm));
  for (PetscInt c = 0; c < k; c++) {
    PetscReal count = buf[k * dim + c];

    if (count > 0) {
      for (PetscInt d = 0; d < dim; d++) row[d] = buf[c * dim + d] / count;
    } else {
      PetscReal  far = -1.0;
      PetscInt64 g   = INT64_MAX;

      for (PetscInt i = 0; i < km->n; i++) far = PetscMax(far, km->d2[i]);
      PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &far, 1, MPIU_REAL, MPIU_MAX, km->comm));
      for (PetscInt i = 0; i < km->n && g == INT64_MAX; i++)
        if (km->d2[i] == far) g = km->rstart + i;
      PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &g, 1, MPIU_INT64, MPI_MIN, km->comm));
      PetscCall(FetchRows(km, 1, &g, row));
      if (g >= km->rstart && g < km->rstart + km->n) km->d2[g - km->rstart] = -1.0; /* not taken twice */
    }
    move += Dist2(dim, row, km->centres + c * dim);
    PetscCall(PetscArraycpy(km->centres + c * dim, row, dim));
  }
  *shift = move;
  PetscCall(PetscFree(buf));
  PetscCall(PetscFree(row));
  PetscFunctionReturn(0);
}

/*
  BasisKMeans - k-means clustering of the rows of Y (Lloyd's algorithm, greedy k-means++
  seeding, best of several restarts).

  Collective on comm.

  Input:
    n         - rows on this rank; ranks hold consecutive blocks of rows in rank order
    dim       - columns;  Y [n][dim] row-major
    nclusters - k, at most the total number of rows
    restarts  - independent seedings; the run of lowest inertia wins (earliest on ties)
    seed      - the run's seed; draws come from stream BASIS_STREAM_KMEANS
  Output:
    assign  - [n] cluster of each local row, 0 .. nclusters-1
    inertia - sum over all rows of the squared distance to the assigned centre

  Notes:
    Each restart runs at most 300 Lloyd iterations and stops when no label changes or the
    centres move (sum of squared moves) less than 1e-4 of the mean per-column variance,
    scikit-learn's defaults. Every decision is taken on allreduced values, so all ranks
    follow the same path; the result equals a serial run on the concatenated rows up to
    the rounding of the global sums (inertia to ~1e-15 relative).
*/
PetscErrorCode BasisKMeans(MPI_Comm comm, PetscInt n, PetscInt dim, const PetscReal Y[], PetscInt nclusters,
                           PetscInt restarts, PetscInt seed, int assign[], PetscReal *inertia)
{
  KMeans     km;
  BasisRng   rng;
  PetscReal *stats, tol = 0.0, best = PETSC_MAX_REAL;

  PetscFunctionBeginUser;
  PetscCheck(dim > 0 && nclusters > 0 && restarts > 0, comm, PETSC_ERR_ARG_OUTOFRANGE,
             "k-means needs dim, clusters and restarts of at least 1 (got %d, %d, %d)", (int)dim,
             (int)nclusters, (int)restarts);
  PetscCall(PetscLogEventBegin(BASIS_Metrics, 0, 0, 0, 0));
  km.comm = comm, km.n = n, km.dim = dim, km.k = nclusters, km.Y = Y;
  PetscCall(GlobalRows(comm, n, &km.N, &km.rstart));
  PetscCheck(km.N >= nclusters, comm, PETSC_ERR_ARG_OUTOFRANGE,
             "k-means with %d clusters needs at least %d rows, got %lld", (int)nclusters, (int)nclusters,
             (long long)km.N);

  /* tolerance: BASIS_KMEANS_TOL times the mean over columns of the variance */
  PetscCall(PetscCalloc1(2 * dim, &stats));
  for (PetscInt i = 0; i < n; i++)
    for (PetscInt d = 0; d < dim; d++) stats[d] += Y[(size_t)i * dim + d];
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, stats, (int)dim, MPIU_REAL, MPIU_SUM, comm));
  for (PetscInt d = 0; d < dim; d++) stats[d] /= (PetscReal)km.N;
  for (PetscInt i = 0; i < n; i++)
    for (PetscInt d = 0; d < dim; d++) {
      PetscReal e = Y[(size_t)i * dim + d] - stats[d];
      stats[dim + d] += e * e;
    }
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, stats + dim, (int)dim, MPIU_REAL, MPIU_SUM, comm));
  for (PetscInt d = 0; d < dim; d++) tol += stats[dim + d] / (PetscReal)km.N;
  tol *= BASIS_KMEANS_TOL / (PetscReal)dim;
  PetscCall(PetscFree(stats));
  PetscCheck(!PetscIsInfOrNanReal(tol), comm, PETSC_ERR_FP, "the data to cluster contain Inf or NaN");

  PetscCall(PetscMalloc3(nclusters * dim, &km.centres, n, &km.d2, n, &km.label));
  BasisRngSeed(&rng, (uint64_t)seed, BASIS_STREAM_KMEANS);
  for (PetscInt r = 0; r < restarts; r++) {
    PetscInt64 changes;
    PetscReal  energy, shift = 0.0;

    PetscCall(KMeansPlusPlus(&km, &rng));
    for (PetscInt i = 0; i < n; i++) km.label[i] = -1;
    PetscCall(KMeansAssign(&km, &changes, &energy));
    for (PetscInt it = 0; it < BASIS_KMEANS_MAX_IT; it++) {
      PetscCall(KMeansUpdate(&km, &shift));
      PetscCall(KMeansAssign(&km, &changes, &energy));
      if (changes == 0 || shift <= tol) break;
    }
    if (energy < best) {
      best = energy;
      for (PetscInt i = 0; i < n; i++) assign[i] = km.label[i];
    }
  }
  *inertia = best;
  PetscCall(PetscFree3(km.centres, km.d2, km.label));
  PetscCall(PetscLogEventEnd(BASIS_Metrics, 0, 0, 0, 0));
  PetscFunctionReturn(0);
}

/*
  CheckLabels - refuse negative labels or cluster numbers, and an empty row set.

  Collective on comm; one allreduce, so every rank raises the same error. Called before
  the log event begins, like PETSc's argument checks.
  Input: labels [n], assign [n] (may be NULL)
*/
static PetscErrorCode CheckLabels(MPI_Comm comm, PetscInt n, const int labels[], const int assign[])
{
  int buf[3] = {INT32_MAX, INT32_MAX, n > 0 ? -1 : 0}; /* min label, min cluster, -(any rows) */

  PetscFunctionBeginUser;
  for (PetscInt i = 0; i < n; i++) buf[0] = PetscMin(buf[0], labels[i]);
  for (PetscInt i = 0; assign && i < n; i++) buf[1] = PetscMin(buf[1], assign[i]);
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, buf, 3, MPI_INT, MPI_MIN, comm));
  PetscCheck(buf[2] < 0, comm, PETSC_ERR_ARG_SIZ, "no rows to compare labels on");
  PetscCheck(buf[0] >= 0, comm, PETSC_ERR_ARG_OUTOFRANGE,
             "labels contain the negative value %d; class labels must be non-negative integers", buf[0]);
  PetscCheck(buf[1] >= 0, comm, PETSC_ERR_ARG_OUTOFRANGE,
             "cluster assignments contain the negative value %d; clusters must be numbered from 0", buf[1]);
  PetscFunctionReturn(0);
}

/*
  GlobalValues - the distinct values of v over all ranks, ascending.

  Collective on comm. Output: values - [nvalues] newly allocated (PetscFree)
*/
static PetscErrorCode GlobalValues(MPI_Comm comm, PetscInt n, const int v[], const char *name,
                                   PetscInt *nvalues, PetscInt **values)
{
  PetscInt    nl = n, *local, *all;
  int         nloc;
  PetscMPIInt size, *counts, *displs;

  PetscFunctionBeginUser;
  PetscCall(PetscMalloc1(n, &local));
  for (PetscInt i = 0; i < n; i++) local[i] = v[i];
  PetscCall(PetscSortRemoveDupsInt(&nl, local));
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCall(PetscMalloc2(size, &counts, size + 1, &displs));
  nloc = (int)nl;
  PetscCallMPI(MPI_Allgather(&nloc, 1, MPI_INT, counts, 1, MPI_INT, comm));
  displs[0] = 0;
  for (PetscMPIInt r = 0; r < size; r++) {
    PetscCheck(counts[r] <= INT32_MAX - displs[r], comm, PETSC_ERR_ARG_OUTOFRANGE,
               "%s take too many distinct values to count", name);
    displs[r + 1] = displs[r] + counts[r];
  }
  PetscCall(PetscMalloc1(displs[size], &all));
  PetscCallMPI(MPI_Allgatherv(local, nloc, MPIU_INT, all, counts, displs, MPIU_INT, comm));
  *nvalues = displs[size];
  PetscCall(PetscSortRemoveDupsInt(nvalues, all));
  *values = all;
  PetscCall(PetscFree(local));
  PetscCall(PetscFree2(counts, displs));
  PetscFunctionReturn(0);
}

/*
  Contingency - table [nr][nc] of counts of (label value, assign value) pairs over all
  ranks, rows and columns in ascending order of the distinct values.

  Collective on comm. Output: table newly allocated (PetscFree), N the number of rows.
*/
static PetscErrorCode Contingency(MPI_Comm comm, PetscInt n, const int labels[], const int assign[],
                                  PetscInt *nr, PetscInt *nc, PetscInt64 **table, PetscInt64 *N)
{
  PetscInt *lv, *av;

  PetscFunctionBeginUser;
  PetscCall(GlobalRows(comm, n, N, NULL));
  PetscCall(GlobalValues(comm, n, labels, "labels", nr, &lv));
  PetscCall(GlobalValues(comm, n, assign, "cluster assignments", nc, &av));
  PetscCheck((double)*nr * (double)*nc <= BASIS_MAX_CONTINGENCY, comm, PETSC_ERR_ARG_OUTOFRANGE,
             "labels take %d distinct values and clusters %d: a %g-entry contingency table is too large; "
             "are /labels class labels?",
             (int)*nr, (int)*nc, (double)*nr * (double)*nc);
  PetscCall(PetscCalloc1(*nr * *nc, table));
  for (PetscInt i = 0; i < n; i++) {
    PetscInt a, b;
    PetscCall(PetscFindInt(labels[i], *nr, lv, &a));
    PetscCall(PetscFindInt(assign[i], *nc, av, &b));
    (*table)[a * *nc + b]++;
  }
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, *table, (int)(*nr * *nc), MPIU_INT64, MPI_SUM, comm));
  PetscCall(PetscFree(lv));
  PetscCall(PetscFree(av));
  PetscFunctionReturn(0);
}

/*
  BasisMetricNMI - normalised mutual information between class labels and a clustering,
  NMI = I(U;V) / ((H(U) + H(V)) / 2) (arithmetic mean, scikit-learn's default).

  Collective on comm.

  Input:
    n      - rows on this rank
    labels - [n] class of each row, any non-negative integers (need not be consecutive)
    assign - [n] cluster of each row, any non-negative integers
  Output:
    nmi - in [0, 1], identical on every rank

  Notes:
    Natural logarithms (NMI does not depend on the base). Degenerate cases as scikit-learn:
    both labellings a single class -> 1 (identical partitions); otherwise I = 0 -> 0 (this
    covers one side being a single class while the other is not).
*/
PetscErrorCode BasisMetricNMI(MPI_Comm comm, PetscInt n, const int labels[], const int assign[],
                              PetscReal *nmi)
{
  PetscInt    nr, nc;
  PetscInt64 *table, N;
  PetscReal  *a, *b, hu = 0.0, hv = 0.0, mi = 0.0, result;

  PetscFunctionBeginUser;
  PetscCall(CheckLabels(comm, n, labels, assign));
  PetscCall(PetscLogEventBegin(BASIS_Metrics, 0, 0, 0, 0));
  PetscCall(Contingency(comm, n, labels, assign, &nr, &nc, &table, &N));
  PetscCall(PetscCalloc2(nr, &a, nc, &b));
  for (PetscInt i = 0; i < nr; i++)
    for (PetscInt j = 0; j < nc; j++)
      a[i] += (PetscReal)table[i * nc + j], b[j] += (PetscReal)table[i * nc + j];
  for (PetscInt i = 0; i < nr; i++) hu -= a[i] / N * PetscLogReal(a[i] / N);
  for (PetscInt j = 0; j < nc; j++) hv -= b[j] / N * PetscLogReal(b[j] / N);
  for (PetscInt i = 0; i < nr; i++)
    for (PetscInt j = 0; j < nc; j++) {
      PetscReal nij = (PetscReal)table[i * nc + j];
      if (nij > 0) mi += nij / N * PetscLogReal((PetscReal)N * nij / (a[i] * b[j]));
    }
  mi = PetscMax(mi, 0.0); /* rounding can leave -eps for independent labellings */
  if (nr == 1 && nc == 1)
    result = 1.0;
  else if (mi == 0.0)
    result = 0.0;
  else
    result = mi / (0.5 * (hu + hv));
  /* logarithms may round differently on different nodes: rank 0's value is the result */
  PetscCallMPI(MPI_Bcast(&result, 1, MPIU_REAL, 0, comm));
  *nmi = result;
  PetscCall(PetscFree2(a, b));
  PetscCall(PetscFree(table));
  PetscCall(PetscLogEventEnd(BASIS_Metrics, 0, 0, 0, 0));
  PetscFunctionReturn(0);
}

/*
  MaxWeightMatching - Hungarian algorithm (Kuhn-Munkres with potentials, O(nr^2 nc)):
  the largest total weight of a matching of each of the nr <= nc rows of w [nr][nc] to a
  distinct column. Not collective; integer arithmetic, so every rank gets the same answer.
*/
static PetscErrorCode MaxWeightMatching(PetscInt nr, PetscInt nc, const PetscInt64 w[], PetscInt64 *total)
{
  const PetscInt64 inf = INT64_MAX / 4; /* above any cost or potential: |w| <= N < 2^31 */
  PetscInt64      *u, *v, *minv;
  PetscInt        *p, *way;
  PetscBool       *used;

  PetscFunctionBeginUser;
  PetscCall(PetscCalloc6(nr + 1, &u, nc + 1, &v, nc + 1, &minv, nc + 1, &p, nc + 1, &way, nc + 1, &used));
  /* minimise the cost -w; 1-based rows and columns, column 0 is a sentinel */
  for (PetscInt i = 1; i <= nr; i++) {
    PetscInt j0 = 0;

    p[0] = i;
    for (PetscInt j = 0; j <= nc; j++) minv[j] = inf, used[j] = PETSC_FALSE;
    do {
      PetscInt   i0 = p[j0], j1 = 0;
      PetscInt64 delta = inf;

      used[j0] = PETSC_TRUE;
      for (PetscInt j = 1; j <= nc; j++) {
        if (used[j]) continue;
        PetscInt64 cur = -w[(i0 - 1) * nc + (j - 1)] - u[i0] - v[j];
        if (cur < minv[j]) minv[j] = cur, way[j] = j0;
        if (minv[j] < delta) delta = minv[j], j1 = j;
      }
      for (PetscInt j = 0; j <= nc; j++) {
        if (used[j])
          u[p[j]] += delta, v[j] -= delta;
        else
          minv[j] -= delta;
      }
      j0 = j1;
    } while (p[j0] != 0);
    do { /* augment along the alternating path */
      PetscInt j1 = way[j0];
      p[j0]       = p[j1];
      j0          = j1;
    } while (j0);
  }
  *total = 0;
  for (PetscInt j = 1; j <= nc; j++)
    if (p[j]) *total += w[(p[j] - 1) * nc + (j - 1)];
  PetscCall(PetscFree6(u, v, minv, p, way, used));
  PetscFunctionReturn(0);
}

/*
  BasisMetricACC - clustering accuracy: the fraction of rows whose cluster is matched to
  their class by the best one-to-one matching of clusters to classes.

  Collective on comm.

  Input:
    n      - rows on this rank
    labels - [n] class of each row, any non-negative integers
    assign - [n] cluster of each row, any non-negative integers
  Output:
    acc - matched / total, identical on every rank

  Notes:
    The matching maximises the matched count over the allreduced contingency table with
    the Hungarian algorithm; the numbers of classes and clusters may differ (rows left
    unmatched count as errors).
*/
PetscErrorCode BasisMetricACC(MPI_Comm comm, PetscInt n, const int labels[], const int assign[],
                              PetscReal *acc)
{
  PetscInt    nr, nc;
  PetscInt64 *table, *wt, N, matched;

  PetscFunctionBeginUser;
  PetscCall(CheckLabels(comm, n, labels, assign));
  PetscCall(PetscLogEventBegin(BASIS_Metrics, 0, 0, 0, 0));
  PetscCall(Contingency(comm, n, labels, assign, &nr, &nc, &table, &N));
  if (nr <= nc)
    PetscCall(MaxWeightMatching(nr, nc, table, &matched));
  else {
    PetscCall(PetscMalloc1(nr * nc, &wt));
    for (PetscInt i = 0; i < nr; i++)
      for (PetscInt j = 0; j < nc; j++) wt[j * nr + i] = table[i * nc + j];
    PetscCall(MaxWeightMatching(nc, nr, wt, &matched));
    PetscCall(PetscFree(wt));
  }
  *acc = (PetscReal)matched / (PetscReal)N;
  PetscCall(PetscFree(table));
  PetscCall(PetscLogEventEnd(BASIS_Metrics, 0, 0, 0, 0));
  PetscFunctionReturn(0);
}

/* Uniform in [0, 1) from a global row index (splitmix64's finaliser): the train/test
   split of the linear probe, the same for every rank count and every run. */
static PetscReal SplitUniform(PetscInt g)
{
  uint64_t z = (uint64_t)(int64_t)g + 0x9e3779b97f4a7c15ULL;

  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  z ^= z >> 31;
  return (PetscReal)(z >> 11) * 0x1.0p-53;
}

/*
  BasisLinearProbe - accuracy of a linear classifier of the labels from the embedding,
  trained on one split of the rows and scored on the other.

  Collective on comm.

  Input:
    n             - rows on this rank
    dim           - columns;  Y [n][dim] row-major
    labels        - [n] class of each row, any non-negative integers
    gidx          - [n] global index of each row: decides the split
    test_fraction - in (0, 1): a row is a test row when a hash of its global index, uniform
                    in [0, 1), is below test_fraction
  Output:
    accuracy - fraction of test rows whose class is predicted, identical on every rank

  Notes:
    The classifier is multinomial least squares onto one-hot targets with a small ridge:
    columns are standardised with the train split's mean and deviation (a column of zero
    variance becomes 0), W = argmin ||[Z 1] W - T||^2 + 1e-6 n_train ||W_Z||^2 (the bias
    row is not penalised), solved in closed form from the allreduced (dim+1) x (dim+1)
    normal equations by Cholesky on rank 0. A test row is given the class of its largest
    score (lowest class on ties). Least squares is not a maximum-margin classifier, but
    it separates well-separated classes, needs no iterations or learning rate, and its
    result does not depend on the rank count.
*/
PetscErrorCode BasisLinearProbe(MPI_Comm comm, PetscInt n, PetscInt dim, const PetscReal Y[],
                                const int labels[], const PetscInt gidx[], PetscReal test_fraction,
                                PetscReal *accuracy)
{
  PetscInt     nclass, *classes, d1 = dim + 1;
  PetscInt64   counts[3] = {0, 0, 0}; /* train rows, test rows, correct test rows */
  PetscReal   *mu, *sd, *A, *z;
  PetscBool   *test;
  PetscMPIInt  rank;
  PetscBLASInt bd, bc, info = 0;

  PetscFunctionBeginUser;
  PetscCheck(test_fraction > 0 && test_fraction < 1, comm, PETSC_ERR_ARG_OUTOFRANGE,
             "linear probe test fraction %g must lie in (0, 1)", (double)test_fraction);
  PetscCheck(dim > 0, comm, PETSC_ERR_ARG_OUTOFRANGE, "linear probe needs at least one column (got %d)",
             (int)dim);
  PetscCall(CheckLabels(comm, n, labels, NULL));
  for (PetscInt i = 0; i < n; i++) counts[SplitUniform(gidx[i]) < test_fraction ? 1 : 0]++;
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, counts, 2, MPIU_INT64, MPI_SUM, comm));
  PetscCheck(counts[0] > 0 && counts[1] > 0, comm, PETSC_ERR_ARG_OUTOFRANGE,
             "linear probe: test fraction %g splits %lld rows into %lld train and %lld test rows; both must "
             "be non-empty",
             (double)test_fraction, (long long)(counts[0] + counts[1]), (long long)counts[0],
             (long long)counts[1]);

  PetscCall(PetscLogEventBegin(BASIS_Metrics, 0, 0, 0, 0));
  PetscCall(GlobalValues(comm, n, labels, "labels", &nclass, &classes));
  PetscCall(PetscCalloc4(2 * dim, &mu, dim, &sd, d1 * (d1 + nclass), &A, d1, &z));
  PetscCall(PetscMalloc1(n, &test));
  for (PetscInt i = 0; i < n; i++) test[i] = SplitUniform(gidx[i]) < test_fraction ? PETSC_TRUE : PETSC_FALSE;

  /* standardisation from the train split: means, then centred sums of squares */
  for (PetscInt i = 0; i < n; i++)
    if (!test[i])
      for (PetscInt d = 0; d < dim; d++) mu[d] += Y[(size_t)i * dim + d];
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, mu, (int)dim, MPIU_REAL, MPIU_SUM, comm));
  for (PetscInt d = 0; d < dim; d++) mu[d] /= (PetscReal)counts[0];
  for (PetscInt i = 0; i < n; i++)
    if (!test[i])
      for (PetscInt d = 0; d < dim; d++) {
        PetscReal e = Y[(size_t)i * dim + d] - mu[d];
        mu[dim + d] += e * e;
      }
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, mu + dim, (int)dim, MPIU_REAL, MPIU_SUM, comm));
  for (PetscInt d = 0; d < dim; d++) {
    PetscCheck(!PetscIsInfOrNanReal(mu[dim + d]), comm, PETSC_ERR_FP,
               "linear probe: the embedding contains Inf or NaN");
    sd[d] = mu[dim + d] > 0 ? PetscSqrtReal(mu[dim + d] / (PetscReal)counts[0]) : 1.0;
  }

  /* normal equations, column-major: A [d1][d1] = sum z z^T, then B [d1][nclass] = sum z e_class^T */
  for (PetscInt i = 0; i < n; i++) {
    PetscInt c;
    if (test[i]) continue;
    for (PetscInt d = 0; d < dim; d++) z[d] = (Y[(size_t)i * dim + d] - mu[d]) / sd[d];
    z[dim] = 1.0;
    for (PetscInt a = 0; a < d1; a++)
      for (PetscInt b = 0; b <= a; b++) A[b * d1 + a] += z[a] * z[b]; /* lower triangle */
    PetscCall(PetscFindInt(labels[i], nclass, classes, &c));
    for (PetscInt a = 0; a < d1; a++) A[d1 * d1 + c * d1 + a] += z[a];
  }
  PetscCall(PetscLogFlops((PetscReal)counts[0] * d1 * d1));
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, A, (int)(d1 * (d1 + nclass)), MPIU_REAL, MPIU_SUM, comm));
  for (PetscInt d = 0; d < dim; d++) A[d * d1 + d] += BASIS_PROBE_RIDGE * (PetscReal)counts[0];
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  if (rank == 0) {
    PetscCall(PetscBLASIntCast(d1, &bd));
    PetscCall(PetscBLASIntCast(nclass, &bc));
    PetscCallBLAS("LAPACKpotrf", LAPACKpotrf_("L", &bd, A, &bd, &info));
    if (!info) PetscCallBLAS("LAPACKpotrs", LAPACKpotrs_("L", &bd, &bc, A, &bd, A + d1 * d1, &bd, &info));
  }
  PetscCallMPI(MPI_Bcast(&info, 1, MPI_INT, 0, comm));
  PetscCheck(info == 0, comm, PETSC_ERR_LIB,
             "linear probe: LAPACK Cholesky of the normal equations failed (info = %d)", (int)info);
  PetscCallMPI(MPI_Bcast(A + d1 * d1, (int)(d1 * nclass), MPIU_REAL, 0, comm));

  /* score the test rows: W [d1][nclass] column-major follows A */
  for (PetscInt i = 0; i < n; i++) {
    const PetscReal *W          = A + d1 * d1;
    PetscInt         best       = 0, c;
    PetscReal        best_score = -PETSC_MAX_REAL;

    if (!test[i]) continue;
    for (PetscInt d = 0; d < dim; d++) z[d] = (Y[(size_t)i * dim + d] - mu[d]) / sd[d];
    z[dim] = 1.0;
    for (PetscInt k = 0; k < nclass; k++) {
      PetscReal score = 0.0;
      for (PetscInt a = 0; a < d1; a++) score += z[a] * W[k * d1 + a];
      if (score > best_score) best_score = score, best = k;
    }
    PetscCall(PetscFindInt(labels[i], nclass, classes, &c));
    if (c == best) counts[2]++;
  }
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, counts + 2, 1, MPIU_INT64, MPI_SUM, comm));
  *accuracy = (PetscReal)counts[2] / (PetscReal)counts[1];
  PetscCall(PetscFree4(mu, sd, A, z));
  PetscCall(PetscFree(test));
  PetscCall(PetscFree(classes));
  PetscCall(PetscLogEventEnd(BASIS_Metrics, 0, 0, 0, 0));
  PetscFunctionReturn(0);
}
