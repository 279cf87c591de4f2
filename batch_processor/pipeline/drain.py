"""The retry queues: documents put in them, and drained: another try, the dead letter past it.

The document tasks put a document whose retryable error outlasted its retries in the classify
queue, and record one the classifier refused for good in the dead letter, through
:class:`RetryInbox` (built before the tasks and the drainer, which share it).

Store-queue entries are written again as they are (their classifications were already paid
for). Classify-queue entries are classified again through the pipeline's semaphore, like any
document. An entry whose drain fails gets one more attempt on its count; past
``max_attempts`` failed drains it moves to the dead letter and its documents are marked failed
with the last error and its category. An entry is removed only once its outcome is durable.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Literal, Protocol, TypeVar

import structlog
from pydantic import BaseModel

from batch_processor.documents.outcomes import Ended, reason
from batch_processor.errors import ConfigurationError, ErrorCategory, categorize, describe
from batch_processor.files.retry_queues import RetryQueue, RetryQueues
from batch_processor.models import (
    ClassifyRetry,
    DeadLetter,
    FailedDocument,
    SourceDocument,
    StoreRetry,
)
from batch_processor.pipeline.control import Admission
from batch_processor.pipeline.stats import RunStats
from batch_processor.pipeline.writer import ResultWriter, Settle

log = structlog.get_logger("batch_processor.pipeline.drain")
Item = TypeVar("Item", bound=BaseModel)


class StartDocument(Protocol):
    """The pipeline's way to start one document's classification under its semaphore."""

    def __call__(
        self,
        doc: SourceDocument,
        settle: Settle,
        on_exhausted: Callable[[ClassifyRetry], Awaitable[None]] | None = None,
    ) -> Awaitable[None]:
        """Start classifying ``doc``."""
        ...


class RetryInbox:
    """Puts documents in the classify queue or the dead letter (see the module docstring)."""

    def __init__(self, queues: RetryQueues, stats: RunStats) -> None:
        self._queues = queues
        self._stats = stats

    def queue_classify(self, item: ClassifyRetry) -> None:
        """Put a document whose classification failed after its retries in the classify queue."""
        self._queues.classify.add(item)
        log.warning(
            "classification failed, document queued",
            doc_id=item.doc.id,
            error=item.error,
            category=str(item.category),
        )

    def dead_letter_document(self, doc: SourceDocument, error: BaseException) -> None:
        """Record a document the classifier refused for good (DATA, PERMANENT), for a person.

        The dead letter keeps the document as a classify item, so it can be requeued once the
        cause is fixed; the caller marks the source failed.
        """
        item = ClassifyRetry(doc=doc, error=reason(error), category=categorize(error))
        self.dead_letter("classify", [doc.id], item.error, item.category, 1, item)

    def dead_letter(
        self,
        queue: Literal["classify", "store"],
        doc_ids: list[str],
        error: str,
        category: ErrorCategory,
        attempts: int,
        item: BaseModel,
    ) -> None:
        """Move an entry to the dead letter, counted and logged."""
        self._queues.dead_letter.append(
            DeadLetter(
                queue=queue,
                doc_ids=doc_ids,
                error=error,
                category=category,
                attempts=attempts,
                item=item.model_dump(mode="json"),
            )
        )
        self._stats.dead_lettered += len(doc_ids)
        log.error(
            "moved to dead letter",
            queue=queue,
            documents=len(doc_ids),
            attempts=attempts,
            error=error,
            category=str(category),
        )


class QueueDrainer:
    """Drains the classify and store queues of one batch directory."""

    def __init__(
        self,
        *,
        queues: RetryQueues,
        writer: ResultWriter,
        stats: RunStats,
        job_id: str,
        max_attempts: int,
        start: StartDocument,
        admission: Admission,
        inbox: RetryInbox,
    ) -> None:
        self._queues = queues
        self._inbox = inbox
        self._writer = writer
        self._stats = stats
        self._job_id = job_id
        self._max_attempts = max_attempts
        self._start = start
        self._admission = admission
        self._in_progress: set[str] = set()

    def queued_doc_ids(self) -> list[str]:
        """Ids of documents waiting in either queue (their claims must not be released)."""
        ids = [
            self._read(self._queues.classify, key) for key in self._queues.classify.pending_keys()
        ]
        doc_ids = [item.doc.id for item in ids if item is not None]
        for key in self._queues.store.pending_keys():
            entry = self._read(self._queues.store, key)
            if entry is not None:
                doc_ids += [r.doc_id for r in entry.results] + [f.doc_id for f in entry.failures]
        return doc_ids

    async def drain(self) -> None:
        """One pass over both queues: store first (cheapest), then classify."""
        await self.drain_store()
        for key in self._queues.classify.pending_keys():
            if key in self._in_progress:
                continue
            item = self._read(self._queues.classify, key)
            if item is None:
                continue
            self._in_progress.add(key)
            await self._admission.acquire(1)
            await self._start(
                item.doc,
                functools.partial(self._classified, key),
                functools.partial(self._classify_failed, key, item),
            )

    async def drain_store(self) -> None:
        """One pass over the store queue only (results already paid for, waiting for MongoDB)."""
        for key in self._queues.store.pending_keys():
            entry = self._read(self._queues.store, key)
            if entry is None:
                continue
            try:
                written = await self._writer.write(entry.results, entry.failures)
            except ConfigurationError:
                raise
            except Exception as exc:  # noqa: BLE001 - counted against the entry's attempts
                await self._store_failed(key, entry, exc)
                # MongoDB is most likely away: the other entries wait for the next drain.
                return
            self._queues.store.remove(key)
            not_stored = written.refused | written.lost
            self._stats.succeeded += sum(1 for r in entry.results if r.doc_id not in not_stored)
            self._stats.recovered_from_queues += len(entry.results) + len(entry.failures)
            log.info("store queue entry written", entry=key, results=len(entry.results))

    async def _store_failed(self, key: str, entry: StoreRetry, exc: BaseException) -> None:
        attempts = entry.attempts + 1
        error, category = reason(exc), categorize(exc)
        if attempts <= self._max_attempts:
            self._queues.store.replace(
                key,
                entry.model_copy(
                    update={"attempts": attempts, "error": error, "category": category}
                ),
            )
            log.warning(
                "store queue entry failed again; still queued",
                entry=key,
                documents=len(entry.results) + len(entry.failures),
                attempts=attempts,
                max_attempts=self._max_attempts,
                error=error,
            )
            return
        claims = {r.doc_id: r.claim for r in entry.results} | {
            f.doc_id: f.claim for f in entry.failures
        }
        self._inbox.dead_letter("store", list(claims), error, category, attempts, entry)
        # The results are safe in the dead letter; marking the sources failed needs MongoDB,
        # which just failed, so it is tried but not required.
        failures = [
            FailedDocument(
                doc_id=doc_id,
                error=f"dead-lettered after {attempts} store attempts: {error}",
                category=category,
                attempts=attempts,
                job_id=self._job_id,
                claim=claim,
            )
            for doc_id, claim in claims.items()
        ]
        try:
            await self._writer.write([], failures)
        except Exception as mark_error:  # noqa: BLE001 - best effort, see above
            log.warning("could not mark dead-lettered documents failed", error=describe(mark_error))
        self._queues.store.remove(key)

    def _classified(self, key: str, outcome: Ended) -> None:
        self._admission.release()
        self._in_progress.discard(key)
        if outcome is Ended.RELEASED:  # the run is stopping: the entry stays for the next drain
            return
        self._queues.classify.remove(key)
        self._stats.recovered_from_queues += 1

    async def _classify_failed(self, key: str, item: ClassifyRetry, retry: ClassifyRetry) -> None:
        attempts = item.attempts + 1
        if attempts <= self._max_attempts:
            self._queues.classify.replace(
                key,
                item.model_copy(
                    update={"attempts": attempts, "error": retry.error, "category": retry.category}
                ),
            )
            log.warning(
                "classify queue item failed again; still queued",
                entry=key,
                doc_id=item.doc.id,
                attempts=attempts,
                max_attempts=self._max_attempts,
                error=retry.error,
                category=str(retry.category),
            )
            self._admission.release()
            self._in_progress.discard(key)
            return
        self._inbox.dead_letter(
            "classify", [item.doc.id], retry.error, retry.category, attempts, item
        )
        failure = FailedDocument(
            doc_id=item.doc.id,
            error=f"dead-lettered after {attempts} classify rounds: {retry.error}",
            category=retry.category,
            attempts=attempts,
            job_id=self._job_id,
            claim=item.doc.claim,
        )
        self._writer.add(failure, functools.partial(self._classified, key))

    def _read(self, queue: RetryQueue[Item], key: str) -> Item | None:
        try:
            return queue.get(key)
        except ValueError as exc:
            kept = queue.set_aside(key)
            log.error(
                "unreadable retry entry set aside", queue=queue.name, kept=str(kept), error=str(exc)
            )
            return None
