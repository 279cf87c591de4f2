"""The one processing loop: page, claim, save, classify under a semaphore, write, checkpoint.

Every task of a run lives in one :class:`asyncio.TaskGroup`: the result writer, the periodic
queue drainer and one task per document, beside the page reader that the loop awaits itself.
Nothing runs unwatched: if any of them dies, the others are cancelled, every document still held
is given back (its claim released) and the run ends with the error, its checkpoint saying so.

Documents are *admitted* before they are claimed and leave when they end (stored, failed,
queued, given back): at most ``max_in_flight`` documents are claimed and unfinished at any
time, whatever is slow, classification or storage. Each claimed page is saved as a batch file
before any of it is classified; a document is classified as soon as one of ``concurrent``
slots is free, so no document waits for the slowest one of its batch. A batch file is deleted
when its last document has ended. Every ``checkpoint_interval`` ended documents (and at exit) a
checkpoint is written. Retry queues are drained at the start and every
``queue_drain_interval`` seconds (see :mod:`batch_processor.pipeline.drain`).

MongoDB reads and claims wait out an outage (:class:`~batch_processor.outage.DatabaseCalls`),
a lost cursor is reopened after the last ``_id`` seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from batch_processor.classifiers import Classifier
from batch_processor.errors import (
    BatchProcessorError,
    BudgetExhaustedError,
    ConfigurationError,
    DataError,
    Interrupted,
    categorize,
    describe,
    first_error,
    is_retryable,
)
from batch_processor.files.batch_files import BatchFile, BatchFiles, CorruptBatchFileError
from batch_processor.files.checkpoints import CheckpointStore
from batch_processor.files.retry_queues import RetryQueues
from batch_processor.models import (
    Checkpoint,
    ClassifiedDocument,
    ClassifyRetry,
    FailedDocument,
    JobStatus,
    SourceDocument,
    utcnow,
)
from batch_processor.outage import DatabaseCalls
from batch_processor.pipeline.admission import Admission
from batch_processor.pipeline.drain import QueueDrainer
from batch_processor.pipeline.ports import Sink, Source
from batch_processor.pipeline.stats import RunStats
from batch_processor.pipeline.text import ExtractedText, extract_text
from batch_processor.pipeline.tracker import BatchTracker, FinishedBatch
from batch_processor.pipeline.writer import RELEASED, ResultWriter, Settle
from batch_processor.redaction import redact_text
from batch_processor.retry import RetryPolicy, Sleep, announce_retries
from batch_processor.service.telemetry import Telemetry

log = structlog.get_logger("batch_processor.pipeline.core")

__all__ = ["RELEASED", "Pipeline", "PipelineOptions", "first_error", "reason"]


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
    max_in_flight: int | None = None  # None: two pages plus the concurrency

    @property
    def in_flight_limit(self) -> int:
        """Documents claimed and not yet ended, at most."""
        if self.max_in_flight is not None:
            return self.max_in_flight
        return 2 * self.batch_size + self.concurrent


def reason(error: BaseException) -> str:
    """The failure reason stored with a document: our message, or the exception's first line.

    Secrets are masked (see :mod:`batch_processor.redaction`).
    """
    if isinstance(error, BatchProcessorError):
        return redact_text(error.message)
    return describe(error)


class Pipeline:
    """One job: drains the queues, finishes recovered batch files, then pages until done."""

    def __init__(
        self,
        *,
        source: Source,
        sink: Sink,
        classifier: Classifier,
        batch_files: BatchFiles,
        checkpoints: CheckpointStore,
        queues: RetryQueues,
        job_id: str,
        worker_id: str,
        options: PipelineOptions,
        classify_policy: RetryPolicy,
        db: DatabaseCalls,
        stats: RunStats | None = None,
        sleep: Sleep = asyncio.sleep,
        on_progress: Callable[[RunStats], None] | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.job_id = job_id
        self.worker_id = worker_id
        self.stats = stats or RunStats()
        self.error: BaseException | None = None
        self._source = source
        self._sink = sink
        self._classifier = classifier
        self._files = batch_files
        self._checkpoints = checkpoints
        self._queues = queues
        self._options = options
        self._classify_policy = classify_policy
        self._db = db
        self._sleep = sleep
        self._on_progress = on_progress
        self._telemetry = telemetry
        self._started_at: datetime = utcnow()
        self._slots = asyncio.Semaphore(options.concurrent)
        self._tasks: set[asyncio.Task[None]] = set()
        self._group: asyncio.TaskGroup | None = None
        self._tracker = BatchTracker(batch_files, on_finished=self._batch_finished)
        self._writer = ResultWriter(
            sink=sink,
            db=db,
            queues=queues,
            stats=self.stats,
            flush_size=options.flush_size,
            flush_interval=options.flush_interval,
            on_fatal=self._stop,
        )
        self._admission = Admission(options.in_flight_limit, on_full=self._writer.flush_soon)
        self._drainer = QueueDrainer(
            queues=queues,
            writer=self._writer,
            stats=self.stats,
            job_id=job_id,
            max_attempts=options.queue_max_attempts,
            start=self._start,
            admission=self._admission,
        )
        self._position: str | None = None
        self._sequence = 0
        self._since_checkpoint = 0
        self._stopping = False
        self._released: list[str] = []
        self._recovered_claims: list[str] = []  # claim tokens of this directory's old batches
        self._grace_timer: asyncio.TimerHandle | None = None

    # -- the run -------------------------------------------------------------------------

    async def run(self, *, recover: bool = False) -> RunStats:
        """Process everything pending; with ``recover``, first finish the old batch files.

        Raises the error that stopped the run, if one did, after every document it held was
        stored or given back and the checkpoint was written.
        """
        self._save_checkpoint(JobStatus.RUNNING)
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                group.create_task(self._writer.run(), name="result-writer")
                await self._work(group, recover=recover)
        except BaseException as exc:
            if not isinstance(exc, asyncio.CancelledError):
                self._stop(first_error(exc))
            elif self.error is None:
                raise
        finally:
            self._group = None
            if self._grace_timer is not None:
                self._grace_timer.cancel()
            await self._release_given_back()
            self._save_final_checkpoint()
        self.stats.finish()
        if self.error is not None:
            raise self.error
        return self.stats

    async def _work(self, group: asyncio.TaskGroup, *, recover: bool) -> None:
        """Everything but the writer: queues, recovery, paging; then the writer's last flush."""
        drainer: asyncio.Task[None] | None = None
        try:
            await self._drainer.drain()
            if recover:
                await self._recover_batch_files()
            await self._release_claims()
            drainer = group.create_task(self._drain_periodically(), name="queue-drainer")
            await self._process_pending()
            await self._wait_for_tasks()
            if self.stats.queued_store and self.error is None:
                # Results spilled during an outage that has passed: store them before ending.
                await self._writer.drained()
                await self._drainer.drain_store()
        except Interrupted:
            self._stopping = True  # a stop came while MongoDB was away: a clean end
        except Exception as exc:  # noqa: BLE001 - finish in-flight work first, then re-raise
            self._stop(exc)
        finally:
            if drainer is not None:
                drainer.cancel()
            await self._wait_for_tasks()
            self._writer.close()

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
        if self.error is None:
            self.error = error
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
        """Passes over the pending documents until a pass claims none.

        One page is read ahead while the current one is claimed and started.
        """
        while not self._stopping:
            pages: asyncio.Queue[list[SourceDocument] | None] = asyncio.Queue()
            prefetch = asyncio.Semaphore(1)
            reader = asyncio.create_task(self._read_pass(pages, prefetch), name="page-reader")
            claimed = 0
            try:
                while not self._stopping and (page := await pages.get()) is not None:
                    prefetch.release()
                    claimed += await self._submit_page(page)
            finally:
                if not reader.done():
                    reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader  # its error, if any, ends the run
            if not claimed:
                return

    async def _read_pass(
        self, pages: asyncio.Queue[list[SourceDocument] | None], prefetch: asyncio.Semaphore
    ) -> None:
        """Read one pass of pages; outages are waited out and a dead cursor reopened."""
        cursor = self._source.page_cursor(self._options.batch_size)
        try:
            while page := await self._db.wait(cursor.next_page):
                self._position = page[-1].id
                await prefetch.acquire()
                pages.put_nowait(page)
        finally:
            pages.put_nowait(None)  # never blocks: the queue is unbounded, prefetch paces it
            await cursor.close()

    async def _submit_page(self, page: list[SourceDocument]) -> int:
        """Admit, claim, save and start one page; return how many documents it claimed."""
        self.stats.fetched += len(page)
        await self._admission.acquire(len(page))
        if self._stopping:  # the stop came while waiting for room: claim nothing more
            self._admission.release(len(page))
            return 0
        ids = [doc.id for doc in page]
        self._sequence += 1
        token = f"{self.job_id}:{self._sequence}"
        try:
            claimed = await self._db.wait(
                lambda: self._source.claim(
                    ids, job_id=self.job_id, worker_id=self.worker_id, token=token
                )
            )
        except BaseException:
            self._admission.release(len(page))
            raise
        docs = [doc for doc in page if doc.id in claimed]
        self._admission.release(len(page) - len(docs))
        if not docs:
            return 0
        try:
            name = await self._files.save(self.job_id, self._sequence, docs, claim=token)
        except BaseException:
            # Not saved means not safe: give the claims back before stopping.
            self._admission.release(len(docs))
            with contextlib.suppress(BatchProcessorError):
                await self._source.release_ids([doc.id for doc in docs], self.job_id)
            raise
        self._tracker.add(name, [doc.id for doc in docs])
        self.stats.batches += 1
        await self._start_all(docs)
        return len(docs)

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
        try:
            if self._group is None:
                raise RuntimeError("the run is not active")
            task = self._group.create_task(self._handle(doc, settle, on_exhausted))
        except RuntimeError:  # the group is shutting down: the document is given back
            self._slots.release()
            settle(RELEASED)
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- one document -------------------------------------------------------------------

    async def _handle(
        self,
        doc: SourceDocument,
        settle: Settle,
        on_exhausted: Callable[[ClassifyRetry], Awaitable[None]] | None,
    ) -> None:
        """Classify one document and hand its outcome on; whatever happens, it is settled once."""
        settle = _once(settle)
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
                # Synchronous: once it returns the writer holds the outcome, and nothing
                # between here and the end of the task can be interrupted.
                self._writer.add(outcome, settle)
        except asyncio.CancelledError:
            settle(RELEASED)
            raise
        except Exception as exc:  # noqa: BLE001 - a worker-level failure (disk, configuration)
            # Nothing is wrong with the document: give it back, so that once the cause is fixed
            # a plain restart (no --recover) takes it again.
            self._stop(exc)
            settle(RELEASED)

    async def _classify(
        self, doc: SourceDocument
    ) -> ClassifiedDocument | FailedDocument | ClassifyRetry | str:
        """One document's outcome: a result, a failure, a retry-queue item, or RELEASED."""
        if self._stopping:
            return RELEASED  # waited for a slot while the run was stopping
        text = self._read_text(doc)
        if isinstance(text, FailedDocument):
            return text

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
            repairs=output.repairs,
        )

    def _read_text(self, doc: SourceDocument) -> ExtractedText | FailedDocument:
        """The text to classify, or the DATA failure that says why there is none."""
        if doc.problem is not None:
            return self._failed(doc, DataError(doc.problem), attempts=0)
        try:
            return extract_text(doc, self._options.text_field, self._options.max_text_chars)
        except DataError as exc:
            return self._failed(doc, exc, attempts=0)
        except Exception as exc:  # noqa: BLE001 - odd data never stops the run
            error = DataError(f"cannot read the text: {describe(exc)}")
            return self._failed(doc, error, attempts=0)

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
        self._admission.release()
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
            try:
                self._on_progress(self.stats)
            except Exception as exc:  # noqa: BLE001 - what only displays never fails a run
                log.warning("progress display failed; hiding it", error=describe(exc))
                self._on_progress = None

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

    def _save_final_checkpoint(self) -> None:
        """Finished, failed (with the reason), or running when batch files are left."""
        if self.error is not None:
            self._save_checkpoint(JobStatus.FAILED, error=reason(self.error))
        elif self._tracker.names():
            self._save_checkpoint(JobStatus.RUNNING)
        else:
            self._save_checkpoint(JobStatus.FINISHED)

    def _save_checkpoint(self, status: JobStatus, *, error: str | None = None) -> None:
        self._since_checkpoint = 0
        checkpoint = Checkpoint(
            job_id=self.job_id,
            status=status,
            error=error,
            worker_id=self.worker_id,
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

    # -- recovery -----------------------------------------------------------------------

    async def _recover_batch_files(self) -> None:
        """Finish the batch files a crashed job left, skipping results already stored."""
        for name in self._files.names():
            try:
                batch = self._files.load(name)
            except CorruptBatchFileError as exc:
                kept = self._files.set_aside(name)
                log.error(
                    "unreadable batch file set aside; its documents are read again from MongoDB",
                    batch=name,
                    kept=str(kept),
                    error=str(exc),
                )
                continue
            if batch.claim is not None:
                self._recovered_claims.append(batch.claim)
            await self._recover_batch(name, batch)

    async def _recover_batch(self, name: str, batch: BatchFile) -> None:
        """Reclaim one batch file's documents, mark those already stored, classify the rest."""
        if batch.damaged:
            log.error(
                "damaged lines in a batch file; those documents are read again from MongoDB",
                batch=name,
                damaged_lines=batch.damaged,
                kept=str(self._files.keep_copy(name)),
            )
        ids = [doc.id for doc in batch.docs]
        try:
            claim = functools.partial(
                self._source.claim,
                ids,
                job_id=self.job_id,
                worker_id=self.worker_id,
                token=f"{self.job_id}:{name}",
                reclaim=True,
                previous_claim=batch.claim,
            )
            claimed = await self._db.brief(claim)
            finish = functools.partial(self._sink.finish_stored, sorted(claimed), self.job_id)
            stored = await self._db.brief(finish)
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
        await self._admission.acquire(len(todo))
        self._tracker.add(name, [doc.id for doc in todo])
        await self._start_all(todo)

    async def _release_given_back(self) -> None:
        """Release the claims of documents given back unprocessed, so any worker takes them."""
        if not self._released:
            return
        ids, self._released = self._released, []
        try:
            await self._source.release_ids(ids, self.job_id)
        except BatchProcessorError as exc:
            # Still claimed by this worker: its next start releases them (see _release_claims).
            log.warning("claims not released yet", documents=len(ids), error=describe(exc))
        else:
            log.info("documents given back unprocessed", documents=len(ids))

    async def _release_claims(self) -> None:
        """Free the claims of this worker's dead jobs, and anyone's past the claim TTL."""
        released = await self._db.wait(
            lambda: self._source.release_claims(
                worker_id=self.worker_id,
                job_id=self.job_id,
                older_than=timedelta(seconds=self._options.claim_ttl),
                exclude=self._drainer.queued_doc_ids(),
                claims=self._recovered_claims,
            )
        )
        if released:
            log.info("released claims of dead jobs", documents=released)


def _once(settle: Settle) -> Settle:
    """``settle``, callable any number of times but acting only the first time."""
    done = False

    def settle_once(outcome: str) -> None:
        nonlocal done
        if not done:
            done = True
            settle(outcome)

    return settle_once
