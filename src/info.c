/*
  info.c - `basis info`: validate a data file the way every command will read it, and
  say how it would be sharded. Cheap insurance before submitting a long job: it reads
  every rank's block (so NaN/Inf are found) and prints N, D, labels and rows per rank.
  Collective on comm.
*/
#include <basis/info.h>
#include <basis/h5io.h>
#include <basis/options.h>

PetscErrorCode BasisInfoMain(MPI_Comm comm)
{
  char        input[PETSC_MAX_PATH_LEN] = "";
  BasisInput  in;
  BasisShard  shard;
  PetscMPIInt size;
  int         lmin = PETSC_MAX_INT, lmax = PETSC_MIN_INT;

  PetscFunctionBeginUser;
  PetscOptionsBegin(comm, NULL, "basis info: check a data file", NULL);
  PetscCall(PetscOptionsString("-input", "HDF5 file with /features (N x D) and optional /labels", NULL, input,
                               input, sizeof(input), NULL));
  PetscOptionsEnd();
  {
    PetscBool help;
    PetscCall(BasisHelpRequested(&help));
    if (help) PetscFunctionReturn(0);
  }
  PetscCall(BasisInputOpen(comm, input, &in));
  PetscCall(BasisInputReadShard(&in, &shard));
  for (PetscInt i = 0; shard.labels && i < shard.n; i++) {
    lmin = PetscMin(lmin, shard.labels[i]);
    lmax = PetscMax(lmax, shard.labels[i]);
  }
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &lmin, 1, MPI_INT, MPI_MIN, comm));
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &lmax, 1, MPI_INT, MPI_MAX, comm));
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCall(PetscPrintf(comm, "%s: /features %d x %d, all finite; ", input, (int)in.N, (int)in.D));
  if (in.has_labels)
    PetscCall(PetscPrintf(comm, "/labels in [%d, %d]\n", lmin, lmax));
  else
    PetscCall(PetscPrintf(comm, "no /labels\n"));
  PetscCall(PetscPrintf(comm, "%d ranks: %d to %d rows each, %.1f MiB of features per rank\n", size,
                        (int)(in.N / size), (int)((in.N + size - 1) / size),
                        (double)((in.N + size - 1) / size) * in.D * 4.0 / 1048576.0));
  PetscCall(BasisShardDestroy(&shard));
  PetscCall(BasisInputClose(&in));
  PetscFunctionReturn(0);
}
