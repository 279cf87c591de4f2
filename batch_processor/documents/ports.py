"""The seams of the pipeline: what it needs from a source of documents and a sink for results.

``MongoSource`` and ``MongoSink`` (:mod:`batch_processor.mongo`) implement them on MongoDB;
:mod:`batch_processor.testing.fakes` implements them in memory for the pipeline's unit tests.
Ids are the source ``_id`` as canonical extended JSON (strings). Implementations raise
:mod:`batch_processor.errors` types, which decide what is retried.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import timedelta
from typing import Protocol

from batch_processor.errors import BatchProcessorError
from batch_processor.models import ClassifiedDocument, FailedDocument, SourceDocument
from batch_processor.priority import Priority


class PageReader(Protocol):
    """One pass over the unprocessed documents, a page at a time."""

    page_size: int  # of the next page; may change between pages

    async def next_page(self) -> list[SourceDocument]:
        """The next page; empty only when the pass is over. May raise TransientError."""
        ...

    async def close(self) -> None:
        """Release the pass's server resources."""
        ...


class Source(Protocol):
    """Unprocessed documents, and the claims that keep two workers off the same one."""

    def page_cursor(self, page_size: int, level: Priority | None = None) -> PageReader:
        """A new pass over the unprocessed documents (of ``level``) in ``_id`` order."""
        ...

    async def has_pending(self, level: Priority | None = None) -> bool:
        """Whether any unprocessed document (of ``level``) waits."""
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
        lease: timedelta | None = None,
    ) -> set[str]:
        """Claim the free documents among ``doc_ids``; return the ids this claim won.

        ``lease`` replaces the source's lease (the Batch API route's: past the provider's window).
        """
        ...

    async def count_pending(self) -> int:
        """How many unprocessed documents wait (a full count)."""
        ...

    async def claimed(self, claim: str) -> list[SourceDocument]:
        """The documents still claimed under ``claim``."""
        ...

    async def hold(self, claim: str, worker_id: str, lease: timedelta) -> int:
        """Renew the documents claimed under ``claim`` as ``worker_id``'s; how many."""
        ...

    async def release_tokens(self, claims: Sequence[str]) -> int:
        """Give back every document still claimed under one of ``claims``; how many."""
        ...

    async def release_ids(self, doc_ids: Sequence[str], job_id: str) -> None:
        """Give back this job's claims on ``doc_ids``."""
        ...

    async def take_over(self, worker_id: str) -> Counter[str]:
        """Release other workers' expired leases to pending; return the counts by worker."""
        ...

    async def release_claims(
        self,
        *,
        worker_id: str,
        job_id: str,
        exclude: Sequence[str] = (),
        claims: Sequence[str] = (),
    ) -> int:
        """Free the claims of this worker's dead jobs and of the ``claims`` tokens."""
        ...


class Sink(Protocol):
    """Where results go, and where sources are marked processed or failed."""

    async def store_results(
        self, results: Sequence[ClassifiedDocument]
    ) -> dict[str, BatchProcessorError]:
        """Store results (idempotently); return the per-document errors that will not heal."""
        ...

    async def mark_done(self, results: Sequence[ClassifiedDocument]) -> set[str]:
        """Mark these sources processed (only after their results are stored).

        Returns the ids not marked because they are no longer held under the result's claim.
        """
        ...

    async def mark_failed(self, failures: Sequence[FailedDocument]) -> set[str]:
        """Mark these sources failed; return the ids no longer held under the claim."""
        ...

    async def finish_stored(
        self,
        doc_ids: Sequence[str],
        job_id: str,
        claim: str | None = None,
        since_claim: str | None = None,
    ) -> set[str]:
        """Mark done the documents whose result is stored (under ``since_claim`` or later)."""
        ...
