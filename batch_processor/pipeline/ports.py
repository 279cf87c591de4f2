"""The seams of the pipeline: what it needs from a source of documents and a sink for results.

``MongoSource`` and ``MongoSink`` (:mod:`batch_processor.mongo`) implement them on MongoDB;
:mod:`batch_processor.testing.fakes` implements them in memory for the pipeline's unit tests.
Ids are the source ``_id`` as canonical extended JSON (strings). Implementations raise
:mod:`batch_processor.errors` types, which decide what is retried.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Protocol

from batch_processor.errors import BatchProcessorError
from batch_processor.models import ClassifiedDocument, FailedDocument, SourceDocument


class PageReader(Protocol):
    """One pass over the unprocessed documents, a page at a time."""

    async def next_page(self) -> list[SourceDocument]:
        """The next page; empty only when the pass is over. May raise TransientError."""
        ...

    async def close(self) -> None:
        """Release the pass's server resources."""
        ...


class Source(Protocol):
    """Unprocessed documents, and the claims that keep two workers off the same one."""

    def page_cursor(self, page_size: int) -> PageReader:
        """A new pass over the unprocessed documents in ``_id`` order."""
        ...

    async def claim(
        self,
        doc_ids: Sequence[str],
        *,
        job_id: str,
        worker_id: str,
        token: str,
        reclaim: bool = False,
        previous_claim: str | None = None,
    ) -> set[str]:
        """Claim the free documents among ``doc_ids``; return the ids this claim won."""
        ...

    async def release_ids(self, doc_ids: Sequence[str], job_id: str) -> None:
        """Give back this job's claims on ``doc_ids``."""
        ...

    async def release_claims(
        self,
        *,
        worker_id: str,
        job_id: str,
        older_than: timedelta,
        exclude: Sequence[str] = (),
        claims: Sequence[str] = (),
    ) -> int:
        """Free the claims of this worker's dead jobs and anyone's past ``older_than``."""
        ...


class Sink(Protocol):
    """Where results go, and where sources are marked processed or failed."""

    async def store_results(
        self, results: Sequence[ClassifiedDocument]
    ) -> dict[str, BatchProcessorError]:
        """Store results (idempotently); return the per-document errors that will not heal."""
        ...

    async def mark_done(self, results: Sequence[ClassifiedDocument]) -> None:
        """Mark these sources processed (only after their results are stored)."""
        ...

    async def mark_failed(self, failures: Sequence[FailedDocument]) -> None:
        """Mark these sources failed, with the reason and the category."""
        ...

    async def finish_stored(self, doc_ids: Sequence[str], job_id: str) -> set[str]:
        """Mark done the documents whose result is already stored; return their ids."""
        ...


class RunMetrics(Protocol):
    """What the pipeline reports as it goes (``service.telemetry.Telemetry`` exports it)."""

    def classified(self, seconds: float) -> None:
        """One classification took ``seconds`` (retries included)."""
        ...

    def batch_stored(self) -> None:
        """A batch file ended with at least one stored result."""
        ...
