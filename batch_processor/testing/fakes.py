"""In-memory fakes of the pipeline's seams, for fast unit tests with no server and no sleeping.

:class:`MemorySource` and :class:`MemorySink` implement the
:mod:`~batch_processor.documents.ports` protocols with the same claim semantics as MongoDB (a
document is claimed by one claim token; a worker's own old claims can be reclaimed), and can be
told to fail: each holds a list of errors to raise on its next calls, so a test scripts an outage
call by call. :class:`ScriptedClassifier` answers from a function of the text, and
:class:`InstantSleep` records the delays it was asked to wait and returns at once.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from batch_processor.classifiers.base import Classifier
from batch_processor.conversation import Conversation
from batch_processor.errors import BatchProcessorError
from batch_processor.models import (
    Classification,
    ClassifiedDocument,
    ClassifierOutput,
    FailedDocument,
    Sentiment,
    SentimentLabel,
    SourceDocument,
    utcnow,
)
from batch_processor.priority import Priority, parse_priority


@dataclass(slots=True)
class _State:
    status: str | None = None  # None (pending), "claimed", "done" or "failed"
    job: str | None = None
    worker: str | None = None
    claim: str | None = None
    claimed_at: datetime | None = None
    error: str | None = None
    category: str | None = None


class Faults:
    """Errors to raise on the next calls of one operation, in order (then calls succeed)."""

    def __init__(self) -> None:
        self._pending: list[BaseException] = []
        self.calls = 0

    def fail_next(self, *errors: BaseException) -> None:
        """Raise these errors on the next calls, one per call."""
        self._pending.extend(errors)

    def check(self) -> None:
        """Count a call; raise its scripted error, if one is left."""
        self.calls += 1
        if self._pending:
            raise self._pending.pop(0)


class MemoryPages:
    """One pass over a :class:`MemorySource`'s pending documents, in id order."""

    def __init__(self, source: MemorySource, page_size: int, level: Priority | None) -> None:
        self._source = source
        self.page_size = page_size
        self._level = level
        self._after: str | None = None

    async def next_page(self) -> list[SourceDocument]:
        """The next page of pending documents after the last one returned."""
        self._source.read_faults.check()
        order = self._source.order
        after = -1 if self._after is None else order[self._after]
        ids = [
            doc_id
            for doc_id, position in order.items()
            if position > after and self._source.pending(doc_id, self._level)
        ][: self.page_size]
        if ids:
            self._after = ids[-1]
        return [self._source.docs[doc_id] for doc_id in ids]

    async def close(self) -> None:
        """Nothing to release."""


class MemorySource:
    """Source documents and their processing states, in memory."""

    def __init__(self, docs: Sequence[SourceDocument] = ()) -> None:
        self.docs: dict[str, SourceDocument] = {}
        self.states: dict[str, _State] = {}
        self.order: dict[str, int] = {}
        self.read_faults = Faults()
        self.claim_faults = Faults()
        self.add(docs)

    def add(self, docs: Sequence[SourceDocument]) -> None:
        """Insert pending documents."""
        for doc in docs:
            self.docs[doc.id] = doc
            self.states[doc.id] = _State()
            self.order[doc.id] = len(self.order)

    def status(self, doc_id: str) -> str | None:
        """The processing status of one document (None: pending)."""
        return self.states[doc_id].status

    def count(self, status: str | None) -> int:
        """How many documents have this status."""
        return sum(1 for state in self.states.values() if state.status == status)

    def pending(self, doc_id: str, level: Priority | None = None) -> bool:
        """Whether ``doc_id`` is pending (and of ``level``, if given)."""
        if self.states[doc_id].status is not None:
            return False
        return level is None or parse_priority(self.docs[doc_id].fields.get("priority"))[0] == level

    def page_cursor(self, page_size: int, level: Priority | None = None) -> MemoryPages:
        """A new pass over the pending documents (of ``level``)."""
        return MemoryPages(self, page_size, level)

    async def has_pending(self, level: Priority | None = None) -> bool:
        """Whether any document (of ``level``) is pending."""
        return any(self.pending(doc_id, level) for doc_id in self.docs)

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
        """Claim the free documents (and, with ``reclaim``, this worker's own old claims)."""
        self.claim_faults.check()
        won = set()
        for doc_id in doc_ids:
            state = self.states[doc_id]
            own = state.status == "claimed" and (
                state.worker == worker_id or (previous_claim and state.claim == previous_claim)
            )
            if state.status is None or (reclaim and own):
                self.states[doc_id] = _State("claimed", job_id, worker_id, token, utcnow())
                won.add(doc_id)
        return won

    async def release_ids(self, doc_ids: Sequence[str], job_id: str) -> None:
        """Give back this job's claims on ``doc_ids``."""
        for doc_id in doc_ids:
            state = self.states[doc_id]
            if state.status == "claimed" and state.job == job_id:
                self.states[doc_id] = _State()

    async def count_pending(self) -> int:
        """How many documents are pending."""
        return self.count(None)

    async def claimed(self, claim: str) -> list[SourceDocument]:
        """The documents still claimed under ``claim``, in insertion order."""
        return [
            self.docs[doc_id].model_copy(update={"claim": claim})
            for doc_id in self.order
            if self.states[doc_id].status == "claimed" and self.states[doc_id].claim == claim
        ]

    async def hold(self, claim: str, worker_id: str, lease: timedelta) -> int:
        """Restamp the documents claimed under ``claim`` as ``worker_id``'s (no expiry here)."""
        held = 0
        for state in self.states.values():
            if state.status == "claimed" and state.claim == claim:
                state.worker = worker_id
                held += 1
        return held

    async def release_tokens(self, claims: Sequence[str]) -> int:
        """Give back every document claimed under one of ``claims``."""
        released = 0
        for doc_id, state in self.states.items():
            if state.status == "claimed" and state.claim in claims:
                self.states[doc_id] = _State()
                released += 1
        return released

    async def take_over(self, worker_id: str) -> Counter[str]:
        """Nothing expires in memory: leases are the MongoDB source's (see its tests)."""
        return Counter()

    async def release_claims(
        self,
        *,
        worker_id: str,
        job_id: str,
        exclude: Sequence[str] = (),
        claims: Sequence[str] = (),
    ) -> int:
        """Free the claims of this worker's other jobs and of ``claims``."""
        released = 0
        for doc_id, state in self.states.items():
            if state.status != "claimed" or doc_id in exclude:
                continue
            if (state.worker == worker_id and state.job != job_id) or state.claim in claims:
                self.states[doc_id] = _State()
                released += 1
        return released


class MemorySink:
    """Stored results and marks, in memory; marks are applied to a :class:`MemorySource`."""

    def __init__(self, source: MemorySource) -> None:
        self.source = source
        self.results: dict[str, ClassifiedDocument] = {}
        self.store_faults = Faults()
        self.writes = 0
        #: Set to hold every store_results call until it is set (to keep results in flight).
        self.gate: asyncio.Event | None = None

    async def store_results(
        self, results: Sequence[ClassifiedDocument]
    ) -> dict[str, BatchProcessorError]:
        """Store results by document id (a second write of one id replaces the first)."""
        if self.gate is not None:
            await self.gate.wait()
        self.store_faults.check()
        self.writes += 1
        for result in results:
            self.results[result.doc_id] = result
        return {}

    def _fenced(self, doc_id: str, claim: str | None) -> bool:
        """Whether the document is no longer held under ``claim`` (None: not fenced)."""
        return claim is not None and self.source.states[doc_id].claim != claim

    async def mark_done(self, results: Sequence[ClassifiedDocument]) -> set[str]:
        """Mark sources processed while held under the result's claim; return fenced ids."""
        lost = set()
        for result in results:
            if self._fenced(result.doc_id, result.claim):
                lost.add(result.doc_id)
            else:
                state = _State("done", result.job_id, claim=result.claim)
                self.source.states[result.doc_id] = state
        return lost

    async def mark_failed(self, failures: Sequence[FailedDocument]) -> set[str]:
        """Mark sources failed with the reason and category (never one already done)."""
        lost = set()
        for failure in failures:
            if self._fenced(failure.doc_id, failure.claim):
                lost.add(failure.doc_id)
            elif self.source.states[failure.doc_id].status != "done":
                self.source.states[failure.doc_id] = _State(
                    "failed",
                    failure.job_id,
                    claim=failure.claim,
                    error=failure.error,
                    category=str(failure.category),
                )
        return lost

    async def finish_stored(
        self,
        doc_ids: Sequence[str],
        job_id: str,
        claim: str | None = None,
        since_claim: str | None = None,
    ) -> set[str]:
        """Mark done the documents that have a result stored under ``since_claim`` or later."""
        stored = {
            doc_id
            for doc_id in doc_ids
            if doc_id in self.results
            and (since_claim is None or (self.results[doc_id].claim or "") >= since_claim)
        }
        for doc_id in stored:
            self.source.states[doc_id] = _State("done", job_id, claim=claim)
        return stored


def neutral_classification(category: str = "general_inquiry") -> Classification:
    """A valid classification with the given category."""
    return Classification(
        sentiment=Sentiment(label=SentimentLabel.NEUTRAL, score=0.0),
        category=category,
        urgency="low",
        language="en",
    )


@dataclass(slots=True)
class ScriptedClassifier(Classifier):
    """A classifier whose answer (or error) for a text is decided by ``answer``."""

    answer: Callable[[str], Classification | BaseException] = field(
        default=lambda _text: neutral_classification()
    )
    name: str = "scripted"
    version: str = "1"
    calls: list[str] = field(default_factory=list)
    #: Set to hold every call until it is set (to keep documents in flight).
    gate: asyncio.Event | None = None

    async def classify(
        self, conversation: Conversation | str, metadata: Mapping[str, Any]
    ) -> ClassifierOutput:
        """Answer from the script: a classification, or raise the scripted error."""
        text = Conversation.of(conversation).customer_text
        self.calls.append(text)
        if self.gate is not None:
            await self.gate.wait()
        outcome = self.answer(text)
        if isinstance(outcome, BaseException):
            raise outcome
        return ClassifierOutput(classification=outcome)

    def summary(self) -> dict[str, Any]:
        """Nothing to add to the run summary."""
        return {}

    async def aclose(self) -> None:
        """Nothing to release."""


class InstantSleep:
    """An injected ``sleep`` that records each delay and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        """Record the delay; yield to the loop once."""
        self.delays.append(delay)
        await asyncio.sleep(0)


def documents(count: int, text: str = "My invoice is wrong, please help") -> list[SourceDocument]:
    """``count`` source documents with ids ``d0000``, ``d0001``... and one message each."""
    return [
        SourceDocument(id=f"d{index:04d}", fields={"messages": f"{text} (#{index})"})
        for index in range(count)
    ]
