# MLP unit tests: finite-difference gradient, forward and Adam against references.
# Not MPI-dependent, so one rank is enough.
basis_add_mpi_test(test_mlp test_mlp.c RANKS 1)
# The bfloat16 products (-mlp_precision bf16) against float: forward, gradient (several
# passes), a short training run. Exit 77 (skipped) on a CPU without bfloat16 instructions.
basis_add_mpi_test(test_mlp_bf16 test_mlp_bf16.c RANKS 1)
set_tests_properties(test_mlp_bf16_np1 PROPERTIES SKIP_RETURN_CODE 77)
# -mlp_precision float/bf16/auto from the command line, the fallback without bfloat16
# instructions (bitwise float), embed -mlp_precision bf16: tests/cli_mlp_precision.sh
basis_add_cli_test(cli_mlp_precision cli_mlp_precision.sh TIMEOUT 300)
