# MLP unit tests: finite-difference gradient, forward and Adam against references.
# Not MPI-dependent, so one rank is enough.
basis_add_mpi_test(test_mlp test_mlp.c RANKS 1)
