/*
  options.c - helpers around the PETSc options database (include/basis/options.h).

  PetscInt is 32-bit here and PETSc converts an option's text with a silent cast, so
  "-steps 4294967299" would train 3 steps: BasisOptionsInt reads the text itself (64-bit
  strtoll) and refuses values outside the option's range. PETSc ignores options nobody
  asks for, so "-ouput x" would be dropped silently: BasisOptionsCheckCommandLine refuses
  any option that is neither one of basis's (the table below; tests/cli_faults.sh checks
  it against every command's -help), nor handled by PETSc/SLEPc (queried already, or of
  a solver prefix), naming the closest known name; it also range-checks every integer
  option of the table before any command reads it, and refuses a value missing from any of
  basis's options but the booleans (BasisOptionsCheckCommandLine). Array options cut to their
  length without a word: BasisOptionsCheckListLength counts first.
*/
#include <basis/options.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* Every option basis reads, with its kind: i integer, l integer list, r real, s string,
   b boolean, e enum. Keep in step with the commands (tests/cli_faults.sh checks that every
   option a command's -help lists is here). */
static const struct {
  const char *name;
  char        kind;
} known_options[] = {
    {"-align", 'e'},
    {"-align_extra", 'i'},
    {"-align_max_cond", 'r'},
    {"-anchors", 'i'},
    {"-basis_traceback", 'b'},
    {"-batch", 'i'},
    {"-batch_solver", 'e'},
    {"-checkpoint_every", 'i'},
    {"-chunk", 'i'},
    {"-classes", 'i'},
    {"-clusters", 'i'},
    {"-d", 'i'},
    {"-data", 's'},
    {"-data_seed", 'i'},
    {"-dim", 'i'},
    {"-exact", 's'},
    {"-force", 'b'},
    {"-help", 'b'},
    {"-hidden", 's'},
    {"-input", 's'},
    {"-json", 's'},
    {"-kmeans_seed", 'i'},
    {"-knn", 'i'},
    {"-knn_gemm", 'e'},
    {"-landmark_values", 'e'},
    {"-landmark_weight", 'r'},
    {"-laplacian", 'e'},
    {"-landmarks", 'i'},
    {"-latent", 'i'},
    {"-lr", 'r'},
    {"-lr_final", 'r'},
    {"-match_batch", 'l'},
    {"-mlp_precision", 'e'},
    {"-model", 's'},
    {"-monitor_every", 'i'},
    {"-n", 'i'},
    {"-noise", 'r'},
    {"-orthonormalize", 'e'},
    {"-output", 's'},
    {"-probe_test_fraction", 'r'},
    {"-ransac_iters", 'i'},
    {"-ransac_points", 'i'},
    {"-ransac_tol", 'r'},
    {"-reference_size", 'i'},
    {"-restarts", 'i'},
    {"-resume", 'b'},
    {"-sample", 'e'},
    {"-scale", 'e'},
    {"-scale_neighbor", 'i'},
    {"-seed", 'i'},
    {"-standardize_targets", 'b'},
    {"-steps", 'i'},
    {"-train_monitor", 'b'},
    {"-train_overlap", 'b'},
    {"-trivial", 'e'},
    {"-type", 'e'},
};

/* Solver prefixes (-ref_eps_*, -exact_eps_*, -batch_eps_*: src/graph.c BasisGraphSolve)
   followed by what a prefixed solver reads: SLEPc/PETSc objects and basis's own two. */
static const char *const solver_prefixes[] = {"-ref_", "-exact_", "-batch_"};
static const char *const solver_options[]  = {
     "eps_",           "st_",         "bv_", "ds_", "rg_", "fn_", "ksp_", "pc_", "mat_", "vec_",
     "recover_missed", "max_residual"};
/* PETSc options read at finalize or by objects after the check (the rest PETSc has read
   in PetscInitialize, so they are marked used) */
static const char *const petsc_prefixes[] = {"-malloc",
                                             "-options_",
                                             "-log",
                                             "-info",
                                             "-objects_dump",
                                             "-viewer",
                                             "-draw",
                                             "-mat_",
                                             "-vec_",
                                             "-eps_",
                                             "-st_",
                                             "-bv_",
                                             "-ds_",
                                             "-memory_",
                                             "-get_total_flops",
                                             "-on_error",
                                             "-fp_trap",
                                             "-check_pointer_intensity",
                                             "-saws",
                                             "-petsc",
                                             "-mpi_",
                                             "-device",
                                             "-use_gpu_aware_mpi"};

static int KnownKind(const char *name)
{
  for (size_t i = 0; i < sizeof(known_options) / sizeof(known_options[0]); i++)
    if (!strcasecmp(name, known_options[i].name)) return known_options[i].kind;
  return 0;
}

static PetscBool StartsWith(const char *s, const char *prefix)
{
  return strncasecmp(s, prefix, strlen(prefix)) ? PETSC_FALSE : PETSC_TRUE;
}

static PetscBool HandledByPetsc(const char *name)
{
  for (size_t i = 0; i < sizeof(solver_prefixes) / sizeof(solver_prefixes[0]); i++)
    if (StartsWith(name, solver_prefixes[i]))
      for (size_t j = 0; j < sizeof(solver_options) / sizeof(solver_options[0]); j++)
        if (StartsWith(name + strlen(solver_prefixes[i]), solver_options[j])) return PETSC_TRUE;
  for (size_t i = 0; i < sizeof(petsc_prefixes) / sizeof(petsc_prefixes[0]); i++)
    if (StartsWith(name, petsc_prefixes[i])) return PETSC_TRUE;
  return PETSC_FALSE;
}

/* Edit distance (insert, delete, substitute, swap of neighbours) of two short names. */
static int Distance(const char *a, const char *b)
{
  int la = (int)strlen(a), lb = (int)strlen(b), d[64][64];

  if (la >= 63 || lb >= 63) return 99;
  for (int i = 0; i <= la; i++) d[i][0] = i;
  for (int j = 0; j <= lb; j++) d[0][j] = j;
  for (int i = 1; i <= la; i++)
    for (int j = 1; j <= lb; j++) {
      int c = a[i - 1] == b[j - 1] ? 0 : 1, v = PetscMin(d[i - 1][j] + 1, d[i][j - 1] + 1);
      v = PetscMin(v, d[i - 1][j - 1] + c);
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        v = PetscMin(v, d[i - 2][j - 2] + 1);
      d[i][j] = v;
    }
  return d[la][lb];
}

/* The known option closest to name, if it is close (at most a third of its letters). */
static const char *Closest(const char *name)
{
  const char *best = NULL;
  int         bd   = 99;

  for (size_t i = 0; i < sizeof(known_options) / sizeof(known_options[0]); i++) {
    int d = Distance(name, known_options[i].name);
    if (d < bd) bd = d, best = known_options[i].name;
  }
  return bd <= PetscMax(1, (int)strlen(name) / 3) ? best : NULL;
}

/* Parse text as a 64-bit decimal integer; false when it is not one (PETSc then reports
   a value of the wrong kind). */
static PetscBool ParseInt64(const char *text, long long *v)
{
  char *end;

  if (!text || !text[0]) return PETSC_FALSE;
  errno = 0;
  *v    = strtoll(text, &end, 10);
  if (*end) return PETSC_FALSE;
  if (errno == ERANGE) *v = text[0] == '-' ? LLONG_MIN : LLONG_MAX;
  return PETSC_TRUE;
}

/*
  BasisOptionsEnum - PetscOptionsEnum with an unknown value refused once, on the options'
  communicator (BasisOptionsCheckEnum), not on PETSC_COMM_SELF of every rank; use inside
  PetscOptionsBegin/End exactly like PetscOptionsEnum. Collective on that communicator.
*/
PetscErrorCode BasisOptionsEnum_Private(PetscOptionItems *PetscOptionsObject, const char opt[],
                                        const char text[], const char man[], const char *const list[],
                                        PetscEnum value, PetscEnum *result, PetscBool *set)
{
  PetscFunctionBeginUser;
  PetscCall(BasisOptionsCheckEnum(PetscOptionsObject->comm, opt, list));
  PetscCall(PetscOptionsEnum_Private(PetscOptionsObject, opt, text, man, list, value, result, set));
  PetscFunctionReturn(0);
}

/*
  BasisOptionsInt - PetscOptionsInt with the value read as a 64-bit integer and checked
  against [min, max]; use inside PetscOptionsBegin/End exactly like PetscOptionsInt.

  Collective on PetscOptionsObject's communicator (every rank reads the same database and
  raises the same error, naming the option and the allowed range). A value that is not an
  integer is left to PetscOptionsInt, whose message names it.
*/
PetscErrorCode BasisOptionsInt_Private(PetscOptionItems *PetscOptionsObject, const char opt[],
                                       const char text[], const char man[], PetscInt value, PetscInt *result,
                                       PetscBool *set, PetscInt min, PetscInt max)
{
  char      raw[256];
  PetscBool given;
  long long v;

  PetscFunctionBeginUser;
  PetscCall(PetscOptionsGetString(PetscOptionsObject->options, PetscOptionsObject->prefix, opt, raw,
                                  sizeof(raw), &given));
  if (given && ParseInt64(raw, &v))
    PetscCheck(v >= min && v <= max, PetscOptionsObject->comm, PETSC_ERR_ARG_OUTOFRANGE,
               "%s %s is out of range; give an integer from %lld to %lld", opt, raw, (long long)min,
               (long long)max);
  PetscCall(PetscOptionsInt_Private(PetscOptionsObject, opt, text, man, value, result, set, PETSC_MIN_INT,
                                    PETSC_MAX_INT));
  PetscFunctionReturn(0);
}

/*
  BasisOptionsCheckListLength - refuse a comma-separated option of more than max entries
  (PetscOptions*Array would keep the first max and drop the rest without a word). Entries
  are counted as PETSc reads them: empty ones (a doubled or trailing comma) are skipped.
  Collective on comm (every rank holds the same database); call before any work.
*/
PetscErrorCode BasisOptionsCheckListLength(MPI_Comm comm, const char *option, PetscInt max)
{
  const char *text;
  PetscBool   set;
  PetscInt    n = 0;

  PetscFunctionBeginUser;
  PetscCall(PetscOptionsFindPair(NULL, NULL, option, &text, &set));
  if (!set || !text) PetscFunctionReturn(0);
  for (const char *p = text; *p;) {
    size_t len = strcspn(p, ",");
    n += len > 0;
    p += len + (p[len] == ',');
  }
  PetscCheck(n <= max, comm, PETSC_ERR_ARG_OUTOFRANGE,
             "%s lists %d entries; at most %d are taken in one run: split them over several runs", option,
             (int)n, (int)max);
  PetscFunctionReturn(0);
}

/* What a value of an option of this kind looks like, for the message of a missing one. */
static const char *KindValue(int kind)
{
  switch (kind) {
  case 'i':
    return "an integer";
  case 'l':
    return "integers separated by commas";
  case 'r':
    return "a number";
  case 'e':
    return "one of its choices ('basis COMMAND -help' lists them)";
  default:
    return "a value (a file name or text)";
  }
}

/*
  BasisOptionsCheckCommandLine - refuse unknown options, missing values and integers that
  do not fit.

  Collective on comm (every rank holds the same database). Call once the options that
  PETSc reads at initialisation have been read (after SlepcInitialize), before the
  command: an option that is not basis's (known_options), not yet used by PETSc and not of
  a solver prefix is an error naming the closest known option; one of basis's options other
  than a boolean given without a value ("-steps $STEPS" with STEPS empty, or a repeated
  "-batch" at the end) is an error, where PETSc would keep the default or the earlier value
  without a word; an integer option whose value does not fit a 32-bit integer is an error
  naming it.
*/
PetscErrorCode BasisOptionsCheckCommandLine(MPI_Comm comm)
{
  PetscInt N;
  char   **names, **values;

  PetscFunctionBeginUser;
  PetscCall(PetscOptionsLeftGet(NULL, &N, &names, &values));
  for (PetscInt i = 0; i < N; i++) {
    char        name[256];
    const char *close;
    int         kind;

    PetscCall(PetscSNPrintf(name, sizeof(name), "-%s", names[i]));
    kind = KnownKind(name);
    if (!kind && HandledByPetsc(name)) continue;
    close = kind ? NULL : (!strcmp(name, "-h") || !strcmp(name, "--help")) ? "-help" : Closest(name);
    if (!kind) {
      PetscCall(PetscOptionsLeftRestore(NULL, &N, &names, &values));
      SETERRQ(comm, PETSC_ERR_ARG_WRONG, "unknown option %s%s%s%s; 'basis COMMAND -help' lists the options",
              name, close ? "; did you mean " : "", close ? close : "", close ? "?" : "");
    }
    if (kind != 'b' && !values[i]) { /* PETSc keeps "-name" and "-name ''" alike as no value */
      char opt[256];
      PetscCall(PetscStrncpy(opt, name, sizeof(opt)));
      PetscCall(PetscOptionsLeftRestore(NULL, &N, &names, &values));
      SETERRQ(comm, PETSC_ERR_ARG_WRONG, "option %s is given without a value; it needs %s", opt,
              KindValue(kind));
    }
    if ((kind == 'i' || kind == 'l') && values[i]) {
      char        text[256];
      const char *p = text;
      PetscCall(PetscStrncpy(text, values[i], sizeof(text)));
      for (char *q = text; p; p = q) { /* each entry of a list */
        long long v;
        q = strchr(text + (p - text), ',');
        if (q) *q++ = 0;
        if (ParseInt64(p, &v) && (v > INT_MAX || v < INT_MIN)) {
          char opt[256];
          PetscCall(PetscStrncpy(opt, name, sizeof(opt)));
          PetscCall(PetscOptionsLeftRestore(NULL, &N, &names, &values));
          SETERRQ(comm, PETSC_ERR_ARG_OUTOFRANGE,
                  "%s %s is out of range; integers must lie between %d and %d", opt, p, INT_MIN, INT_MAX);
        }
      }
    }
  }
  PetscCall(PetscOptionsLeftRestore(NULL, &N, &names, &values));
  PetscFunctionReturn(0);
}

/* Options files are read by PETSc inside SlepcInitialize, before basis's error handler, and
   PETSc recurses until it crashes on a file that includes itself and prints its whole trace,
   once per rank, for a line it refuses. So every file named by -options_file, and every one
   it includes, is checked here first with PETSc's rules and a bad one is one line: a line
   is blank, a '#' comment, "-name [value]" or "alias -name -other" (blanks separate tokens,
   a double-quoted string is one, '#' ends the line; the value may not itself be an option
   name). YAML files (-options_file_yaml, or a .yaml, .yml or .json name) are PETSc's. */
#define MAX_OPTIONS_FILE_DEPTH 16 /* PETSc sets none; a nest this deep is a loop in practice */

static int IsYamlName(const char *f)
{
  const char *dot = strrchr(f, '.');
  return dot && (!strcasecmp(dot, ".yaml") || !strcasecmp(dot, ".yml") || !strcasecmp(dot, ".json"));
}

/* An option name as PETSc takes one: '-' then a letter ("-1" and "-.5" are values). */
static int IsKey(const char *t)
{
  return t[0] == '-' && isalpha((unsigned char)t[1]);
}

/* Up to 4 tokens of line (modified in place), as PETSc splits it; the count, or 5 for more. */
static int Tokens(char *line, char *tok[4])
{
  int   n = 0;
  char *p = line, *hash = strchr(line, '#');

  if (hash) *hash = 0;
  for (;;) {
    p += strspn(p, " \t\r\n");
    if (!*p) return n;
    if (n == 4) return 5;
    if (*p == '"') {
      char *q  = strchr(p + 1, '"');
      tok[n++] = p + 1;
      p        = q ? q : p + strlen(p);
    } else {
      tok[n++] = p;
      p += strcspn(p, " \t\r\n");
    }
    if (*p) *p++ = 0;
  }
}

/* Why the options file path (named at depth 0 by the command line, deeper by an include)
   would fail in PETSc, or NULL. yaml: its lines are PETSc's YAML reader's to judge. chain
   holds the real paths of the files being read. */
static const char *BadOptionsFile(const char *path, int yaml, char chain[][PATH_MAX], int depth)
{
  static char why[PATH_MAX + 256];
  char        it[PATH_MAX + 32] = "", its[PATH_MAX + 32] = ""; /* "includes G, which ": a nested file */
  const char *bad = NULL;
  struct stat st;
  FILE       *f;
  char       *line = NULL;
  size_t      cap  = 0;
  ssize_t     len;
  int         n = 0;

  if (depth) {
    snprintf(it, sizeof(it), "includes %s, which ", path);
    snprintf(its, sizeof(its), "includes %s, whose ", path);
  }
  if (stat(path, &st))
    snprintf(why, sizeof(why), "%s%s", it,
             errno == ENOENT ? "does not exist; check the path" : "cannot be read");
  else if (!S_ISREG(st.st_mode))
    snprintf(why, sizeof(why), "%sis not a regular file; give a text file of options", it);
  else if (access(path, R_OK) || !(f = fopen(path, "r")))
    snprintf(why, sizeof(why), "%sis not readable; check its permissions", it);
  else {
    why[0] = 0;
    if (!realpath(path, chain[depth])) snprintf(chain[depth], PATH_MAX, "%s", path);
    for (int d = 0; d < depth && !bad; d++)
      if (!strcmp(chain[d], chain[depth])) {
        snprintf(why, sizeof(why), "includes %s again through -options_file; remove the loop", path);
        bad = why;
      }
    while (!bad && !yaml && !IsYamlName(path) && (len = getline(&line, &cap, f)) >= 0) {
      char *tok[4];
      int   ntok, alias;
      n++;
      ntok = memchr(line, 0, (size_t)len) ? -1 : Tokens(line, tok); /* a NUL byte: not text */
      if (!ntok) continue;
      alias = ntok > 0 && !strcasecmp(tok[0], "alias");
      if (ntok < 0 || (!alias && !IsKey(tok[0])))
        snprintf(why, sizeof(why),
                 "%sline %d is not an option: each line holds '-name value' ('#' starts a comment)", its, n);
      else if (alias ? ntok != 3 || !IsKey(tok[1]) || !IsKey(tok[2])
                     : ntok > 2 || (ntok == 2 && IsKey(tok[1])))
        snprintf(why, sizeof(why), "%sline %d %s", its, n,
                 alias ? "is not 'alias -name -other'"
                       : "holds more than one option; put one '-name value' per line");
      else if (strcasecmp(tok[0], "-options_file"))
        continue;
      else if (ntok < 2)
        snprintf(why, sizeof(why), "%sline %d: -options_file needs a file name", its, n);
      else if (depth + 1 >= MAX_OPTIONS_FILE_DEPTH)
        snprintf(why, sizeof(why), "nests -options_file more than %d deep (at %s)", MAX_OPTIONS_FILE_DEPTH,
                 tok[1]);
      else if (!BadOptionsFile(tok[1], 0, chain, depth + 1))
        continue;
      bad = why; /* a nested file's message is in why too */
    }
    free(line);
    fclose(f);
    return bad;
  }
  return why;
}

const char *BasisOptionsFileProblem(const char *path, PetscBool yaml)
{
  static char chain[MAX_OPTIONS_FILE_DEPTH][PATH_MAX];
  return BadOptionsFile(path, yaml, chain, 0);
}
