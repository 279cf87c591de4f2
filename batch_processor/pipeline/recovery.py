"""What a dead job left behind, and what this job gives back: batch files and claims.

With ``--recover`` the batch files of a crashed job are finished: their documents are reclaimed
(a claim recorded by the batch file is recognised even if the worker's identity was lost), those
whose result is already stored are only marked, the rest are classified again; a document
another worker took over meanwhile is left to it. At every start the claims of this worker's
dead jobs are freed (other workers' expire: the fleet's lease keeper takes them over); at the
end the claims of documents given back unprocessed are released so any worker takes them.
"""

from __future__ import annotations

import functools

import structlog

from batch_processor.documents.ports import Sink, Source
from batch_processor.errors import BatchProcessorError, ConfigurationError, describe
from batch_processor.files.batch_files import BatchFile, BatchFiles, CorruptBatchFileError
from batch_processor.models import claim_token
from batch_processor.outage import DatabaseCalls
from batch_processor.pipeline.bookkeeping import Bookkeeper
from batch_processor.pipeline.control import Admission
from batch_processor.pipeline.drain import QueueDrainer
from batch_processor.pipeline.stats import RunStats
from batch_processor.pipeline.task import DocumentTasks

log = structlog.get_logger("batch_processor.pipeline")


class Recovery:
    """Finishes old batch files and frees the claims nobody works on any more."""

    def __init__(
        self,
        *,
        source: Source,
        sink: Sink,
        batch_files: BatchFiles,
        books: Bookkeeper,
        admission: Admission,
        tasks: DocumentTasks,
        drainer: QueueDrainer,
        db: DatabaseCalls,
        stats: RunStats,
        job_id: str,
        worker_id: str,
    ) -> None:
        self._source = source
        self._sink = sink
        self._files = batch_files
        self._books = books
        self._admission = admission
        self._tasks = tasks
        self._drainer = drainer
        self._db = db
        self._stats = stats
        self._job_id = job_id
        self._worker_id = worker_id
        self._recovered_claims: list[str] = []  # claim tokens of this directory's old batches

    async def recover_batch_files(self) -> None:
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
        token = claim_token(self._job_id, name)
        try:
            claim = functools.partial(
                self._source.claim,
                ids,
                job_id=self._job_id,
                worker_id=self._worker_id,
                token=token,
                reclaim=True,
                previous_claim=batch.claim,
            )
            claimed = await self._db.brief(claim)
            finish = functools.partial(
                self._sink.finish_stored,
                sorted(claimed),
                self._job_id,
                token,
                since_claim=batch.claim,
            )
            stored = await self._db.brief(finish)
        except ConfigurationError:
            raise
        except BatchProcessorError as exc:
            # MongoDB is away: classify anyway; the results wait in the store queue, fenced by
            # the claim the batch file recorded (if another worker took them, they are its).
            log.warning("recovering without MongoDB", batch=name, error=describe(exc))
            claimed, stored, token = set(ids), set(), batch.claim or token
        todo = [
            doc.model_copy(update={"claim": token})
            for doc in batch.docs
            if doc.id in claimed and doc.id not in stored
        ]
        self._stats.already_stored += len(stored)
        kept = self._files.journal.load(name)
        known = [doc for doc in todo if doc.id in kept]
        log.info(
            "recovering batch file",
            batch=name,
            documents=len(ids),
            already_stored=len(stored),
            classified_before=len(known),  # kept beside the file: stored, not asked again
            to_classify=len(todo) - len(known),
            taken_elsewhere=len(ids) - len(claimed),
        )
        await self._admission.acquire(len(todo))
        self._books.tracker.add(name, [doc.id for doc in todo])
        for doc in known:
            self._tasks.store_known(
                doc, kept[doc.id], functools.partial(self._books.settle, doc.id)
            )
        await self._tasks.start_all([doc for doc in todo if doc.id not in kept])

    async def release_given_back(self) -> None:
        """Release the claims of documents given back unprocessed, so any worker takes them."""
        ids = self._books.take_released()
        if not ids:
            return
        try:
            await self._db.brief(lambda: self._source.release_ids(ids, self._job_id))
        except BatchProcessorError as exc:
            # Still claimed by this worker: its next start releases them (release_dead_claims),
            # or any worker once their lease ends; a stop during an outage does not wait.
            log.warning("claims not released yet", documents=len(ids), error=describe(exc))
        else:
            log.info("documents given back unprocessed", documents=len(ids))

    async def release_dead_claims(self) -> None:
        """Free the claims of dead jobs: this worker's, and other workers' expired leases.

        A starting worker takes over what dead workers left before it reads its first page
        (afterwards, the lease keeper does so every tick).
        """
        taken = await self._db.wait(lambda: self._source.take_over(self._worker_id))
        if taken:
            log.warning(
                "took over expired leases", documents=sum(taken.values()), taken_from=dict(taken)
            )
        released = await self._db.wait(
            lambda: self._source.release_claims(
                worker_id=self._worker_id,
                job_id=self._job_id,
                exclude=self._drainer.queued_doc_ids(),
                claims=self._recovered_claims,
            )
        )
        if released:
            log.info("released claims of dead jobs", documents=released)
