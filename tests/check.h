/*
  check.h - the verdicts every basis test shares (STYLE.md "Tests"): a check is agreed
  over the communicator before it is counted, so every rank counts the same failures and
  the message is printed once, by rank 0. Tests are silent on success.
*/
#pragma once
#include <petscsys.h>

/* Record a check: ok agreed (logical AND) over comm; on failure rank 0 prints "FAIL " and
   the formatted message. Collective on comm. */
PetscErrorCode BasisTestCheck(MPI_Comm comm, PetscBool ok, const char *fmt, ...) PETSC_ATTRIBUTE_FORMAT(3, 4);
/* Record that v is bitwise the same on every rank of comm. Collective on comm. */
PetscErrorCode BasisTestCheckSame(MPI_Comm comm, const char *what, double v);
/* Record that |got - want| <= tol (a NaN fails); on failure "<what>: got <got>, expected <want>".
   Collective on comm. */
PetscErrorCode BasisTestCheckNear(MPI_Comm comm, const char *what, double got, double want, double tol);
/* Failures recorded so far in this process: the same on every rank when every check was on
   the whole communicator (a check on PETSC_COMM_SELF counts on its rank only). Not collective. */
int BasisTestFailures(void);
