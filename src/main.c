/*
  main.c - the `basis` binary: dispatch `basis generate | train | embed | exact | eval`.

  All work lives in libbasiscore. Error exit: every check in basis is agreed across ranks
  before it is raised, so normally all ranks return the same error here and finalize
  cleanly with exit status 1. If some rank does not arrive within a grace period (a
  rank-local failure), the job is aborted so nothing hangs.
*/
#include <slepcsys.h>
#include <basis/error.h>
#include <basis/output.h>
#include <basis/generate.h>
#include <basis/h5io.h>
#include <basis/train.h>
#include <basis/exact.h>

PetscErrorCode BasisEmbedMain(MPI_Comm);

#include <stdio.h>
#include <string.h>
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

int main(int argc, char **argv)
{
  BasisCommand   run = NULL;
  PetscErrorCode ierr;

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
  argv[1] = argv[0]; /* PETSc sees "basis -opt ..." */
  ierr    = SlepcInitialize(&argc, &argv, NULL, NULL);
  if (ierr) return 1;
  argv++, argc--;
  ierr = BasisInitialize();
  if (!ierr) ierr = run(PETSC_COMM_WORLD);
  if (ierr) {
    BasisOutputCleanupAll();
    /* 30 s: long enough for ranks still finishing a slow collective to arrive. */
    if (!AllRanksFailed(30.0)) MPI_Abort(MPI_COMM_WORLD, 1);
    BasisFinalize();
    SlepcFinalize();
    return 1;
  }
  ierr = BasisFinalize();
  if (!ierr) ierr = SlepcFinalize();
  return ierr ? 1 : BasisExitStatus;
}
