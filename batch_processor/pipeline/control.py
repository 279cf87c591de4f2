"""How a run is held in check: its stop state, and the bound on documents in flight.

:class:`RunControl` says whether the run is stopping and keeps the first error that stopped it.
:class:`Admission` bounds how many documents a worker may hold between claiming them and their
end. A document is admitted before it is claimed (a page at a time) or taken from the classify
queue, and leaves when it ends: stored, failed, queued, or given back. The bound covers the
whole path, classification *and* storage, so a slow writer or a MongoDB outage stops the
claiming instead of letting claims, batch files and buffered results run ahead of the work;
a dead worker strands at most this many documents, and memory stays flat.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

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


class Admission:
    """A counter of documents in progress with an upper bound (see the module docstring)."""

    def __init__(self, limit: int, *, on_full: Callable[[int], None] = lambda short: None) -> None:
        if limit < 1:
            raise ValueError("the admission limit must be at least 1")
        self.limit = limit
        self.held = 0
        self._on_full = on_full
        self._changed = asyncio.Event()

    async def acquire(self, count: int) -> None:
        """Wait until ``count`` more documents fit (a batch larger than the limit fits alone)."""
        while self.held and self.held + count > self.limit:
            # Tell whoever ends documents (the writer) how many must end for this to fit.
            self._on_full(self.held + count - self.limit)
            self._changed.clear()
            await self._changed.wait()
        self.held += count

    def release(self, count: int = 1) -> None:
        """``count`` documents ended."""
        self.held = max(0, self.held - count)
        self._changed.set()
