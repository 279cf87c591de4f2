"""The contenders the benchmark suite runs beside the daemon, written as a user would."""
