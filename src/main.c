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

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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

/* The first line of an options file that PETSc would refuse (a line is "-name [value]",
   "alias -name -other", blank, or a '#' comment), as a message; NULL when all are fine.
   A nested "-options_file G" is checked the same way, and one that includes a file being
   read (itself, or a -> b -> a) is refused: PETSc would recurse until it crashed. chain
   holds the real paths of the files being read, depth of them. */
#define MAX_OPTIONS_FILE_DEPTH 16
static const char *BadOptionsLine(const char *path, char chain[][PATH_MAX], int depth)
{
  static char why[PATH_MAX + 256];
  const char *bad = NULL;
  char        line[4096];
  FILE       *f                    = fopen(path, "r");
  char        where[PATH_MAX + 16] = ""; /* which file, when nested */
  int         n                    = 0;

  if (depth) snprintf(where, sizeof(where), "in %s, ", path);
  if (!f || !realpath(path, chain[depth])) {
    if (f) fclose(f);
    snprintf(why, sizeof(why), "cannot be read (%s)", path);
    return why;
  }
  for (int d = 0; d < depth && !bad; d++)
    if (!strcmp(chain[d], chain[depth])) {
      snprintf(why, sizeof(why), "includes %s again through -options_file; remove the loop", path);
      bad = why;
    }
  while (!bad && fgets(line, sizeof(line), f)) {
    char *tok[4], *save = NULL, *hash;
    int   ntok = 0, binary = memchr(line, 0, strlen(line) + 1) != line + strlen(line);

    n++;
    if ((hash = strchr(line, '#'))) *hash = 0;
    for (char *t = strtok_r(line, " \t\r\n", &save); t && ntok < 4; t = strtok_r(NULL, " \t\r\n", &save))
      tok[ntok++] = t;
    if (!binary && ntok == 0) continue;
    if (binary || (tok[0][0] != '-' && strcmp(tok[0], "alias")))
      snprintf(why, sizeof(why),
               "%sline %d is not an option: each line holds '-name value' ('#' starts a comment)", where, n);
    else if (ntok > (strcmp(tok[0], "alias") ? 2 : 3))
      snprintf(why, sizeof(why), "%sline %d holds more than one option; put one '-name value' per line",
               where, n);
    else if (strcmp(tok[0], "-options_file"))
      continue;
    else if (ntok < 2)
      snprintf(why, sizeof(why), "%sline %d: -options_file needs a file name", where, n);
    else if (depth + 1 >= MAX_OPTIONS_FILE_DEPTH)
      snprintf(why, sizeof(why), "nests -options_file more than %d deep (at %s)", MAX_OPTIONS_FILE_DEPTH,
               tok[1]);
    else if (!BadOptionsLine(tok[1], chain, depth + 1))
      continue;
    bad = why; /* the nested call's message is in why too */
  }
  fclose(f);
  return bad;
}

/* -options_file F is read inside SlepcInitialize, before basis's error handler: check F
   here so that a missing or unreadable file is one line, not PETSc's trace. */
static int CheckOptionsFiles(int argc, char **argv)
{
  for (int i = 2; i < argc; i++) {
    struct stat st;
    const char *f = i + 1 < argc ? argv[i + 1] : NULL, *why = NULL;
    if (strcmp(argv[i], "-options_file") && strcmp(argv[i], "-options_file_yaml")) continue;
    if (!f || f[0] == '-')
      why = "needs a file name";
    else if (stat(f, &st))
      why = errno == ENOENT ? "does not exist; check the path" : "cannot be read";
    else if (!S_ISREG(st.st_mode))
      why = "is not a regular file; give a text file of options";
    else if (access(f, R_OK))
      why = "is not readable; check its permissions";
    else if (!strcmp(argv[i], "-options_file")) {
      static char chain[MAX_OPTIONS_FILE_DEPTH][PATH_MAX];
      why = BadOptionsLine(f, chain, 0);
    }
    if (why) {
      /* MPI up just to report it once: rank 0 prints before any rank exits (mpiexec kills
         the others when one exits with an error) */
      int rank = 0;
      MPI_Init(&argc, &argv);
      MPI_Comm_rank(MPI_COMM_WORLD, &rank);
      if (rank == 0) fprintf(stderr, "basis: error: %s %s %s\n", argv[i], f ? f : "", why);
      fflush(stderr);
      MPI_Barrier(MPI_COMM_WORLD);
      MPI_Finalize();
      return 1;
    }
  }
  return 0;
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
  if (CheckOptionsFiles(argc, argv)) return 1;
  setenv("OMPI_MCA_io", "^ompio", 0); /* ROMIO: see the top of this file */
  argv[1] = argv[0];                  /* PETSc sees "basis -opt ..." */
  ierr    = SlepcInitialize(&argc, &argv, NULL, NULL);
  if (ierr) {
    if (FirstRank())
      fprintf(stderr,
              "basis: error: initialisation failed (see above); check -options_file and the options\n");
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
    return 1;
  }
  ierr = BasisFinalize();
  if (!ierr) ierr = SlepcFinalize();
  return ierr ? 1 : BasisExitStatus;
}
