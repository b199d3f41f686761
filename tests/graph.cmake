# graph module: kNN (knn.c), graph assembly (graph.c), the eigensolver object (eigensolver.c): tests/test_graph.c
basis_add_mpi_test(test_graph test_graph.c)
