/*
  metrics.c - subspace quality of an embedding (DESIGN.md "Metrics", used by `basis eval`):
  the Grassmann distance d_G with every principal angle, d_G over the non-trivial
  directions, d_G as the published tables compute it, and the orthogonality d_perp.
  The clustering scores (k-means, NMI, ACC, linear probe) live in cluster.c.

  Every function takes this rank's rows of a row-major matrix and returns the same result
  on every rank. Communication is a few small allreduces: column sums and K x K Gram
  matrices. Small dense factorisations (eigen, SVD) run on rank 0 and are broadcast, so
  every rank uses bitwise identical factors even if OpenBLAS picks other kernels on
  other nodes.

  d_G: principal angles between span(centre(Y)) and span(centre(V)). Each span gets an
  orthonormal basis from its allreduced Gram matrix (eigen-decomposition, then a second
  pass that restores orthogonality to rounding), and the cosines are the singular values
  of Q_Y^T Q_V. Centring removes the constant vector, so each span is taken at its
  numerical rank: constant columns (zero variance, like the trivial eigenvector of the
  unnormalised and random-walk Laplacians) are dropped, and so are directions of the
  centred span with a relative singular value below BASIS_RANK_RTOL. With ranks r_Y and
  r_V there are min(r_Y, r_V) angles (the distance between subspaces of different
  dimensions of Ye & Lim, SIAM J. Matrix Anal. Appl. 37, 2016). Comparing centred spans
  is comparing span([Y 1]) with span([V 1]), which share the constant: that is why d_G
  is 0 for any affine image of V. The non-trivial d_G is the same computation with V's
  first column left out; the published formula reuses the basis of Y (see
  BasisMetricGrassmannPublished for the reference code it follows).
*/
#include <basis/metrics.h>
#include <basis/log.h>
#include <petscblaslapack.h>
#include <cblas.h>
#include <math.h>
#include <stdint.h>

/* A column is constant when its centred norm is below this fraction of its norm: the
   rounding of the mean leaves at most ~N eps (2e-10 at N = 10^6); any real column of an
   embedding is many orders of magnitude above. */
#define BASIS_CONST_RTOL 1e-8
/* Numerical rank of a centred span: singular values (of the column-normalised matrix)
   below this fraction of the largest do not count. The Gram route resolves singular
   values down to sqrt(eps) ~ 1.5e-8 of the largest; 1e-6 stays clear of that noise. */
#define BASIS_RANK_RTOL 1e-6
/* The published d_G: a column of V whose projection onto span([Y 1]) keeps less than this
   fraction of its norm is taken as orthogonal to it. The Gram route computes the squared
   projected norm to ~eps ||V_j||^2, so above 1e-6 the normalised row of the product is
   accurate to ~1e-10; below, it would be the direction of rounding noise. */
#define BASIS_PROJ_RTOL 1e-6

/* C [m][p] = A^T B summed over comm, with A [n][m] and B [n][p] this rank's rows. */
static PetscErrorCode GlobalAtB(MPI_Comm comm, PetscInt n, PetscInt m, const PetscReal A[], PetscInt p,
                                const PetscReal B[], PetscReal C[])
{
  PetscFunctionBeginUser;
  if (n > 0) {
    PetscCallBLAS("cblas_dgemm",
                  cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, m, p, n, 1.0, A, m, B, p, 0.0, C, p));
    PetscCall(PetscLogFlops(2.0 * n * m * p));
  } else
    PetscCall(PetscArrayzero(C, (size_t)m * p));
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, C, (int)(m * p), MPIU_REAL, MPIU_SUM, comm));
  PetscFunctionReturn(0);
}

/* C [n][p] = A B with A [n][k], B [k][p]; local. */
static PetscErrorCode LocalAB(PetscInt n, PetscInt k, const PetscReal A[], PetscInt p, const PetscReal B[],
                              PetscReal C[])
{
  PetscFunctionBeginUser;
  if (n > 0) {
    PetscCallBLAS("cblas_dgemm", cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, p, k, 1.0, A, k, B,
                                             p, 0.0, C, p));
    PetscCall(PetscLogFlops(2.0 * n * k * p));
  }
  PetscFunctionReturn(0);
}

/* Eigen-decomposition of a symmetric k x k matrix that is identical on every rank: on
   exit row c of A (A[c*k .. c*k+k-1]) is the unit eigenvector of w[c], w ascending.
   Computed on rank 0 and broadcast. Collective on comm. */
static PetscErrorCode SymEig(MPI_Comm comm, PetscInt k, PetscReal A[], PetscReal w[])
{
  PetscMPIInt  rank;
  PetscBLASInt bk, lwork, info = 0;
  PetscReal   *work;

  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  if (rank == 0) {
    PetscCall(PetscBLASIntCast(k, &bk));
    lwork = 8 * bk; /* LAPACK needs 3k - 1; more lets it block */
    PetscCall(PetscMalloc1(lwork, &work));
    /* column-major eigenvectors of a symmetric matrix are the rows of the row-major view */
    PetscCallBLAS("LAPACKsyev", LAPACKsyev_("V", "U", &bk, A, &bk, w, work, &lwork, &info));
    PetscCall(PetscFree(work));
  }
  PetscCallMPI(MPI_Bcast(&info, 1, MPI_INT, 0, comm));
  PetscCheck(info == 0, comm, PETSC_ERR_LIB, "LAPACK dsyev failed with info = %d on a %d x %d Gram matrix",
             (int)info, (int)k, (int)k);
  PetscCallMPI(MPI_Bcast(A, (int)(k * k), MPIU_REAL, 0, comm));
  PetscCallMPI(MPI_Bcast(w, (int)k, MPIU_REAL, 0, comm));
  PetscFunctionReturn(0);
}

/*
  CentredBasis - an orthonormal basis of span(centre(X)) at its numerical rank.

  Collective on comm.

  Input:
    X    - [n][K] this rank's rows, row i at X + i ldx (ldx >= K: a block of columns)
    name - how errors name X ("Y", "V")
  Output:
    r - numerical rank of centre(X), 1 <= r <= K
    Q - [n][r] newly allocated (PetscFree), orthonormal columns over all ranks

  Notes:
    Constant columns are dropped, the others scaled to unit norm (a Jacobi scaling that
    makes the rank test independent of column scales), and the Gram matrix G = Xs^T Xs
    eigen-decomposed: Q = Xs U_r L_r^-1/2 over the eigenvalues above BASIS_RANK_RTOL^2
    times the largest. That Q is orthonormal to ~eps cond^2; a second pass on Q's own Gram
    matrix brings it to rounding (as CholeskyQR2 does).
*/
static PetscErrorCode CentredBasis(MPI_Comm comm, PetscInt n, PetscInt K, const PetscReal X[], PetscInt ldx,
                                   const char *name, PetscInt *r, PetscReal **Q)
{
  PetscInt64 N, nl = n;
  PetscReal *mean, *G, *Gs, *w, *T, *Xc, *Q1, *scale;
  PetscInt  *kept, nk = 0, rk = 0;

  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Allreduce(&nl, &N, 1, MPIU_INT64, MPI_SUM, comm));
  PetscCall(PetscCalloc1(K, &mean));
  PetscCall(PetscMalloc6(K * K, &G, K * K, &Gs, K, &w, K * K, &T, K, &scale, K, &kept));
  PetscCall(PetscMalloc1((size_t)n * K, &Xc));
  for (PetscInt i = 0; i < n; i++)
    for (PetscInt j = 0; j < K; j++) mean[j] += X[(size_t)i * ldx + j];
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, mean, (int)K, MPIU_REAL, MPIU_SUM, comm));
  for (PetscInt j = 0; j < K; j++) mean[j] /= (PetscReal)N;
  for (PetscInt i = 0; i < n; i++)
    for (PetscInt j = 0; j < K; j++) Xc[(size_t)i * K + j] = X[(size_t)i * ldx + j] - mean[j];
  PetscCall(GlobalAtB(comm, n, K, Xc, K, Xc, G));
  for (PetscInt j = 0; j < K * K; j++)
    PetscCheck(!PetscIsInfOrNanReal(G[j]), comm, PETSC_ERR_FP, "%s contains Inf or NaN; d_G is undefined",
               name);

  /* constant columns: ||x_j - mean_j||^2 against ||x_j||^2 = G_jj + N mean_j^2 */
  for (PetscInt j = 0; j < K; j++) {
    PetscReal centred = G[j * K + j], full = centred + (PetscReal)N * mean[j] * mean[j];
    if (centred > 0 && centred > BASIS_CONST_RTOL * BASIS_CONST_RTOL * full) {
      kept[nk++] = j;
      scale[j]   = 1.0 / PetscSqrtReal(centred);
    } else
      scale[j] = 0.0;
  }
  PetscCheck(nk > 0, comm, PETSC_ERR_ARG_WRONG,
             "every column of %s is constant over the %lld rows: centring leaves no subspace to compare",
             name, (long long)N);
  for (PetscInt a = 0; a < nk; a++)
    for (PetscInt b = 0; b < nk; b++)
      Gs[a * nk + b] = scale[kept[a]] * G[kept[a] * K + kept[b]] * scale[kept[b]];
  PetscCall(SymEig(comm, nk, Gs, w));
  while (rk < nk && w[nk - 1 - rk] > BASIS_RANK_RTOL * BASIS_RANK_RTOL * w[nk - 1]) rk++;

  /* T [K][rk]: column c maps X to the c-th largest principal direction, unit norm */
  PetscCall(PetscArrayzero(T, K * rk));
  for (PetscInt c = 0; c < rk; c++) {
    PetscInt e = nk - 1 - c;
    for (PetscInt a = 0; a < nk; a++)
      T[kept[a] * rk + c] = scale[kept[a]] * Gs[e * nk + a] / PetscSqrtReal(w[e]);
  }
  PetscCall(PetscMalloc1((size_t)n * rk, &Q1));
  PetscCall(LocalAB(n, K, Xc, rk, T, Q1));

  /* second pass: Q1^T Q1 = I + E with small E; Q = Q1 U L^-1/2 of its eigen-decomposition */
  PetscCall(GlobalAtB(comm, n, rk, Q1, rk, Q1, G));
  PetscCall(SymEig(comm, rk, G, w));
  /* the first pass leaves eigenvalues 1 +- eps cond^2, cond <= 1 / BASIS_RANK_RTOL: within
     2e-4 of 1; below 0.5 only a broken first pass */
  PetscCheck(w[0] > 0.5, comm, PETSC_ERR_PLIB, "re-orthonormalising %s failed (smallest Gram eigenvalue %g)",
             name, (double)w[0]);
  for (PetscInt a = 0; a < rk; a++)
    for (PetscInt c = 0; c < rk; c++) T[a * rk + c] = G[c * rk + a] / PetscSqrtReal(w[c]);
  PetscCall(LocalAB(n, rk, Q1, rk, T, Xc)); /* Xc is free now: reuse it for Q */
  PetscCall(PetscFree(Q1));
  PetscCall(PetscFree(mean));
  PetscCall(PetscFree6(G, Gs, w, T, scale, kept));
  *r = rk;
  *Q = Xc;
  PetscFunctionReturn(0);
}

/*
  SingularValues - singular values, descending, of a small matrix that is identical on
  every rank. Computed on rank 0 and broadcast. Collective on comm.

  Input:  M [m][p] row-major (destroyed); what - how an error names M
  Output: s [min(m, p)]
*/
static PetscErrorCode SingularValues(MPI_Comm comm, PetscInt m, PetscInt p, PetscReal M[], const char *what,
                                     PetscReal s[])
{
  PetscMPIInt  rank;
  PetscBLASInt bm, bn, lwork, info = 0, one = 1;

  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  if (rank == 0) {
    PetscReal *work, dummy;
    /* row-major M [m][p] is column-major M^T [p][m]: same singular values */
    PetscCall(PetscBLASIntCast(p, &bm));
    PetscCall(PetscBLASIntCast(m, &bn));
    lwork = 5 * (bm + bn); /* LAPACK needs max(3 min + max, 5 min) */
    PetscCall(PetscMalloc1(lwork, &work));
    PetscCallBLAS("LAPACKgesvd", LAPACKgesvd_("N", "N", &bm, &bn, M, &bm, s, &dummy, &one, &dummy, &one, work,
                                              &lwork, &info));
    PetscCall(PetscFree(work));
  }
  PetscCallMPI(MPI_Bcast(&info, 1, MPI_INT, 0, comm));
  PetscCheck(info == 0, comm, PETSC_ERR_LIB, "LAPACK dgesvd failed with info = %d on %s", (int)info, what);
  PetscCallMPI(MPI_Bcast(s, (int)PetscMin(m, p), MPIU_REAL, 0, comm));
  PetscFunctionReturn(0);
}

/*
  Grassmann - principal angles between span(centre(Y)) and span(centre(X)): the body of
  BasisMetricGrassmannAngles, where X is V, and of BasisMetricGrassmannNontrivial, where X
  is V without its first column. Collective on comm.

  Input:  Y [n][KY]; X [n][KX] with row stride ldx
  Output: as BasisMetricGrassmannAngles, with min(KY, KX) entries in theta and sin2
*/
static PetscErrorCode Grassmann(MPI_Comm comm, PetscInt n, PetscInt KY, const PetscReal Y[], PetscInt KX,
                                const PetscReal X[], PetscInt ldx, PetscReal *dG, PetscReal theta[],
                                PetscReal sin2[], PetscInt *rank_y, PetscInt *rank_x)
{
  PetscInt   rY, rX, r, p = PetscMin(KY, KX);
  PetscReal *QY, *QX, *M, *s, sum = 0.0;

  PetscFunctionBeginUser;
  PetscCall(PetscLogEventBegin(BASIS_Metrics, 0, 0, 0, 0));
  PetscCall(CentredBasis(comm, n, KY, Y, KY, "Y", &rY, &QY));
  PetscCall(CentredBasis(comm, n, KX, X, ldx, "V", &rX, &QX));
  r = PetscMin(rY, rX);
  PetscCall(PetscMalloc2(rY * rX, &M, r, &s));
  PetscCall(GlobalAtB(comm, n, rY, QY, rX, QX, M));
  PetscCall(SingularValues(comm, rY, rX, M, "Q_Y^T Q_V", s));
  for (PetscInt i = 0; i < r; i++) {                               /* cosines descending: angles ascending */
    PetscReal c = PetscMin(s[i], 1.0), sc = (1.0 - c) * (1.0 + c); /* rounding can put c a few eps above 1 */
    sum += sc;
    if (theta) theta[i] = PetscAcosReal(c);
    if (sin2) sin2[i] = sc;
  }
  for (PetscInt i = r; i < p; i++) {
    if (theta) theta[i] = 0.0;
    if (sin2) sin2[i] = 0.0;
  }
  *dG = sum;
  if (rank_y) *rank_y = rY;
  if (rank_x) *rank_x = rX;
  PetscCall(PetscFree2(M, s));
  PetscCall(PetscFree(QY));
  PetscCall(PetscFree(QX));
  PetscCall(PetscLogEventEnd(BASIS_Metrics, 0, 0, 0, 0));
  PetscFunctionReturn(0);
}

/*
  BasisMetricGrassmannAngles - d_G and every principal angle between span(centre(Y)) and
  span(centre(V)), as angles and as sin^2, with the numerical ranks of both.

  Collective on comm.

  Input:
    n  - rows on this rank (the same rows, in the same order, in Y and V)
    KY - columns of Y;  Y [n][KY] row-major
    KV - columns of V;  V [n][KV] row-major
  Output:
    dG     - sum_i sin2[i], the d_G of DESIGN.md
    theta  - [min(KY, KV)] principal angles in radians, ascending (may be NULL)
    sin2   - [min(KY, KV)] sin^2 of the same angles, ascending, computed as (1 - c)(1 + c)
             from the cosine c (may be NULL); they are the terms of dG, summed in order
    rank_y - numerical rank of centre(Y) (may be NULL)
    rank_v - numerical rank of centre(V) (may be NULL)

  Notes:
    Centring removes the constant vector from both spans. A constant column (e.g. the
    trivial eigenvector of the unnormalised or random-walk Laplacian) is dropped, and
    directions of the centred span with a relative singular value below 1e-6 do not count,
    so rank_y can be less than KY. The angles are the min(rank_y, rank_v) principal angles
    of the two centred spans; the remaining slots of theta and sin2 do not exist as angles
    and are set to 0 so that d_G = sum_i sin2[i] holds over all entries. A rank below
    KY - 1 on an embedding usually means collapsed columns: callers should report it.
    Angles below ~1e-8 are not resolved (cosines near 1 lose them); d_G and sin2 are
    accurate to ~1e-15 absolute.
*/
PetscErrorCode BasisMetricGrassmannAngles(MPI_Comm comm, PetscInt n, PetscInt KY, const PetscReal Y[],
                                          PetscInt KV, const PetscReal V[], PetscReal *dG, PetscReal theta[],
                                          PetscReal sin2[], PetscInt *rank_y, PetscInt *rank_v)
{
  PetscFunctionBeginUser;
  PetscCheck(KY > 0 && KV > 0, comm, PETSC_ERR_ARG_OUTOFRANGE,
             "d_G needs at least one column (got %d and %d)", (int)KY, (int)KV);
  PetscCall(Grassmann(comm, n, KY, Y, KV, V, KV, dG, theta, sin2, rank_y, rank_v));
  PetscFunctionReturn(0);
}

/*
  BasisMetricGrassmannRanks - d_G, the principal angles and the numerical ranks:
  BasisMetricGrassmannAngles without the sin^2.

  Collective on comm.
*/
PetscErrorCode BasisMetricGrassmannRanks(MPI_Comm comm, PetscInt n, PetscInt KY, const PetscReal Y[],
                                         PetscInt KV, const PetscReal V[], PetscReal *dG, PetscReal theta[],
                                         PetscInt *rank_y, PetscInt *rank_v)
{
  PetscFunctionBeginUser;
  PetscCall(BasisMetricGrassmannAngles(comm, n, KY, Y, KV, V, dG, theta, NULL, rank_y, rank_v));
  PetscFunctionReturn(0);
}

/*
  BasisMetricGrassmann - d_G = sum_i sin^2(theta_i) over the principal angles between
  span(centre(Y)) and span(centre(V)) (DESIGN.md "Metrics").

  Collective on comm.

  Input:
    n - rows on this rank;  Y [n][KY], V [n][KV] row-major, the same rows in both
  Output:
    dG    - Grassmann distance; 0 when Y is an affine image of V
    theta - [min(KY, KV)] principal angles in radians, ascending (may be NULL)

  Notes:
    See BasisMetricGrassmannAngles for constant columns and rank-deficient spans.
*/
PetscErrorCode BasisMetricGrassmann(MPI_Comm comm, PetscInt n, PetscInt KY, const PetscReal Y[], PetscInt KV,
                                    const PetscReal V[], PetscReal *dG, PetscReal theta[])
{
  PetscFunctionBeginUser;
  PetscCall(BasisMetricGrassmannAngles(comm, n, KY, Y, KV, V, dG, theta, NULL, NULL, NULL));
  PetscFunctionReturn(0);
}

/*
  BasisMetricGrassmannNontrivial - d_G over the non-trivial directions: the sum of sin^2
  of the principal angles between span(centre(V without its first column)) and
  span(centre(Y)) (DESIGN.md "Metrics").

  Collective on comm.

  Input:
    n  - rows on this rank;  Y [n][KY] row-major
    KV - columns of V, at least 2;  V [n][KV] row-major, the eigenvectors in ascending
         order of their eigenvalues, so column 0 is the trivial one (D^1/2 1 for the sym
         Laplacian, the constant for the others)
  Output:
    dG     - sum_i sin2[i]; 0 when span(centre(Y)) contains centre(V_1 .. V_{KV-1}), whatever
             else Y spans (in particular for any affine image of V)
    theta  - [min(KY, KV - 1)] angles in radians, ascending (may be NULL)
    sin2   - [min(KY, KV - 1)] their sin^2, ascending (may be NULL)
    rank_y - numerical rank of centre(Y) (may be NULL)
    rank_v - numerical rank of centre(V without column 0) (may be NULL)

  Notes:
    The two subspaces have different dimensions (KV - 1 against KY = KV, typically): the
    min(rank_y, rank_v) angles are those of the smaller subspace against the larger one, so
    the extra direction of Y is free, and a learned trivial direction, whatever it is,
    costs nothing. Rank handling and accuracy as BasisMetricGrassmannAngles.
*/
PetscErrorCode BasisMetricGrassmannNontrivial(MPI_Comm comm, PetscInt n, PetscInt KY, const PetscReal Y[],
                                              PetscInt KV, const PetscReal V[], PetscReal *dG,
                                              PetscReal theta[], PetscReal sin2[], PetscInt *rank_y,
                                              PetscInt *rank_v)
{
  PetscFunctionBeginUser;
  PetscCheck(KY > 0 && KV > 1, comm, PETSC_ERR_ARG_OUTOFRANGE,
             "d_G over the non-trivial directions needs an embedding column and at least two reference "
             "columns (got %d and %d)",
             (int)KY, (int)KV);
  PetscCall(Grassmann(comm, n, KY, Y, KV - 1, V + 1, KV, dG, theta, sin2, rank_y, rank_v));
  PetscFunctionReturn(0);
}

/*
  BasisMetricGrassmannPublished - d_G as the published tables compute it: Y mapped onto V
  by the best affine least-squares map, every column scaled to unit norm, and the sum of
  (1 - s^2) over the singular values s of the KV x KV product (DESIGN.md "Metrics").

  Collective on comm.

  Input:
    n - rows on this rank;  Y [n][KY], V [n][KV] row-major, the same rows in both
  Output:
    dG - sum_i (1 - s_i^2) over the KV singular values of Yhat_n^T V_n, where
         Yhat = [Y 1] W, W = argmin ||[Y 1] W - V||_F, and _n scales each column to unit
         norm (over all rows, no centring)

  Notes:
    Followed (read, not copied): the BASiS authors' code, github.com/orrShtr/BASiS,
    spectral_analysis.py grassmann() (each column of both matrices divided by its norm,
    M = A^T B, sum of 1 - s^2 over the singular values of M) and MNIST/utils_BASiS.py
    calculateM()/AffineU()/modelEvaluataion() (the affine map is a least-squares fit on
    [points, 1], so it includes the constant column); SpectralNet,
    github.com/shaham-lab/SpectralNet, src/spectralnet/_utils.py get_grassman_distance()
    (the same sum, on inputs that are already orthonormal). The BASiS code maps the exact
    vectors onto the network's frame, with the fit taken on anchor points by RANSAC; here
    all rows are shared, so the fit is plain least squares over all of them, and Y is
    mapped onto V (DESIGN.md): then the measure is 0 for any affine image of V when V's
    columns are orthonormal, as exact eigenvectors are. Calling with (V, Y) gives the
    BASiS direction, which also counts the non-orthogonality of Y's columns (even an
    exact affine image of V scores sum(1 - s^2) over Y's normalised Gram matrix).
    Unlike d_G this is not a sum of sin^2 of angles: the normalised columns are not
    orthonormal, so an s can exceed 1 and a term go negative; the terms are summed as the
    reference code sums them, without clamping.
    Computed without forming Yhat: P = Q_Y Q_Y^T + 1 1^T / N projects onto span([Y 1])
    (Q_Y the basis of span(centre(Y)) at its numerical rank, as in d_G; a least-squares
    solver would cut at eps rather than 1e-6 relative, which differs only for nearly
    collinear columns of Y), Yhat^T V = V^T P V = B^T B + N m m^T with B = Q_Y^T V and m
    V's column means, and ||Yhat_j||^2 is its diagonal. A column of V orthogonal to
    span([Y 1]) (||Yhat_j|| below 1e-6 ||V_j||, where the reference code divides by ~0)
    gets a zero row: it counts 1, a full angle.
*/
PetscErrorCode BasisMetricGrassmannPublished(MPI_Comm comm, PetscInt n, PetscInt KY, const PetscReal Y[],
                                             PetscInt KV, const PetscReal V[], PetscReal *dG)
{
  PetscInt64 N, nl = n;
  PetscInt   rY;
  PetscReal *QY, *B, *C, *stats, *s, *d, sum = 0.0;

  PetscFunctionBeginUser;
  PetscCheck(KY > 0 && KV > 0, comm, PETSC_ERR_ARG_OUTOFRANGE,
             "the published d_G needs at least one column (got %d and %d)", (int)KY, (int)KV);
  PetscCall(PetscLogEventBegin(BASIS_Metrics, 0, 0, 0, 0));
  PetscCall(CentredBasis(comm, n, KY, Y, KY, "Y", &rY, &QY));
  PetscCallMPI(MPI_Allreduce(&nl, &N, 1, MPIU_INT64, MPI_SUM, comm));
  PetscCall(PetscMalloc5(rY * KV, &B, KV * KV, &C, 2 * KV, &stats, KV, &s, KV, &d));

  /* column sums and sums of squares of V: one allreduce */
  PetscCall(PetscArrayzero(stats, 2 * KV));
  for (PetscInt i = 0; i < n; i++)
    for (PetscInt j = 0; j < KV; j++) {
      PetscReal v = V[(size_t)i * KV + j];
      stats[j] += v, stats[KV + j] += v * v;
    }
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, stats, (int)(2 * KV), MPIU_REAL, MPIU_SUM, comm));
  for (PetscInt j = 0; j < KV; j++) {
    PetscCheck(!PetscIsInfOrNanReal(stats[KV + j]), comm, PETSC_ERR_FP,
               "V contains Inf or NaN; the published d_G is undefined");
    PetscCheck(stats[KV + j] > 0, comm, PETSC_ERR_ARG_WRONG,
               "column %d of V is zero: the published d_G scales every column to unit norm", (int)j);
  }

  /* C = Yhat^T V = B^T B + m m^T N (m = stats / N), then M = diag(1/||Yhat||) C diag(1/||V||) in C */
  PetscCall(GlobalAtB(comm, n, rY, QY, KV, V, B));
  for (PetscInt a = 0; a < KV; a++)
    for (PetscInt b = 0; b < KV; b++) {
      PetscReal c = stats[a] * stats[b] / (PetscReal)N;
      for (PetscInt k = 0; k < rY; k++) c += B[k * KV + a] * B[k * KV + b];
      C[a * KV + b] = c;
    }
  for (PetscInt a = 0; a < KV; a++)
    d[a] = C[a * KV + a] > BASIS_PROJ_RTOL * BASIS_PROJ_RTOL * stats[KV + a]
               ? 1.0 / PetscSqrtReal(C[a * KV + a])
               : 0.0;
  for (PetscInt a = 0; a < KV; a++)
    for (PetscInt b = 0; b < KV; b++) C[a * KV + b] *= d[a] / PetscSqrtReal(stats[KV + b]);
  PetscCall(SingularValues(comm, KV, KV, C, "the published d_G's K x K product", s));
  for (PetscInt i = 0; i < KV; i++) sum += 1.0 - s[i] * s[i];
  *dG = sum;
  PetscCall(PetscFree5(B, C, stats, s, d));
  PetscCall(PetscFree(QY));
  PetscCall(PetscLogEventEnd(BASIS_Metrics, 0, 0, 0, 0));
  PetscFunctionReturn(0);
}

/*
  BasisMetricOrthogonality - d_perp = || Yn^T Yn - I ||_F, Yn = Y with unit-norm columns
  (norms over all rows, no centring, as the authors do).

  Collective on comm.

  Input:
    n - rows on this rank;  Y [n][K] row-major
  Output:
    dperp - identical on every rank

  Notes:
    The diagonal of Yn^T Yn is 1 by construction, so d_perp^2 is the sum of the squared
    off-diagonal cosines G_ij^2 / (G_ii G_jj) of the allreduced Gram matrix G. A zero
    column is an error: it has no direction.
*/
PetscErrorCode BasisMetricOrthogonality(MPI_Comm comm, PetscInt n, PetscInt K, const PetscReal Y[],
                                        PetscReal *dperp)
{
  PetscReal *G, sum = 0.0;

  PetscFunctionBeginUser;
  PetscCheck(K > 0, comm, PETSC_ERR_ARG_OUTOFRANGE, "d_perp needs at least one column (got %d)", (int)K);
  PetscCall(PetscLogEventBegin(BASIS_Metrics, 0, 0, 0, 0));
  PetscCall(PetscMalloc1(K * K, &G));
  PetscCall(GlobalAtB(comm, n, K, Y, K, Y, G));
  for (PetscInt j = 0; j < K * K; j++)
    PetscCheck(!PetscIsInfOrNanReal(G[j]), comm, PETSC_ERR_FP, "Y contains Inf or NaN; d_perp is undefined");
  for (PetscInt j = 0; j < K; j++)
    PetscCheck(G[j * K + j] > 0, comm, PETSC_ERR_ARG_WRONG,
               "column %d of Y is zero: d_perp needs unit-norm columns", (int)j);
  for (PetscInt i = 0; i < K; i++)
    for (PetscInt j = 0; j < K; j++)
      if (i != j) sum += G[i * K + j] * G[i * K + j] / (G[i * K + i] * G[j * K + j]);
  *dperp = PetscSqrtReal(sum);
  PetscCall(PetscFree(G));
  PetscCall(PetscLogEventEnd(BASIS_Metrics, 0, 0, 0, 0));
  PetscFunctionReturn(0);
}
