/*
  eigensolver.c - the first K eigenpairs of a graph Laplacian (DESIGN.md "The algorithm": the
  K smallest eigenvalues, the trivial one included; the entry of largest magnitude of each
  eigenvector positive), for the batch graph of every training step (step 3, one process,
  prefix batch_), the reference graph (step 2, ref_) and the exact baseline (exact_).

  One object with the PETSc lifecycle: Create(comm, prefix) -> SetProblem (code defaults) ->
  SetFromOptions (reads -<prefix>eps_*, -<prefix>recover_missed, -<prefix>max_residual once)
  -> Solve or SolveDense, as often as wanted -> Destroy. It keeps its EPS, the operator
  matrices, vectors and dense workspace across solves of one size, so a training run
  creates them once; the EPS's random start vector is reseeded before every solve, so each
  solve gives bitwise what a fresh object would.

  Two routes, one finish:
  - Krylov (Solve, collective on comm): SLEPc Krylov-Schur on the LARGEST eigenvalues of
    N = D^-1/2 W D^-1/2 for sym and rw (lambda = 1 - mu: well separated at the top, fast
    without shift-invert, notes/anchors.md), the smallest of D - W for unnormalized;
    -<prefix>eps_type scalapack converts to MATSCALAPACK. Missed copies of a repeated
    eigenvalue are searched for (RecoverMissedEigenpairs) and residuals are checked.
  - Dense (SolveDense, one process): LAPACK dsyevr for only the K wanted pairs of the dense
    Laplacian that graph.c assembles for small batches.
  Both end in Finish: the rw back-transform v = D^-1/2 u to unit norm, the sign convention,
  the layout phi [n][K] and the warning about a disconnected graph, so the routes agree
  entry by entry and word by word.
*/
#include <basis/eigensolver.h>
#include <slepceps.h>
#include <string.h>

/* LAPACK (Fortran symbol of OpenBLAS); PETSc 3.18's petscblaslapack.h has no syevr. */
extern void dsyevr_(const char *jobz, const char *range, const char *uplo, const PetscBLASInt *n,
                    PetscReal *a, const PetscBLASInt *lda, const PetscReal *vl, const PetscReal *vu,
                    const PetscBLASInt *il, const PetscBLASInt *iu, const PetscReal *abstol, PetscBLASInt *m,
                    PetscReal *w, PetscReal *z, const PetscBLASInt *ldz, PetscBLASInt *isuppz,
                    PetscReal *work, const PetscBLASInt *lwork, PetscBLASInt *iwork,
                    const PetscBLASInt *liwork, PetscBLASInt *info);

/* WarnComponents keeps a row of the zero eigenvectors on the stack; larger -dim skip it. */
#define BASIS_MAX_ZERO_COMPONENTS 64

struct _p_BasisEigensolver {
  MPI_Comm           comm;
  char               prefix[BASIS_EIGENSOLVER_PREFIX_LEN];
  BasisLaplacianType laplacian;
  PetscInt           K;
  PetscReal          eps_tol; /* code default of the Krylov tolerance, 0: SLEPc's */
  PetscInt           eps_ncv; /* code default of the Krylov subspace size, 0: SLEPc's */
  PetscBool          recover; /* -<prefix>recover_missed, when recover_set */
  PetscBool          recover_set;
  PetscReal          max_residual; /* -<prefix>max_residual, when max_residual_set */
  PetscBool          max_residual_set;
  PetscBool          isscalapack; /* -<prefix>eps_type scalapack */
  PetscBool          configured;  /* SetFromOptions was called */
  PetscBool          warned;      /* the disconnected-graph warning is printed once per object */
  EPS                eps;
  /* Krylov route, kept while the local and global sizes stay */
  PetscInt     N, nlocal;
  Mat          A;  /* operator N or D - W (AIJ; none on one process without ScaLAPACK: OneProcessOperator) */
  Mat          As; /* the solver's copy: the upper triangle (SBAIJ) on one process, MATSCALAPACK */
  Vec          deg, dinv, v, r, *V; /* degrees, D^-1/2, work vectors, the K eigenvectors */
  PetscReal   *U, *evs;             /* [K][nlocal] column-major eigenvectors, [K] eigenvalues */
  PetscInt    *iu, *ju;             /* OneProcessOperator: the upper triangle's CSR, room for nup */
  PetscScalar *vu;
  size_t       nup;
  /* dense route, kept while m stays */
  PetscInt      m;
  PetscReal    *w, *Z, *work; /* [m] eigenvalues, [K][m] column-major eigenvectors, LAPACK work */
  PetscBLASInt *isuppz, *iwork, lwork, liwork;
};

/*
  BasisEigensolverCreate - an eigensolver for graphs on comm, options prefix prefix.

  Collective on comm. Defaults: sym Laplacian, K = 10, SLEPc's tolerance; set the problem
  with BasisEigensolverSetProblem, then BasisEigensolverSetFromOptions before solving.
*/
PetscErrorCode BasisEigensolverCreate(MPI_Comm comm, const char prefix[], BasisEigensolver *es)
{
  BasisEigensolver e;

  PetscFunctionBeginUser;
  PetscCall(PetscNew(&e));
  e->comm      = comm;
  e->laplacian = BASIS_LAPLACIAN_SYM;
  e->K         = 10;
  PetscCall(PetscStrncpy(e->prefix, prefix ? prefix : "", sizeof(e->prefix)));
  PetscCall(EPSCreate(comm, &e->eps));
  PetscCall(EPSSetOptionsPrefix(e->eps, e->prefix));
  *es = e;
  PetscFunctionReturn(0);
}

/*
  BasisEigensolverCheckOptions - refuse, before any work, the -<prefix>eps_ncv, -eps_tol and
  -eps_max_it values that SLEPc would reject at the solve with a message that names neither
  the option nor the number of pairs.

  Collective on comm (every rank reads the same options database, so all raise the same
  error). Input: prefix ("batch_", "ref_", "exact_"); nev the pairs the solve computes, n
  the graph's points; pairs, what nev is made of ("-dim", "-dim + -align_extra").
*/
PetscErrorCode BasisEigensolverCheckOptions(MPI_Comm comm, const char prefix[], PetscInt nev, PetscInt n,
                                            const char pairs[])
{
  PetscInt  ncv, maxit;
  PetscReal tol;
  PetscBool set;

  PetscFunctionBeginUser;
  PetscCall(PetscOptionsGetInt(NULL, prefix, "-eps_ncv", &ncv, &set));
  if (set && ncv != PETSC_DECIDE && ncv != PETSC_DEFAULT) {
    PetscCheck(ncv > nev, comm, PETSC_ERR_ARG_OUTOFRANGE,
               "-%seps_ncv %d is too small: this solve computes %d eigenpairs (%s), so its subspace needs at "
               "least %d vectors; give a larger -%seps_ncv or leave it out",
               prefix, (int)ncv, (int)nev, pairs, (int)(nev + 1), prefix);
    PetscCheck(ncv <= n, comm, PETSC_ERR_ARG_OUTOFRANGE,
               "-%seps_ncv %d exceeds the %d points of the graph; give at most %d or leave it out", prefix,
               (int)ncv, (int)n, (int)n);
  }
  PetscCall(PetscOptionsGetReal(NULL, prefix, "-eps_tol", &tol, &set));
  PetscCheck(!set || tol == (PetscReal)PETSC_DEFAULT || tol > 0, comm, PETSC_ERR_ARG_OUTOFRANGE,
             "-%seps_tol %g must be positive", prefix, (double)tol);
  PetscCall(PetscOptionsGetInt(NULL, prefix, "-eps_max_it", &maxit, &set));
  PetscCheck(!set || maxit == PETSC_DEFAULT || maxit == PETSC_DECIDE || maxit >= 1, comm,
             PETSC_ERR_ARG_OUTOFRANGE, "-%seps_max_it %d must be at least 1", prefix, (int)maxit);
  PetscFunctionReturn(0);
}

/*
  BasisEigensolverSetProblem - from the graph rule p: which Laplacian (p->laplacian), how
  many pairs (p->K), and the code defaults of the Krylov tolerance (p->eps_tol, 0: SLEPc's
  1e-8; -<prefix>eps_tol wins) and subspace size (p->eps_ncv, 0: SLEPc's; -<prefix>eps_ncv
  wins). Not collective; call before BasisEigensolverSetFromOptions.
*/
PetscErrorCode BasisEigensolverSetProblem(BasisEigensolver es, const BasisGraphParams *p)
{
  PetscFunctionBeginUser;
  PetscCheck(!es->configured, PETSC_COMM_SELF, PETSC_ERR_ORDER,
             "set the problem before BasisEigensolverSetFromOptions");
  PetscCheck(p->K >= 1, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "-dim %d must be at least 1", (int)p->K);
  es->laplacian = p->laplacian;
  es->K         = p->K;
  es->eps_tol   = p->eps_tol;
  es->eps_ncv   = p->eps_ncv;
  PetscFunctionReturn(0);
}

/*
  BasisEigensolverSetFromOptions - configure the EPS and read the options, once.

  Collective on the object's comm.

  Options:
    -<prefix>eps_*        - any SLEPc EPS option; default Krylov-Schur at the tolerance of
                            BasisEigensolverSetProblem. With -<prefix>eps_type scalapack the
                            operator becomes a MATSCALAPACK.
    -<prefix>recover_missed - search for a copy of a repeated eigenvalue that Krylov-Schur
                            missed (RecoverMissedEigenpairs). Default: always on several
                            processes (the reference and exact solves, one-off); on one
                            process (the batch solve of every training step) only when the
                            graph is disconnected, the one source of exactly repeated
                            eigenvalues in a graph of randomly sampled data points. The
                            search costs ~30% of a batch eigensolve.
    -<prefix>max_residual - refuse pairs whose residual exceeds this times ||L|| (1 for sym
                            and rw, 2 max degree for unnormalized); default 100 * eps_tol
*/
PetscErrorCode BasisEigensolverSetFromOptions(BasisEigensolver es)
{
  const PetscBool unnormal = es->laplacian == BASIS_LAPLACIAN_UNNORMALIZED ? PETSC_TRUE : PETSC_FALSE;

  PetscFunctionBeginUser;
  PetscCall(EPSSetProblemType(es->eps, EPS_HEP));
  PetscCall(EPSSetType(es->eps, EPSKRYLOVSCHUR));
  PetscCall(EPSSetWhichEigenpairs(es->eps, unnormal ? EPS_SMALLEST_REAL : EPS_LARGEST_REAL));
  PetscCall(
      EPSSetDimensions(es->eps, es->K, es->eps_ncv > es->K ? es->eps_ncv : PETSC_DEFAULT, PETSC_DEFAULT));
  /* D - W has the eigenvalue 0: a test relative to |lambda| would never accept it */
  if (unnormal) PetscCall(EPSSetConvergenceTest(es->eps, EPS_CONV_NORM));
  if (es->eps_tol > 0) PetscCall(EPSSetTolerances(es->eps, es->eps_tol, PETSC_DEFAULT));
  PetscCall(EPSSetFromOptions(es->eps));
  PetscCall(PetscObjectTypeCompare((PetscObject)es->eps, EPSSCALAPACK, &es->isscalapack));
  es->recover      = PETSC_TRUE;
  es->max_residual = -1;
  PetscOptionsBegin(es->comm, es->prefix, "Graph eigensolver", NULL);
  PetscCall(
      PetscOptionsBool("-recover_missed",
                       "Search once more in the complement of the K pairs found, for a copy of a repeated "
                       "eigenvalue that Krylov-Schur missed (default: always on several processes, on one "
                       "only for a disconnected graph)",
                       NULL, es->recover, &es->recover, &es->recover_set));
  PetscCall(PetscOptionsReal(
      "-max_residual",
      "Refuse eigenpairs with ||L v - lambda v|| above this times ||L|| (default 100 * eps_tol)", NULL,
      es->max_residual, &es->max_residual, &es->max_residual_set));
  PetscOptionsEnd();
  es->configured = PETSC_TRUE;
  PetscFunctionReturn(0);
}

/* Free the Krylov route's matrices, vectors and arrays. */
static PetscErrorCode KrylovReset(BasisEigensolver es)
{
  PetscFunctionBeginUser;
  PetscCall(MatDestroy(&es->A));
  PetscCall(MatDestroy(&es->As));
  PetscCall(VecDestroy(&es->deg));
  PetscCall(VecDestroy(&es->dinv));
  PetscCall(VecDestroy(&es->v));
  PetscCall(VecDestroy(&es->r));
  if (es->V) PetscCall(VecDestroyVecs(es->K, &es->V));
  PetscCall(PetscFree2(es->U, es->evs));
  PetscCall(PetscFree3(es->iu, es->ju, es->vu));
  es->nup = 0;
  PetscFunctionReturn(0);
}

/* The Krylov route's objects for a matrix W: vectors and arrays created when the sizes
   change (the first solve), kept otherwise; es->A = a copy of W, except on one process
   without ScaLAPACK (OneProcessOperator reads W itself). */
static PetscErrorCode KrylovSetUp(BasisEigensolver es, Mat W, PetscMPIInt size)
{
  PetscInt N, nlocal;

  PetscFunctionBeginUser;
  PetscCall(MatGetSize(W, &N, NULL));
  PetscCall(MatGetLocalSize(W, &nlocal, NULL));
  if (N != es->N || nlocal != es->nlocal || !es->deg) {
    PetscCall(KrylovReset(es));
    PetscCall(MatCreateVecs(W, &es->v, &es->r));
    PetscCall(VecDuplicate(es->v, &es->deg));
    PetscCall(VecDuplicate(es->v, &es->dinv));
    PetscCall(VecDuplicateVecs(es->v, es->K, &es->V));
    PetscCall(PetscMalloc2((size_t)PetscMax(nlocal, 1) * es->K, &es->U, es->K, &es->evs));
    es->N      = N;
    es->nlocal = nlocal;
  }
  if (size == 1 && !es->isscalapack) PetscFunctionReturn(0);
  PetscCall(MatDestroy(&es->A));
  PetscCall(MatDuplicate(W, MAT_COPY_VALUES, &es->A));
  PetscFunctionReturn(0);
}

/* From the degrees in es->deg: ||L||, the scale of tolerances (2 max degree for D - W,
   Gershgorin; 1 for N), and for sym and rw es->dinv = D^-1/2; a point of degree 0 is an
   error there. */
static PetscErrorCode DegreeScaling(BasisEigensolver es, PetscReal *norm)
{
  PetscReal dmax, dmin;

  PetscFunctionBeginUser;
  PetscCall(VecMax(es->deg, NULL, &dmax));
  *norm = 1;
  if (es->laplacian == BASIS_LAPLACIAN_UNNORMALIZED) {
    *norm = 2 * dmax;
    PetscFunctionReturn(0);
  }
  PetscCall(VecMin(es->deg, NULL, &dmin));
  PetscCheck(dmin > 0, es->comm, PETSC_ERR_ARG_WRONG, "the graph has isolated points (degree 0)");
  PetscCall(VecCopy(es->deg, es->dinv));
  PetscCall(VecSqrtAbs(es->dinv));
  PetscCall(VecReciprocal(es->dinv));
  PetscFunctionReturn(0);
}

/*
  OneProcessOperator - on one process without ScaLAPACK (every training step's batch graph,
  the exact and reference graphs at one rank): the operator's upper triangle straight from
  the arrays of W (MATSEQAIJ, sorted columns, as graph.c assembles it) into es->As (SBAIJ,
  re-preallocated in one call), with no AIJ copy of W in between: the two row-by-row copies
  the general route made here had cost ~1 ms of a batch (perf). The CSR arrays are kept
  (es->iu, ju, vu) and grow only when a graph has more entries than any before. Each product streams half
  the entries (~15% off the solve at m = 1024 and 4096, docs/performance.md). The values
  are the general route's bit for bit: degrees summed along each row in column order (as
  MatGetRowSum's plain SeqAIJ product adds them; PETSc's inode kernel, used when many rows
  repeat the previous row's pattern, adds in pairs), then DegreeScaling, N_ij = (W_ij d_i)
  d_j (MatDiagonalScale's order), or D - W (-W_ij off the diagonal, the degree on it).
*/
static PetscErrorCode OneProcessOperator(BasisEigensolver es, Mat W, PetscReal *norm)
{
  const PetscBool    unnormal = es->laplacian == BASIS_LAPLACIAN_UNNORMALIZED ? PETSC_TRUE : PETSC_FALSE;
  const PetscInt    *ia, *ja;
  const PetscScalar *w, *deg, *dinv = NULL;
  PetscScalar       *d, *vu;
  PetscInt           n, nr, *iu, *ju, c = 0;
  size_t             need;
  PetscBool          done;

  PetscFunctionBeginUser;
  PetscCall(MatGetSize(W, &n, NULL));
  PetscCall(MatGetRowIJ(W, 0, PETSC_FALSE, PETSC_FALSE, &nr, &ia, &ja, &done));
  PetscCheck(done, PETSC_COMM_SELF, PETSC_ERR_SUP, "MatGetRowIJ is not available for this matrix type");
  PetscCall(MatSeqAIJGetArrayRead(W, &w));
  PetscCall(VecGetArray(es->deg, &d));
  for (PetscInt i = 0; i < n; i++) {
    d[i] = 0;
    for (PetscInt e = ia[i]; e < ia[i + 1]; e++) d[i] += w[e];
  }
  PetscCall(VecRestoreArray(es->deg, &d));
  PetscCall(DegreeScaling(es, norm));
  PetscCall(VecGetArrayRead(es->deg, &deg));
  if (!unnormal) PetscCall(VecGetArrayRead(es->dinv, &dinv));
  need = (size_t)ia[n] + n; /* at most: W's entries and a diagonal per row */
  if (need > es->nup) {
    PetscCall(PetscFree3(es->iu, es->ju, es->vu));
    PetscCall(PetscMalloc3(n + 1, &es->iu, need, &es->ju, need, &es->vu));
    es->nup = need;
  }
  iu = es->iu, ju = es->ju, vu = es->vu;
  for (PetscInt i = 0; i < n; i++) { /* row i: the diagonal (added if W lacks it), then j > i */
    PetscInt e = ia[i];
    while (e < ia[i + 1] && ja[e] < i) e++;
    iu[i] = c;
    ju[c] = i;
    vu[c] = unnormal ? deg[i] : (e < ia[i + 1] && ja[e] == i ? (w[e] * dinv[i]) * dinv[i] : 0);
    c++;
    if (e < ia[i + 1] && ja[e] == i) e++;
    for (; e < ia[i + 1]; e++, c++) {
      ju[c] = ja[e];
      vu[c] = unnormal ? -w[e] : (w[e] * dinv[i]) * dinv[ja[e]];
    }
  }
  iu[n] = c;
  if (!unnormal) PetscCall(VecRestoreArrayRead(es->dinv, &dinv));
  PetscCall(VecRestoreArrayRead(es->deg, &deg));
  PetscCall(MatSeqAIJRestoreArrayRead(W, &w));
  PetscCall(MatRestoreRowIJ(W, 0, PETSC_FALSE, PETSC_FALSE, &nr, &ia, &ja, &done));
  if (!es->As) {
    PetscCall(MatCreate(PetscObjectComm((PetscObject)W), &es->As));
    PetscCall(MatSetSizes(es->As, n, n, n, n));
    PetscCall(MatSetType(es->As, MATSEQSBAIJ));
  }
  PetscCall(MatSeqSBAIJSetPreallocationCSR(es->As, 1, iu, ju, vu));
  PetscCall(EPSSetOperators(es->eps, es->As, NULL));
  PetscFunctionReturn(0);
}

/* The operator: OneProcessOperator on one process without ScaLAPACK; otherwise in es->A
   (a copy of W) D - W (unnormalized) or N = D^-1/2 W D^-1/2, and for ScaLAPACK the
   solver's dense copy es->As. norm: ||L||, the scale of tolerances. */
static PetscErrorCode KrylovOperator(BasisEigensolver es, Mat W, PetscMPIInt size, PetscReal *norm)
{
  PetscFunctionBeginUser;
  if (size == 1 && !es->isscalapack) {
    PetscCall(OneProcessOperator(es, W, norm));
    PetscFunctionReturn(0);
  }
  PetscCall(MatGetRowSum(W, es->deg));
  PetscCall(DegreeScaling(es, norm));
  if (es->laplacian == BASIS_LAPLACIAN_UNNORMALIZED) {
    PetscCall(MatScale(es->A, -1.0));
    PetscCall(MatDiagonalSet(es->A, es->deg, INSERT_VALUES));
  } else
    PetscCall(MatDiagonalScale(es->A, es->dinv, es->dinv));
  PetscCall(MatSetOption(es->A, MAT_SYMMETRIC, PETSC_TRUE));
  if (es->isscalapack) {
    PetscCall(MatDestroy(&es->As));
    PetscCall(MatConvert(es->A, MATSCALAPACK, MAT_INITIAL_MATRIX, &es->As));
  }
  PetscCall(EPSSetOperators(es->eps, es->As ? es->As : es->A, NULL));
  PetscFunctionReturn(0);
}

/* Reset the EPS's random stream (its start vector) to its state at creation: a kept EPS
   then starts every solve from the vector a fresh one would. */
static PetscErrorCode ReseedStart(EPS eps)
{
  BV            bv;
  PetscRandom   rnd;
  unsigned long seed;

  PetscFunctionBeginUser;
  PetscCall(EPSGetBV(eps, &bv));
  PetscCall(BVGetRandomContext(bv, &rnd));
  PetscCall(PetscRandomGetSeed(rnd, &seed));
  PetscCall(PetscRandomSetSeed(rnd, seed));
  PetscCall(PetscRandomSeed(rnd));
  PetscFunctionReturn(0);
}

/*
  RecoverMissedEigenpairs - make sure no wanted eigenpair was missed.

  Single-vector Krylov methods can miss copies of a repeated eigenvalue: a graph of c
  disconnected pieces has eigenvalue 0 (of L) c times, and Krylov-Schur started from one
  vector returned 0, 0, 0.10 instead of 0, 0, 0 for three clusters (tests/test_exact.c).
  So after the solve, one more pair is sought in the orthogonal complement of the K found
  vectors (EPSSetDeflationSpace). If it beats the worst kept eigenvalue by more than the
  solver tolerance, it replaces it and the search repeats (at most K times). Each search
  starts from a fresh random vector (see below). Costs one nev = 1 solve when nothing was
  missed.

  Collective on comm. evs [K] and V [K] are ordered best first (largest for the
  normalised operator, smallest for D - W) and updated in place.
*/
static PetscErrorCode RecoverMissedEigenpairs(MPI_Comm comm, const char *prefix, Mat A, PetscBool smallest,
                                              PetscReal tol, PetscInt K, PetscReal evs[], Vec V[])
{
  PetscFunctionBeginUser;
  for (PetscInt round = 0; round < K; round++) {
    EPS         eps;
    PetscInt    nconv;
    PetscScalar ev;
    PetscBool   better;
    Vec         x;

    PetscCall(EPSCreate(comm, &eps));
    PetscCall(EPSSetOperators(eps, A, NULL));
    PetscCall(EPSSetProblemType(eps, EPS_HEP));
    PetscCall(EPSSetType(eps, EPSKRYLOVSCHUR));
    PetscCall(EPSSetWhichEigenpairs(eps, smallest ? EPS_SMALLEST_REAL : EPS_LARGEST_REAL));
    PetscCall(EPSSetDimensions(eps, 1, PETSC_DEFAULT, PETSC_DEFAULT));
    if (smallest) PetscCall(EPSSetConvergenceTest(eps, EPS_CONV_NORM));
    PetscCall(EPSSetDeflationSpace(eps, K, V));
    /* A fresh start vector: the first solve's own start vector has, in a repeated
       eigenspace, exactly the component the first solve found, so after deflation it
       would hold nothing of the missed direction. */
    {
      PetscRandom rnd;
      Vec         x0;
      PetscCall(VecDuplicate(V[0], &x0));
      PetscCall(PetscRandomCreate(comm, &rnd));
      PetscCall(PetscRandomSetSeed(rnd, (unsigned long)(7919 + 104729 * round)));
      PetscCall(PetscRandomSeed(rnd));
      PetscCall(VecSetRandom(x0, rnd));
      PetscCall(PetscRandomDestroy(&rnd));
      PetscCall(EPSSetInitialSpace(eps, 1, &x0));
      PetscCall(VecDestroy(&x0));
    }
    PetscCall(EPSSolve(eps));
    PetscCall(EPSGetConverged(eps, &nconv));
    if (nconv < 1) { /* nothing better found within the iteration limit: keep the solve */
      PetscCall(EPSDestroy(&eps));
      break;
    }
    PetscCall(VecDuplicate(V[0], &x));
    PetscCall(EPSGetEigenpair(eps, 0, &ev, NULL, x, NULL));
    PetscCall(EPSDestroy(&eps));
    /* 10 x the solver tolerance: eigenvalue estimates are accurate to about tol */
    better = smallest ? (PetscBool)(PetscRealPart(ev) < evs[K - 1] - 10 * tol)
                      : (PetscBool)(PetscRealPart(ev) > evs[K - 1] + 10 * tol);
    if (!better) {
      PetscCall(VecDestroy(&x));
      break;
    }
    PetscCall(PetscInfo(NULL, "%seigensolver: recovered a missed eigenvalue %g (replaces %g)\n",
                        prefix ? prefix : "", (double)PetscRealPart(ev), (double)evs[K - 1]));
    /* insert (ev, x) in order, dropping the worst */
    {
      PetscInt pos   = K - 1;
      Vec      worst = V[K - 1];
      while (pos > 0 && (smallest ? PetscRealPart(ev) < evs[pos - 1] : PetscRealPart(ev) > evs[pos - 1])) {
        evs[pos] = evs[pos - 1];
        V[pos]   = V[pos - 1];
        pos--;
      }
      evs[pos] = PetscRealPart(ev);
      V[pos]   = worst;
      PetscCall(VecCopy(x, V[pos]));
    }
    PetscCall(VecDestroy(&x));
  }
  PetscFunctionReturn(0);
}

/* Number of connected components of a one-process sparse matrix's graph (union-find over
   its CSR pattern; W stores no zeros off the diagonal). */
static PetscErrorCode CountComponents(Mat W, PetscInt *ncomp)
{
  const PetscInt *ia, *ja;
  PetscInt        n, *parent;
  PetscBool       done;

  PetscFunctionBeginUser;
  PetscCall(MatGetRowIJ(W, 0, PETSC_FALSE, PETSC_FALSE, &n, &ia, &ja, &done));
  PetscCheck(done, PETSC_COMM_SELF, PETSC_ERR_SUP, "MatGetRowIJ is not available for this matrix type");
  PetscCall(PetscMalloc1(n, &parent));
  for (PetscInt i = 0; i < n; i++) parent[i] = i;
  *ncomp = n;
  for (PetscInt i = 0; i < n; i++)
    for (PetscInt e = ia[i]; e < ia[i + 1]; e++) {
      PetscInt a = i, b = ja[e];
      while (parent[a] != a) a = parent[a] = parent[parent[a]]; /* path halving */
      while (parent[b] != b) b = parent[b] = parent[parent[b]];
      if (a != b) parent[PetscMax(a, b)] = PetscMin(a, b), (*ncomp)--;
    }
  PetscCall(PetscFree(parent));
  PetscCall(MatRestoreRowIJ(W, 0, PETSC_FALSE, PETSC_FALSE, &n, &ia, &ja, &done));
  PetscFunctionReturn(0);
}

/*
  WarnComponents - after a solve: a graph with c > 1 connected components has eigenvalue 0
  c times, and its first c eigenvectors only say which component a point is in (their rows
  are positive multiples of one vector per component: D^1/2 1_C for sym, 1_C otherwise).
  Counts the points of each component from those rows and warns on rank 0 (issue 7: a
  component smaller than K + 1 points is named, with the fix). An object warns at most once:
  the batch solver of a training run once per process, not once per step.

  Collective on the object's comm. phi [nlocal][K] row-major after the sign convention;
  lambda [K]; zero: the largest |lambda| counted as 0.
*/
static PetscErrorCode WarnComponents(BasisEigensolver es, PetscInt nlocal, const PetscReal phi[],
                                     const PetscReal lambda[], PetscReal zero)
{
  MPI_Comm       comm = es->comm;
  const PetscInt K    = es->K;
  PetscInt       c = 0, nrep = 0, *count, *all_count = NULL, smallest = 0, nsmall = 0;
  PetscReal     *rep, *all_rep = NULL;
  PetscMPIInt    size, rank;
  char           name[64];

  PetscFunctionBeginUser;
  while (c < K && PetscAbsReal(lambda[c]) <= zero) c++;
  if (c < 2 || es->warned) PetscFunctionReturn(0);
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  /* this rank's distinct unit rows of the c zero columns (at most c of them), with counts;
     1e-6: the rows of one component agree to the solver's accuracy, different
     components' rows are orthogonal */
  PetscCall(PetscCalloc2((size_t)c * c, &rep, c, &count));
  for (PetscInt i = 0; i < nlocal; i++) {
    PetscReal u[BASIS_MAX_ZERO_COMPONENTS], nrm = 0;
    PetscInt  r;
    for (PetscInt j = 0; j < c; j++) u[j] = phi[(size_t)i * K + j], nrm += u[j] * u[j];
    nrm = PetscSqrtReal(nrm);
    if (!(nrm > 0)) continue;
    for (PetscInt j = 0; j < c; j++) u[j] /= nrm;
    for (r = 0; r < nrep; r++) {
      PetscReal d = 0;
      for (PetscInt j = 0; j < c; j++) d += PetscAbsReal(u[j] - rep[r * c + j]);
      if (d < 1e-6 * c) break;
    }
    if (r == nrep && nrep < c) PetscCall(PetscArraycpy(rep + (nrep++) * c, u, c));
    if (r < nrep) count[r]++;
  }
  /* merge on rank 0: the same matching over every rank's representatives */
  if (rank == 0) PetscCall(PetscMalloc2((size_t)size * c * c, &all_rep, (size_t)size * c, &all_count));
  PetscCallMPI(MPI_Gather(rep, (int)(c * c), MPIU_REAL, all_rep, (int)(c * c), MPIU_REAL, 0, comm));
  PetscCallMPI(MPI_Gather(count, (int)c, MPIU_INT, all_count, (int)c, MPIU_INT, 0, comm));
  if (rank == 0) {
    PetscInt n = 0, total[BASIS_MAX_ZERO_COMPONENTS] = {0};
    for (PetscInt q = 0; q < size * c; q++) {
      PetscInt r;
      if (!all_count[q]) continue;
      for (r = 0; r < n; r++) {
        PetscReal d = 0;
        for (PetscInt j = 0; j < c; j++) d += PetscAbsReal(all_rep[q * c + j] - rep[r * c + j]);
        if (d < 1e-6 * c) break;
      }
      if (r == n && n < c) PetscCall(PetscArraycpy(rep + (n++) * c, all_rep + q * c, c));
      if (r < n) total[r] += all_count[q];
    }
    smallest = PETSC_MAX_INT;
    for (PetscInt r = 0; r < n; r++) {
      smallest = PetscMin(smallest, total[r]);
      if (total[r] < K + 1) nsmall++;
    }
    PetscCall(PetscFree2(all_rep, all_count));
  }
  PetscCallMPI(MPI_Bcast(&smallest, 1, MPIU_INT, 0, comm));
  PetscCallMPI(MPI_Bcast(&nsmall, 1, MPIU_INT, 0, comm));
  {
    size_t len;
    PetscCall(PetscStrncpy(name, es->prefix, sizeof(name)));
    PetscCall(PetscStrlen(name, &len));
    if (len && name[len - 1] == '_') name[len - 1] = ' '; /* "exact_" -> "exact " */
  }
  PetscCall(
      PetscPrintf(comm,
                  "warning: the %sgraph has %s%d connected components (eigenvalue 0 %d times); the first "
                  "%d eigenvectors only mark the components. The smallest has %d points%s. To embed one "
                  "connected graph, raise -knn or remove outlying points.\n",
                  name, c == K ? "at least " : "", (int)c, (int)c, (int)c, (int)smallest,
                  nsmall ? " (fewer than -dim + 1: such a component contributes nothing but its own "
                           "indicator)"
                         : ""));
  es->warned = PETSC_TRUE;
  PetscCall(PetscFree2(rep, count));
  PetscFunctionReturn(0);
}

/*
  Finish - the end shared by both routes: U [K][ld] column-major holds this rank's rows
  (nlocal of them, global rows rstart ..) of the K unit eigenvectors u of the symmetric
  problem, lambda [K] the eigenvalues of L.
  - rw: v = D^-1/2 u (dinv [nlocal]), scaled to unit 2-norm. The dense route sums the
    squares in row order, the Krylov route through VecNorm on its work vector, as each
    route always has: the two sums round differently, and results stay bitwise as before.
  - sign convention: the entry of largest magnitude positive, ties to the lowest global row
    (MPI_MAXLOC keeps the lowest index among equal maxima).
  - phi [nlocal][K] row-major, then the warning about a disconnected graph: eigenvalues of
    magnitude up to 1e-9 ||L|| count as 0 (the eigenvalue 0 of a disconnected graph comes
    out at ~1e-15, symmetric Rayleigh quotients being accurate to the residual squared,
    while the smallest nonzero one of the data graphs measured here is >= 1e-3).
  Collective on the object's comm.
*/
static PetscErrorCode Finish(BasisEigensolver es, PetscInt nlocal, PetscInt rstart, PetscInt ld,
                             PetscReal U[], const PetscReal dinv[], Vec work, PetscReal norm,
                             const PetscReal lambda[], PetscReal phi[])
{
  const PetscInt K = es->K;
  struct {
    double val;
    int    idx;
  } loc[BASIS_MAX_ZERO_COMPONENTS];
  int *sgn, *sgn_all = NULL;

  PetscFunctionBeginUser;
  for (PetscInt j = 0; j < K && es->laplacian == BASIS_LAPLACIAN_RW; j++) {
    PetscReal *u = U + (size_t)j * ld, nrm = 0;

    for (PetscInt i = 0; i < nlocal; i++) u[i] *= dinv[i];
    if (work) {
      PetscCall(VecPlaceArray(work, u));
      PetscCall(VecNorm(work, NORM_2, &nrm));
      PetscCall(VecResetArray(work));
    } else {
      for (PetscInt i = 0; i < nlocal; i++) nrm += u[i] * u[i];
      nrm = PetscSqrtReal(nrm);
    }
    nrm = 1.0 / nrm;
    for (PetscInt i = 0; i < nlocal; i++) u[i] *= nrm;
  }
  PetscCall(PetscMalloc1(2 * K, &sgn));
  for (PetscInt j0 = 0; j0 < K; j0 += BASIS_MAX_ZERO_COMPONENTS) { /* loc [] on the stack, in chunks */
    const PetscInt nj = PetscMin(BASIS_MAX_ZERO_COMPONENTS, K - j0);
    for (PetscInt j = 0; j < nj; j++) {
      const PetscReal *u = U + (size_t)(j0 + j) * ld;
      loc[j].val         = -1;
      loc[j].idx         = 0;
      for (PetscInt i = 0; i < nlocal; i++)
        if (PetscAbsReal(u[i]) > loc[j].val) {
          loc[j].val = PetscAbsReal(u[i]);
          loc[j].idx = (int)(rstart + i);
        }
    }
    PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, loc, (int)nj, MPI_DOUBLE_INT, MPI_MAXLOC, es->comm));
    for (PetscInt j = 0; j < nj; j++) {
      PetscInt i  = loc[j].idx - rstart;
      sgn[j0 + j] = (i >= 0 && i < nlocal) ? (U[(size_t)(j0 + j) * ld + i] < 0 ? -1 : 1) : 0;
    }
  }
  sgn_all = sgn + K;
  PetscCallMPI(MPI_Allreduce(sgn, sgn_all, (int)K, MPI_INT, MPI_SUM, es->comm));
  for (PetscInt j = 0; j < K; j++)
    for (PetscInt i = 0; i < nlocal; i++) {
      const PetscReal u      = U[(size_t)j * ld + i];
      phi[(size_t)i * K + j] = sgn_all[j] < 0 ? -u : u;
    }
  PetscCall(PetscFree(sgn));
  if (K <= BASIS_MAX_ZERO_COMPONENTS) PetscCall(WarnComponents(es, nlocal, phi, lambda, 1e-9 * norm));
  PetscFunctionReturn(0);
}

/*
  BasisEigensolverSolve - the first K eigenpairs of the Laplacian of W with SLEPc.

  Collective on the object's comm (the communicator of W).

  Input:
    W - from BasisGraphAssemble (symmetric, nonnegative, explicit diagonal); not changed
  Output:
    phi      - [nlocal][K] row-major, this rank's rows: eigenvectors of the K smallest
               eigenvalues, unit 2-norm columns, entry of largest magnitude positive (ties
               to the lowest global row)
    lambda   - [K] eigenvalues, ascending
    residual - [K] ||L v - lambda v||_2 of each pair, L = I - D^-1/2 W D^-1/2 for sym
               and for rw (the residual of the symmetric pair u, before v = D^-1/2 u: the
               generalised residual would be D^1/2 times it and depend on the degree
               scale), L = D - W for unnormalized

  Notes:
    Options were read by BasisEigensolverSetFromOptions. Errors: fewer than K converged
    pairs, a residual above -<prefix>max_residual. Matrices and vectors of the previous
    solve are reused when W has the same sizes.
*/
PetscErrorCode BasisEigensolverSolve(BasisEigensolver es, Mat W, PetscReal phi[], PetscReal lambda[],
                                     PetscReal residual[])
{
  const PetscInt  K        = es->K;
  const PetscBool unnormal = es->laplacian == BASIS_LAPLACIAN_UNNORMALIZED ? PETSC_TRUE : PETSC_FALSE;
  const char     *prefix   = es->prefix;
  PetscInt        N, rstart, nconv, maxit;
  PetscReal       tol, max_residual, norm;
  PetscBool       recover = es->recover;
  PetscMPIInt     size;
  Mat             op;

  PetscFunctionBeginUser;
  PetscCheck(es->configured, es->comm, PETSC_ERR_ORDER, "call BasisEigensolverSetFromOptions before solving");
  PetscCallMPI(MPI_Comm_size(es->comm, &size));
  PetscCall(MatGetSize(W, &N, NULL));
  PetscCall(MatGetOwnershipRange(W, &rstart, NULL));
  PetscCheck(
      N >= K + 1, es->comm, PETSC_ERR_ARG_OUTOFRANGE,
      "a graph of %d points cannot have K+1 = %d points, as -dim %d needs; lower -dim or use more points",
      (int)N, (int)(K + 1), (int)K);
  PetscCall(KrylovSetUp(es, W, size));
  PetscCall(KrylovOperator(es, W, size, &norm));
  op = es->A ? es->A : es->As; /* for products outside the solve: the whole operator either way */
  if (!es->recover_set && size == 1 && !es->isscalapack) {
    PetscInt ncomp = 1;
    PetscCall(CountComponents(W, &ncomp));
    recover = (PetscBool)(ncomp > 1);
  }
  PetscCall(ReseedStart(es->eps));
  PetscCall(EPSSolve(es->eps));
  PetscCall(EPSGetConverged(es->eps, &nconv));
  PetscCall(EPSGetTolerances(es->eps, &tol, &maxit));
  PetscCheck(nconv >= K, es->comm, PETSC_ERR_NOT_CONVERGED,
             "the eigensolver converged %d of the %d eigenpairs it computes; raise -%seps_max_it (now %d), "
             "-%seps_tol (now %g) or -%seps_ncv",
             (int)nconv, (int)K, prefix, (int)maxit, prefix, (double)tol, prefix);
  /* The Krylov-Schur estimate and the true residual agree to a small factor; 100 leaves
     that margin without accepting a solve that missed its tolerance by orders. */
  max_residual = es->max_residual_set ? es->max_residual : 100 * tol;
  for (PetscInt j = 0; j < K; j++) {
    PetscScalar ev;
    PetscCall(EPSGetEigenpair(es->eps, j, &ev, NULL, es->V[j], NULL));
    es->evs[j] = PetscRealPart(ev);
  }
  if (!es->isscalapack && recover)
    PetscCall(RecoverMissedEigenpairs(es->comm, prefix, op, unnormal, tol * norm, K, es->evs, es->V));
  for (PetscInt j = 0; j < K; j++) {
    PetscScalar        ev = es->evs[j];
    const PetscScalar *a;

    PetscCall(VecCopy(es->V[j], es->v));
    PetscCall(VecNormalize(es->v, NULL));
    PetscCall(MatMult(op, es->v, es->r));
    PetscCall(VecAXPY(es->r, -ev, es->v));
    PetscCall(VecNorm(es->r, NORM_2, &residual[j]));
    lambda[j] = unnormal ? PetscRealPart(ev) : 1.0 - PetscRealPart(ev);
    PetscCall(VecGetArrayRead(es->v, &a));
    for (PetscInt i = 0; i < es->nlocal; i++) es->U[(size_t)j * es->nlocal + i] = PetscRealPart(a[i]);
    PetscCall(VecRestoreArrayRead(es->v, &a));
  }
  for (PetscInt j = 0; j < K; j++)
    PetscCheck(residual[j] <= max_residual * norm, es->comm, PETSC_ERR_NOT_CONVERGED,
               "eigenpair %d (lambda = %g) has residual %g, above -%smax_residual %g times ||L|| %g; lower "
               "-%seps_tol or raise -%smax_residual",
               (int)j, (double)lambda[j], (double)residual[j], prefix, (double)max_residual, (double)norm,
               prefix, prefix);
  {
    const PetscScalar *dinv = NULL;
    if (!unnormal) PetscCall(VecGetArrayRead(es->dinv, &dinv));
    PetscCall(Finish(es, es->nlocal, rstart, es->nlocal, es->U, dinv, es->v, norm, lambda, phi));
    if (!unnormal) PetscCall(VecRestoreArrayRead(es->dinv, &dinv));
  }
  PetscFunctionReturn(0);
}

/*
  BasisEigensolverSolveDense - the first K eigenpairs of a dense Laplacian, LAPACK dsyevr
  with an index range (only K vectors computed).

  Not collective (the object's comm must be one process).

  Input:
    m - points; at least K + 1
    L - [m][m] the symmetric Laplacian (I - D^-1/2 W D^-1/2 for sym and rw, D - W for
        unnormalized), lower triangle used; destroyed
    d - [m] D^-1/2 for sym and rw (used by the rw back-transform), the degrees D for
        unnormalized (their maximum scales the zero-eigenvalue test)
  Output:
    phi    - [m][K] row-major, unit 2-norm columns, entry of largest magnitude positive
    lambda - [K] the eigenvalues, ascending

  Notes:
    Workspace is allocated at the first solve of each m and kept.
*/
PetscErrorCode BasisEigensolverSolveDense(BasisEigensolver es, PetscInt m, PetscReal L[], const PetscReal d[],
                                          PetscReal phi[], PetscReal lambda[])
{
  const PetscInt K = es->K;
  PetscBLASInt   n, il = 1, iu, nfound, info;
  PetscReal      zero = 0, norm = 1;
  PetscMPIInt    size;

  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_size(es->comm, &size));
  PetscCheck(size == 1, es->comm, PETSC_ERR_ARG_WRONG, "the dense eigensolver runs on one process, not %d",
             (int)size);
  PetscCheck(es->configured, PETSC_COMM_SELF, PETSC_ERR_ORDER,
             "call BasisEigensolverSetFromOptions before solving");
  PetscCheck(m >= K + 1, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE,
             "a graph of %d points cannot have K+1 = %d points, as -dim %d needs; raise -batch or lower -dim",
             (int)m, (int)(K + 1), (int)K);
  PetscCall(PetscBLASIntCast(m, &n));
  PetscCall(PetscBLASIntCast(K, &iu));
  if (es->m != m) { /* workspace query: lwork = liwork = -1 */
    PetscBLASInt lwq = -1, liwq = -1, iwopt;
    PetscReal    wopt, dummy    = 0;

    PetscCall(PetscFree3(es->w, es->Z, es->isuppz));
    PetscCall(PetscFree2(es->work, es->iwork));
    PetscCall(PetscMalloc3(m, &es->w, (size_t)m * K, &es->Z, 2 * K, &es->isuppz));
    dsyevr_("V", "I", "L", &n, &dummy, &n, &zero, &zero, &il, &iu, &zero, &nfound, es->w, es->Z, &n,
            es->isuppz, &wopt, &lwq, &iwopt, &liwq, &info);
    BasisCheckLapack("dsyevr (workspace query)", info);
    es->lwork  = (PetscBLASInt)wopt;
    es->liwork = iwopt;
    PetscCall(PetscMalloc2(es->lwork, &es->work, es->liwork, &es->iwork));
    es->m = m;
  }
  /* abstol 0: LAPACK's default eps ||T||, full accuracy with the MRRR path */
  dsyevr_("V", "I", "L", &n, L, &n, &zero, &zero, &il, &iu, &zero, &nfound, es->w, es->Z, &n, es->isuppz,
          es->work, &es->lwork, es->iwork, &es->liwork, &info);
  BasisCheckLapack("dsyevr", info);
  PetscCheck(nfound == K, PETSC_COMM_SELF, PETSC_ERR_LIB, "LAPACK dsyevr found %d of %d eigenpairs",
             (int)nfound, (int)K);
  /* tridiagonalisation dominates: about 4/3 m^3 */
  PetscCall(PetscLogFlops(4.0 / 3.0 * m * m * m + 2.0 * m * m * K));
  if (es->laplacian == BASIS_LAPLACIAN_UNNORMALIZED) { /* Gershgorin: ||D - W||_2 <= 2 max degree */
    PetscReal dmax = 0;
    for (PetscInt i = 0; i < m; i++) dmax = PetscMax(dmax, d[i]);
    norm = 2 * dmax;
  }
  for (PetscInt j = 0; j < K; j++) lambda[j] = es->w[j];
  PetscCall(Finish(es, m, 0, m, es->Z, d, NULL, norm, lambda, phi));
  PetscFunctionReturn(0);
}

/*
  BasisEigensolverDestroy - free the object. Collective on its comm; NULL-tolerant.
*/
PetscErrorCode BasisEigensolverDestroy(BasisEigensolver *es)
{
  BasisEigensolver e;

  PetscFunctionBeginUser;
  if (!es || !*es) PetscFunctionReturn(0);
  e = *es;
  PetscCall(EPSDestroy(&e->eps));
  PetscCall(KrylovReset(e));
  PetscCall(PetscFree3(e->w, e->Z, e->isuppz));
  PetscCall(PetscFree2(e->work, e->iwork));
  PetscCall(PetscFree(*es));
  PetscFunctionReturn(0);
}
