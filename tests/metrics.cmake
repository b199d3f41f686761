# Embedding metrics (src/metrics.c: d_G and its variants, d_perp) and clustering scores
# (src/cluster.c: k-means, NMI, ACC, linear probe).
basis_add_mpi_test(test_metrics test_metrics.c)
