basis_add_cli_test(cli_pipeline cli_pipeline.sh TIMEOUT 900)
basis_add_mpi_test(test_train test_train.c TIMEOUT 300)
