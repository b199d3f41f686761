/*
  metrics.h - quality of an embedding (DESIGN.md "Metrics"), all distributed over the
  rows: Grassmann distance d_G, orthogonality d_perp, k-means clustering with NMI and
  ACC (Hungarian matching) against labels, and a linear probe.
*/
#pragma once
#include <basis/error.h>
#include <basis/rng.h>

PetscErrorCode BasisMetricGrassmann(MPI_Comm comm, PetscInt n, PetscInt KY, const PetscReal Y[], PetscInt KV,
                                    const PetscReal V[], PetscReal *dG, PetscReal theta[]);
/* d_G, the angles, and the numerical ranks of centre(Y) and centre(V) (rank_y, rank_v may
   be NULL): fewer than min(KY, KV) angles exist when a centred span is rank deficient. */
PetscErrorCode BasisMetricGrassmannRanks(MPI_Comm comm, PetscInt n, PetscInt KY, const PetscReal Y[],
                                         PetscInt KV, const PetscReal V[], PetscReal *dG, PetscReal theta[],
                                         PetscInt *rank_y, PetscInt *rank_v);
PetscErrorCode BasisMetricOrthogonality(MPI_Comm comm, PetscInt n, PetscInt K, const PetscReal Y[],
                                        PetscReal *dperp);
PetscErrorCode BasisKMeans(MPI_Comm comm, PetscInt n, PetscInt dim, const PetscReal Y[], PetscInt nclusters,
                           PetscInt restarts, PetscInt seed, int assign[], PetscReal *inertia);
PetscErrorCode BasisMetricNMI(MPI_Comm comm, PetscInt n, const int labels[], const int assign[],
                              PetscReal *nmi);
PetscErrorCode BasisMetricACC(MPI_Comm comm, PetscInt n, const int labels[], const int assign[],
                              PetscReal *acc);
PetscErrorCode BasisLinearProbe(MPI_Comm comm, PetscInt n, PetscInt dim, const PetscReal Y[],
                                const int labels[], const PetscInt gidx[], PetscReal test_fraction,
                                PetscReal *accuracy);
