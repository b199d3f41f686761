/*
  options.c - helpers around the PETSc options database (include/basis/options.h).
*/
#include <basis/options.h>
#include <stdlib.h>

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
