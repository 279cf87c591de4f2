"""Orphans: provider batches and files of this database's slices that no slice holds.

A crash between a provider call and its record, or a slice given back after its upload, can
leave a batch or a file at the provider that no record names: billed, never read, never
deleted. Every provider batch the route creates names the slice and this database's
installation id in its ``metadata``; a batch of this installation is an orphan when no record
of its slice exists, or when its slice's record names another batch. An orphan still running
is cancelled, and its files are deleted. A request file is an orphan when its slice's record
exists and names another file, or is finished. Batches and files of other installations
(another deployment sharing the provider account) are never touched.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from batch_processor.errors import BatchProcessorError, describe
from batch_processor.llm.batch_api import INSTALLATION_KEY, SLICE_KEY
from batch_processor.route.ports import Provider, SliceRecords
from batch_processor.slice_record import SliceRecord

log = structlog.get_logger("batch_processor.route")
Call = Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]]


class Orphans:
    """Finds and cleans this installation's orphan batches and files (module docstring)."""

    def __init__(self, provider: Provider, slices: SliceRecords, call: Call) -> None:
        self._provider = provider
        self._slices = slices
        self._call = call

    @staticmethod
    def metadata(record: SliceRecord, installation: str) -> dict[str, str]:
        """The metadata a slice's batch is created with (how it is found again)."""
        return {
            SLICE_KEY: record.slice_id,
            INSTALLATION_KEY: installation,
            "bp_job": record.job_id,
            "bp_sha256": record.sha256,
            "bp_documents": str(record.documents),
        }

    async def clean(self, installation: str) -> int:
        """Cancel and delete this installation's orphans; how many batches and files."""
        try:
            return await self._clean(installation)
        except BatchProcessorError as exc:  # never worth failing a run: the next check goes on
            log.warning("orphan provider batches not checked", error=describe(exc))
            return 0

    async def _clean(self, installation: str) -> int:
        batches = [
            batch
            for batch in await self._call(self._provider.batches)
            if batch.metadata.get(INSTALLATION_KEY) == installation
            and batch.metadata.get(SLICE_KEY)
        ]
        files = [
            (file_id, name)
            for file_id, name in await self._call(self._provider.files)
            if name.endswith(".jsonl")
        ]
        ids = {batch.metadata[SLICE_KEY] for batch in batches}
        ids |= {name.removesuffix(".jsonl") for _, name in files}
        records = await self._slices.get(sorted(ids)) if ids else {}
        cleaned = 0
        listed = {file_id for file_id, _ in files}
        for batch in batches:
            record = records.get(batch.metadata[SLICE_KEY])
            if record is not None and record.batch_id in (None, batch.id):
                continue  # its slice goes on (an unrecorded batch is found by its metadata)
            if batch.ended and batch.input_file_id not in listed:
                continue  # cleaned already (its request file is deleted last but one)
            if not batch.ended:
                await self._call(functools.partial(self._provider.cancel, batch.id))
            for file_id in (batch.output_file_id, batch.error_file_id, batch.input_file_id):
                if file_id is not None:
                    await self._call(functools.partial(self._provider.delete, file_id))
            log.warning("orphan provider batch cancelled and deleted", batch_id=batch.id,
                        slice=batch.metadata[SLICE_KEY], status=batch.status)  # fmt: skip
            cleaned += 1
        for file_id, name in files:
            record = records.get(name.removesuffix(".jsonl"))
            if record is None or (record.file_id == file_id and record.unfinished):
                continue  # not ours to judge, or its slice still needs it
            if record.file_id is None and record.unfinished:
                continue  # an upload not recorded yet: the slice finds it by name and size
            await self._call(functools.partial(self._provider.delete, file_id))
            log.warning("orphan provider file deleted", file_id=file_id, slice=record.slice_id)
            cleaned += 1
        return cleaned
