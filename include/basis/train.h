/*
  train.h - `basis train`: data-parallel BASiS training (DESIGN.md steps 1-5).
*/
#pragma once
#include <basis/model.h>
#include <basis/h5io.h>
#include <basis/mlp.h>

typedef struct _p_BasisTrainer *BasisTrainer;

PetscErrorCode BasisTrainerCreate(MPI_Comm comm, BasisTrainer *tr);
PetscErrorCode BasisTrainerSetFromOptions(BasisTrainer tr);
PetscErrorCode BasisTrainerSetUp(BasisTrainer tr);
PetscErrorCode BasisTrainerRun(BasisTrainer tr);
PetscErrorCode BasisTrainerGetModel(BasisTrainer tr, const BasisModel **model);
PetscErrorCode BasisTrainerDestroy(BasisTrainer *tr);
PetscErrorCode BasisTrainMain(MPI_Comm comm);

/* Exit status main() returns; set to BASIS_EXIT_CHECKPOINTED when training stopped on a
   signal after writing its checkpoint. */
extern int BasisExitStatus;
