# basis generate: -data_seed (formerly -seed, kept through PetscOptionsDeprecated) and its
# named attributes.
basis_add_cli_test(cli_generate_seed cli_generate_seed.sh TIMEOUT 120)
