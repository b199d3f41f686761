/*
  output.c - atomic output files (include/basis/output.h).

  Every file basis writes is created as "<path>.partial" and renamed by rank 0 after a
  collective close and a "basis_complete" root attribute, so a crash never leaves a file
  under the final name. Outputs still open when an error unwinds to main are removed by
  BasisOutputCleanupAll. Collective on the output's communicator throughout.
*/
#include <basis/output.h>
#include <basis/error.h>
#include <basis/h5io.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Outputs that are open; removed if an error unwinds to main. A copy of what the clean-up
   needs, not a pointer to the caller's BasisOutput: that is usually a local variable of a
   function the error has already returned from. owner only identifies the entry. */
#define BASIS_MAX_OPEN_OUTPUTS 8
static struct {
  const BasisOutput *owner;
  MPI_Comm           comm;
  char               tmp[PETSC_MAX_PATH_LEN];
} open_outputs[BASIS_MAX_OPEN_OUTPUTS];

static PetscBool SamePath(const char *a, const char *b)
{
  char ra[PATH_MAX], rb[PATH_MAX];

  if (!strcmp(a, b)) return PETSC_TRUE;
  if (!realpath(a, ra) || !realpath(b, rb)) return PETSC_FALSE;
  return strcmp(ra, rb) ? PETSC_FALSE : PETSC_TRUE;
}

/*
  BasisOutputCheckPathOption - refuse an output path before any work is done.

  Collective on comm. Rank 0 looks at the file system and broadcasts its verdict, so every
  rank raises the same error.

  Input:
    option - the option that names it ("-output", "-model", "-json"), for the messages
    path   - the output file
    force  - overwrite an existing file
    inputs - NULL-terminated list of files this command reads (may be NULL); output may
             not be one of them
*/
PetscErrorCode BasisOutputCheckPathOption(MPI_Comm comm, const char *option, const char *path,
                                          PetscBool force, const char *const inputs[])
{
  char        msg[PETSC_MAX_PATH_LEN + 256] = "";
  PetscMPIInt rank;

  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  if (rank == 0) {
    struct stat st;
    char        dir[PETSC_MAX_PATH_LEN];

    if (!path || !path[0])
      PetscCall(PetscSNPrintf(msg, sizeof(msg), "no output file given: pass %s FILE", option));
    for (PetscInt i = 0; !msg[0] && inputs && inputs[i]; i++)
      if (inputs[i][0] && SamePath(path, inputs[i]))
        PetscCall(
            PetscSNPrintf(msg, sizeof(msg), "output %s is also an input; choose another %s", path, option));
    if (!msg[0] && stat(path, &st) == 0) {
      if (S_ISDIR(st.st_mode))
        PetscCall(PetscSNPrintf(msg, sizeof(msg), "output %s is a directory; give a file name", path));
      else if (!force)
        PetscCall(PetscSNPrintf(msg, sizeof(msg), "output %s exists; pass -force to overwrite it", path));
    }
    if (!msg[0]) {
      PetscCall(PetscStrncpy(dir, path, sizeof(dir)));
      if (access(dirname(dir), W_OK | X_OK) != 0)
        PetscCall(PetscSNPrintf(msg, sizeof(msg), "cannot write output %s: directory %s is %s", path, dir,
                                errno == ENOENT ? "missing (create it first)" : "not writable"));
    }
  }
  PetscCallMPI(MPI_Bcast(msg, sizeof(msg), MPI_CHAR, 0, comm));
  PetscCheck(!msg[0], comm, PETSC_ERR_FILE_OPEN, "%s", msg);
  PetscFunctionReturn(0);
}

/* BasisOutputCheckPath - BasisOutputCheckPathOption for a file named by -output. */
PetscErrorCode BasisOutputCheckPath(MPI_Comm comm, const char *path, PetscBool force,
                                    const char *const inputs[])
{
  PetscFunctionBeginUser;
  PetscCall(BasisOutputCheckPathOption(comm, "-output", path, force, inputs));
  PetscFunctionReturn(0);
}

/*
  BasisOutputCreate - check the path and create "<path>.partial" for parallel writing.

  Collective on comm. The file is opened with the MPI-IO driver on comm.
*/
PetscErrorCode BasisOutputCreate(MPI_Comm comm, const char *path, PetscBool force, const char *const inputs[],
                                 BasisOutput *out)
{
  hid_t fapl;

  PetscFunctionBeginUser;
  PetscCall(PetscMemzero(out, sizeof(*out)));
  PetscCall(BasisOutputCheckPath(comm, path, force, inputs));
  out->comm = comm;
  PetscCall(PetscStrncpy(out->path, path, sizeof(out->path)));
  PetscCall(PetscSNPrintf(out->tmp, sizeof(out->tmp), "%s.partial", path));
  fapl = H5Pcreate(H5P_FILE_ACCESS);
  BasisCallH5(fapl);
  BasisCallH5(H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL));
  /* 1.8+ file format: the superblock and object headers carry checksums, so a damaged
     file is refused by its reader instead of misread (tests/fuzz_h5.py) */
  BasisCallH5(H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_LATEST));
  out->file = H5Fcreate(out->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
  BasisCallH5(H5Pclose(fapl));
  BasisCheckAll(comm, out->file >= 0, PETSC_ERR_FILE_OPEN, "cannot create %s (for output %s)", out->tmp,
                path);
  for (int i = 0; i < BASIS_MAX_OPEN_OUTPUTS; i++)
    if (!open_outputs[i].owner) {
      open_outputs[i].owner = out;
      open_outputs[i].comm  = comm;
      PetscCall(PetscStrncpy(open_outputs[i].tmp, out->tmp, sizeof(open_outputs[i].tmp)));
      break;
    }
  PetscFunctionReturn(0);
}

static void Forget(BasisOutput *out)
{
  for (int i = 0; i < BASIS_MAX_OPEN_OUTPUTS; i++)
    if (open_outputs[i].owner == out) open_outputs[i].owner = NULL;
}

/*
  BasisOutputCommit - mark the file complete, close it and rename it to its final name.

  Collective on out->comm.
*/
PetscErrorCode BasisOutputCommit(BasisOutput *out)
{
  PetscMPIInt rank;
  int         err = 0;
  PetscInt    one = 1;

  PetscFunctionBeginUser;
  PetscCall(BasisH5AttrWriteInt(out->file, "basis_complete", 1, &one));
  BasisCallH5(H5Fclose(out->file));
  out->file = -1;
  Forget(out);
  PetscCallMPI(MPI_Barrier(out->comm));
  PetscCallMPI(MPI_Comm_rank(out->comm, &rank));
  if (rank == 0 && rename(out->tmp, out->path)) err = errno;
  PetscCallMPI(MPI_Bcast(&err, 1, MPI_INT, 0, out->comm));
  PetscCheck(!err, out->comm, PETSC_ERR_FILE_WRITE, "cannot rename %s to %s: %s", out->tmp, out->path,
             strerror(err));
  PetscFunctionReturn(0);
}

/*
  BasisOutputAbort - close and delete a partly written output. Collective on out->comm.
*/
PetscErrorCode BasisOutputAbort(BasisOutput *out)
{
  PetscMPIInt rank;

  PetscFunctionBeginUser;
  if (out->file >= 0) H5Fclose(out->file);
  out->file = -1;
  Forget(out);
  PetscCallMPI(MPI_Comm_rank(out->comm, &rank));
  if (rank == 0) unlink(out->tmp);
  PetscFunctionReturn(0);
}

/*
  BasisOutputCleanupAll - delete every output still open (called by main after an error).

  Not collective: rank 0 of each output's communicator unlinks its temporary file; the
  HDF5 handles are left to process exit (closing them would be collective).
*/
void BasisOutputCleanupAll(void)
{
  for (int i = 0; i < BASIS_MAX_OPEN_OUTPUTS; i++) {
    PetscMPIInt rank = 0;
    if (!open_outputs[i].owner) continue;
    MPI_Comm_rank(open_outputs[i].comm, &rank);
    if (rank == 0) unlink(open_outputs[i].tmp);
    open_outputs[i].owner = NULL;
  }
}
