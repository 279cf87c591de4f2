"""On-demand benchmarks (not run in CI); ``bench/suite.py`` runs them all."""
