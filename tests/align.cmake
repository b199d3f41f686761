# Alignment unit tests: known affine maps recovered by lsq and RANSAC, bad designs refused.
# Not MPI-dependent, so one rank is enough.
basis_add_mpi_test(test_align test_align.c RANKS 1)
