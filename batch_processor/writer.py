"""The result writer: buffers outcomes and writes them to MongoDB in bulk, losing none.

Classification tasks hand their outcome to :meth:`ResultWriter.add` and move on; one writer task
flushes every ``flush_size`` outcomes or ``flush_interval`` seconds, whichever comes first: one
bulk upsert of results, then one bulk mark of their sources (done only after the result is
stored), then one bulk mark of failures. If MongoDB still refuses after the retries, the whole
flush goes to the ``store`` retry queue with its results, so no computed classification is lost.
Each outcome carries a ``settle`` callback, called once the outcome is durable somewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import structlog

from .errors import ConfigurationError, categorize, describe
from .models import ClassifiedDocument, FailedDocument, StoreRetry
from .retry import RetryPolicy, announce_retries
from .retry_queues import RetryQueues
from .stats import RunStats
from .store import MongoStore

Outcome = ClassifiedDocument | FailedDocument
Settle = Callable[[str], None]
T = TypeVar("T")

log = structlog.get_logger("batch_processor.writer")


@dataclass(frozen=True, slots=True)
class _Pending:
    outcome: Outcome
    settle: Settle


class ResultWriter:
    """Bulk writes of results and marks, with the store retry queue as the fallback."""

    def __init__(
        self,
        *,
        store: MongoStore,
        policy: RetryPolicy,
        queues: RetryQueues,
        stats: RunStats,
        flush_size: int,
        flush_interval: float,
        on_fatal: Callable[[BaseException], None],
    ) -> None:
        self._store = store
        self._on_fatal = on_fatal
        self._policy = policy
        self._queues = queues
        self._stats = stats
        self._flush_size = flush_size
        self._flush_interval = flush_interval
        self._buffer: list[_Pending] = []
        self._wake = asyncio.Event()
        self._room = asyncio.Condition()
        self._closed = False

    async def add(self, outcome: Outcome, settle: Settle) -> None:
        """Queue an outcome for the next flush; wait if the buffer is far ahead of MongoDB."""
        async with self._room:
            # Backpressure: never hold more than a few flushes' worth of results in memory.
            await self._room.wait_for(lambda: len(self._buffer) < 4 * self._flush_size)
            self._buffer.append(_Pending(outcome, settle))
        if len(self._buffer) >= self._flush_size:
            self._wake.set()

    async def run(self) -> None:
        """Flush until closed, then flush what is left."""
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._flush_interval)
            self._wake.clear()
            await self.flush()
        await self.flush()

    async def close(self) -> None:
        """Ask :meth:`run` to finish after a last flush."""
        self._closed = True
        self._wake.set()

    async def flush(self) -> None:
        """Write everything buffered now."""
        while self._buffer:
            batch, self._buffer = self._buffer[: self._flush_size], self._buffer[self._flush_size :]
            async with self._room:
                self._room.notify_all()
            await self._flush_batch(batch)

    async def _flush_batch(self, batch: list[_Pending]) -> None:
        results = [p.outcome for p in batch if isinstance(p.outcome, ClassifiedDocument)]
        failures = [p.outcome for p in batch if isinstance(p.outcome, FailedDocument)]
        try:
            refused = await self.write(results, failures)
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
            for pending in batch:
                pending.settle("queued_store")
            return
        for pending in batch:
            outcome = pending.outcome
            if isinstance(outcome, FailedDocument) or outcome.doc_id in refused:
                pending.settle("failed")
            else:
                self._stats.succeeded += 1
                pending.settle("stored")

    async def write(
        self, results: list[ClassifiedDocument], failures: list[FailedDocument]
    ) -> set[str]:
        """Store results, mark them done, mark failures; return ids MongoDB refused as data.

        Raises the last error if MongoDB is still unavailable after the retries.
        """
        refused = await self._retrying(lambda: self._store.store_results(results))
        job_of = {result.doc_id: result.job_id for result in results}
        failures = failures + [
            FailedDocument(
                doc_id=doc_id,
                error=describe(error),
                category=error.category,
                attempts=1,
                job_id=job_of[doc_id],
            )
            for doc_id, error in refused.items()
        ]
        stored = [result for result in results if result.doc_id not in refused]
        await self._retrying(lambda: self._store.mark_done(stored))
        await self._retrying(lambda: self._store.mark_failed(failures))
        for failure in failures:
            self._stats.record_failure(failure.category)
        return set(refused)

    async def _retrying(self, operation: Callable[[], Awaitable[T]]) -> T:
        hook = announce_retries("retrying MongoDB write", self._stats.add_db_retry)
        result, _ = await self._policy.call(operation, on_retry=hook)
        return result
