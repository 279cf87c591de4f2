"""The command line: ``batch-processor [run|demo|status|queue]`` (see :mod:`.app`)."""

from batch_processor.cli.app import main

__all__ = ["main"]
