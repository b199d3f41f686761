/*
  sys.c - what every subcommand shares: log event registration, the error handler that
  turns a PETSc error into one readable line, atomic output files and HDF5 attributes.

  Errors: a check whose outcome can differ between ranks is agreed by a reduction first
  (BasisCheckAll), then raised on the communicator; BasisErrorHandler prints the message
  once (rank 0 of that communicator) without PETSc's traceback unless -basis_traceback.

  Outputs: every file basis writes is created as "<path>.partial" and renamed by rank 0
  after a collective close and a "basis_complete" root attribute, so a crash never leaves
  a file under the final name. Outputs still open when an error unwinds to main are
  removed by BasisOutputCleanupAll. Collective on the output's communicator throughout.
*/
#include <basis/sys.h>
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

PetscLogEvent BASIS_ReadShard, BASIS_WriteRows, BASIS_Generate, BASIS_BatchGraph, BASIS_BatchEig,
    BASIS_RefGraph, BASIS_RefSolve, BASIS_Align, BASIS_Forward, BASIS_Backward, BASIS_GradReduce, BASIS_Adam,
    BASIS_Embed, BASIS_Checkpoint, BASIS_ExactKnn, BASIS_ExactSolve, BASIS_Metrics, BASIS_Sample;
PetscLogStage BASIS_StageRef, BASIS_StageTrain, BASIS_StageEmbed;

/* Whether BasisInitialize pushed BasisErrorHandler (BasisFinalize pops it). */
static PetscBool handler_pushed = PETSC_FALSE;

/* Outputs that are open; removed if an error unwinds to main. A copy of what the clean-up
   needs, not a pointer to the caller's BasisOutput: that is usually a local variable of a
   function the error has already returned from. owner only identifies the entry. */
#define BASIS_MAX_OPEN_OUTPUTS 8
static struct {
  const BasisOutput *owner;
  MPI_Comm           comm;
  char               tmp[PETSC_MAX_PATH_LEN];
} open_outputs[BASIS_MAX_OPEN_OUTPUTS];

/*
  BasisInitialize - register log events and stages, install the error handler.

  Collective on PETSC_COMM_WORLD; call once after SlepcInitialize.

  Options:
    -basis_traceback - keep PETSc's full traceback instead of the one-line message
*/
PetscErrorCode BasisInitialize(void)
{
  PetscClassId cls;
  PetscBool    traceback = PETSC_FALSE;

  PetscFunctionBeginUser;
  PetscCall(PetscOptionsGetBool(NULL, NULL, "-basis_traceback", &traceback, NULL));
  if (!traceback) PetscCall(PetscPushErrorHandler(BasisErrorHandler, NULL));
  handler_pushed = (PetscBool)!traceback;
  /* The HDF5 library prints its own error stack; our messages name the failed call. */
  if (!traceback) H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  PetscCall(PetscClassIdRegister("basis", &cls));
  PetscCall(PetscLogEventRegister("BasisReadShard", cls, &BASIS_ReadShard));
  PetscCall(PetscLogEventRegister("BasisWriteRows", cls, &BASIS_WriteRows));
  PetscCall(PetscLogEventRegister("BasisGenerate", cls, &BASIS_Generate));
  PetscCall(PetscLogEventRegister("BasisSample", cls, &BASIS_Sample));
  PetscCall(PetscLogEventRegister("BasisBatchGraph", cls, &BASIS_BatchGraph));
  PetscCall(PetscLogEventRegister("BasisBatchEig", cls, &BASIS_BatchEig));
  PetscCall(PetscLogEventRegister("BasisRefGraph", cls, &BASIS_RefGraph));
  PetscCall(PetscLogEventRegister("BasisRefSolve", cls, &BASIS_RefSolve));
  PetscCall(PetscLogEventRegister("BasisAlign", cls, &BASIS_Align));
  PetscCall(PetscLogEventRegister("BasisForward", cls, &BASIS_Forward));
  PetscCall(PetscLogEventRegister("BasisBackward", cls, &BASIS_Backward));
  PetscCall(PetscLogEventRegister("BasisGradReduce", cls, &BASIS_GradReduce));
  PetscCall(PetscLogEventRegister("BasisAdam", cls, &BASIS_Adam));
  PetscCall(PetscLogEventRegister("BasisEmbed", cls, &BASIS_Embed));
  PetscCall(PetscLogEventRegister("BasisCheckpoint", cls, &BASIS_Checkpoint));
  PetscCall(PetscLogEventRegister("BasisExactKnn", cls, &BASIS_ExactKnn));
  PetscCall(PetscLogEventRegister("BasisExactSolve", cls, &BASIS_ExactSolve));
  PetscCall(PetscLogEventRegister("BasisMetrics", cls, &BASIS_Metrics));
  PetscCall(PetscLogStageRegister("BasisReference", &BASIS_StageRef));
  PetscCall(PetscLogStageRegister("BasisTrain", &BASIS_StageTrain));
  PetscCall(PetscLogStageRegister("BasisEmbed", &BASIS_StageEmbed));
  PetscFunctionReturn(0);
}

/*
  BasisFinalize - undo BasisInitialize (pop the error handler, whose stack entry PETSc
  allocated: -malloc_dump reports it otherwise). Not collective; call before SlepcFinalize.
*/
PetscErrorCode BasisFinalize(void)
{
  PetscFunctionBeginUser;
  if (handler_pushed) PetscCall(PetscPopErrorHandler());
  handler_pushed = PETSC_FALSE;
  PetscFunctionReturn(0);
}

/*
  OptionWithValue - PETSc's messages for an option value of the wrong kind name the value,
  not the option ("Input string abc has no integer value ...", "... has no numeric value",
  "Unknown logical value: 10"). If mess is one of them, write to names the command-line
  options that were given that value ("-steps abc", several if several were) and return
  true. Every rank parses the same command line, so every rank raises the same error.
*/
static PetscBool OptionWithValue(const char *mess, char *names, size_t len)
{
  const char *in = "Input string ", *logical = "Unknown logical value: ", *end = NULL, *v;
  char        value[256];
  int         argc;
  char      **args;

  names[0] = 0;
  if (!strncmp(mess, in, strlen(in)) &&
      (strstr(mess, " has no integer value") || strstr(mess, " has no numeric value")))
    v = mess + strlen(in), end = strstr(v, " has no ");
  else if (!strncmp(mess, logical, strlen(logical)))
    v = mess + strlen(logical), end = v + strlen(v);
  else
    return PETSC_FALSE;
  if (!end || (size_t)(end - v) >= sizeof(value) || PetscGetArgs(&argc, &args)) return PETSC_FALSE;
  memcpy(value, v, (size_t)(end - v));
  value[end - v] = 0;
  for (int i = 2; i < argc; i++) {
    if (args[i - 1][0] != '-' || strcmp(args[i], value)) continue;
    if (strlen(names) + strlen(args[i - 1]) + strlen(value) + 4 >= len) break;
    if (names[0]) strcat(names, ", ");
    strcat(strcat(strcat(names, args[i - 1]), " "), value);
  }
  return names[0] ? PETSC_TRUE : PETSC_FALSE;
}

/*
  BasisErrorHandler - print the first message of an error as one line, once per
  communicator, and let PetscCall unwind silently.

  Not collective. An error raised on a communicator of several ranks is printed by its
  rank 0 only (every rank of it raised the same error); one raised on PETSC_COMM_SELF is
  printed with the world rank, since only that rank knows it. An option value of the wrong
  kind is raised on PETSC_COMM_SELF by every rank alike: world rank 0 prints it, with the
  option named.
*/
PetscErrorCode BasisErrorHandler(MPI_Comm comm, int line, const char *fun, const char *file, PetscErrorCode n,
                                 PetscErrorType p, const char *mess, void *ctx)
{
  PetscMPIInt size = 1, rank = 0, wrank = 0, wsize = 1;
  char        names[512];

  if (p != PETSC_ERROR_INITIAL) return n;
  MPI_Comm_size(comm, &size);
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_rank(MPI_COMM_WORLD, &wrank);
  MPI_Comm_size(MPI_COMM_WORLD, &wsize);
  if (mess && OptionWithValue(mess, names, sizeof(names))) {
    if (wrank == 0) {
      fprintf(stderr, "basis: error: %s: %s; -help lists each option's kind\n", names, mess);
      fflush(stderr);
    }
    return n;
  }
  if (size > 1 && rank != 0) return n;
  if (n == PETSC_ERR_MEM) mess = "out of memory: use more ranks or a smaller -batch/-chunk";
  if (!mess || !mess[0]) mess = "(no message)";
  if (size > 1 || wsize == 1)
    fprintf(stderr, "basis: error: %s\n", mess);
  else
    fprintf(stderr, "basis: error [rank %d]: %s\n", wrank, mess);
  if (n == PETSC_ERR_SIG || n == PETSC_ERR_PLIB || n == PETSC_ERR_LIB)
    fprintf(stderr, "basis:   (in %s() at %s:%d; -basis_traceback shows the full trace)\n", fun, file, line);
  fflush(stderr);
  return n;
}

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

static PetscErrorCode AttrWrite(hid_t obj, const char *name, hid_t type, hid_t space, const void *buf)
{
  hid_t attr;

  PetscFunctionBeginUser;
  if (H5Aexists(obj, name) > 0) BasisCallH5(H5Adelete(obj, name));
  attr = H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
  BasisCallH5(attr);
  BasisCallH5(H5Awrite(attr, type, buf));
  BasisCallH5(H5Aclose(attr));
  PetscFunctionReturn(0);
}

PetscErrorCode BasisH5AttrWriteString(hid_t obj, const char *name, const char *value)
{
  hid_t type, space;

  PetscFunctionBeginUser;
  type = H5Tcopy(H5T_C_S1);
  BasisCallH5(type);
  BasisCallH5(H5Tset_size(type, strlen(value) + 1));
  space = H5Screate(H5S_SCALAR);
  PetscCall(AttrWrite(obj, name, type, space, value));
  BasisCallH5(H5Sclose(space));
  BasisCallH5(H5Tclose(type));
  PetscFunctionReturn(0);
}

PetscErrorCode BasisH5AttrWriteDouble(hid_t obj, const char *name, PetscInt n, const double v[])
{
  hsize_t dim = (hsize_t)n;
  hid_t   space;

  PetscFunctionBeginUser;
  space = H5Screate_simple(1, &dim, NULL);
  PetscCall(AttrWrite(obj, name, H5T_NATIVE_DOUBLE, space, v));
  BasisCallH5(H5Sclose(space));
  PetscFunctionReturn(0);
}

PetscErrorCode BasisH5AttrWriteInt(hid_t obj, const char *name, PetscInt n, const PetscInt v[])
{
  hsize_t    dim = (hsize_t)n;
  hid_t      space;
  long long *w;

  PetscFunctionBeginUser;
  PetscCall(PetscMalloc1(n, &w));
  for (PetscInt i = 0; i < n; i++) w[i] = v[i];
  space = H5Screate_simple(1, &dim, NULL);
  PetscCall(AttrWrite(obj, name, H5T_NATIVE_LLONG, space, w));
  BasisCallH5(H5Sclose(space));
  PetscCall(PetscFree(w));
  PetscFunctionReturn(0);
}

/*
  BasisParseIntList - parse a comma-separated list of positive integers ("256,512").

  Collective on comm (every rank parses the same text and reaches the same verdict, which
  is raised on comm so that it is printed once).
*/
PetscErrorCode BasisParseIntList(MPI_Comm comm, const char *option, const char *text, PetscInt max,
                                 PetscInt *n, PetscInt v[])
{
  const char *p = text;

  PetscFunctionBeginUser;
  *n = 0;
  PetscCheck(text && text[0], comm, PETSC_ERR_ARG_WRONG, "%s is empty; give positive integers like 256,512",
             option);
  while (*p) {
    char *end;
    long  val = strtol(p, &end, 10);
    PetscCheck(end != p && val > 0 && val < 1000000 && (*end == ',' || *end == 0), comm, PETSC_ERR_ARG_WRONG,
               "%s %s is malformed; give positive integers separated by commas, like 256,512", option, text);
    PetscCheck(*n < max, comm, PETSC_ERR_ARG_OUTOFRANGE, "%s has more than %d entries", option, (int)max);
    v[(*n)++] = (PetscInt)val;
    p         = *end ? end + 1 : end;
    PetscCheck(!(*end == ',' && *p == 0), comm, PETSC_ERR_ARG_WRONG,
               "%s %s ends with a comma; give positive integers like 256,512", option, text);
  }
  PetscFunctionReturn(0);
}

/*
  BasisOptionsCheckEnum - refuse an unknown value of an enum option, once, on comm.

  Collective on comm (the options database is the same on every rank). Call before
  PetscOptionsEnum, which would raise the same error on PETSC_COMM_SELF of every rank.
*/
PetscErrorCode BasisOptionsCheckEnum(MPI_Comm comm, const char *option, const char *const list[])
{
  char      value[256], names[256] = "";
  PetscBool set, found;
  PetscEnum e;
  PetscInt  n = 0;

  PetscFunctionBeginUser;
  PetscCall(PetscOptionsGetString(NULL, NULL, option, value, sizeof(value), &set));
  if (!set) PetscFunctionReturn(0);
  PetscCall(PetscEnumFind(list, value, &e, &found));
  if (found) PetscFunctionReturn(0);
  while (list[n + 2]) n++; /* names, then the type name and prefix */
  for (PetscInt i = 0; i < n; i++) {
    PetscCall(PetscStrlcat(names, " ", sizeof(names)));
    PetscCall(PetscStrlcat(names, list[i], sizeof(names)));
  }
  SETERRQ(comm, PETSC_ERR_USER_INPUT, "Unknown option %s for %s; choose one of:%s",
          value[0] ? value : "(empty)", option, names);
}

/*
  BasisHelpRequested - true when -help was given: commands list their options (during
  PetscOptionsBegin/End) and then return without doing any work. Not collective.
*/
PetscErrorCode BasisHelpRequested(PetscBool *help)
{
  PetscFunctionBeginUser;
  PetscCall(PetscOptionsHasHelp(NULL, help));
  PetscFunctionReturn(0);
}
