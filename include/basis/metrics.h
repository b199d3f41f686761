/*
  metrics.h - subspace quality of an embedding Y against exact eigenvectors V (DESIGN.md
  "Metrics"), all distributed over the rows: the Grassmann distance d_G with every
  principal angle, d_G over the non-trivial directions, d_G as the published tables
  compute it, and the orthogonality d_perp. The clustering scores are in cluster.h.
*/
#pragma once
#include <basis/error.h>
/* eval.c still finds the clustering scores through this header; once it includes
   cluster.h itself, this include can go */
#include <basis/cluster.h>

/* d_G of DESIGN.md, the principal angles (radians) and their sin^2, ascending, and the
   numerical ranks of centre(Y) and centre(V); theta, sin2 [min(KY, KV)] and the ranks
   may be NULL. Entries past min(rank_y, rank_v) are 0 (angles that do not exist). */
PetscErrorCode BasisMetricGrassmannAngles(MPI_Comm comm, PetscInt n, PetscInt KY, const PetscReal Y[],
                                          PetscInt KV, const PetscReal V[], PetscReal *dG, PetscReal theta[],
                                          PetscReal sin2[], PetscInt *rank_y, PetscInt *rank_v);
PetscErrorCode BasisMetricGrassmann(MPI_Comm comm, PetscInt n, PetscInt KY, const PetscReal Y[], PetscInt KV,
                                    const PetscReal V[], PetscReal *dG, PetscReal theta[]);
PetscErrorCode BasisMetricGrassmannRanks(MPI_Comm comm, PetscInt n, PetscInt KY, const PetscReal Y[],
                                         PetscInt KV, const PetscReal V[], PetscReal *dG, PetscReal theta[],
                                         PetscInt *rank_y, PetscInt *rank_v);
/* d_G over the non-trivial directions: V's first column (the trivial eigenvector) left
   out; theta, sin2 [min(KY, KV - 1)], rank_v that of centre(V without column 0). */
PetscErrorCode BasisMetricGrassmannNontrivial(MPI_Comm comm, PetscInt n, PetscInt KY, const PetscReal Y[],
                                              PetscInt KV, const PetscReal V[], PetscReal *dG,
                                              PetscReal theta[], PetscReal sin2[], PetscInt *rank_y,
                                              PetscInt *rank_v);
/* d_G as the published BASiS and SpectralNet tables compute it (Y mapped onto V). */
PetscErrorCode BasisMetricGrassmannPublished(MPI_Comm comm, PetscInt n, PetscInt KY, const PetscReal Y[],
                                             PetscInt KV, const PetscReal V[], PetscReal *dG);
PetscErrorCode BasisMetricOrthogonality(MPI_Comm comm, PetscInt n, PetscInt K, const PetscReal Y[],
                                        PetscReal *dperp);
