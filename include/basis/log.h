/*
  log.h - every PETSc log event and stage of basis, in one place (-log_view).
*/
#pragma once
#include <petscsys.h>

/* Log events (registered by BasisLogRegister, called from BasisInitialize). Names <= 16 characters. */
extern PetscLogEvent BASIS_ReadShard, BASIS_WriteRows, BASIS_Generate, BASIS_BatchGraph, BASIS_BatchEig,
    BASIS_RefGraph, BASIS_RefSolve, BASIS_Align, BASIS_Forward, BASIS_Backward, BASIS_GradReduce, BASIS_Adam,
    BASIS_Embed, BASIS_Checkpoint, BASIS_ExactKnn, BASIS_ExactSolve, BASIS_Metrics, BASIS_Sample,
    BASIS_Landmarks;
extern PetscLogStage BASIS_StageRef, BASIS_StageTrain, BASIS_StageEmbed, BASIS_StageEval;

/* Register the events and stages above. Not collective; called once by BasisInitialize. */
PetscErrorCode BasisLogRegister(void);
