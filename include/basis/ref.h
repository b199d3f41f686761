/*
  ref.h - the anchors and the reference eigenspace (DESIGN.md steps 1-2).
*/
#pragma once
#include <basis/graph.h>
#include <basis/h5io.h>

PetscErrorCode BasisReferenceSample(PetscInt N, PetscInt R, PetscInt l, PetscInt L, PetscInt seed,
                                    PetscInt ref_idx[], PetscInt pos[]);
PetscErrorCode BasisShardGatherRows(MPI_Comm comm, const BasisShard *shard, PetscInt nidx,
                                    const PetscInt idx[], float rows[]);
PetscErrorCode BasisReferenceSolve(MPI_Comm comm, const BasisGraphParams *graph, PetscInt m, PetscInt R,
                                   PetscInt D, const float ref_x[], PetscInt l, const PetscInt anchor_pos[],
                                   PetscReal phi_ref[], PetscReal lambda[]);
