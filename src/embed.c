/*
  embed.c - `basis embed`: run the trained network over any data set with the model's D
  (DESIGN.md step 6) and write /embedding (N x K, float32) collectively.

  Every rank streams its contiguous block of rows in chunks of -chunk rows: collective
  read, normalisation with the model's mean/scale, forward pass (BLAS GEMM), collective
  write. Memory per rank is bounded by the chunk, not by N. The training data are not
  needed: the model file carries everything.

  -orthonormalize compute: the network's raw output is close to, but not exactly,
  orthogonal. This mode holds the rank's K-column output (4 K bytes per point), forms the
  Gram matrix G = Y^T Y by one allreduce, factors G = R^T R (Cholesky) and writes Y R^-1,
  whose columns are orthonormal over the whole data set; R is stored in the model file so
  that `-orthonormalize stored` applies the same map to new data (streaming again).
  Collective on comm.
*/
#include <basis/model.h>
#include <basis/log.h>
#include <basis/options.h>
#include <basis/output.h>
#include <basis/h5io.h>
#include <basis/mlp.h>
#include <petscblaslapack.h>

typedef enum { BASIS_ORTHO_NONE, BASIS_ORTHO_COMPUTE, BASIS_ORTHO_STORED } BasisOrthoType;
static const char *const BasisOrthoTypes[] = {"none",           "compute",      "stored",
                                              "BasisOrthoType", "BASIS_ORTHO_", NULL};

/* y [n][K] <- y R^-1 with R upper triangular [K][K] row-major: forward substitution on
   each row (solve z R = y). */
static void ApplyInverseR(PetscInt n, PetscInt K, const PetscReal R[], float y[])
{
  for (PetscInt i = 0; i < n; i++) {
    float *yi = y + (size_t)i * K;
    for (PetscInt j = 0; j < K; j++) {
      double s = yi[j];
      for (PetscInt p = 0; p < j; p++) s -= (double)yi[p] * R[p * K + j];
      yi[j] = (float)(s / R[j * K + j]);
    }
  }
}

/* G = sum over all ranks of Y^T Y, then R with R^T R = G. Collective on comm. */
static PetscErrorCode ComputeR(MPI_Comm comm, PetscInt n, PetscInt K, const float Y[], PetscReal R[])
{
  PetscBLASInt nK, info;

  PetscFunctionBeginUser;
  PetscCall(PetscArrayzero(R, K * K));
  for (PetscInt i = 0; i < n; i++)
    for (PetscInt a = 0; a < K; a++)
      for (PetscInt b = a; b < K; b++) R[a * K + b] += (double)Y[(size_t)i * K + a] * Y[(size_t)i * K + b];
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, R, (int)(K * K), MPIU_REAL, MPIU_SUM, comm));
  /* Row-major upper triangle = column-major lower triangle: factor as "L" in LAPACK's
     view, which is R^T in ours, so R is the row-major upper factor. */
  PetscCall(PetscBLASIntCast(K, &nK));
  LAPACKpotrf_("L", &nK, R, &nK, &info);
  PetscCheck(info == 0, comm, PETSC_ERR_NOT_CONVERGED,
             "cannot orthonormalise: the embedding's Gram matrix is singular (column %d is dependent); the "
             "model may "
             "be undertrained",
             (int)info);
  for (PetscInt a = 0; a < K; a++)
    for (PetscInt b = 0; b < a; b++) R[a * K + b] = 0.0;
  PetscFunctionReturn(0);
}

/*
  BasisEmbedMain - `basis embed`.

  Collective on comm. Options: -model -input -output -force -chunk -orthonormalize
*/
PetscErrorCode BasisEmbedMain(MPI_Comm comm)
{
  char model_path[PETSC_MAX_PATH_LEN] = "model.h5", input[PETSC_MAX_PATH_LEN] = "",
       output[PETSC_MAX_PATH_LEN] = "embedding.h5";
  PetscBool      force            = PETSC_FALSE, help;
  PetscInt       chunk = 8192, K, D, rstart, n, nchunks, done = 0;
  BasisOrthoType ortho = BASIS_ORTHO_NONE;
  BasisModel     mo;
  BasisInput     in;
  BasisOutput    out;
  BasisMLP       mlp;
  PetscMPIInt    size, rank;
  float         *x, *xn, *y, *Y = NULL, *params, *grad, *am, *av;
  hid_t          dset;
  double         t0 = MPI_Wtime(), tlast = t0;
  const char    *inputs[3];

  PetscFunctionBeginUser;
  PetscOptionsBegin(comm, NULL, "basis embed: embed data with a trained model", NULL);
  PetscCall(PetscOptionsString("-model", "Model file from basis train", NULL, model_path, model_path,
                               sizeof(model_path), NULL));
  PetscCall(PetscOptionsString("-input", "Data to embed (HDF5 with /features, same D as the model)", NULL,
                               input, input, sizeof(input), NULL));
  PetscCall(PetscOptionsString("-output", "Output HDF5 file (/embedding)", NULL, output, output,
                               sizeof(output), NULL));
  PetscCall(PetscOptionsBool("-force", "Overwrite an existing output", NULL, force, &force, NULL));
  PetscCall(PetscOptionsInt("-chunk", "Rows per rank per read/forward/write", NULL, chunk, &chunk, NULL));
  PetscCall(BasisOptionsCheckEnum(comm, "-orthonormalize", BasisOrthoTypes));
  PetscCall(PetscOptionsEnum("-orthonormalize", "Map the output to orthonormal columns", NULL,
                             BasisOrthoTypes, (PetscEnum)ortho, (PetscEnum *)&ortho, NULL));
  PetscOptionsEnd();
  PetscCall(BasisHelpRequested(&help));
  if (help) PetscFunctionReturn(0);
  PetscCheck(chunk >= 1, comm, PETSC_ERR_ARG_OUTOFRANGE, "-chunk %d must be at least 1", (int)chunk);
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCallMPI(MPI_Comm_rank(comm, &rank));

  inputs[0] = input, inputs[1] = model_path, inputs[2] = NULL;
  PetscCall(BasisOutputCheckPath(comm, output, force, inputs));
  PetscCall(BasisModelRead(comm, model_path, &mo));
  PetscCall(BasisInputOpen(comm, input, &in));
  K = mo.widths[mo.nlayers], D = mo.D;
  PetscCheck(
      in.D == D, comm, PETSC_ERR_ARG_INCOMP,
      "input %s has D = %d features but model %s was trained on D = %d; embed data with the model's features",
      input, (int)in.D, model_path, (int)D);
  PetscCheck(ortho != BASIS_ORTHO_STORED || mo.ortho_R, comm, PETSC_ERR_ARG_WRONG,
             "model %s has no stored orthonormalisation; run embed once with -orthonormalize compute",
             model_path);
  PetscCheck(mo.step > 0, comm, PETSC_ERR_ARG_WRONG, "model %s has not been trained (step 0)", model_path);

  PetscCall(PetscLogStagePush(BASIS_StageEmbed));
  BasisBlockRange(in.N, size, rank, &rstart, &n);
  chunk = PetscMin(chunk, PetscMax(n, 1));
  PetscCall(BasisMLPCreate(mo.nlayers, mo.widths, chunk, &mlp));
  PetscCall(BasisMLPGetArrays(mlp, &params, &grad, &am, &av));
  PetscCall(PetscArraycpy(params, mo.params, mo.nparams));
  PetscCall(PetscMalloc3((size_t)chunk * D, &x, (size_t)chunk * D, &xn, (size_t)chunk * K, &y));
  if (ortho == BASIS_ORTHO_COMPUTE) PetscCall(PetscMalloc1((size_t)PetscMax(n, 1) * K, &Y));

  PetscCall(BasisOutputCreate(comm, output, force, inputs, &out));
  PetscCall(BasisH5CreateMatrix(out.file, "embedding", in.N, K, H5T_IEEE_F32LE, &dset));
  nchunks = (n + chunk - 1) / chunk;
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &nchunks, 1, MPIU_INT, MPI_MAX, comm));
  for (PetscInt c = 0; c < nchunks; c++) {
    PetscInt lo = PetscMin(c * chunk, n), cnt = PetscMin(chunk, n - lo);
    double   now;

    PetscCall(BasisInputRead(&in, rstart + lo, cnt, x));
    PetscCall(PetscLogEventBegin(BASIS_Embed, 0, 0, 0, 0));
    BasisModelNormaliseInput(&mo, cnt, x, xn);
    if (cnt > 0) PetscCall(BasisMLPForward(mlp, cnt, xn, y));
    BasisModelOutput(&mo, cnt, y);
    if (ortho == BASIS_ORTHO_STORED) ApplyInverseR(cnt, K, mo.ortho_R, y);
    PetscCall(PetscLogEventEnd(BASIS_Embed, 0, 0, 0, 0));
    if (ortho == BASIS_ORTHO_COMPUTE)
      PetscCall(PetscArraycpy(Y + (size_t)lo * K, y, (size_t)cnt * K));
    else
      PetscCall(BasisH5WriteRows(comm, dset, rstart + lo, cnt, K, H5T_NATIVE_FLOAT, y));
    done += cnt;
    now = MPI_Wtime();
    if (now - tlast > 5.0) { /* progress on long runs */
      double frac = (double)done / PetscMax(n, 1);
      PetscCall(PetscPrintf(comm, "embed: %5.1f%% of rank 0's rows, %.0f s elapsed, ~%.0f s left\n",
                            100 * frac, now - t0, (now - t0) * (1 - frac) / PetscMax(frac, 1e-9)));
      tlast = now;
    }
  }
  if (ortho == BASIS_ORTHO_COMPUTE) {
    PetscCall(PetscMalloc1(K * K, &mo.ortho_R));
    PetscCall(ComputeR(comm, n, K, Y, mo.ortho_R));
    ApplyInverseR(n, K, mo.ortho_R, Y);
    PetscCall(BasisH5WriteRows(comm, dset, rstart, n, K, H5T_NATIVE_FLOAT, Y));
  }
  PetscCall(BasisH5AttrWriteString(dset, "model", model_path));
  PetscCall(BasisH5AttrWriteString(dset, "input", input));
  PetscCall(BasisH5AttrWriteString(dset, "orthonormalize", BasisOrthoTypes[ortho]));
  PetscCall(BasisH5AttrWriteString(dset, "basis_version", BASIS_VERSION));
  {
    PetscInt ints[] = {mo.step, mo.l, mo.m, mo.R, mo.seed, mo.graph.knn, mo.graph.scale_neighbor};
    PetscCall(BasisH5AttrWriteInt(dset, "model_step_l_m_R_seed_knn_scaleneighbor", 7, ints));
    PetscCall(BasisH5AttrWriteString(dset, "laplacian", BasisLaplacianTypes[mo.graph.laplacian]));
    if (mo.ortho_R && ortho != BASIS_ORTHO_NONE)
      PetscCall(BasisH5AttrWriteDouble(dset, "orthonormalize_R", K * K, mo.ortho_R));
  }
  BasisCallH5(H5Dclose(dset));
  if (in.has_labels) { /* carried along so `basis eval` needs only this file */
    hid_t lset;
    int  *labels;
    PetscCall(PetscMalloc1(PetscMax(n, 1), &labels));
    PetscCall(BasisInputReadLabels(&in, rstart, n, labels));
    PetscCall(BasisH5CreateMatrix(out.file, "labels", in.N, 0, H5T_STD_I32LE, &lset));
    PetscCall(BasisH5WriteRows(comm, lset, rstart, n, 1, H5T_NATIVE_INT, labels));
    BasisCallH5(H5Dclose(lset));
    PetscCall(PetscFree(labels));
  }
  PetscCall(BasisOutputCommit(&out));
  PetscCall(PetscLogStagePop());
  if (ortho == BASIS_ORTHO_COMPUTE) {
    const char *minputs[] = {input, NULL};
    PetscCall(BasisModelWrite(comm, model_path, PETSC_TRUE, minputs, &mo));
    PetscCall(PetscPrintf(
        comm, "embed: stored the orthonormalisation in %s (-orthonormalize stored reuses it)\n", model_path));
  }
  {
    double secs = MPI_Wtime() - t0;
    PetscCall(PetscPrintf(comm, "embed: %d x %d written to %s in %.1f s (%.0f points/s)\n", (int)in.N, (int)K,
                          output, secs, in.N / secs));
  }
  PetscCall(PetscFree3(x, xn, y));
  PetscCall(PetscFree(Y));
  PetscCall(BasisMLPDestroy(&mlp));
  PetscCall(BasisInputClose(&in));
  PetscCall(BasisModelFree(&mo));
  PetscFunctionReturn(0);
}
