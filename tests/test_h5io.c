/*
  test_h5io - generate -> write in parallel -> read shards: the concatenation of every
  rank's shard equals the data set, whatever the rank count; float64 on disk reads back
  as the same values; a generated file does not depend on the number of writers.
*/
#include <basis/generate.h>
#include <basis/output.h>
#include <basis/h5io.h>
#include <slepcsys.h>
#include "check.h"

static PetscErrorCode WriteDataset(MPI_Comm comm, const char *path, const BasisGenerateParams *p,
                                   hid_t filetype)
{
  BasisOutput out;
  hid_t       dset, lset;
  PetscMPIInt size, rank;
  PetscInt    rstart, n;
  float      *x;
  int        *labels;

  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  /* write with a different split than the reader's: reversed blocks */
  BasisBlockRange(p->N, size, size - 1 - rank, &rstart, &n);
  PetscCall(PetscMalloc2((size_t)n * p->D, &x, n, &labels));
  PetscCall(BasisGenerateRows(p, rstart, n, x, labels));
  PetscCall(BasisOutputCreate(comm, path, PETSC_TRUE, NULL, &out));
  PetscCall(BasisH5CreateMatrix(out.file, "features", p->N, p->D, filetype, &dset));
  PetscCall(BasisH5CreateMatrix(out.file, "labels", p->N, 0, H5T_STD_I32LE, &lset));
  PetscCall(BasisH5WriteRows(comm, dset, rstart, n, p->D, H5T_NATIVE_FLOAT, x));
  PetscCall(BasisH5WriteRows(comm, lset, rstart, n, 1, H5T_NATIVE_INT, labels));
  BasisCallH5(H5Dclose(dset));
  BasisCallH5(H5Dclose(lset));
  PetscCall(BasisOutputCommit(&out));
  PetscCall(PetscFree2(x, labels));
  PetscFunctionReturn(0);
}

/* Gather all shards on rank 0 and compare with rows generated serially; the verdicts are
   agreed over comm (rank 0 finds the first difference, every rank counts it). */
static PetscErrorCode CheckFile(MPI_Comm comm, const char *path, const BasisGenerateParams *p)
{
  BasisInput  in;
  BasisShard  s;
  PetscMPIInt size, rank;
  int        *counts, *displs, *lcounts, *ldispls;
  float      *all = NULL, *expect = NULL;
  int        *all_labels = NULL, *expect_labels = NULL;
  PetscInt    bad_value = -1, bad_label = -1; /* first difference, found on rank 0 */
  double      got = 0, want = 0;

  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  PetscCall(BasisInputOpen(comm, path, &in));
  PetscCall(BasisInputReadShard(&in, &s));
  PetscCall(PetscMalloc4(size, &counts, size, &displs, size, &lcounts, size, &ldispls));
  for (int r = 0; r < size; r++) {
    PetscInt st, n;
    BasisBlockRange(p->N, size, r, &st, &n);
    counts[r] = (int)(n * p->D), displs[r] = (int)(st * p->D), lcounts[r] = (int)n, ldispls[r] = (int)st;
  }
  if (rank == 0)
    PetscCall(PetscMalloc4((size_t)p->N * p->D, &all, (size_t)p->N * p->D, &expect, p->N, &all_labels, p->N,
                           &expect_labels));
  PetscCallMPI(MPI_Gatherv(s.x, (int)(s.n * p->D), MPI_FLOAT, all, counts, displs, MPI_FLOAT, 0, comm));
  PetscCallMPI(MPI_Gatherv(s.labels, (int)s.n, MPI_INT, all_labels, lcounts, ldispls, MPI_INT, 0, comm));
  if (rank == 0) {
    PetscCall(BasisGenerateRows(p, 0, p->N, expect, expect_labels));
    for (PetscInt i = 0; i < p->N * p->D && bad_value < 0; i++)
      if (all[i] != expect[i]) bad_value = i, got = all[i], want = expect[i];
    for (PetscInt i = 0; i < p->N && bad_label < 0; i++)
      if (all_labels[i] != expect_labels[i]) bad_label = i;
    PetscCall(PetscFree4(all, expect, all_labels, expect_labels));
  }
  PetscCall(BasisTestCheck(comm, (PetscBool)(bad_value < 0), "%s: value %d differs (%g vs %g)", path,
                           (int)bad_value, got, want));
  PetscCall(BasisTestCheck(comm, (PetscBool)(bad_label < 0), "%s: label %d differs", path, (int)bad_label));
  PetscCall(BasisTestCheck(comm, (PetscBool)(in.N == p->N && in.D == p->D && in.has_labels),
                           "%s: shape %d x %d, labels %d", path, (int)in.N, (int)in.D, (int)in.has_labels));
  PetscCall(PetscFree4(counts, displs, lcounts, ldispls));
  PetscCall(BasisShardDestroy(&s));
  PetscCall(BasisInputClose(&in));
  PetscFunctionReturn(0);
}

int main(int argc, char **argv)
{
  BasisGenerateParams p[] = {
      {BASIS_GENERATE_MANIFOLD, 1003, 37, 7, 0.1, 5, 3}, /* N not divisible by 2 or 4 */
      {BASIS_GENERATE_CIRCLES, 257, 3, 3, 0.05, 6, 2},
      {BASIS_GENERATE_MOONS, 64, 2, 2, 0.1, 7, 2},
  };
  char        path[PETSC_MAX_PATH_LEN];
  PetscMPIInt size;

  PetscCall(SlepcInitialize(&argc, &argv, NULL, NULL));
  PetscCall(BasisInitialize());
  PetscCallMPI(MPI_Comm_size(PETSC_COMM_WORLD, &size));
  for (size_t k = 0; k < sizeof(p) / sizeof(p[0]); k++) {
    hid_t types[2] = {H5T_IEEE_F32LE, H5T_IEEE_F64LE};
    for (int t = 0; t < 2; t++) {
      PetscCall(PetscSNPrintf(path, sizeof(path), "test_h5io_np%d_%d_%d.h5", size, (int)k, t));
      PetscCall(WriteDataset(PETSC_COMM_WORLD, path, &p[k], types[t]));
      PetscCall(CheckFile(PETSC_COMM_WORLD, path, &p[k]));
    }
  }
  PetscCall(SlepcFinalize());
  return BasisTestFailures() ? 1 : 0;
}
