# graph module: kNN (knn.c), graph assembly (graph.c), the eigensolver object (eigensolver.c): tests/test_graph.c;
# -knn_gemm float/bf16/auto train bitwise the same models: tests/cli_knn_gemm.sh
basis_add_mpi_test(test_graph test_graph.c)
basis_add_cli_test(cli_knn_gemm cli_knn_gemm.sh TIMEOUT 300)
# the landmark degree of embed's trivial column against the graph rule: tests/test_landmark.c
basis_add_mpi_test(test_landmark test_landmark.c RANKS 1)
