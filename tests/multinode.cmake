# The jobs/ scripts on a real multi-node Slurm (scripts/cluster-local: a head node and 3
# compute nodes in their own network + UTS namespaces, TCP between them), started and
# always torn down by the test itself: the pipeline on 2 nodes x 2 ranks bitwise equal to
# 1 node x 4 ranks, and a node powered off mid-training (requeue, resume, bitwise equal).
# Needs root (else SKIP); installs Slurm/munge with apt when missing. About 3-4 minutes.
# Named slurm_* so that "ctest -E slurm" skips it together with slurm_jobs.
basis_add_cli_test(slurm_multinode multinode.sh TIMEOUT 900)
