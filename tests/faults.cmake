# Issue 18: full disks (a tmpfs; root only), two runs writing one output, hostile output
# and input paths, integer options out of range, unknown options, -options_file, at 1/2/4
# ranks: exit 1, one clear message, no output or temporary or lock left, inputs untouched.
basis_add_cli_test(cli_faults cli_faults.sh TIMEOUT 900)
