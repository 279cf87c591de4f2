"""The page producer: reads pages, admits, claims and saves each one, then starts its documents.

Pages come from long cursors over the unprocessed documents, highest priority first (see
:mod:`.priorities`); one page is read ahead while the current one is claimed and started. A
page is admitted before it is claimed (so claims never run ahead of the work in progress),
claimed with one call under a new claim token, and saved as a batch file before any of its
documents is classified. Reads and claims wait out a MongoDB outage. :meth:`refresh` starts a
new pass at the next page (documents were released: taken over from a dead worker).
"""

from __future__ import annotations

import asyncio
import contextlib

from batch_processor.documents.ports import Source
from batch_processor.errors import BatchProcessorError
from batch_processor.files.batch_files import BatchFiles
from batch_processor.models import SourceDocument, claim_token
from batch_processor.outage import DatabaseCalls
from batch_processor.pipeline.bookkeeping import Bookkeeper
from batch_processor.pipeline.control import Admission, RunControl
from batch_processor.pipeline.memory import PageSizer
from batch_processor.pipeline.priorities import PriorityPass
from batch_processor.pipeline.stats import RunStats
from batch_processor.pipeline.task import DocumentTasks


class PageProducer:
    """Feeds the document tasks from the source, one claimed and saved page at a time."""

    def __init__(
        self,
        *,
        control: RunControl,
        source: Source,
        batch_files: BatchFiles,
        books: Bookkeeper,
        admission: Admission,
        tasks: DocumentTasks,
        db: DatabaseCalls,
        stats: RunStats,
        job_id: str,
        worker_id: str,
        sizer: PageSizer,
        priority_field: str,
        priority_fairness: int,
        limit: int | None = None,
    ) -> None:
        self._control = control
        self._source = source
        self._files = batch_files
        self._books = books
        self._admission = admission
        self._tasks = tasks
        self._db = db
        self._stats = stats
        self._job_id = job_id
        self._worker_id = worker_id
        self._sizer = sizer
        self._priority_field = priority_field
        self._fairness = priority_fairness
        self._sequence = 0
        self._refresh = False
        self._limit = limit
        self._taken = 0  # documents claimed by this job's pages (for the limit)

    def refresh(self) -> None:
        """Start a new pass at the next page: documents became pending behind the cursors."""
        self._refresh = True

    @property
    def _limit_reached(self) -> bool:
        return self._limit is not None and self._taken >= self._limit

    async def run(self) -> None:
        """Passes over the pending documents until a pass claims none (or the limit, a stop)."""
        while not self._control.stopping and not self._limit_reached:
            self._refresh = False
            pages: asyncio.Queue[list[SourceDocument] | None] = asyncio.Queue()
            prefetch = asyncio.Semaphore(1)
            reader = asyncio.create_task(self._read_pass(pages, prefetch), name="page-reader")
            claimed = 0
            try:
                while not self._control.stopping and (page := await pages.get()) is not None:
                    prefetch.release()
                    claimed += await self._submit_page(page)
                    if self._limit_reached:
                        break
            finally:
                if not reader.done():
                    reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader  # its error, if any, ends the run
            if self._limit_reached:
                return
            if not self._refresh and (
                not claimed or not await self._db.wait(self._source.has_pending)
            ):
                # A pass that claimed nothing ends the run, and so does one after which
                # nothing is pending (one indexed query instead of a pass over every level).
                return

    async def _read_pass(
        self, pages: asyncio.Queue[list[SourceDocument] | None], prefetch: asyncio.Semaphore
    ) -> None:
        """Read one pass of pages; outages are waited out and a dead cursor reopened."""
        cursor = PriorityPass(
            self._source,
            page_size=self._sizer.next_size,
            priority_field=self._priority_field,
            fairness=self._fairness,
            on_invalid=self._stats.count_invalid_priority,
        )
        try:
            while not self._refresh and (page := await self._db.wait(cursor.next_page)):
                self._books.position = page[-1].id
                await prefetch.acquire()
                pages.put_nowait(page)
        finally:
            pages.put_nowait(None)  # never blocks: the queue is unbounded, prefetch paces it
            await cursor.close()

    async def _submit_page(self, page: list[SourceDocument]) -> int:
        """Admit, claim, save and start one page; return how many documents it claimed."""
        if self._limit is not None:
            page = page[: self._limit - self._taken]  # the rest stays pending, unclaimed
        self._stats.fetched += len(page)
        await self._admission.acquire(len(page))
        if self._control.stopping:  # the stop came while waiting for room: claim nothing
            self._admission.release(len(page))
            return 0
        ids = [doc.id for doc in page]
        self._sequence += 1
        token = claim_token(self._job_id, self._sequence)
        try:
            claimed = await self._db.wait(
                lambda: self._source.claim(
                    ids, job_id=self._job_id, worker_id=self._worker_id, token=token
                )
            )
        except BaseException:
            self._admission.release(len(page))
            raise
        docs = [doc.model_copy(update={"claim": token}) for doc in page if doc.id in claimed]
        self._admission.release(len(page) - len(docs))
        if not docs:
            return 0
        try:
            name = await self._files.save(self._job_id, self._sequence, docs, claim=token)
        except BaseException:
            # Not saved means not safe: give the claims back before stopping.
            self._admission.release(len(docs))
            with contextlib.suppress(BatchProcessorError):
                await self._source.release_ids([doc.id for doc in docs], self._job_id)
            raise
        self._books.tracker.add(name, [doc.id for doc in docs])
        self._stats.batches += 1
        self._taken += len(docs)
        await self._tasks.start_all(docs)
        return len(docs)
