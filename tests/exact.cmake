# exact.c and eval.c: ring kNN vs brute force, exact eigenvectors vs known answers and a
# dense LAPACK solve, refusal of unconverged solves; `basis exact` + `basis eval` end to end.
basis_add_mpi_test(test_exact test_exact.c)
basis_add_cli_test(cli_exact_eval cli_exact_eval.sh)
