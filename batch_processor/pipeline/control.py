"""The run's stop state: whether it is stopping, and the first error that stopped it."""

from __future__ import annotations

import structlog

from batch_processor.errors import categorize, describe

log = structlog.get_logger("batch_processor.pipeline")


class RunControl:
    """Shared by the pipeline's parts so that any of them can stop the run, exactly once.

    A *stop* takes no new documents and lets in-flight ones finish; a *failure* also records
    the error that the run ends with (the first one: later ones are consequences).
    """

    __slots__ = ("error", "stopping")

    def __init__(self) -> None:
        self.stopping = False
        self.error: BaseException | None = None

    def stop(self) -> None:
        """Take no new documents."""
        self.stopping = True

    def fail(self, error: BaseException) -> None:
        """Stop the run because of ``error``; only the first error is kept and logged."""
        if self.error is None:
            self.error = error
            log.error("stopping the run", error=describe(error), category=str(categorize(error)))
        self.stopping = True
