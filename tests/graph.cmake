# graph module: kNN, batch eigensolver, distributed assembly + SLEPc solve (tests/test_graph.c)
basis_add_mpi_test(test_graph test_graph.c)
