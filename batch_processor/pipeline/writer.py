"""The result writer: buffers outcomes and writes them to MongoDB in bulk, losing none.

Classification tasks hand their outcome to :meth:`ResultWriter.add` and move on; one writer task
flushes every ``flush_size`` outcomes or ``flush_interval`` seconds, whichever comes first: one
bulk upsert of results, then one bulk mark of their sources (done only after the result is
stored), then one bulk mark of failures. If MongoDB still refuses after the retries, the whole
flush goes to the ``store`` retry queue with its results, so no computed classification is lost.
Each outcome carries a ``settle`` callback, called once the outcome is durable somewhere.

Handing an outcome over (:meth:`ResultWriter.add`) never waits: the pipeline's admission bound
already limits what can be buffered, and a hand-over that cannot be interrupted halfway cannot
leave a document neither stored nor given back. If the writer task itself dies (say the store
queue cannot be written during an outage), every outcome it still holds is settled
``released``: its claim is given back and the document is classified again later.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from batch_processor.documents.outcomes import Ended, store_outcomes
from batch_processor.documents.ports import Sink
from batch_processor.errors import ConfigurationError, categorize, describe
from batch_processor.files.retry_queues import RetryQueues
from batch_processor.models import ClassifiedDocument, FailedDocument, StoreRetry
from batch_processor.outage import DatabaseCalls
from batch_processor.pipeline.stats import RunStats

Outcome = ClassifiedDocument | FailedDocument
Settle = Callable[[Ended], None]

log = structlog.get_logger("batch_processor.pipeline.writer")


@dataclass(frozen=True, slots=True)
class Written:
    """What one write left undone: ids refused as data (marked failed) and ids fenced off."""

    refused: set[str]
    lost: set[str]


@dataclass(frozen=True, slots=True)
class _Pending:
    outcome: Outcome
    settle: Settle


class ResultWriter:
    """Bulk writes of results and marks, with the store retry queue as the fallback."""

    def __init__(
        self,
        *,
        sink: Sink,
        db: DatabaseCalls,
        queues: RetryQueues,
        stats: RunStats,
        flush_size: int,
        flush_interval: float,
        on_fatal: Callable[[BaseException], None],
    ) -> None:
        self._sink = sink
        self._on_fatal = on_fatal
        self._db = db
        self._queues = queues
        self._stats = stats
        self._flush_size = flush_size
        self._flush_interval = flush_interval
        self._buffer: list[_Pending] = []
        self._writing: list[_Pending] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()  # set after each flush: waiters of drained() look again
        self._closed = False

    @property
    def holding(self) -> int:
        """Outcomes handed over and not yet durable."""
        return len(self._buffer) + len(self._writing)

    def add(self, outcome: Outcome, settle: Settle) -> None:
        """Take an outcome for the next flush (never waits; see the module docstring)."""
        if self._closed:
            raise RuntimeError("the result writer is closed")
        self._buffer.append(_Pending(outcome, settle))
        if len(self._buffer) >= self._flush_size:
            self._wake.set()

    def flush_soon(self, needed: int) -> None:
        """Flush now rather than at the timer if that ends the ``needed`` documents waited for.

        Admission asks this whenever it is full. Flushing a handful of results early would
        not make room for a page and would cost two round trips each time; the size and
        the timer flush them instead.
        """
        if self._buffer and len(self._buffer) >= needed:
            self._wake.set()

    async def drained(self) -> None:
        """Wait until everything handed over so far is durable (written or queued)."""
        while self.holding:
            self._wake.set()
            self._idle.clear()
            await self._idle.wait()

    async def run(self) -> None:
        """Flush until closed, then flush what is left; give back what it holds if it dies."""
        try:
            while not self._closed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._flush_interval)
                self._wake.clear()
                await self.flush()
                self._idle.set()
            await self.flush(everything=True)
        except BaseException:
            self._give_back()
            raise

    def close(self) -> None:
        """Ask :meth:`run` to finish after a last flush."""
        self._closed = True
        self._wake.set()

    async def flush(self, *, everything: bool = False) -> None:
        """Write one batch, then more only while full batches wait (``everything``: all).

        Results that arrive while a batch is written wait for the next size or timer flush
        rather than going out in a trickle of small writes, two round trips each.
        """
        first = True
        while self._buffer and (first or everything or len(self._buffer) >= self._flush_size):
            first = False
            batch, self._buffer = self._buffer[: self._flush_size], self._buffer[self._flush_size :]
            self._writing = batch
            await self._flush_batch(batch)
            self._writing = []

    def _give_back(self) -> None:
        pending, self._buffer, self._writing = self._writing + self._buffer, [], []
        if pending:
            log.error("result writer stopped: giving back what it held", documents=len(pending))
        for item in pending:
            item.settle(Ended.RELEASED)

    async def _flush_batch(self, batch: list[_Pending]) -> None:
        results = [p.outcome for p in batch if isinstance(p.outcome, ClassifiedDocument)]
        failures = [p.outcome for p in batch if isinstance(p.outcome, FailedDocument)]
        try:
            written = await self.write(results, failures)
        except Exception as exc:  # noqa: BLE001 - any store failure must land in the queue
            if isinstance(exc, ConfigurationError):
                # The results still go to the queue below; the run itself must stop.
                self._on_fatal(exc)
            self._queues.store.add(
                StoreRetry(
                    results=results,
                    failures=failures,
                    error=describe(exc),
                    category=categorize(exc),
                )
            )
            self._stats.queued_store += len(batch)
            log.warning(
                "store failed, results queued",
                documents=len(batch),
                error=describe(exc),
                category=str(categorize(exc)),
            )
            self._writing = []
            for pending in batch:
                pending.settle(Ended.QUEUED_STORE)
            return
        self._writing = []
        for pending in batch:
            doc_id = pending.outcome.doc_id
            if doc_id in written.lost:
                pending.settle(Ended.LOST_LEASE)
            elif isinstance(pending.outcome, FailedDocument) or doc_id in written.refused:
                pending.settle(Ended.FAILED)
            else:
                self._stats.succeeded += 1
                pending.settle(Ended.STORED)

    async def write(
        self, results: list[ClassifiedDocument], failures: list[FailedDocument]
    ) -> Written:
        """Store results, mark them done, mark failures; say which were refused or fenced off.

        A write fenced off (another worker took the document over) is dropped, counted as
        ``lost_lease`` and logged. Raises the last error if MongoDB is still unavailable
        after the retries.
        """
        done = await store_outcomes(self._sink, self._db.brief, results, failures)
        for failure in done.failures:
            self._stats.record_failure(failure.category)
        lost = done.lost
        if lost:
            self._stats.lost_lease += len(lost)
            log.warning(
                "lease lost: another worker took these documents over; writes dropped",
                documents=len(lost),
                doc_ids=sorted(lost)[:10],
            )
        failed = {failure.doc_id for failure in done.failures}
        return Written(refused=failed - {f.doc_id for f in failures}, lost=lost)
