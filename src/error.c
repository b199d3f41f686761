/*
  error.c - the error handler that turns a PETSc error into one readable line, and
  BasisInitialize/BasisFinalize that install it.

  A check whose outcome can differ between ranks is agreed by a reduction first
  (BasisCheckAll in error.h), then raised on the communicator; BasisErrorHandler prints
  the message once (rank 0 of that communicator) without PETSc's traceback unless
  -basis_traceback is given.
*/
#include <basis/error.h>
#include <basis/log.h>
#include <hdf5.h>
#include <stdio.h>
#include <string.h>

/* Whether BasisInitialize pushed BasisErrorHandler (BasisFinalize pops it). */
static PetscBool handler_pushed = PETSC_FALSE;

/*
  BasisInitialize - install the error handler, silence HDF5's own error stack, register the log events
  and turn PETSc's event logging on.

  Collective on PETSC_COMM_WORLD; call once after SlepcInitialize.

  Options:
    -basis_traceback - keep PETSc's full traceback instead of the one-line message
*/
PetscErrorCode BasisInitialize(void)
{
  PetscBool traceback = PETSC_FALSE;

  PetscFunctionBeginUser;
  PetscCall(PetscOptionsGetBool(NULL, NULL, "-basis_traceback", &traceback, NULL));
  if (!traceback) PetscCall(PetscPushErrorHandler(BasisErrorHandler, NULL));
  handler_pushed = (PetscBool)!traceback;
  /* The HDF5 library prints its own error stack; our messages name the failed call. */
  if (!traceback) H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  PetscCall(BasisLogRegister());
  /* Event timing on in every run, not only with -log_view: `basis train` prints its
     per-phase summary from the same events that -log_view reports (one timing mechanism). */
  PetscCall(PetscLogDefaultBegin());
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
