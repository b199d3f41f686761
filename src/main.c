/*
  main.c - the `basis` binary: dispatch `basis generate | train | embed | exact | eval`.

  All work lives in libbasiscore. Error exit: every check in basis is agreed across ranks
  before it is raised, so normally all ranks return the same error here and finalize
  cleanly with exit status 1. If some rank does not arrive within a grace period (a
  rank-local failure), the job is aborted so nothing hangs. Outputs left open by the
  error are removed, then (all ranks having arrived) closed, so HDF5 never flushes a file
  from inside MPI_Finalize.

  MPI-IO: Open MPI 4.1's OMPIO drops the error of a failed collective write (a full disk
  gave exit 0 and a file of zeros marked complete) and aborts on paths of more than ~240
  characters; ROMIO reports both. basis selects ROMIO unless OMPI_MCA_io is set.

  Options files are checked before PETSc reads them (CheckOptionsFiles), so that a bad one
  is one line of error instead of a crash or PETSc's trace on every rank.
*/
#include <slepcsys.h>
#include <basis/error.h>
#include <basis/output.h>
#include <basis/generate.h>
#include <basis/h5io.h>
#include <basis/train.h>
#include <basis/exact.h>
#include <basis/embed.h>
#include <basis/eval.h>
#include <basis/info.h>
#include <basis/options.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

typedef PetscErrorCode (*BasisCommand)(MPI_Comm);

static const struct {
  const char  *name;
  BasisCommand run;
  const char  *summary;
} commands[] = {
    {"generate", BasisGenerateMain, "write a synthetic labelled data set (/features, /labels)"},
    {"train", BasisTrainMain, "learn the spectral embedding (reference eigenspace + aligned batches)"},
    {"embed", BasisEmbedMain, "embed any data with a trained model, write /embedding"},
    {"exact", BasisExactMain, "exact eigenvectors of the full kNN graph (ring-exchange kNN + SLEPc)"},
    {"eval", BasisEvalMain,
     "score embeddings against exact eigenvectors: d_G, d_perp, NMI/ACC, linear probe"},
    {"info", BasisInfoMain, "check a data file and show how it is sharded over the ranks"},
};

static void Usage(FILE *f)
{
  fprintf(f,
          "basis %s - spectral embedding of large point sets with BASiS (CVPR 2023)\n\n"
          "usage: mpiexec -n P basis COMMAND [-option value ...]\n\ncommands:\n",
          BASIS_VERSION);
  for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
    fprintf(f, "  %-9s %s\n", commands[i].name, commands[i].summary);
  fprintf(f, "\n'basis COMMAND -help' lists a command's options; -log_view prints timings;\n"
             "-options_file F reads options from a file.\n");
}

/* Wait up to `seconds` for every rank to reach the error path; true if all did. */
static int AllRanksFailed(double seconds)
{
  MPI_Request req;
  int         done = 0;
  double      t0   = MPI_Wtime();

  if (MPI_Ibarrier(MPI_COMM_WORLD, &req) != MPI_SUCCESS) return 0;
  while (!done && MPI_Wtime() - t0 < seconds) {
    MPI_Test(&req, &done, MPI_STATUS_IGNORE);
    if (!done) usleep(1000);
  }
  return done;
}

/* True on the process that prints errors found before MPI is up (rank 0 of the job). */
static int FirstRank(void)
{
  const char *vars[] = {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID"};
  for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
    if (getenv(vars[i])) return atoi(getenv(vars[i])) == 0;
  return 1;
}

/* Check every -options_file of the command line (BasisOptionsFileProblem) as PETSc reads them: on
   rank 0, which broadcasts what it read. With such an option MPI is started here, so that
   the verdict is rank 0's on every rank (a file one node cannot see would otherwise send
   its ranks alone down the error path); *mpi_started tells main to end MPI after PETSc.
   Returns 1 (the error printed once) for a bad file. */
static int CheckOptionsFiles(int argc, char **argv, int *mpi_started)
{
  char why[PATH_MAX + 512] = "";
  int  rank = 0, any = 0;

  for (int i = 2; i < argc; i++)
    any |= !strcasecmp(argv[i], "-options_file") || !strcasecmp(argv[i], "-options_file_yaml");
  *mpi_started = 0;
  if (!any) return 0;
  MPI_Init(&argc, &argv);
  *mpi_started = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  for (int i = 2; rank == 0 && i < argc && !why[0]; i++) {
    const char *f = i + 1 < argc ? argv[i + 1] : NULL, *bad = NULL;
    int         yaml = !strcasecmp(argv[i], "-options_file_yaml");
    if (!yaml && strcasecmp(argv[i], "-options_file")) continue;
    bad =
        !f || f[0] == '-' ? "needs a file name" : BasisOptionsFileProblem(f, yaml ? PETSC_TRUE : PETSC_FALSE);
    if (bad) snprintf(why, sizeof(why), "%s %s %s", argv[i], f ? f : "", bad);
  }
  MPI_Bcast(why, sizeof(why), MPI_CHAR, 0, MPI_COMM_WORLD);
  if (!why[0]) return 0;
  if (rank == 0) fprintf(stderr, "basis: error: %s\n", why);
  fflush(stderr);
  MPI_Finalize();
  return 1;
}

int main(int argc, char **argv)
{
  BasisCommand   run = NULL;
  PetscErrorCode ierr;
  int            mpi_started;

  if (argc < 2 || argv[1][0] == '-') {
    int asked =
        argc >= 2 && (!strcmp(argv[1], "-help") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"));
    Usage(asked ? stdout : stderr);
    return asked ? 0 : 1;
  }
  for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
    if (!strcmp(argv[1], commands[i].name)) run = commands[i].run;
  if (!run) {
    fprintf(stderr, "basis: unknown command '%s'\n\n", argv[1]);
    Usage(stderr);
    return 1;
  }
  setenv("OMPI_MCA_io", "^ompio", 0); /* ROMIO: see the top of this file */
  if (CheckOptionsFiles(argc, argv, &mpi_started)) return 1;
  argv[1] = argv[0]; /* PETSc sees "basis -opt ..." */
  ierr    = SlepcInitialize(&argc, &argv, NULL, NULL);
  if (ierr) {
    if (FirstRank())
      fprintf(stderr,
              "basis: error: initialisation failed (see above); check -options_file and the options\n");
    if (mpi_started) MPI_Finalize();
    return 1;
  }
  argv++, argc--;
  ierr = BasisInitialize();
  if (!ierr) ierr = BasisOptionsCheckCommandLine(PETSC_COMM_WORLD);
  if (!ierr) ierr = run(PETSC_COMM_WORLD);
  if (ierr) {
    BasisOutputCleanupAll();
    /* 30 s: long enough for ranks still finishing a slow collective to arrive. */
    if (!AllRanksFailed(30.0)) MPI_Abort(MPI_COMM_WORLD, 1);
    BasisOutputCloseAll();
    BasisFinalize();
    SlepcFinalize();
    if (mpi_started) MPI_Finalize();
    return 1;
  }
  ierr = BasisFinalize();
  if (!ierr) ierr = SlepcFinalize();
  if (mpi_started) MPI_Finalize(); /* PETSc leaves MPI it did not start */
  return ierr ? 1 : BasisExitStatus;
}
