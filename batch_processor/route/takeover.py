"""Which unfinished slices a worker goes on with: its own, dead workers', an earlier version's.

A slice belongs to its owner while the owner's lease runs (``lease_seconds``, renewed every
third of it). At start a worker takes the slices its own previous process left (the batch
directory's lock says that process is gone) and those whose owner's lease ran out; it watches
the others, and takes each one whose lease then runs out unrenewed (a batch run waits at most
one lease for them). Taking a slice restamps its documents with the new owner; a slice found
still claiming is released instead (nothing of it was sent). Slices an earlier version kept
only on this disk (``state.json``) are recorded in MongoDB first.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import structlog

from batch_processor.clock import Clock
from batch_processor.documents.ports import Source
from batch_processor.errors import BatchProcessorError, describe
from batch_processor.files.provider_batches import SliceFiles
from batch_processor.outage import DatabaseCalls, abandonable
from batch_processor.route.options import RouteOptions, RouteStats
from batch_processor.route.ports import SliceRecords
from batch_processor.slice_record import NANOS_PER_USD, SliceRecord, Stage

log = structlog.get_logger("batch_processor.route")


class Takeover:
    """Finds and takes the slices this worker goes on with (see the module docstring)."""

    def __init__(
        self,
        *,
        options: RouteOptions,
        source: Source,
        slices: SliceRecords,
        files: SliceFiles,
        stats: RouteStats,
        worker_id: str,
        db: DatabaseCalls,
        clock: Clock,
        stopped: Callable[[], bool],
    ) -> None:
        self.options = options
        self._source = source
        self._slices = slices
        self._files = files
        self._stats = stats
        self.worker_id = worker_id
        self._db = db
        self._clock = clock
        self._stopped = stopped
        self._watched: list[SliceRecord] = []  # other live workers' slices, seen at start

    async def resume(self) -> list[SliceRecord]:
        """The slices this worker goes on with: its own, and those whose owner's lease ran out.

        Slices written by an earlier version on this disk are recorded in MongoDB first.
        """
        await self._adopt_legacy()
        records = await self._db.wait(self._slices.unfinished)
        self._watched = []  # what this look found; an earlier look's list is stale
        ready = []
        now = self._clock.now()
        for record in records:
            if record.owner != self.worker_id and not record.expired(now):
                self._watched.append(record)
                continue
            taken = await self.take(record)
            if taken is not None:
                ready.append(taken)
        self._clean_cache(records)
        return ready

    async def watched(self) -> list[SliceRecord]:
        """Other workers' slices seen at start, taken once their lease ran out unrenewed.

        Waits (at most one lease) for each to be renewed or to lapse, so a worker that
        starts beside a dead one's slice finishes it instead of leaving it for a later run.
        """
        ready = []
        for seen in self._watched:
            wait = (seen.lease_until - self._clock.now()).total_seconds() + 1.0
            if wait > 0 and not self._stopped():
                log.info("waiting for another worker's provider batch", slice=seen.slice_id,
                         owner=seen.owner, seconds=round(wait, 1))  # fmt: skip
                await self._clock.sleep(wait)
            if self._stopped():
                break
            found = await self._db.wait(functools.partial(self._slices.get, [seen.slice_id]))
            now = found.get(seen.slice_id)
            if now is not None and now.unfinished and now.expired(self._clock.now()):
                taken = await self.take(now)
                if taken is not None:
                    ready.append(taken)
        self._watched = []
        return ready

    async def take(self, record: SliceRecord) -> SliceRecord | None:
        """Take ``record`` over (a claiming slice is released instead); None if not ours."""
        taken = await self._db.wait(
            lambda: self._slices.take(record, self.worker_id, self.options.lease)
        )
        if taken is None:
            return None
        if record.owner != self.worker_id:
            self._stats.slices_taken_over += 1
            log.warning("taking over a provider batch", slice=record.slice_id,
                        owner=record.owner, stage=record.stage.value)  # fmt: skip
            hold = functools.partial(
                self._source.hold, taken.claim, self.worker_id, self.options.doc_lease
            )
            await self._db.wait(hold)
        if taken.stage is Stage.CLAIMING:
            # Killed while claiming: nothing was sent; give the claims back.
            released = await self._db.wait(lambda: self._source.release_tokens([taken.claim]))
            await self._db.wait(lambda: self._slices.remove(taken))
            self._files.remove(taken.slice_id)
            log.info("unfinished slice released", slice=taken.slice_id, released=released)
            return None
        log.info("resuming a provider batch", slice=taken.slice_id, stage=taken.stage.value,
                 batch_id=taken.batch_id, documents=taken.documents)  # fmt: skip
        return taken

    async def _adopt_legacy(self) -> None:
        """Record in MongoDB the slices an earlier version kept on this disk only."""
        for state in self._files.legacy_states():
            try:
                record = SliceRecord.model_validate(
                    {**state, "owner": self.worker_id,
                     "cost_nanos": round(float(state.get("cost_usd", 0.0)) * NANOS_PER_USD)}
                )  # fmt: skip
            except ValueError:
                continue
            if await self._db.wait(functools.partial(self._slices.adopt, record)):
                log.info("provider batch recorded in MongoDB", slice=record.slice_id)
            self._files.forget_legacy_state(record.slice_id)

    def _clean_cache(self, records: Sequence[SliceRecord]) -> None:
        """Remove cached files of slices that are finished or were never recorded."""
        unfinished = {record.slice_id for record in records}
        for slice_id in self._files.cached():
            if slice_id not in unfinished:
                self._files.remove(slice_id)

    async def keep_leases(self, held: Callable[[], list[str]]) -> None:
        """Renew the leases of the ``held`` slices every third of a lease.

        Until a stop, or until cancelled once the route's work is done. A slice another worker
        took over meanwhile (this one was presumed dead) is logged; its next write is refused.
        """
        period = self.options.lease.total_seconds() / 3
        while not self._stopped():
            await self._clock.sleep(period)
            ids = held()
            if not ids:
                continue
            try:
                renewal = self._slices.renew(self.worker_id, ids, self.options.lease)
                lost = await abandonable(renewal)  # cancelled when done: see abandonable
            except BatchProcessorError as exc:  # an outage: the next round tries again
                log.warning("provider batch leases not renewed", error=describe(exc))
                continue
            for slice_id in lost:
                log.warning("another worker took this provider batch over", slice=slice_id)
