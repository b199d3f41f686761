# The model file: the format-1 fixture (tests/data/README.md) still loads with every field
# intact; the current format round-trips bitwise and names every parameter.
basis_add_mpi_test(test_model test_model.c ARGS ${CMAKE_CURRENT_SOURCE_DIR}/data/model-format1.h5)
# Damaged values with intact checksums (NaN weights, ...) are refused before any output.
basis_add_cli_test(cli_model_values cli_model_values.sh TIMEOUT 300)
