/*
  cluster.h - clustering and classification scores of an embedding (DESIGN.md "Metrics"),
  all distributed over the rows: k-means clustering with NMI and ACC (Hungarian matching)
  against labels, and a linear probe.
*/
#pragma once
#include <basis/error.h>
#include <basis/rng.h>

PetscErrorCode BasisKMeans(MPI_Comm comm, PetscInt n, PetscInt dim, const PetscReal Y[], PetscInt nclusters,
                           PetscInt restarts, PetscInt seed, int assign[], PetscReal *inertia);
PetscErrorCode BasisMetricNMI(MPI_Comm comm, PetscInt n, const int labels[], const int assign[],
                              PetscReal *nmi);
PetscErrorCode BasisMetricACC(MPI_Comm comm, PetscInt n, const int labels[], const int assign[],
                              PetscReal *acc);
PetscErrorCode BasisLinearProbe(MPI_Comm comm, PetscInt n, PetscInt dim, const PetscReal Y[],
                                const int labels[], const PetscInt gidx[], PetscReal test_fraction,
                                PetscReal *accuracy);
