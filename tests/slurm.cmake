# The Slurm job scripts (jobs/) against a real single-node Slurm on localhost, started and
# always stopped by the test itself (scripts/slurm-local, which apt-installs slurmctld,
# slurmd, slurm-client and munge when missing; needs root). About 3-5 minutes.
basis_add_cli_test(slurm_jobs slurm_jobs.sh TIMEOUT 900)
