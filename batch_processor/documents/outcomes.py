"""One document's outcome, built and stored the same way on every route.

The online pipeline (:mod:`batch_processor.pipeline.task` and :mod:`.writer`) and the Batch
API route (:mod:`batch_processor.route`) both read a document's conversation, build its
result or its failure, and store them fenced by the claim through this module; nothing else
builds those records, so a document fails with the same reason whichever route it took.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, Protocol, TypeVar

from batch_processor.conversation import Roles
from batch_processor.documents.ports import Sink
from batch_processor.documents.text import ExtractedText, extract_text
from batch_processor.errors import (
    BatchProcessorError,
    DataError,
    LostLeaseError,
    categorize,
    describe,
)
from batch_processor.models import (
    ClassifiedDocument,
    ClassifierOutput,
    FailedDocument,
    SourceDocument,
)
from batch_processor.redaction import redact_text

T = TypeVar("T")


class Retried(Protocol):
    """How a database call is retried (``DatabaseCalls.brief`` or ``DatabaseCalls.wait``)."""

    async def __call__(self, operation: Callable[[], Awaitable[T]], /) -> T:
        """``operation``'s value, once it succeeds; its last error once the retries give up."""
        ...


class Ended(StrEnum):
    """How a document's handling ended (each document is settled with exactly one)."""

    STORED = "stored"
    FAILED = "failed"
    QUEUED_CLASSIFY = "queued_classify"
    QUEUED_STORE = "queued_store"
    #: Given back unprocessed (the run stopped): its claim is released.
    RELEASED = "released"
    #: Another worker took the document over: this worker's write was dropped.
    LOST_LEASE = "lost_lease"


def reason(error: BaseException) -> str:
    """The failure reason stored with a document: our message, or the exception's first line.

    Secrets are masked (see :mod:`batch_processor.redaction`).
    """
    if isinstance(error, BatchProcessorError):
        return redact_text(error.message)
    return describe(error)


@dataclass(frozen=True, slots=True)
class Outcomes:
    """Builds the records of one job's documents: conversation, result, failure."""

    job_id: str
    classifier: tuple[str, str]  # name, version
    text_field: str
    max_text_chars: int
    roles: Roles

    def text(self, doc: SourceDocument) -> ExtractedText | FailedDocument:
        """The conversation to classify, or the DATA failure that says why there is none."""
        if doc.problem is not None:
            return self.failure(doc.id, DataError(doc.problem), attempts=0, claim=doc.claim)
        try:
            return extract_text(doc, self.text_field, self.max_text_chars, self.roles)
        except DataError as exc:
            return self.failure(doc.id, exc, attempts=0, claim=doc.claim)
        except Exception as exc:  # noqa: BLE001 - odd data never stops a run
            error = DataError(f"cannot read the text: {describe(exc)}")
            return self.failure(doc.id, error, attempts=0, claim=doc.claim)

    def result(
        self,
        doc: SourceDocument,
        text: ExtractedText,
        output: ClassifierOutput,
        *,
        attempts: int,
        claim: str | None,
        route: Literal["online", "batch"] | None,
    ) -> ClassifiedDocument:
        """The result of ``output`` for ``doc`` (``route`` None: the offline model or a cache)."""
        result = ClassifiedDocument.of(
            output,
            doc_id=doc.id,
            classifier=self.classifier,
            attempts=attempts,
            text=(text.original_chars, text.truncated),
            job_id=self.job_id,
            claim=claim,
            route=route,
            turns=text.turns,
        )
        return result.model_copy(update={"replaced": doc.replaced}) if doc.replaced else result

    def failure(
        self, doc_id: str, error: BaseException, *, attempts: int, claim: str | None
    ) -> FailedDocument:
        """The failure record of ``doc_id``: one reason rule (:func:`reason`) for every route."""
        return FailedDocument(
            doc_id=doc_id,
            error=reason(error),
            category=categorize(error),
            attempts=attempts,
            job_id=self.job_id,
            claim=claim,
        )


@dataclass(frozen=True, slots=True)
class Stored:
    """What one fenced write did: ids stored, ids failed (with their records), ids fenced off."""

    stored: set[str]
    failures: list[FailedDocument]
    lost: set[str]


async def store_outcomes(
    sink: Sink,
    retried: Retried,
    results: Sequence[ClassifiedDocument],
    failures: Sequence[FailedDocument],
) -> Stored:
    """Store results, mark their sources done, mark failures: fenced by each claim.

    A result the server refuses as data becomes a failure; a write fenced off (another worker
    took the document over) is dropped and reported in ``lost``. Raises the last error if
    MongoDB is still unavailable after ``retried``'s retries.
    """
    errors = await retried(lambda: sink.store_results(results))
    lost = {doc_id for doc_id, error in errors.items() if isinstance(error, LostLeaseError)}
    refused = [
        FailedDocument(
            doc_id=result.doc_id,
            error=reason(errors[result.doc_id]),
            category=categorize(errors[result.doc_id]),
            attempts=result.attempts,
            job_id=result.job_id,
            claim=result.claim,
        )
        for result in results
        if result.doc_id in errors and result.doc_id not in lost
    ]
    stored = [result for result in results if result.doc_id not in errors]
    all_failures = [*failures, *refused]
    lost |= await retried(lambda: sink.mark_done(stored))
    if all_failures:
        lost |= await retried(lambda: sink.mark_failed(all_failures))
    return Stored(
        stored={result.doc_id for result in stored} - lost,
        failures=[failure for failure in all_failures if failure.doc_id not in lost],
        lost=lost,
    )
