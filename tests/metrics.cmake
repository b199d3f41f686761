# Embedding metrics (src/metrics.c): d_G, d_perp, k-means, NMI, ACC, linear probe.
basis_add_mpi_test(test_metrics test_metrics.c)
