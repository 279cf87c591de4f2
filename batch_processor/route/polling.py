"""Waiting for a provider batch to end, and fetching its result files.

A submitted batch is polled with backoff from ``batch_route_poll_seconds`` to
``batch_route_poll_max_seconds``; each change of its status is recorded, and the documents'
leases are renewed at each poll. Its output and error files are cached on this worker's disk
until stored; a worker without them (it took the slice over, or lost its disk) downloads them
again.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from batch_processor.clock import Clock
from batch_processor.documents.ports import Source
from batch_processor.failpoints import crash_at
from batch_processor.files.provider_batches import SliceFiles
from batch_processor.llm.batch_api import ProviderBatch
from batch_processor.outage import DatabaseCalls
from batch_processor.route.options import RouteOptions
from batch_processor.route.ports import Provider
from batch_processor.slice_record import SliceRecord

log = structlog.get_logger("batch_processor.route")
Call = Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]]
Save = Callable[..., Awaitable[SliceRecord]]


class Polling:
    """Polls one worker's provider batches and fetches their results (module docstring)."""

    def __init__(
        self,
        *,
        options: RouteOptions,
        source: Source,
        provider: Provider,
        files: SliceFiles,
        worker_id: str,
        db: DatabaseCalls,
        clock: Clock,
        stopped: Callable[[], bool],
        call: Call,
    ) -> None:
        self._options = options
        self._source = source
        self._provider = provider
        self._files = files
        self._worker_id = worker_id
        self._db = db
        self._clock = clock
        self._stopped = stopped
        self._call = call

    async def wait(self, record: SliceRecord, save: Save) -> ProviderBatch | None:
        """Wait for the batch to end, renewing the leases; None if the process stops first.

        ``save(record, **changes)`` records a change of the batch's status.
        """
        wait = self._options.poll_seconds
        batch_id = str(record.batch_id)
        polled = False
        while True:
            batch: ProviderBatch = await self._call(
                functools.partial(self._provider.retrieve, batch_id)
            )
            if batch.status != record.batch_status:
                record = await save(record, batch_status=batch.status)
                log.info("provider batch", batch_id=batch_id, status=batch.status, **batch.counts)
            if batch.ended:
                return batch
            if polled:
                crash_at("polling")
            polled = True
            hold = functools.partial(
                self._source.hold, record.claim, self._worker_id, self._options.doc_lease
            )
            await self._db.wait(hold)
            await self._clock.sleep(wait)
            if self._stopped():
                return None
            wait = min(wait * 1.5, self._options.poll_max_seconds)

    async def results(self, record: SliceRecord) -> list[bytes]:
        """The batch's result lines: cached on disk, or downloaded (and cached) now."""
        if not self._files.has_results(record.slice_id):
            output = await self._download(record.output_file_id)
            errors = await self._download(record.error_file_id)
            await asyncio.to_thread(self._files.keep_results, record.slice_id, output, errors)
        return await asyncio.to_thread(lambda: list(self._files.results(record.slice_id)))

    async def _download(self, file_id: str | None) -> bytes:
        if file_id is None:
            return b""
        data: bytes = await self._call(functools.partial(self._provider.content, file_id))
        return data
