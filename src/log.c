/*
  log.c - registration of every basis log event and stage (include/basis/log.h). Timing
  in basis is PETSc logging only: each event is bracketed in the function that does the
  work, and -log_view prints them; scripts/bench reads the same events.
*/
#include <basis/log.h>

PetscLogEvent BASIS_ReadShard, BASIS_WriteRows, BASIS_Generate, BASIS_BatchGraph, BASIS_BatchEig,
    BASIS_RefGraph, BASIS_RefSolve, BASIS_Align, BASIS_Forward, BASIS_Backward, BASIS_GradReduce, BASIS_Adam,
    BASIS_Embed, BASIS_Checkpoint, BASIS_ExactKnn, BASIS_ExactSolve, BASIS_Metrics, BASIS_Sample,
    BASIS_Landmarks;
PetscLogStage BASIS_StageRef, BASIS_StageTrain, BASIS_StageEmbed, BASIS_StageEval;

/*
  BasisLogRegister - register the events and stages. Not collective; once per process.
*/
PetscErrorCode BasisLogRegister(void)
{
  PetscClassId cls;

  PetscFunctionBeginUser;
  PetscCall(PetscClassIdRegister("basis", &cls));
  PetscCall(PetscLogEventRegister("BasisReadShard", cls, &BASIS_ReadShard));
  PetscCall(PetscLogEventRegister("BasisWriteRows", cls, &BASIS_WriteRows));
  PetscCall(PetscLogEventRegister("BasisGenerate", cls, &BASIS_Generate));
  PetscCall(PetscLogEventRegister("BasisSample", cls, &BASIS_Sample));
  PetscCall(PetscLogEventRegister("BasisBatchGraph", cls, &BASIS_BatchGraph));
  PetscCall(PetscLogEventRegister("BasisBatchEig", cls, &BASIS_BatchEig));
  PetscCall(PetscLogEventRegister("BasisRefGraph", cls, &BASIS_RefGraph));
  PetscCall(PetscLogEventRegister("BasisRefSolve", cls, &BASIS_RefSolve));
  PetscCall(PetscLogEventRegister("BasisAlign", cls, &BASIS_Align));
  PetscCall(PetscLogEventRegister("BasisForward", cls, &BASIS_Forward));
  PetscCall(PetscLogEventRegister("BasisBackward", cls, &BASIS_Backward));
  PetscCall(PetscLogEventRegister("BasisGradReduce", cls, &BASIS_GradReduce));
  PetscCall(PetscLogEventRegister("BasisAdam", cls, &BASIS_Adam));
  PetscCall(PetscLogEventRegister("BasisEmbed", cls, &BASIS_Embed));
  PetscCall(PetscLogEventRegister("BasisCheckpoint", cls, &BASIS_Checkpoint));
  PetscCall(PetscLogEventRegister("BasisExactKnn", cls, &BASIS_ExactKnn));
  PetscCall(PetscLogEventRegister("BasisExactSolve", cls, &BASIS_ExactSolve));
  PetscCall(PetscLogEventRegister("BasisMetrics", cls, &BASIS_Metrics));
  PetscCall(PetscLogEventRegister("BasisLandmarks", cls, &BASIS_Landmarks));
  PetscCall(PetscLogStageRegister("BasisReference", &BASIS_StageRef));
  PetscCall(PetscLogStageRegister("BasisTrain", &BASIS_StageTrain));
  PetscCall(PetscLogStageRegister("BasisEmbed", &BASIS_StageEmbed));
  PetscCall(PetscLogStageRegister("BasisEval", &BASIS_StageEval));
  PetscFunctionReturn(0);
}
