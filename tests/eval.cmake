# eval's data identity (issue 18 item 6) at 1, 2 and 4 ranks: another N or D is an error,
# another recorded input a warning; embeddings with the positional attribute of earlier
# versions still load; -seed of eval is deprecated for -kmeans_seed.
basis_add_cli_test(cli_eval_identity cli_eval_identity.sh TIMEOUT 600)
