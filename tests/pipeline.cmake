basis_add_cli_test(cli_pipeline cli_pipeline.sh TIMEOUT 900)
