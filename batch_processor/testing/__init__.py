"""Test tools that ship with the package: the LLM simulator, sample data, in-memory fakes.

Nothing in the daemon imports them; tests, benchmarks and the ``demo`` command do.
"""
