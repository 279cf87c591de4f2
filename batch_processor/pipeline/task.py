"""One task per document: classify it under the concurrency slots, then hand its outcome on.

A document's outcome is a result (to the writer), a failure (to the writer, which marks it), a
retry-queue item (a retryable error outlasted its retries) or ``Ended.RELEASED`` (given back
unprocessed: the run stopped). Whatever happens, including cancellation, it is settled exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Literal

import structlog

from batch_processor.classifiers import Classifier
from batch_processor.documents.outcomes import Ended, Outcomes, reason
from batch_processor.documents.text import ExtractedText
from batch_processor.errors import (
    BudgetExhaustedError,
    ConfigurationError,
    categorize,
    is_retryable,
)
from batch_processor.models import ClassifiedDocument, ClassifyRetry, FailedDocument, SourceDocument
from batch_processor.pipeline.control import RunControl
from batch_processor.pipeline.drain import RetryInbox
from batch_processor.pipeline.stats import RunMetrics, RunStats
from batch_processor.pipeline.writer import ResultWriter, Settle
from batch_processor.retry import RetryPolicy, announce_retries

log = structlog.get_logger("batch_processor.pipeline")

Outcome = ClassifiedDocument | FailedDocument | ClassifyRetry | Ended
OnExhausted = Callable[[ClassifyRetry], Awaitable[None]]


class DocumentTasks:
    """Starts and watches the document tasks of one run (the only concurrency limit)."""

    def __init__(
        self,
        *,
        control: RunControl,
        classifier: Classifier,
        classify_policy: RetryPolicy,
        writer: ResultWriter,
        stats: RunStats,
        settle: Callable[[str, Ended], None],
        outcomes: Outcomes,
        inbox: RetryInbox,
        concurrent: int,
        keep: Callable[[ClassifiedDocument], None] = lambda _result: None,
        telemetry: RunMetrics | None = None,
    ) -> None:
        self._group: asyncio.TaskGroup | None = None  # while the run is active (running())
        self._control = control
        self._classifier = classifier
        self._policy = classify_policy
        self._writer = writer
        self._stats = stats
        self._settle = settle
        self._outcomes = outcomes
        self._inbox = inbox
        self._keep = keep
        self._telemetry = telemetry
        self._slots = asyncio.Semaphore(concurrent)
        self._tasks: set[asyncio.Task[None]] = set()

    @contextlib.contextmanager
    def running(self, group: asyncio.TaskGroup) -> Iterator[None]:
        """While inside, documents start as tasks of ``group`` (the run's task group)."""
        self._group = group
        try:
            yield
        finally:
            self._group = None

    async def start_all(self, docs: Sequence[SourceDocument]) -> None:
        """Start each document in turn; once the run stops, give the rest back unprocessed.

        The page's texts are read first and handed to the classifier's ``prefetch`` (the dedupe
        cache looks the whole page up in one query).
        """
        texts = [self._read_text(doc) for doc in docs]
        await self._classifier.prefetch(
            [t.conversation for t in texts if isinstance(t, ExtractedText)]
        )
        for index, (doc, text) in enumerate(zip(docs, texts, strict=True)):
            if self._control.stopping:
                for rest in docs[index:]:
                    self._settle(rest.id, Ended.RELEASED)
                return
            await self.start(doc, functools.partial(self._settle, doc.id), text=text)

    async def start(
        self,
        doc: SourceDocument,
        settle: Settle,
        on_exhausted: OnExhausted | None = None,
        *,
        text: ExtractedText | FailedDocument | None = None,
    ) -> None:
        """Start one document's task once a slot is free (``text``: already read)."""
        await self._slots.acquire()
        try:
            if self._group is None:
                raise RuntimeError("the run is not active")
            task = self._group.create_task(self._handle(doc, settle, on_exhausted, text))
        except RuntimeError:  # the group is shutting down: the document is given back
            self._slots.release()
            settle(Ended.RELEASED)
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def store_known(self, doc: SourceDocument, result: ClassifiedDocument, settle: Settle) -> None:
        """Hand a result kept from before a crash to the writer, under ``doc``'s new claim."""
        known = result.model_copy(update={"claim": doc.claim, "job_id": self._outcomes.job_id})
        self._writer.add(known, _once(settle))

    def cancel_all(self) -> None:
        """Cancel every document task; each gives its document back."""
        if self._tasks:
            log.warning("giving back documents still in flight", documents=len(self._tasks))
        for task in self._tasks:
            task.cancel()

    async def wait_all(self) -> None:
        """Wait until no document task is left (including ones started meanwhile)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _handle(
        self,
        doc: SourceDocument,
        settle: Settle,
        on_exhausted: OnExhausted | None,
        text: ExtractedText | FailedDocument | None,
    ) -> None:
        """Classify one document and hand its outcome on; whatever happens, it is settled once."""
        settle = _once(settle)
        try:
            try:
                outcome = await self._classify(doc, text or self._read_text(doc))
            finally:
                self._slots.release()
            if isinstance(outcome, Ended):
                settle(outcome)
            elif isinstance(outcome, ClassifyRetry):
                if on_exhausted is not None:
                    await on_exhausted(outcome)
                else:
                    self._queue(outcome)
                    settle(Ended.QUEUED_CLASSIFY)
            else:
                if isinstance(outcome, ClassifiedDocument) and _paid(outcome):
                    self._keep(outcome)
                # Synchronous: once it returns the writer holds the outcome, and nothing
                # between here and the end of the task can be interrupted.
                self._writer.add(outcome, settle)
        except asyncio.CancelledError:
            settle(Ended.RELEASED)
            raise
        except Exception as exc:  # noqa: BLE001 - a worker-level failure (disk, configuration)
            # Nothing is wrong with the document: give it back, so that once the cause is fixed
            # a plain restart (no --recover) takes it again.
            self._control.fail(exc)
            settle(Ended.RELEASED)

    async def _classify(self, doc: SourceDocument, text: ExtractedText | FailedDocument) -> Outcome:
        """One document's outcome: a result, a failure, a retry-queue item, or Ended.RELEASED."""
        if self._control.stopping:
            return Ended.RELEASED  # waited for a slot while the run was stopping
        if isinstance(text, FailedDocument):
            return _logged(text)
        on_retry = announce_retries(
            "retrying classification", self._stats.add_classifier_retry, doc_id=doc.id
        )
        started = time.monotonic()
        try:
            output, attempts = await self._policy.call(
                lambda: self._classifier.classify(text.conversation, doc.fields),
                on_retry=on_retry,
            )
        except ConfigurationError:
            raise
        except BudgetExhaustedError:
            if not self._control.stopping:
                log.warning("budget reached: taking no new documents; the rest stay pending")
            self._control.stop()
            return Ended.RELEASED
        except Exception as exc:  # noqa: BLE001 - any classifier failure is sorted, never fatal
            if is_retryable(exc):
                return ClassifyRetry(doc=doc, error=reason(exc), category=categorize(exc))
            self._inbox.dead_letter_document(doc, exc)
            failure = self._outcomes.failure(doc.id, exc, attempts=1, claim=doc.claim)
            return _logged(failure)
        if self._telemetry is not None:
            self._telemetry.classified(time.monotonic() - started)
        route: Literal["online"] | None = "online" if output.model is not None else None
        return self._outcomes.result(doc, text, output, attempts=attempts, claim=doc.claim,
                                     route=route)  # fmt: skip

    def _queue(self, item: ClassifyRetry) -> None:
        self._inbox.queue_classify(item)

    def _read_text(self, doc: SourceDocument) -> ExtractedText | FailedDocument:
        """The text to classify, or the DATA failure that says why there is none."""
        text = self._outcomes.text(doc)
        if isinstance(text, ExtractedText):
            self._stats.count_unknown_roles(text.conversation.unknown_roles)
        return text


def _paid(result: ClassifiedDocument) -> bool:
    """Whether asking for ``result`` again would cost a request (not offline, not cached)."""
    return result.model is not None and not result.cached


def _logged(failed: FailedDocument) -> FailedDocument:
    """``failed``, once its failure is logged (when it is sure to be its outcome)."""
    log.warning(
        "document failed", doc_id=failed.doc_id, error=failed.error, category=str(failed.category)
    )
    return failed


def _once(settle: Settle) -> Settle:
    """``settle``, callable any number of times but acting only the first time."""
    done = False

    def settle_once(outcome: Ended) -> None:
        nonlocal done
        if not done:
            done = True
            settle(outcome)

    return settle_once
