# Reliability (issue 7): bad input for every subcommand at 1/2/4 ranks (no hang, exit 1,
# one clear message, no output left, inputs untouched).
basis_add_cli_test(cli_bad_args cli_bad_args.sh TIMEOUT 900)
# kill -9 (whole job, or one rank) after a checkpoint, then -resume: bitwise identical
# to an uninterrupted run; a .partial model is never accepted.
basis_add_cli_test(cli_kill_resume cli_kill_resume.sh TIMEOUT 600)
# Fuzz of the HDF5 reading paths: ~100 mutants of a data file and a model file (truncated,
# bytes flipped, shapes/types/attributes changed) through basis info/embed; each run must
# succeed with a correct-shape embedding or fail with exit 1 and a message, never crash or hang.
add_test(NAME fuzz_h5 COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_h5.py $<TARGET_FILE:basis>
         WORKING_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR})
set_tests_properties(fuzz_h5 PROPERTIES TIMEOUT 600 PROCESSORS 2
                     ENVIRONMENT "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;OMPI_MCA_btl=self,vader")
# Units: X and c X (c = 2^+-100, 1e+-30, 3.7e25, 1e-40) train and embed to the same result
# up to rounding (bitwise for powers of two) at 1/2/4 ranks.
basis_add_cli_test(cli_units cli_units.sh TIMEOUT 600)
