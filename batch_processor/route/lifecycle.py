"""A provider batch's lifecycle: claim, write, upload, create, poll, download, store, clean up.

Each step is recorded in the slice's MongoDB record (:mod:`batch_processor.slice_record`)
before the next begins, so any worker can resume a slice at the step recorded:

1. **claim**: the record (stage ``claiming``, the claim token) is written first; a slice
   found in this stage is released at once (nothing was sent);
2. **write** the request file (``written``; its SHA-256 and size recorded); a worker without
   the file builds it again from the documents claimed under the token;
3. **upload** (``uploaded``), found again by name and size after a crash;
4. **create** (``submitted``), the batch's ``metadata`` naming the slice, the job and this
   database's installation id, found again by that metadata after a crash;
5. **poll** with backoff from ``batch_route_poll_seconds`` to ``batch_route_poll_max_seconds``,
   renewing the documents' leases at each poll;
6. **download** (``downloaded``; the result files' ids recorded, the files cached on disk);
7. **store** (:mod:`batch_processor.route.answers`);
8. **clean up** the provider's files (``finished``).

A slice has an owner under a lease of ``lease_seconds``, renewed every third of it while the
owner works on it; another worker takes it over once that lease runs out
(:mod:`batch_processor.route.takeover`). Provider batches and files of this database's slices
that no slice holds are cancelled and deleted (:mod:`batch_processor.route.orphans`).
"""

from __future__ import annotations

import asyncio
import functools
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import structlog

from batch_processor.clock import Clock
from batch_processor.documents.ports import Source
from batch_processor.errors import BatchProcessorError, LostLeaseError, describe, is_retryable
from batch_processor.failpoints import crash_at
from batch_processor.files.provider_batches import SliceFiles
from batch_processor.models import claim_token
from batch_processor.outage import DatabaseCalls
from batch_processor.priority import Priority
from batch_processor.retry import RetryPolicy
from batch_processor.route.answers import AnswerReader
from batch_processor.route.building import SliceBuilder
from batch_processor.route.options import RouteOptions, RouteStats
from batch_processor.route.orphans import Orphans
from batch_processor.route.polling import Polling
from batch_processor.route.ports import Provider, SliceRecords
from batch_processor.route.takeover import Takeover
from batch_processor.settings import Route
from batch_processor.slice_record import SliceRecord, Stage

log = structlog.get_logger("batch_processor.route")
T = TypeVar("T")


class BatchRoute:
    """Sends backlogs through the provider's Batch API (see the module docstring)."""

    def __init__(
        self,
        *,
        options: RouteOptions,
        source: Source,
        slices: SliceRecords,
        provider: Provider,
        files: SliceFiles,
        builder: SliceBuilder,
        answers: AnswerReader,
        stats: RouteStats,
        worker_id: str,
        job_id: str,
        db: DatabaseCalls,
        clock: Clock,
        stopped: Callable[[], bool],
    ) -> None:
        self.options = options
        self._source = source
        self._slices = slices
        self._provider = provider
        self._files = files
        self._builder = builder
        self._answers = answers
        self.stats = stats
        self.worker_id = worker_id
        self.job_id = job_id
        self._db = db
        self._clock = clock
        self._stopped = stopped
        # Provider calls wait out a provider's outage, with backoff up to the poll cap.
        self._provider_policy = RetryPolicy(
            max_attempts=None,
            base_delay=1.0,
            max_delay=options.poll_max_seconds,
            give_up=stopped,
            sleep=clock.sleep,
        )
        self._held: dict[str, SliceRecord] = {}  # the slices this worker works on, by id
        self._reserved: dict[str, int] = {}  # worst-case nano-dollars held until stored
        self._installation = ""
        self._orphans = Orphans(provider, slices, self._call)
        self._polling = Polling(
            options=options, source=source, provider=provider, files=files, worker_id=worker_id,
            db=db, clock=clock, stopped=stopped, call=self._call,
        )  # fmt: skip
        self._takeover = Takeover(
            options=options, source=source, slices=slices, files=files, stats=stats,
            worker_id=worker_id, db=db, clock=clock, stopped=stopped,
        )  # fmt: skip

    @property
    def budget_reached(self) -> bool:
        """Whether ``--budget-usd`` stopped the route from taking more documents."""
        return self._builder.budget_reached

    # -- resuming and taking over -----------------------------------------------------------

    async def resume(self) -> list[SliceRecord]:
        """The slices this worker goes on with (see :meth:`Takeover.resume`); orphans cleaned."""
        await self._db.wait(self._slices.ensure_indexes)
        self._installation = await self._db.wait(self._slices.installation)
        ready = await self._takeover.resume()
        self._held.update({record.slice_id: record for record in ready})
        await self.clean_orphans()
        return ready

    async def watched(self) -> list[SliceRecord]:
        """Other workers' slices seen at start, once their lease ran out unrenewed."""
        ready = await self._takeover.watched()
        self._held.update({record.slice_id: record for record in ready})
        return ready

    # -- deciding and submitting ------------------------------------------------------------

    async def backlog_wanted(self) -> bool:
        """Whether the pending backlog goes to the Batch API now (always, for route batch)."""
        if self.options.route is Route.ONLINE:
            return False
        if self.options.route is Route.BATCH:
            return True
        pending = await self._db.wait(self._source.count_pending)
        if pending < self.options.min_docs:
            log.info("auto route: online", pending=pending, min_docs=self.options.min_docs)
            return False
        if not await self._call(self._provider.supported):
            log.warning("auto route: the endpoint has no Batch API; classifying online",
                        pending=pending)  # fmt: skip
            return False
        log.info("auto route: the backlog goes to the Batch API", pending=pending)
        return True

    async def submit_backlog(self) -> list[SliceRecord]:
        """Claim, write, upload and create slices until the backlog is taken (or a stop)."""
        submitted: list[SliceRecord] = []
        levels: list[Priority | None] = (
            [Priority.NORMAL, Priority.LOW] if self.options.online_high_priority else [None]
        )
        for level in levels:
            while not self._stopped() and not self.budget_reached:
                record, claimed = await self._new_slice(level)
                if record is not None:
                    await self._submit(record)
                    submitted.append(self._held[record.slice_id])
                if claimed == 0:
                    break
        return submitted

    async def _new_slice(self, level: Priority | None) -> tuple[SliceRecord | None, int]:
        """Claim and write one slice (None when nothing of it goes to the provider)."""
        slice_id = f"{self.job_id}-{secrets.token_hex(3)}"
        record = SliceRecord(
            slice_id=slice_id,
            job_id=self.job_id,
            owner=self.worker_id,
            claim=claim_token(self.job_id, f"batch-{slice_id[-6:]}"),
            lease_until=self._clock.now() + self.options.lease,
        )
        await self._db.wait(lambda: self._slices.begin(record))
        self._held[slice_id] = record
        built = await self._builder.build(record.claim, level)
        if built.overflow:  # claimed, but past the provider's limits: back to pending
            ids = [doc.id for doc in built.overflow]
            await self._db.wait(lambda: self._source.release_ids(ids, self.job_id))
        await self._answers.store_outcomes(built.cached, built.failures)
        self.stats.deduped += len(built.cached)
        if not built.docs:
            self._answers.release(built.reserved)
            await self._db.wait(lambda: self._slices.remove(record))
            del self._held[slice_id]
            return None, built.claimed
        self._reserved[slice_id] = built.reserved
        # Tens of MB checksummed and fsynced: in a thread, so leases and health keep ticking.
        size, sha256 = await asyncio.to_thread(self._files.write_requests, slice_id, built.lines)
        await self._save(record, stage=Stage.WRITTEN, documents=len(built.docs),
                         requests=len(built.lines), request_bytes=size, sha256=sha256)  # fmt: skip
        log.info("provider batch written", slice=slice_id, documents=len(built.docs),
                 requests=len(built.lines), bytes=size, deduped=len(built.cached),
                 failed=len(built.failures))  # fmt: skip
        crash_at("before_upload")
        return self._held[slice_id], built.claimed

    async def _submit(self, record: SliceRecord) -> None:
        """Upload and create (steps 3-4); a slice the provider refuses gives its documents back.

        A refusal that retrying cannot mend (a file over the provider's size limit, a key
        without Batch API access) ends the run with its error, but first releases the slice's
        claims, which would otherwise be held for a whole lease.
        """
        try:
            await self._upload_and_create(record.slice_id)
        except BatchProcessorError as exc:
            current = self._held.get(record.slice_id, record)
            if current.stage is Stage.SUBMITTED or is_retryable(exc):
                raise
            released = await self._db.wait(lambda: self._source.release_tokens([current.claim]))
            if current.file_id is not None:
                await self._call(functools.partial(self._provider.delete, current.file_id))
            self._answers.release(self._reserved.pop(current.slice_id, 0))
            await self._db.wait(lambda: self._slices.remove(current))
            self._drop(current.slice_id)
            self._files.remove(current.slice_id)
            log.error("the provider refused the batch; its documents are pending again",
                      slice=current.slice_id, released=released, error=describe(exc))  # fmt: skip
            raise

    async def _upload_and_create(self, slice_id: str) -> None:
        """Upload and create (steps 3-4), each found again if a crash came after it."""
        record = self._held[slice_id]
        if record.stage is Stage.WRITTEN:
            record = await self._ensure_requests(record)
            name, size = record.filename, record.request_bytes
            file_id = await self._call(lambda: self._provider.find_file(name, size))
            if file_id is None:
                path = self._files.requests_path(slice_id)
                file_id = await self._call(lambda: self._provider.upload(path, name))
                crash_at("upload_unrecorded")
            record = await self._save(record, stage=Stage.UPLOADED, file_id=file_id)
            crash_at("after_upload")
        if record.stage is Stage.UPLOADED:
            batch = await self._call(lambda: self._provider.find_batch(slice_id))
            if batch is None:
                metadata = self._orphans.metadata(record, self._installation)
                file_id = str(record.file_id)
                batch = await self._call(lambda: self._provider.create(file_id, metadata))
                crash_at("create_unrecorded")
            else:
                log.info("provider batch found again by its metadata", slice=slice_id,
                         batch_id=batch.id)  # fmt: skip
            record = await self._save(record, stage=Stage.SUBMITTED, batch_id=batch.id,
                                      batch_status=batch.status)  # fmt: skip
            self.stats.slices_submitted += 1
            self.stats.requests += record.requests
            log.info("provider batch created", slice=slice_id, batch_id=batch.id,
                     documents=record.documents)  # fmt: skip
            crash_at("after_create")

    async def _ensure_requests(self, record: SliceRecord) -> SliceRecord:
        """The request file on this disk: as written, or built again from MongoDB."""
        if self._files.has_requests(record.slice_id, record.sha256):
            return record
        docs = await self._db.wait(lambda: self._source.claimed(record.claim))
        built = await self._builder.rebuild(record.claim, docs)
        size, sha256 = await asyncio.to_thread(
            self._files.write_requests, record.slice_id, built.lines
        )
        log.info("provider batch request file built again", slice=record.slice_id,
                 requests=len(built.lines))  # fmt: skip
        return await self._save(record, documents=len(built.docs), requests=len(built.lines),
                                request_bytes=size, sha256=sha256)  # fmt: skip

    async def clean_orphans(self) -> None:
        """Cancel and delete this installation's orphan provider batches and files."""
        self.stats.orphans_cleaned += await self._orphans.clean(self._installation)

    # -- finishing --------------------------------------------------------------------------

    async def finish(self, records: Sequence[SliceRecord]) -> None:
        """Take every slice to its end, concurrently (each waits on its own provider batch)."""
        async with asyncio.TaskGroup() as group:
            for record in records:
                group.create_task(self._finish(record), name=f"provider-batch-{record.slice_id}")

    async def keep_leases(self) -> None:
        """Renew the leases of the slices this worker holds (see :meth:`Takeover.keep_leases`)."""
        await self._takeover.keep_leases(lambda: list(self._held))

    async def _finish(self, record: SliceRecord) -> None:
        """Steps 3 to 8 from wherever the slice stands (counted in flight meanwhile)."""
        self.stats.slices_in_flight += 1
        try:
            await self._take_to_end(record.slice_id)
        except LostLeaseError:
            log.warning("another worker took this provider batch over; leaving it",
                        slice=record.slice_id)  # fmt: skip
        finally:
            self.stats.slices_in_flight -= 1
            self._drop(record.slice_id)

    async def _take_to_end(self, slice_id: str) -> None:
        await self._submit(self._held[slice_id])
        record = self._held[slice_id]
        if record.stage is Stage.SUBMITTED:
            batch = await self._polling.wait(record, self._save)
            if batch is None:
                return  # stopped: the slice resumes at the next start
            if batch.errors:
                log.error("provider batch failed; its documents are classified online",
                          batch_id=batch.id, errors=list(batch.errors)[:5])  # fmt: skip
            record = await self._save(record, stage=Stage.DOWNLOADED, batch_status=batch.status,
                                      output_file_id=batch.output_file_id,
                                      error_file_id=batch.error_file_id)  # fmt: skip
            crash_at("after_download")
        if record.stage is Stage.DOWNLOADED:
            lines = await self._polling.results(record)
            answered = await self._answers.store(
                record.claim, lines, self._reserved.pop(slice_id, 0)
            )
            self.stats.input_tokens += answered.input_tokens
            self.stats.output_tokens += answered.output_tokens
            record = await self._save(record, stage=Stage.STORED, stored=answered.stored,
                                      online=answered.online, failed=answered.failed,
                                      input_tokens=answered.input_tokens,
                                      output_tokens=answered.output_tokens,
                                      cost_nanos=answered.cost_nanos)  # fmt: skip
        if record.stage is Stage.STORED:
            for file_id in (record.file_id, record.output_file_id, record.error_file_id):
                if file_id is not None:
                    await self._call(functools.partial(self._provider.delete, file_id))
            record = await self._save(record, stage=Stage.FINISHED)
            self._files.remove(slice_id)
            self.stats.slices_finished += 1
            log.info("provider batch finished", slice=slice_id, batch_id=record.batch_id,
                     stored=record.stored, online=record.online, failed=record.failed,
                     cost_usd=round(record.cost_usd, 6))  # fmt: skip

    async def _save(self, record: SliceRecord, **changes: object) -> SliceRecord:
        """Record ``changes`` before going on (fenced by the owner)."""
        updated = record.model_copy(update=changes)
        await self._db.wait(lambda: self._slices.save(updated, self.options.lease))
        self._held[record.slice_id] = updated
        return updated

    def _drop(self, slice_id: str) -> None:
        self._held.pop(slice_id, None)

    async def _call(self, call: Callable[[], Awaitable[T]]) -> T:
        """A provider call, retried through the provider's outages and rate limits."""
        value, _ = await self._provider_policy.call(call)
        return value
