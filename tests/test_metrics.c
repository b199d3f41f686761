/*
  test_metrics - the embedding metrics (DESIGN.md "Metrics") against values known by
  construction or computed by hand, each rank holding a different block of rows
  (BasisBlockRange): d_G = 0 for affine images, d_G and the angles of subspaces built with
  known principal angles, the sin^2 of every angle, d_G over the non-trivial directions
  and the published tables' d_G (0 on affine images, a known rotation recovered, equal to
  a run on one rank, the published one equal to its recipe computed directly), d_perp of
  orthogonal and hand-made columns (all in metrics.c), NMI and ACC of a
  relabelling and of a hand-computed contingency table, k-means recovering separated blobs
  and equal to a serial run on the same rows, and a linear probe on separable classes
  (cluster.c).
  Rows are generated from their global index, so every rank count sees the same data.
*/
#include <basis/metrics.h>
#include <basis/cluster.h>
#include <petscblaslapack.h>
#include <basis/h5io.h>
#include "check.h"
#include <slepcsys.h>

/* Agreement between computed and exact values: rounding of sums of a few hundred rows
   (~1e-14), far below any real error. */
#define TOL 1e-10
/* An angle of 0 comes back from a cosine within rounding of 1: acos(1 - eps) ~ 2e-8. */
#define ANGLE_TOL 1e-7

/* A K x K matrix (row-major) of N(0,1) entries plus 3 I: invertible, modest condition
   number. The same on every rank. */
static void RandomInvertible(PetscInt K, uint64_t seed, PetscReal A[])
{
  BasisRng rng;

  BasisRngSeed(&rng, seed, 0);
  for (PetscInt i = 0; i < K * K; i++) A[i] = BasisRngNormal(&rng) + (i % (K + 1) == 0 ? 3.0 : 0.0);
}

/* Y [n][K] = X [n][K] A + 1 b^T, b drawn from seed. */
static void Affine(PetscInt n, PetscInt K, const PetscReal X[], const PetscReal A[], uint64_t seed,
                   PetscReal Y[])
{
  BasisRng  rng;
  PetscReal b[16];

  BasisRngSeed(&rng, seed, 1);
  for (PetscInt j = 0; j < K; j++) b[j] = 10.0 * BasisRngNormal(&rng);
  for (PetscInt i = 0; i < n; i++)
    for (PetscInt j = 0; j < K; j++) {
      Y[i * K + j] = b[j];
      for (PetscInt l = 0; l < K; l++) Y[i * K + j] += X[i * K + l] * A[l * K + j];
    }
}

/* d_G = 0 (and all angles 0) for Y = V A + 1 b^T, with and without a constant column in
   V (the trivial eigenvector), and with a constant column added to Y. */
static PetscErrorCode TestAffine(MPI_Comm comm, PetscInt N)
{
  const PetscInt K = 6;
  PetscMPIInt    size, rank;
  PetscInt       start, n, rY, rV;
  PetscReal     *V, *Y, *Y2, A[36], theta[7], dG;

  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  BasisBlockRange(N, size, rank, &start, &n);
  PetscCall(PetscMalloc3(n * K, &V, n * K, &Y, n * (K + 1), &Y2));
  RandomInvertible(K, 18, A);
  for (int constant = 0; constant < 2; constant++) {
    for (PetscInt i = 0; i < n; i++) {
      BasisRng rng;
      BasisRngSeed(&rng, 17, (uint64_t)(start + i));
      for (PetscInt j = 0; j < K; j++) V[i * K + j] = BasisRngNormal(&rng);
      if (constant) V[i * K] = 0.1; /* the trivial eigenvector: constant */
    }
    Affine(n, K, V, A, 19, Y);
    PetscCall(BasisMetricGrassmannRanks(comm, n, K, Y, K, V, &dG, theta, &rY, &rV));
    PetscCall(BasisTestCheckNear(comm, constant ? "affine image (constant column): d_G" : "affine image: d_G",
                                 dG, 0.0, TOL));
    PetscCall(BasisTestCheckSame(comm, "d_G", dG));
    for (PetscInt i = 0; i < K; i++)
      PetscCall(BasisTestCheckNear(comm, "affine image: angle", theta[i], 0.0, ANGLE_TOL));
    PetscCall(BasisTestCheck(comm, (PetscBool)(rY == K - constant && rV == K - constant),
                             "affine image: rank of centre(Y) (centre(V) alike): got %d, expected %d",
                             (int)rY, (int)(K - constant)));

    /* Y with a constant column appended: it is dropped, the span is unchanged */
    for (PetscInt i = 0; i < n; i++) {
      for (PetscInt j = 0; j < K; j++) Y2[i * (K + 1) + j] = Y[i * K + j];
      Y2[i * (K + 1) + K] = 3.0;
    }
    PetscCall(BasisMetricGrassmannRanks(comm, n, K + 1, Y2, K, V, &dG, theta, &rY, &rV));
    PetscCall(BasisTestCheckNear(comm, "affine image plus a constant column: d_G", dG, 0.0, TOL));
    PetscCall(BasisTestCheck(comm, (PetscBool)(rY == K - constant),
                             "constant column dropped: rank of centre(Y): got %d, expected %d", (int)rY,
                             (int)(K - constant)));
  }
  PetscCall(PetscFree3(V, Y, Y2));
  PetscFunctionReturn(0);
}

/* e_f(g), f = 0, 1, ...: cos and sin of frequencies 1, 2, ... over N rows, orthogonal to
   each other and to the constant vector (frequencies below N/2). */
static PetscReal Fourier(PetscInt f, PetscInt g, PetscInt N)
{
  PetscReal phase = 2.0 * PETSC_PI * (PetscReal)(f / 2 + 1) * (PetscReal)g / (PetscReal)N;
  return f % 2 ? PetscSinReal(phase) : PetscCosReal(phase);
}

/* Subspaces with known principal angles a_j: Y = span(e_0 .. e_{K-1}) in a random basis
   with an offset, V_j = cos(a_j) e_j + sin(a_j) e_{K+j} scaled and offset. Then the angles
   are exactly a_j and d_G = sum_j sin^2 a_j. With only the first 3 columns of Y the
   angles are a_0, a_1, a_2 (V_3 .. V_5 are orthogonal to them). */
static PetscErrorCode TestKnownAngles(MPI_Comm comm, PetscInt N)
{
  const PetscInt  K    = 6;
  const PetscReal a[6] = {0.0, 0.1, 0.5, 1.0, 1.3, PETSC_PI / 2};
  PetscMPIInt     size, rank;
  PetscInt        start, n, rY, rV;
  PetscReal      *E, *Y, *V, *Y3, A[36], theta[6], dG, expect = 0.0, expect3 = 0.0;

  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  BasisBlockRange(N, size, rank, &start, &n);
  PetscCall(PetscMalloc4(n * K, &E, n * K, &Y, n * K, &V, n * 3, &Y3));
  for (PetscInt i = 0; i < n; i++)
    for (PetscInt j = 0; j < K; j++) {
      E[i * K + j] = Fourier(j, start + i, N);
      V[i * K + j] = (j + 1.0) * (PetscCosReal(a[j]) * Fourier(j, start + i, N) +
                                  PetscSinReal(a[j]) * Fourier(K + j, start + i, N)) -
                     2.0 * j;
      if (j < 3) Y3[i * 3 + j] = 5.0 * E[i * K + j] + 1.0;
    }
  RandomInvertible(K, 20, A);
  Affine(n, K, E, A, 21, Y);
  for (PetscInt j = 0; j < K; j++) expect += PetscSqr(PetscSinReal(a[j]));
  for (PetscInt j = 0; j < 3; j++) expect3 += PetscSqr(PetscSinReal(a[j]));

  PetscCall(BasisMetricGrassmannRanks(comm, n, K, Y, K, V, &dG, theta, &rY, &rV));
  PetscCall(BasisTestCheckNear(comm, "known angles: d_G", dG, expect, TOL));
  PetscCall(BasisTestCheckSame(comm, "d_G", dG));
  for (PetscInt j = 0; j < K; j++)
    PetscCall(BasisTestCheckNear(comm, "known angles: theta", theta[j], a[j], ANGLE_TOL));
  PetscCall(BasisTestCheck(comm, (PetscBool)(rY == K && rV == K),
                           "known angles: full ranks: got %d, expected %d", (int)rY, (int)K));

  PetscCall(BasisMetricGrassmann(comm, n, 3, Y3, K, V, &dG, theta));
  PetscCall(BasisTestCheckNear(comm, "known angles, 3 x 6 columns: d_G", dG, expect3, TOL));
  for (PetscInt j = 0; j < 3; j++)
    PetscCall(BasisTestCheckNear(comm, "known angles, 3 x 6: theta", theta[j], a[j], ANGLE_TOL));
  PetscCall(BasisMetricGrassmann(comm, n, K, V, 3, Y3, &dG, theta));
  PetscCall(BasisTestCheckNear(comm, "known angles, 6 x 3 columns: d_G", dG, expect3, TOL));

  /* d_perp: Fourier columns are orthogonal whatever their scales */
  for (PetscInt i = 0; i < n; i++)
    for (PetscInt j = 0; j < K; j++) E[i * K + j] *= (j + 1.0);
  PetscCall(BasisMetricOrthogonality(comm, n, K, E, &dG));
  PetscCall(BasisTestCheckNear(comm, "d_perp of orthogonal columns", dG, 0.0, TOL));
  PetscCall(PetscFree4(E, Y, V, Y3));
  PetscFunctionReturn(0);
}

/* d_perp by hand, N divisible by 4: columns 1 (all ones), h = indicator of the first half,
   q = indicator of the first quarter. Cosines: (1,h) = (N/2) / sqrt(N * N/2) = 1/sqrt 2,
   (1,q) = (N/4) / sqrt(N * N/4) = 1/2, (h,q) = (N/4) / sqrt(N/2 * N/4) = 1/sqrt 2.
   d_perp^2 = 2 (1/2 + 1/4 + 1/2) = 5/2. */
static PetscErrorCode TestOrthogonalityByHand(MPI_Comm comm, PetscInt N)
{
  PetscMPIInt size, rank;
  PetscInt    start, n;
  PetscReal  *Y, dperp;

  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  BasisBlockRange(N, size, rank, &start, &n);
  PetscCall(PetscMalloc1(n * 3, &Y));
  for (PetscInt i = 0; i < n; i++) {
    Y[i * 3 + 0] = 1.0;
    Y[i * 3 + 1] = start + i < N / 2 ? 2.0 : 0.0; /* scale does not matter */
    Y[i * 3 + 2] = start + i < N / 4 ? 1.0 : 0.0;
  }
  PetscCall(BasisMetricOrthogonality(comm, n, 3, Y, &dperp));
  PetscCall(BasisTestCheckNear(comm, "d_perp by hand", dperp, PetscSqrtReal(2.5), TOL));
  PetscCall(BasisTestCheckSame(comm, "d_perp", dperp));
  PetscCall(PetscFree(Y));
  PetscFunctionReturn(0);
}

/* NMI and ACC: a relabelling is a perfect match; a hand-computed table; degenerate cases;
   a negative label is an error on every rank. */
static PetscErrorCode TestClusterScores(MPI_Comm comm)
{
  /* Hand table, classes a, b, c (label values 10, 3, 42) x clusters 0, 1 (values 5, 1):
         a: 4 0   b: 1 3   c: 2 2     N = 12, class sizes 4 4 4, cluster sizes 7 5.
     ACC: cluster 0 -> a (4) and cluster 1 -> b (3) is the best matching: 7/12.
     H(U) = ln 3 = 1.0986122886681098
     H(V) = -(7/12 ln 7/12 + 5/12 ln 5/12) = 0.6791932659915256
     I = 4/12 ln(12*4/(4*7)) + 1/12 ln(12*1/(4*7)) + 3/12 ln(12*3/(4*5))
       + 2/12 ln(12*2/(4*7)) + 2/12 ln(12*2/(4*5))
       = 1/3 ln 12/7 + 1/12 ln 3/7 + 1/4 ln 9/5 + 1/6 ln 6/7 + 1/6 ln 6/5 = 0.2606991575986078
     NMI = I / ((H(U) + H(V)) / 2) = 0.2932819699154548
     The table is repeated 10 times over N = 120 rows: the same NMI and ACC. */
  const int       pattern[12][2] = {{10, 5}, {10, 5}, {10, 5}, {10, 5}, {3, 5},  {3, 1},
                                    {3, 1},  {3, 1},  {42, 5}, {42, 5}, {42, 1}, {42, 1}};
  const int       perm[5]        = {3, 0, 4, 1, 2};
  const PetscReal hu             = PetscLogReal(3.0),
                  hv             = -(7.0 / 12 * PetscLogReal(7.0 / 12) + 5.0 / 12 * PetscLogReal(5.0 / 12));
  const PetscReal mi = PetscLogReal(12.0 / 7) / 3 + PetscLogReal(3.0 / 7) / 12 + PetscLogReal(9.0 / 5) / 4 +
                       PetscLogReal(6.0 / 7) / 6 + PetscLogReal(6.0 / 5) / 6;
  const PetscInt N = 120;
  PetscMPIInt    size, rank;
  PetscInt       start, n;
  int           *labels, *assign, *ones;
  PetscReal      nmi, acc;
  PetscErrorCode ierr;

  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  BasisBlockRange(N, size, rank, &start, &n);
  PetscCall(PetscMalloc3(n, &labels, n, &assign, n, &ones));

  for (PetscInt i = 0; i < n; i++) {
    PetscInt g = start + i;
    labels[i]  = 7 + 3 * (g % 5);
    assign[i]  = perm[g % 5];
    ones[i]    = 4;
  }
  PetscCall(BasisMetricNMI(comm, n, labels, assign, &nmi));
  PetscCall(BasisMetricACC(comm, n, labels, assign, &acc));
  PetscCall(BasisTestCheckNear(comm, "NMI of a relabelling", nmi, 1.0, TOL));
  PetscCall(BasisTestCheckNear(comm, "ACC of a relabelling", acc, 1.0, 0.0));
  PetscCall(BasisTestCheckSame(comm, "NMI", nmi));

  PetscCall(BasisMetricNMI(comm, n, ones, ones, &nmi));
  PetscCall(BasisTestCheckNear(comm, "NMI, both a single cluster", nmi, 1.0, 0.0));
  PetscCall(BasisMetricNMI(comm, n, ones, assign, &nmi));
  PetscCall(BasisTestCheckNear(comm, "NMI, one side a single cluster", nmi, 0.0, 0.0));
  PetscCall(BasisMetricACC(comm, n, ones, assign, &acc));
  PetscCall(BasisTestCheckNear(comm, "ACC, one class, five clusters", acc, 0.2, TOL));

  for (PetscInt i = 0; i < n; i++) {
    labels[i] = pattern[(start + i) % 12][0];
    assign[i] = pattern[(start + i) % 12][1];
  }
  PetscCall(BasisMetricNMI(comm, n, labels, assign, &nmi));
  PetscCall(BasisMetricACC(comm, n, labels, assign, &acc));
  PetscCall(BasisTestCheckNear(comm, "NMI by hand", nmi, mi / ((hu + hv) / 2), TOL));
  PetscCall(BasisTestCheckNear(comm, "NMI by hand (decimal)", nmi, 0.2932819699154548, TOL));
  PetscCall(BasisTestCheckNear(comm, "ACC by hand", acc, 7.0 / 12, TOL));
  /* the transposed table: 2 classes, 3 clusters */
  PetscCall(BasisMetricNMI(comm, n, assign, labels, &nmi));
  PetscCall(BasisMetricACC(comm, n, assign, labels, &acc));
  PetscCall(BasisTestCheckNear(comm, "NMI by hand, transposed", nmi, 0.2932819699154548, TOL));
  PetscCall(BasisTestCheckNear(comm, "ACC by hand, transposed", acc, 7.0 / 12, TOL));

  /* a table where the greedy matching (largest entry first) is wrong: classes 0, 1 x
     clusters 0, 1 = [5 4; 4 0]. Greedy takes 5 then 0; the best is 4 + 4: ACC = 8/13. */
  BasisBlockRange(N - N % 13, size, rank, &start, &n); /* whole copies of the 13-row table */
  for (PetscInt i = 0; i < n; i++) {
    PetscInt g = (start + i) % 13;
    labels[i]  = g < 9 ? 0 : 1;
    assign[i]  = g < 5 ? 0 : (g < 9 ? 1 : 0);
  }
  PetscCall(BasisMetricACC(comm, n, labels, assign, &acc));
  PetscCall(BasisTestCheckNear(comm, "ACC where greedy matching fails", acc, 8.0 / 13, TOL));
  BasisBlockRange(N, size, rank, &start, &n);

  /* a negative label on the last rank only: every rank returns the error, none hangs */
  if (rank == size - 1 && n > 0) labels[n - 1] = -2;
  PetscCall(PetscPushErrorHandler(PetscReturnErrorHandler, NULL));
  ierr = BasisMetricNMI(comm, n, labels, assign, &nmi);
  PetscCall(PetscPopErrorHandler());
  PetscCall(BasisTestCheck(comm, (PetscBool)(ierr != 0),
                           "negative label accepted (error code): got %d, expected 1", (int)ierr));
  PetscCall(PetscFree3(labels, assign, ones));
  PetscFunctionReturn(0);
}

/* Row g of a blob data set: class g % nclass (interleaved, so every rank holds every
   class), at centre[class] plus spread N(0, I) noise. */
static void Blob(PetscInt g, PetscInt dim, PetscInt nclass, const PetscReal centre[], PetscReal spread,
                 PetscReal x[], int *label)
{
  BasisRng rng;
  PetscInt c = g % nclass;

  BasisRngSeed(&rng, 23, (uint64_t)g);
  for (PetscInt d = 0; d < dim; d++) x[d] = centre[c * dim + d] + spread * BasisRngNormal(&rng);
  *label = (int)(2 + 3 * c);
}

/* k-means on rows [start, start + n) of a data set and, on rank 0, on all N rows alone
   (PETSC_COMM_SELF): the same labels and inertia. */
static PetscErrorCode CompareSerial(MPI_Comm comm, PetscInt N, PetscInt dim, PetscInt k,
                                    const PetscReal Yall[], PetscInt start, PetscInt n, const int assign[],
                                    PetscReal inertia, const char *what)
{
  PetscMPIInt size, rank;
  int        *counts, *displs, *all = NULL, *serial = NULL, ok = 1;
  PetscReal   serial_inertia = 0.0;

  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  PetscCall(PetscMalloc2(size, &counts, size, &displs));
  for (int r = 0; r < size; r++) {
    PetscInt s, m;
    BasisBlockRange(N, size, r, &s, &m);
    counts[r] = (int)m, displs[r] = (int)s;
  }
  if (rank == 0) PetscCall(PetscMalloc2(N, &all, N, &serial));
  PetscCallMPI(MPI_Gatherv(assign, (int)n, MPI_INT, all, counts, displs, MPI_INT, 0, comm));
  if (rank == 0) {
    PetscCall(BasisKMeans(PETSC_COMM_SELF, N, dim, Yall, k, 3, 5, serial, &serial_inertia));
    for (PetscInt i = 0; i < N; i++)
      if (all[i] != serial[i]) ok = 0;
    /* sums over ranks round differently (~1e-15 relative); any other path is far off */
    if (PetscAbsReal(serial_inertia - inertia) > 1e-8 * serial_inertia) ok = 0;
    PetscCall(PetscFree2(all, serial));
  }
  PetscCallMPI(MPI_Bcast(&ok, 1, MPI_INT, 0, comm));
  PetscCallMPI(MPI_Bcast(&serial_inertia, 1, MPI_DOUBLE, 0, comm));
  PetscCall(BasisTestCheck(comm, (PetscBool)(ok), "%s: got %.17g, expected %.17g", what, (double)inertia,
                           (double)serial_inertia));
  PetscCall(PetscFree2(counts, displs));
  PetscFunctionReturn(0);
}

/* k-means recovers well separated blobs exactly (ACC = NMI = 1, inertia = the within-class
   sum of squares), and on blobs and on structureless data equals a serial run. */
static PetscErrorCode TestKMeans(MPI_Comm comm)
{
  /* five of the six points +-10 e_d: pairwise >= 14 apart, noise 0.5 */
  const PetscReal centre[15] = {10, 0, 0, 0, 10, 0, 0, 0, 10, -10, 0, 0, 0, -10, 0};
  const PetscInt  N = 601, dim = 3, k = 5;
  PetscMPIInt     size, rank;
  PetscInt        start, n;
  PetscReal      *Y, *Yall, mean[15] = {0}, ss = 0.0, inertia, nmi, acc;
  int            *labels, *assign, lab;

  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  BasisBlockRange(N, size, rank, &start, &n);
  PetscCall(PetscMalloc4(n * dim, &Y, N * dim, &Yall, n, &labels, n, &assign));
  for (PetscInt g = 0; g < N; g++) Blob(g, dim, k, centre, 0.5, Yall + g * dim, &lab);
  for (PetscInt i = 0; i < n; i++) Blob(start + i, dim, k, centre, 0.5, Y + i * dim, &labels[i]);

  /* exact inertia of the true partition: class means, then squared deviations */
  for (PetscInt g = 0; g < N; g++)
    for (PetscInt d = 0; d < dim; d++) mean[(g % k) * dim + d] += Yall[g * dim + d];
  for (PetscInt c = 0; c < k; c++)
    for (PetscInt d = 0; d < dim; d++) mean[c * dim + d] /= (PetscReal)(N / k + (c < N % k ? 1 : 0));
  for (PetscInt g = 0; g < N; g++)
    for (PetscInt d = 0; d < dim; d++) ss += PetscSqr(Yall[g * dim + d] - mean[(g % k) * dim + d]);

  PetscCall(BasisKMeans(comm, n, dim, Y, k, 3, 5, assign, &inertia));
  PetscCall(BasisMetricNMI(comm, n, labels, assign, &nmi));
  PetscCall(BasisMetricACC(comm, n, labels, assign, &acc));
  PetscCall(BasisTestCheckNear(comm, "k-means on blobs: ACC", acc, 1.0, 0.0));
  PetscCall(BasisTestCheckNear(comm, "k-means on blobs: NMI", nmi, 1.0, TOL));
  PetscCall(BasisTestCheckNear(comm, "k-means on blobs: inertia", inertia, ss,
                               1e-8 * ss)); /* as in CompareSerial */
  PetscCall(BasisTestCheckSame(comm, "k-means inertia", inertia));
  PetscCall(CompareSerial(comm, N, dim, k, Yall, start, n, assign, inertia,
                          "k-means on blobs equals a serial run"));

  /* structureless data: the local optimum found depends on seeding and every step, and
     still equals the serial run */
  for (PetscInt g = 0; g < N; g++) {
    BasisRng rng;
    BasisRngSeed(&rng, 29, (uint64_t)g);
    for (PetscInt d = 0; d < dim; d++) Yall[g * dim + d] = BasisRngUniform(&rng);
  }
  PetscCall(PetscArraycpy(Y, Yall + start * dim, n * dim));
  PetscCall(BasisKMeans(comm, n, dim, Y, k, 3, 5, assign, &inertia));
  PetscCall(CompareSerial(comm, N, dim, k, Yall, start, n, assign, inertia,
                          "k-means on uniform data equals a serial run"));
  PetscCall(PetscFree4(Y, Yall, labels, assign));
  PetscFunctionReturn(0);
}

/* Linear probe: four classes at the corners of a tetrahedron (not collinear, so least
   squares separates them) are predicted perfectly; overlapping classes give the same
   accuracy as a serial run (the split depends on the global index only). */
static PetscErrorCode TestLinearProbe(MPI_Comm comm)
{
  const PetscReal centre[12] = {5, 5, 5, 5, -5, -5, -5, 5, -5, -5, -5, 5};
  const PetscInt  N = 803, dim = 3, nclass = 4;
  PetscMPIInt     size, rank;
  PetscInt        start, n, *gidx, *gall;
  PetscReal      *Y, *Yall, accuracy, serial = 0.0;
  int            *labels, *lall;

  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  BasisBlockRange(N, size, rank, &start, &n);
  PetscCall(PetscMalloc6(n * dim, &Y, N * dim, &Yall, n, &labels, N, &lall, n, &gidx, N, &gall));
  for (PetscInt i = 0; i < n; i++) {
    gidx[i] = start + i;
    Blob(start + i, dim, nclass, centre, 1.0, Y + i * dim, &labels[i]);
  }
  PetscCall(BasisLinearProbe(comm, n, dim, Y, labels, gidx, 0.25, &accuracy));
  PetscCall(BasisTestCheckNear(comm, "linear probe on separable classes", accuracy, 1.0, 0.0));

  for (PetscInt g = 0; g < N; g++) {
    gall[g] = g;
    Blob(g, dim, nclass, centre, 6.0, Yall + g * dim, &lall[g]);
  }
  PetscCall(BasisLinearProbe(comm, n, dim, Yall + start * dim, lall + start, gall + start, 0.3, &accuracy));
  if (rank == 0) PetscCall(BasisLinearProbe(PETSC_COMM_SELF, N, dim, Yall, lall, gall, 0.3, &serial));
  PetscCallMPI(MPI_Bcast(&serial, 1, MPI_DOUBLE, 0, comm));
  PetscCall(BasisTestCheckNear(comm, "linear probe on overlapping classes equals a serial run", accuracy,
                               serial, 0.0));
  PetscCall(BasisTestCheck(
      comm, (PetscBool)(accuracy > 0.4 && accuracy < 1.0),
      "linear probe on overlapping classes: between chance (0.25) and 1: got %.17g, expected 0.7",
      (double)accuracy));
  PetscCall(BasisTestCheckSame(comm, "linear probe accuracy", accuracy));
  PetscCall(PetscFree6(Y, Yall, labels, lall, gidx, gall));
  PetscFunctionReturn(0);
}

/* Three rows: at 4 ranks one rank holds none and must still take part. d_G = 0 for an
   affine image of two generic columns; k-means with 3 clusters puts each row alone
   (inertia 0, ACC = 1). */
static PetscErrorCode TestFewRows(MPI_Comm comm)
{
  const PetscReal V[6] = {0.3, -1.2, 2.0, 0.7, -0.4, 1.9}, A[4] = {2.0, 1.0, -1.0, 3.0};
  const int       truth[3] = {4, 8, 6};
  PetscMPIInt     size, rank;
  PetscInt        start, n;
  PetscReal       Y[6], dG, inertia, acc;
  int             assign[6];

  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  BasisBlockRange(3, size, rank, &start, &n);
  Affine(n, 2, V + 2 * start, A, 31, Y);
  PetscCall(BasisMetricGrassmann(comm, n, 2, Y, 2, V + 2 * start, &dG, NULL));
  PetscCall(BasisTestCheckNear(comm, "three rows: d_G of an affine image", dG, 0.0, TOL));
  PetscCall(BasisKMeans(comm, n, 2, V + 2 * start, 3, 2, 7, assign, &inertia));
  PetscCall(BasisMetricACC(comm, n, truth + start, assign, &acc));
  PetscCall(BasisTestCheckNear(comm, "three rows, three clusters: inertia", inertia, 0.0, 0.0));
  PetscCall(BasisTestCheckNear(comm, "three rows, three clusters: ACC", acc, 1.0, 0.0));

  /* three clusters on rows at two distinct places: seeding runs out of positive D(x)^2
     and a cluster stays empty; k-means still ends, with inertia 0 */
  BasisBlockRange(6, size, rank, &start, &n);
  for (PetscInt i = 0; i < n; i++) Y[i] = (start + i) % 2 ? 1.0 : -1.0;
  PetscCall(BasisKMeans(comm, n, 1, Y, 3, 2, 7, assign, &inertia));
  PetscCall(
      BasisTestCheckNear(comm, "duplicate rows, more clusters than places: inertia", inertia, 0.0, 0.0));
  PetscFunctionReturn(0);
}

/* A reference with orthonormal columns, as exact eigenvectors have, row g of N: V_0 =
   (1 + 0.3 e_F) / ||.|| is a trivial eigenvector that is not constant (like D^1/2 1 of the
   sym Laplacian; with constant, V_0 = 1 / sqrt N, that of the other Laplacians), V_j =
   e_{j-1} / ||e_{j-1}|| for j >= 1, e_f the Fourier columns. w = e_{F+1} / ||.|| is a unit
   direction orthogonal to all of them and to the constant. ||e_f||^2 = N/2, so
   ||1 + 0.3 e_F||^2 = N (1 + 0.045). */
#define GV_K 5
#define GV_F (2 * GV_K) /* Fourier index of e_F, past those of V_1 .. V_{K-1} */
static void OrthonormalRow(PetscInt g, PetscInt N, PetscBool constant, PetscReal v[], PetscReal *w)
{
  PetscReal h = PetscSqrtReal(2.0 / (PetscReal)N);

  v[0] = constant ? 1.0 / PetscSqrtReal((PetscReal)N)
                  : (1.0 + 0.3 * Fourier(GV_F, g, N)) / PetscSqrtReal(1.045 * (PetscReal)N);
  for (PetscInt j = 1; j < GV_K; j++) v[j] = h * Fourier(j - 1, g, N);
  *w = h * Fourier(GV_F + 1, g, N);
}

/* The published d_G by its recipe, on all rows at once (rank 0 only; a test's reference,
   independent of the Gram route of BasisMetricGrassmannPublished): W = argmin ||[Y 1] W -
   V|| by LAPACK's QR least squares, Yhat = [Y 1] W, both scaled to unit columns, sum of
   1 - s^2 over the singular values of Yhat^T V. Y, V [N][K] row-major. */
static PetscErrorCode DirectPublished(PetscInt N, PetscInt K, const PetscReal Y[], const PetscReal V[],
                                      PetscReal *dG)
{
  PetscBLASInt bN, bK1, bK, lwork = 64 * (GV_K + 1) + 8 * N, info, one = 1;
  PetscReal   *A, *B, *Yhat, *work, M[GV_K * GV_K], s[GV_K], ny[GV_K], nv[GV_K], dummy, sum = 0.0;

  PetscFunctionBeginUser;
  PetscCall(PetscBLASIntCast(N, &bN));
  PetscCall(PetscBLASIntCast(K + 1, &bK1));
  PetscCall(PetscBLASIntCast(K, &bK));
  PetscCall(PetscMalloc4(N * (K + 1), &A, N * K, &B, N * K, &Yhat, lwork, &work));
  for (PetscInt g = 0; g < N; g++) { /* column-major [Y 1] and V */
    for (PetscInt j = 0; j < K; j++) A[j * N + g] = Y[g * K + j], B[j * N + g] = V[g * K + j];
    A[K * N + g] = 1.0;
  }
  PetscCallBLAS("LAPACKgels", LAPACKgels_("N", &bN, &bK1, &bK, A, &bN, B, &bN, work, &lwork, &info));
  PetscCheck(info == 0, PETSC_COMM_SELF, PETSC_ERR_LIB, "dgels info %d", (int)info);
  for (PetscInt j = 0; j < K; j++) {
    ny[j] = nv[j] = 0.0;
    for (PetscInt g = 0; g < N; g++) {
      PetscReal y = B[j * N + K]; /* row K of W: the constant's coefficient */
      for (PetscInt l = 0; l < K; l++) y += Y[g * K + l] * B[j * N + l];
      Yhat[g * K + j] = y;
      ny[j] += y * y, nv[j] += V[g * K + j] * V[g * K + j];
    }
  }
  for (PetscInt a = 0; a < K; a++)
    for (PetscInt b = 0; b < K; b++) {
      PetscReal c = 0.0;
      for (PetscInt g = 0; g < N; g++) c += Yhat[g * K + a] * V[g * K + b];
      M[b * K + a] = c / PetscSqrtReal(ny[a] * nv[b]);
    }
  PetscCallBLAS("LAPACKgesvd",
                LAPACKgesvd_("N", "N", &bK, &bK, M, &bK, s, &dummy, &one, &dummy, &one, work, &lwork, &info));
  PetscCheck(info == 0, PETSC_COMM_SELF, PETSC_ERR_LIB, "dgesvd info %d", (int)info);
  for (PetscInt i = 0; i < K; i++) sum += 1.0 - s[i] * s[i];
  *dG = sum;
  PetscCall(PetscFree4(A, B, Yhat, work));
  PetscFunctionReturn(0);
}

/* The three Grassmann measures of Y [N][K] against V [N][K] on this rank's rows, all
   checked against expected values (want_* < 0: not checked); the sin^2 must sum to
   their d_G. Returns the values for further checks. */
typedef struct {
  PetscReal dG, sin2[GV_K], dG_nt, sin2_nt[GV_K], dG_pub;
  PetscInt  rank_y, rank_v;
} GV;

static PetscErrorCode AllMeasures(MPI_Comm comm, PetscInt n, const PetscReal Y[], const PetscReal V[], GV *r)
{
  PetscReal sum = 0.0, sum_nt = 0.0;
  PetscInt  ry, rv;

  PetscFunctionBeginUser;
  PetscCall(
      BasisMetricGrassmannAngles(comm, n, GV_K, Y, GV_K, V, &r->dG, NULL, r->sin2, &r->rank_y, &r->rank_v));
  PetscCall(BasisMetricGrassmannNontrivial(comm, n, GV_K, Y, GV_K, V, &r->dG_nt, NULL, r->sin2_nt, &ry, &rv));
  PetscCall(BasisMetricGrassmannPublished(comm, n, GV_K, Y, GV_K, V, &r->dG_pub));
  for (PetscInt i = 0; i < GV_K; i++) sum += r->sin2[i];
  for (PetscInt i = 0; i < GV_K - 1; i++) sum_nt += r->sin2_nt[i];
  /* the same terms in the same order: equal up to the last bit or two */
  PetscCall(BasisTestCheckNear(comm, "the sin^2 sum to d_G", sum, r->dG, 1e-15));
  PetscCall(BasisTestCheckNear(comm, "the non-trivial sin^2 sum to their d_G", sum_nt, r->dG_nt, 1e-15));
  for (PetscInt i = 1; i < PetscMin(r->rank_y, r->rank_v); i++)
    PetscCall(BasisTestCheck(comm, (PetscBool)(r->sin2[i] >= r->sin2[i - 1]),
                             "sin^2 ascending: got %.17g, expected %.17g", (double)r->sin2[i],
                             (double)r->sin2[i - 1]));
  PetscCall(BasisTestCheckSame(comm, "d_G", r->dG));
  PetscCall(BasisTestCheckSame(comm, "non-trivial d_G", r->dG_nt));
  PetscCall(BasisTestCheckSame(comm, "published d_G", r->dG_pub));
  PetscFunctionReturn(0);
}

/* Affine images (every measure 0), Y spanning V's non-trivial columns plus another
   direction (the non-trivial d_G 0, d_G not), and one column rotated by a known angle
   out of span(V), towards w: each measure recovers sin^2 of it where it should. With
   and without a constant trivial column. */
static PetscErrorCode TestGrassmannVariants(MPI_Comm comm, PetscInt N)
{
  const PetscInt  K = GV_K, j = 2;
  const PetscReal th = 0.4, s2 = PetscSqr(PetscSinReal(th));
  PetscMPIInt     size, rank;
  PetscInt        start, n;
  PetscReal      *V, *w, *Yr, *Y, A[GV_K * GV_K];
  GV              r;

  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  BasisBlockRange(N, size, rank, &start, &n);
  PetscCall(PetscMalloc4(n * K, &V, n, &w, n * K, &Yr, n * K, &Y));
  RandomInvertible(K, 41, A);
  for (int constant = 0; constant < 2; constant++) {
    PetscInt nang = K - constant; /* a constant column is dropped by centring */

    for (PetscInt i = 0; i < n; i++)
      OrthonormalRow(start + i, N, constant ? PETSC_TRUE : PETSC_FALSE, V + i * K, &w[i]);
    Affine(n, K, V, A, 43, Y);
    PetscCall(AllMeasures(comm, n, Y, V, &r));
    PetscCall(BasisTestCheckNear(comm, "affine image: d_G", r.dG, 0.0, TOL));
    for (PetscInt i = 0; i < K; i++)
      PetscCall(BasisTestCheckNear(comm, "affine image: sin^2", r.sin2[i], 0.0, TOL));
    PetscCall(BasisTestCheckNear(comm, "affine image: non-trivial d_G", r.dG_nt, 0.0, TOL));
    PetscCall(BasisTestCheckNear(comm, "affine image: published d_G", r.dG_pub, 0.0, TOL));

    /* column 0 replaced by w plus noise: V's non-trivial columns plus another direction */
    PetscCall(PetscArraycpy(Yr, V, n * K));
    for (PetscInt i = 0; i < n; i++) {
      BasisRng rng;
      BasisRngSeed(&rng, 47, (uint64_t)(start + i));
      Yr[i * K] = w[i] + 0.1 * BasisRngNormal(&rng);
    }
    Affine(n, K, Yr, A, 45, Y);
    PetscCall(AllMeasures(comm, n, Y, V, &r));
    PetscCall(
        BasisTestCheckNear(comm, "non-trivial columns plus another: non-trivial d_G", r.dG_nt, 0.0, TOL));
    if (!constant) /* the trivial direction is lost, and d_G says so */
      PetscCall(BasisTestCheck(comm, (PetscBool)(r.dG > 0.5),
                               "trivial direction lost: d_G: got %.17g, expected 1", (double)r.dG));

    /* column j rotated by th towards w */
    PetscCall(PetscArraycpy(Yr, V, n * K));
    for (PetscInt i = 0; i < n; i++)
      Yr[i * K + j] = PetscCosReal(th) * V[i * K + j] + PetscSinReal(th) * w[i];
    Affine(n, K, Yr, A, 45, Y);
    PetscCall(AllMeasures(comm, n, Y, V, &r));
    PetscCall(BasisTestCheckNear(comm, "one column rotated: d_G", r.dG, s2, TOL));
    PetscCall(BasisTestCheckNear(comm, "one column rotated: largest sin^2", r.sin2[nang - 1], s2, TOL));
    for (PetscInt i = 0; i < K; i++)
      if (i != nang - 1)
        PetscCall(BasisTestCheckNear(comm, "one column rotated: other sin^2", r.sin2[i], 0.0, TOL));
    PetscCall(BasisTestCheckNear(comm, "one column rotated: non-trivial d_G", r.dG_nt, s2, TOL));
    PetscCall(
        BasisTestCheckNear(comm, "one column rotated: largest non-trivial sin^2", r.sin2_nt[K - 2], s2, TOL));
    PetscCall(BasisTestCheckNear(comm, "one column rotated: published d_G", r.dG_pub, s2, TOL));
    PetscCall(BasisTestCheck(comm, (PetscBool)(r.rank_y == nang && r.rank_v == nang),
                             "one column rotated: ranks: got %d, expected %d", (int)r.rank_y, (int)nang));
  }
  PetscCall(PetscFree4(V, w, Yr, Y));
  PetscFunctionReturn(0);
}

/* On all N rows at every rank: the three measures of Y against V computed over comm and
   on rank 0 alone agree within 1e-12 (so 1, 2 and 4 ranks agree), and the published d_G
   equals its recipe computed directly. Cases: the trivial column rotated by th towards w
   (the non-trivial d_G is 0; d_G is sin^2 of the centred angle, known in closed form) and
   a random Y against V with columns of other norms than 1. */
static PetscErrorCode TestGrassmannSerial(MPI_Comm comm, PetscInt N)
{
  const PetscInt  K  = GV_K;
  const PetscReal th = 0.4, a2 = 0.045 / 1.045; /* ||centre(V_0)||^2 */
  PetscMPIInt     size, rank;
  PetscInt        start, n;
  PetscReal      *V, *w, *Y, A[GV_K * GV_K];
  GV              r, serial;
  PetscReal       direct = 0.0, phi2;

  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  BasisBlockRange(N, size, rank, &start, &n);
  PetscCall(PetscMalloc3(N * K, &V, N, &w, N * K, &Y));
  for (PetscInt g = 0; g < N; g++) OrthonormalRow(g, N, PETSC_FALSE, V + g * K, &w[g]);
  RandomInvertible(K, 51, A);
  for (int c = 0; c < 2; c++) {
    if (c == 0) { /* Y = V with the trivial column rotated towards w, in an affine frame */
      PetscReal *Yr;
      PetscCall(PetscMalloc1(N * K, &Yr));
      PetscCall(PetscArraycpy(Yr, V, N * K));
      for (PetscInt g = 0; g < N; g++) Yr[g * K] = PetscCosReal(th) * V[g * K] + PetscSinReal(th) * w[g];
      Affine(N, K, Yr, A, 53, Y);
      PetscCall(PetscFree(Yr));
    } else
      for (PetscInt g = 0; g < N; g++) {
        BasisRng rng;
        for (PetscInt l = 0; l < K; l++) V[g * K + l] *= l + 2.0; /* no measure depends on V's scales */
        BasisRngSeed(&rng, 55, (uint64_t)g);
        for (PetscInt l = 0; l < K; l++) Y[g * K + l] = BasisRngNormal(&rng) + (l == 0 ? 2.0 : 0.0);
      }
    PetscCall(AllMeasures(comm, n, Y + start * K, V + start * K, &r));
    if (rank == 0) {
      PetscCall(AllMeasures(PETSC_COMM_SELF, N, Y, V, &serial));
      PetscCall(DirectPublished(N, K, Y, V, &direct));
    }
    PetscCallMPI(MPI_Bcast(&serial, (int)sizeof(GV), MPI_BYTE, 0, comm));
    PetscCallMPI(MPI_Bcast(&direct, 1, MPI_DOUBLE, 0, comm));
    PetscCall(BasisTestCheckNear(comm, "d_G equals a serial run", r.dG, serial.dG, 1e-12));
    PetscCall(BasisTestCheckNear(comm, "non-trivial d_G equals a serial run", r.dG_nt, serial.dG_nt, 1e-12));
    PetscCall(BasisTestCheckNear(comm, "published d_G equals a serial run", r.dG_pub, serial.dG_pub, 1e-12));
    for (PetscInt i = 0; i < K; i++) {
      PetscCall(BasisTestCheckNear(comm, "sin^2 equal a serial run", r.sin2[i], serial.sin2[i], 1e-12));
      if (i < K - 1)
        PetscCall(BasisTestCheckNear(comm, "non-trivial sin^2 equal a serial run", r.sin2_nt[i],
                                     serial.sin2_nt[i], 1e-12));
    }
    PetscCall(BasisTestCheckNear(comm, "published d_G equals its recipe computed directly", r.dG_pub, direct,
                                 1e-12));
    if (c == 0) {
      /* centre(Y_0) = cos th centre(V_0) + sin th w, and centre(V_0) lies in centre(V):
         sin^2 phi = sin^2 th / (cos^2 th a2 + sin^2 th) */
      phi2 = PetscSqr(PetscSinReal(th)) / (PetscSqr(PetscCosReal(th)) * a2 + PetscSqr(PetscSinReal(th)));
      PetscCall(BasisTestCheckNear(comm, "trivial column rotated: d_G", r.dG, phi2, TOL));
      PetscCall(BasisTestCheckNear(comm, "trivial column rotated: non-trivial d_G", r.dG_nt, 0.0, TOL));
    } else
      PetscCall(BasisTestCheck(comm, (PetscBool)(r.dG > 0.5 && r.dG_nt > 0.5 && r.dG_pub > 0.5),
                               "random Y: every measure far from 0: got %.17g, expected 1",
                               (double)PetscMin(r.dG, PetscMin(r.dG_nt, r.dG_pub))));
  }
  PetscCall(PetscFree3(V, w, Y));
  PetscFunctionReturn(0);
}

int main(int argc, char **argv)
{
  MPI_Comm comm;

  PetscCall(SlepcInitialize(&argc, &argv, NULL, NULL));
  PetscCall(BasisInitialize());
  comm = PETSC_COMM_WORLD;
  PetscCall(TestAffine(comm, 301));
  PetscCall(TestKnownAngles(comm, 256));
  PetscCall(TestGrassmannVariants(comm, 300));
  PetscCall(TestGrassmannSerial(comm, 300));
  PetscCall(TestOrthogonalityByHand(comm, 400));
  PetscCall(TestClusterScores(comm));
  PetscCall(TestKMeans(comm));
  PetscCall(TestLinearProbe(comm));
  PetscCall(TestFewRows(comm));
  PetscCall(SlepcFinalize());
  return BasisTestFailures() ? 1 : 0;
}
