"""The one processing loop: page, claim, save, classify under a semaphore, write, checkpoint.

A producer task reads pages from MongoDB one page ahead; the loop claims each page, saves it as
a batch file, and starts one task per document as soon as a semaphore slot is free, so no
document waits for the slowest one of its batch. Outcomes go to the :class:`ResultWriter`; a
batch file is deleted when its last document has ended. Every ``checkpoint_interval`` finished
documents (and at exit) a checkpoint is written. Retry queues are drained at the start and every
``queue_drain_interval`` seconds (see :mod:`batch_processor.drain`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

import structlog

from .batch_files import BatchFiles, CorruptBatchFileError
from .checkpoints import CheckpointStore
from .classifiers import Classifier
from .documents import extract_text
from .drain import QueueDrainer
from .errors import (
    BatchProcessorError,
    BudgetExhaustedError,
    ConfigurationError,
    DataError,
    categorize,
    describe,
    is_retryable,
)
from .models import (
    Checkpoint,
    ClassifiedDocument,
    ClassifyRetry,
    FailedDocument,
    JobStatus,
    SourceDocument,
    utcnow,
)
from .retry import RetryPolicy, Sleep, announce_retries, should_retry, wait_for
from .retry_queues import RetryQueues
from .stats import RunStats
from .store import MongoStore
from .telemetry import Telemetry
from .tracker import BatchTracker, FinishedBatch
from .writer import ResultWriter, Settle

T = TypeVar("T")
log = structlog.get_logger("batch_processor.pipeline")

#: A document given back untouched (budget spent, or the run stopping): its claim is released.
RELEASED = "released"


@dataclass(frozen=True, slots=True)
class PipelineOptions:
    """The pipeline's knobs, as plain values (see Settings for their meaning)."""

    batch_size: int = 100
    concurrent: int = 8
    text_field: str = "messages"
    max_text_chars: int = 20_000
    checkpoint_interval: int = 50
    flush_size: int = 100
    flush_interval: float = 1.0
    queue_max_attempts: int = 3
    queue_drain_interval: float = 60.0
    claim_ttl: float = 3600.0
    shutdown_grace: float = 30.0


def reason(error: BaseException) -> str:
    """The failure reason stored with a document: our message, or the exception's first line."""
    return error.message if isinstance(error, BatchProcessorError) else describe(error)


class Pipeline:
    """One job: drains the queues, finishes recovered batch files, then pages until done."""

    def __init__(
        self,
        *,
        store: MongoStore,
        classifier: Classifier,
        batch_files: BatchFiles,
        checkpoints: CheckpointStore,
        queues: RetryQueues,
        job_id: str,
        worker_id: str,
        options: PipelineOptions,
        classify_policy: RetryPolicy,
        db_policy: RetryPolicy,
        stats: RunStats | None = None,
        sleep: Sleep = asyncio.sleep,
        on_progress: Callable[[RunStats], None] | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.job_id = job_id
        self.worker_id = worker_id
        self.stats = stats or RunStats()
        self._store = store
        self._classifier = classifier
        self._files = batch_files
        self._checkpoints = checkpoints
        self._options = options
        self._classify_policy = classify_policy
        self._db_policy = db_policy
        self._sleep = sleep
        self._on_progress = on_progress
        self._telemetry = telemetry
        self._started_at: datetime = utcnow()
        self._slots = asyncio.Semaphore(options.concurrent)
        self._tasks: set[asyncio.Task[None]] = set()
        self._tracker = BatchTracker(batch_files, on_finished=self._batch_finished)
        self._writer = ResultWriter(
            store=store,
            policy=db_policy,
            queues=queues,
            stats=self.stats,
            flush_size=options.flush_size,
            flush_interval=options.flush_interval,
            on_fatal=self._stop,
        )
        self._drainer = QueueDrainer(
            queues=queues,
            writer=self._writer,
            stats=self.stats,
            job_id=job_id,
            max_attempts=options.queue_max_attempts,
            start=self._start,
        )
        self._position: str | None = None
        self._sequence = 0
        self._since_checkpoint = 0
        self._fatal: BaseException | None = None
        self._stopping = False
        self._released: list[str] = []
        self._grace_timer: asyncio.TimerHandle | None = None

    # -- the run -------------------------------------------------------------------------

    async def run(self, *, recover: bool = False) -> RunStats:
        """Process everything pending; with ``recover``, first finish the old batch files."""
        self._save_checkpoint(JobStatus.RUNNING)
        writer = asyncio.create_task(self._writer.run(), name="result-writer")
        drainer: asyncio.Task[None] | None = None
        try:
            await self._drainer.drain()
            if recover:
                await self._recover_batch_files()
            await self._release_claims()
            drainer = asyncio.create_task(self._drain_periodically(), name="queue-drainer")
            await self._process_pending()
        except Exception as exc:  # noqa: BLE001 - finish in-flight work first, then re-raise
            self._stop(exc)
        finally:
            if drainer is not None:
                drainer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await drainer
            await self._wait_for_tasks()
            if self._grace_timer is not None:
                self._grace_timer.cancel()
            await self._writer.close()
            try:
                await writer
            except Exception as exc:  # noqa: BLE001 - recorded, re-raised below
                self._stop(exc)
            await self._release_given_back()
            consistent = not self._tracker.names()
            self._save_checkpoint(JobStatus.FINISHED if consistent else JobStatus.RUNNING)
        self.stats.finish()
        if self._fatal is not None:
            raise self._fatal
        return self.stats

    def stop(self, *, now: bool = False) -> None:
        """Take no new documents; in-flight ones finish and are stored.

        They get ``shutdown_grace`` seconds; then, or at once with ``now``, the rest are
        cancelled and given back unprocessed (their claims released), so the job still ends
        with a consistent checkpoint.
        """
        self._stopping = True
        if now:
            self._cancel_in_flight()
        elif self._grace_timer is None:
            loop = asyncio.get_running_loop()
            self._grace_timer = loop.call_later(
                self._options.shutdown_grace, self._cancel_in_flight
            )

    def _cancel_in_flight(self) -> None:
        if self._tasks:
            log.warning("giving back documents still in flight", documents=len(self._tasks))
        for task in self._tasks:
            task.cancel()

    def _stop(self, error: BaseException) -> None:
        if self._fatal is None:
            self._fatal = error
            log.error("stopping the run", error=describe(error), category=str(categorize(error)))
        self._stopping = True

    async def _wait_for_tasks(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _drain_periodically(self) -> None:
        while True:
            await self._sleep(self._options.queue_drain_interval)
            try:
                await self._drainer.drain()
            except Exception as exc:  # noqa: BLE001 - a drain failure stops the run cleanly
                self._stop(exc)
                return

    # -- paging and submission ----------------------------------------------------------

    async def _process_pending(self) -> None:
        pages: asyncio.Queue[list[SourceDocument] | None] = asyncio.Queue()
        prefetch = asyncio.Semaphore(1)  # one page read ahead while the current one runs
        producer = asyncio.create_task(self._produce(pages, prefetch), name="page-reader")
        try:
            while not self._stopping and (page := await pages.get()) is not None:
                prefetch.release()
                await self._submit_page(page)
        finally:
            if not producer.done():
                producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer

    async def _produce(
        self, pages: asyncio.Queue[list[SourceDocument] | None], prefetch: asyncio.Semaphore
    ) -> None:
        """Read passes over the pending documents until a pass finds none."""
        try:
            while not self._stopping:
                found = False
                async for page in self._pages():
                    await prefetch.acquire()
                    pages.put_nowait(page)
                    found = True
                if not found:
                    return
        finally:
            pages.put_nowait(None)

    async def _pages(self) -> AsyncIterator[list[SourceDocument]]:
        """One pass of pages; a dead cursor is reopened after the last ``_id`` seen."""
        after: str | None = None
        attempt = 0
        while True:
            try:
                async for page in self._store.pages(self._options.batch_size, after=after):
                    attempt = 0
                    after = self._position = page[-1].id
                    yield page
                return
            except BatchProcessorError as exc:
                attempt += 1
                if not should_retry(exc, attempt, self._db_policy.max_attempts):
                    raise
                self.stats.add_db_retry(exc)
                delay = wait_for(
                    exc, attempt, base=self._db_policy.base_delay, cap=self._db_policy.max_delay
                )
                log.info("reopening page cursor", attempt=attempt, error=describe(exc))
                await self._sleep(delay)

    async def _submit_page(self, page: list[SourceDocument]) -> None:
        self.stats.fetched += len(page)
        ids = [doc.id for doc in page]
        self._sequence += 1
        token = f"{self.job_id}:{self._sequence}"
        claimed = await self._db(
            lambda: self._store.claim(
                ids, job_id=self.job_id, worker_id=self.worker_id, token=token
            )
        )
        docs = [doc for doc in page if doc.id in claimed]
        if not docs:
            return
        try:
            name = self._files.save(self.job_id, self._sequence, docs)
        except BatchProcessorError:
            # Not saved means not safe: give the claims back before stopping.
            with contextlib.suppress(BatchProcessorError):
                await self._store.release_ids([doc.id for doc in docs], self.job_id)
            raise
        self._tracker.add(name, [doc.id for doc in docs])
        self.stats.batches += 1
        await self._start_all(docs)

    async def _start_all(self, docs: list[SourceDocument]) -> None:
        """Start each document in turn; once the run stops, give the rest back unprocessed."""
        for index, doc in enumerate(docs):
            if self._stopping:
                for rest in docs[index:]:
                    self._settle(rest.id, RELEASED)
                return
            await self._start(doc, functools.partial(self._settle, doc.id))

    async def _start(
        self,
        doc: SourceDocument,
        settle: Settle,
        on_exhausted: Callable[[ClassifyRetry], Awaitable[None]] | None = None,
    ) -> None:
        """Start one document's task once a slot is free (the only concurrency limit)."""
        await self._slots.acquire()
        task = asyncio.create_task(self._handle(doc, settle, on_exhausted))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- one document -------------------------------------------------------------------

    async def _handle(
        self,
        doc: SourceDocument,
        settle: Settle,
        on_exhausted: Callable[[ClassifyRetry], Awaitable[None]] | None,
    ) -> None:
        handed_over = False
        try:
            try:
                outcome = await self._classify(doc)
            finally:
                self._slots.release()
            if isinstance(outcome, str):  # RELEASED
                settle(RELEASED)
            elif isinstance(outcome, ClassifyRetry):
                if on_exhausted is not None:
                    await on_exhausted(outcome)
                else:
                    self._drainer.queue_classify(outcome)
                    settle("queued_classify")
            else:
                handed_over = True
                await self._writer.add(outcome, settle)
        except asyncio.CancelledError:
            if not handed_over:  # a result handed to the writer is stored at close
                settle(RELEASED)
            raise
        except ConfigurationError as exc:
            # Nothing is wrong with the document: give it back, so that once the configuration
            # is fixed a plain restart (no --recover) takes it again.
            self._stop(exc)
            settle(RELEASED)
        except Exception as exc:  # noqa: BLE001 - the doc stays in its batch file for --recover
            self._stop(exc)

    async def _classify(
        self, doc: SourceDocument
    ) -> ClassifiedDocument | FailedDocument | ClassifyRetry | str:
        """One document's outcome: a result, a failure, a retry-queue item, or RELEASED."""
        if self._stopping:
            return RELEASED  # waited for a slot while the run was stopping
        try:
            text = extract_text(doc, self._options.text_field, self._options.max_text_chars)
        except DataError as exc:
            return self._failed(doc, exc, attempts=0)

        on_retry = announce_retries(
            "retrying classification", self.stats.add_classifier_retry, doc_id=doc.id
        )
        started = time.monotonic()
        try:
            output, attempts = await self._classify_policy.call(
                lambda: self._classifier.classify(text.text, doc.fields), on_retry=on_retry
            )
        except ConfigurationError:
            raise
        except BudgetExhaustedError:
            if not self._stopping:
                log.warning("budget reached: taking no new documents; the rest stay pending")
            self.stop()
            return RELEASED
        except Exception as exc:  # noqa: BLE001 - any classifier failure is sorted, never fatal
            if is_retryable(exc):
                return ClassifyRetry(doc=doc, error=describe(exc), category=categorize(exc))
            self._drainer.dead_letter_document(doc, exc)
            return self._failed(doc, exc, attempts=1)
        if self._telemetry is not None:
            self._telemetry.latency.observe(time.monotonic() - started)
        return ClassifiedDocument(
            doc_id=doc.id,
            classification=output.classification,
            classifier=self._classifier.name,
            classifier_version=self._classifier.version,
            attempts=attempts,
            text_chars=text.original_chars,
            truncated=text.truncated or output.truncated,
            job_id=self.job_id,
            model=output.model,
            taxonomy_version=output.taxonomy_version,
            usage=output.usage,
            cost_usd=output.cost_usd,
            cached=output.cached,
        )

    def _failed(
        self, doc: SourceDocument, error: BaseException, *, attempts: int
    ) -> FailedDocument:
        log.warning(
            "document failed", doc_id=doc.id, error=reason(error), category=str(categorize(error))
        )
        return FailedDocument(
            doc_id=doc.id,
            error=reason(error),
            category=categorize(error),
            attempts=attempts,
            job_id=self.job_id,
        )

    # -- bookkeeping --------------------------------------------------------------------

    def _settle(self, doc_id: str, outcome: str) -> None:
        self._tracker.settle(doc_id, outcome)
        if outcome == RELEASED:
            self._released.append(doc_id)
            self.stats.released += 1
        if outcome == "queued_classify":
            self.stats.queued_classify += 1
        self._since_checkpoint += 1
        if self._since_checkpoint >= self._options.checkpoint_interval:
            self._save_checkpoint(JobStatus.RUNNING)
        if self._on_progress is not None:
            self._on_progress(self.stats)

    def _batch_finished(self, batch: FinishedBatch) -> None:
        if self._telemetry is not None and batch.outcomes.get("stored"):
            self._telemetry.batch_stored()
        log.info(
            "batch finished",
            batch=batch.name,
            documents=batch.size,
            seconds=round(batch.seconds, 3),
            **batch.outcomes,
        )

    def _save_checkpoint(self, status: JobStatus) -> None:
        self._since_checkpoint = 0
        checkpoint = Checkpoint(
            job_id=self.job_id,
            status=status,
            started_at=self._started_at,
            position=self._position,
            counters=self.stats.counters(),
            in_flight=self._tracker.names(),
        )
        try:
            self._checkpoints.save(checkpoint)
        except BatchProcessorError as exc:
            # Batch files and queues stay the source of truth; a missed checkpoint is not fatal.
            log.error("checkpoint not written", error=describe(exc))

    async def _db(self, operation: Callable[[], Awaitable[T]]) -> T:
        hook = announce_retries("retrying MongoDB call", self.stats.add_db_retry)
        result, _ = await self._db_policy.call(operation, on_retry=hook)
        return result

    # -- recovery -----------------------------------------------------------------------

    async def _recover_batch_files(self) -> None:
        """Finish the batch files a crashed job left, skipping results already stored."""
        for name in self._files.names():
            try:
                batch = self._files.load(name)
            except CorruptBatchFileError as exc:
                kept = self._files.set_aside(name)
                log.error(
                    "unreadable batch file set aside", batch=name, kept=str(kept), error=str(exc)
                )
                continue
            ids = [doc.id for doc in batch.docs]
            try:
                claim = functools.partial(
                    self._store.claim,
                    ids,
                    job_id=self.job_id,
                    worker_id=self.worker_id,
                    token=f"{self.job_id}:{name}",
                    reclaim=True,
                )
                claimed = await self._db(claim)
                finish = functools.partial(self._store.finish_stored, sorted(claimed), self.job_id)
                stored = await self._db(finish)
            except ConfigurationError:
                raise
            except BatchProcessorError as exc:
                # MongoDB is away: classify anyway; the results wait in the store queue.
                log.warning("recovering without MongoDB", batch=name, error=describe(exc))
                claimed, stored = set(ids), set()
            todo = [doc for doc in batch.docs if doc.id in claimed and doc.id not in stored]
            self.stats.already_stored += len(stored)
            log.info(
                "recovering batch file",
                batch=name,
                documents=len(ids),
                already_stored=len(stored),
                to_classify=len(todo),
                taken_elsewhere=len(ids) - len(claimed),
            )
            self._tracker.add(name, [doc.id for doc in todo])
            await self._start_all(todo)

    async def _release_given_back(self) -> None:
        """Release the claims of documents given back unprocessed, so any worker takes them."""
        if not self._released:
            return
        ids, self._released = self._released, []
        try:
            await self._store.release_ids(ids, self.job_id)
        except BatchProcessorError as exc:
            # Still claimed by this worker: its next start releases them (see _release_claims).
            log.warning("claims not released yet", documents=len(ids), error=describe(exc))
        else:
            log.info("documents given back unprocessed", documents=len(ids))

    async def _release_claims(self) -> None:
        """Free the claims of this worker's dead jobs, and anyone's past the claim TTL."""
        released = await self._db(
            lambda: self._store.release_claims(
                worker_id=self.worker_id,
                job_id=self.job_id,
                older_than=timedelta(seconds=self._options.claim_ttl),
                exclude=self._drainer.queued_doc_ids(),
            )
        )
        if released:
            log.info("released claims of dead jobs", documents=released)
