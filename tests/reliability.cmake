# Reliability (issue 7): bad input for every subcommand at 1/2/4 ranks (no hang, exit 1,
# one clear message, no output left, inputs untouched).
basis_add_cli_test(cli_bad_args cli_bad_args.sh TIMEOUT 900)
# kill -9 (whole job, or one rank) after a checkpoint, then -resume: bitwise identical
# to an uninterrupted run; a .partial model is never accepted.
basis_add_cli_test(cli_kill_resume cli_kill_resume.sh TIMEOUT 600)
