/*
  check.c - shared test verdicts (tests/check.h). Linked into every C test.
*/
#include "check.h"
#include <stdarg.h>
#include <stdio.h>

static int failures = 0;

/*
  BasisTestCheck - count one check; rank 0 prints "FAIL <message>" when any rank failed.

  Collective on comm (an MPI_Allreduce of the verdict), so no rank is left behind in a
  later collective and the count is rank-independent.
*/
PetscErrorCode BasisTestCheck(MPI_Comm comm, PetscBool ok, const char *fmt, ...)
{
  int         mine = ok ? 1 : 0, all;
  PetscMPIInt rank;

  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, comm));
  if (all) PetscFunctionReturn(0);
  failures++;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  if (rank == 0) {
    va_list ap;
    printf("FAIL ");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
  }
  PetscFunctionReturn(0);
}

/* BasisTestCheckSame - v must be bitwise the same on every rank. Collective on comm. */
PetscErrorCode BasisTestCheckSame(MPI_Comm comm, const char *what, double v)
{
  double lo, hi;

  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Allreduce(&v, &lo, 1, MPI_DOUBLE, MPI_MIN, comm));
  PetscCallMPI(MPI_Allreduce(&v, &hi, 1, MPI_DOUBLE, MPI_MAX, comm));
  PetscCall(
      BasisTestCheck(comm, (PetscBool)(lo == hi), "%s differs between ranks: %.17g to %.17g", what, lo, hi));
  PetscFunctionReturn(0);
}

/* BasisTestCheckNear - |got - want| <= tol, a NaN failing. Collective on comm. */
PetscErrorCode BasisTestCheckNear(MPI_Comm comm, const char *what, double got, double want, double tol)
{
  PetscFunctionBeginUser;
  PetscCall(BasisTestCheck(comm, (PetscBool)(PetscAbsReal(got - want) <= tol),
                           "%s: got %.17g, expected %.17g", what, got, want));
  PetscFunctionReturn(0);
}

int BasisTestFailures(void)
{
  return failures;
}
