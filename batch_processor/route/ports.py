"""The route's seams: the slice records, the provider's Batch API, the LLM, the dedupe cache.

MongoDB implements :class:`SliceRecords` (:mod:`batch_processor.mongo.slices`), the openai SDK
:class:`Provider` (:mod:`batch_processor.llm.batch_api`), the LLM classifier
:class:`BatchClassifier` and the dedupe cache :class:`AnswerCache`;
:mod:`batch_processor.testing.fakes` implements each in memory for the route's unit tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

from batch_processor.classifiers import Classifier
from batch_processor.conversation import Conversation
from batch_processor.llm.batch_api import ProviderBatch
from batch_processor.models import ClassifierOutput
from batch_processor.slice_record import SliceRecord


class SliceRecords(Protocol):
    """Where slice records live, shared by every worker (each write fenced by its owner)."""

    async def installation(self) -> str:
        """The database's installation id (named in every provider batch's metadata)."""
        ...

    async def begin(self, record: SliceRecord) -> None:
        """Record a new slice."""
        ...

    async def save(self, record: SliceRecord, lease: timedelta) -> None:
        """Write ``record``, renewing its owner's lease; LostLeaseError if another owns it."""
        ...

    async def take(self, record: SliceRecord, owner: str, lease: timedelta) -> SliceRecord | None:
        """Take ``record`` as ``owner`` if it is unchanged since read; None if it moved."""
        ...

    async def renew(self, owner: str, slice_ids: Sequence[str], lease: timedelta) -> set[str]:
        """Renew ``owner``'s leases; return the ids it no longer owns."""
        ...

    async def remove(self, record: SliceRecord) -> None:
        """Delete a slice that holds nothing."""
        ...

    async def unfinished(self) -> list[SliceRecord]:
        """Every slice not finished, oldest first."""
        ...

    async def get(self, slice_ids: Sequence[str]) -> dict[str, SliceRecord]:
        """The records of these ids that exist."""
        ...

    async def adopt(self, record: SliceRecord) -> bool:
        """Insert a record found on disk unless one exists; whether it was inserted."""
        ...

    async def ensure_indexes(self) -> None:
        """Create the indexes the route's queries need."""
        ...


class Provider(Protocol):
    """The provider's Batch API (files and batches); errors are :mod:`batch_processor.errors`."""

    async def supported(self) -> bool:
        """Whether the endpoint serves the Batch API."""
        ...

    async def find_file(self, filename: str, size: int) -> str | None:
        """The id of an uploaded file of this name and size."""
        ...

    async def files(self) -> list[tuple[str, str]]:
        """The batch files uploaded: (file id, file name), newest first."""
        ...

    async def upload(self, path: Path, filename: str) -> str:
        """Upload a request file; its id."""
        ...

    async def find_batch(self, slice_id: str) -> ProviderBatch | None:
        """The batch created for ``slice_id``, by its metadata."""
        ...

    async def batches(self) -> list[ProviderBatch]:
        """The account's recent batches."""
        ...

    async def create(self, file_id: str, metadata: dict[str, str]) -> ProviderBatch:
        """Create a batch of ``file_id``."""
        ...

    async def retrieve(self, batch_id: str) -> ProviderBatch:
        """The batch's current state."""
        ...

    async def cancel(self, batch_id: str) -> ProviderBatch:
        """Ask the provider to cancel the batch."""
        ...

    async def content(self, file_id: str) -> bytes:
        """A result file's bytes."""
        ...

    async def delete(self, file_id: str) -> None:
        """Delete a file (one already gone is fine)."""
        ...


class BatchClassifier(Classifier, Protocol):
    """The LLM classifier's Batch API side: request bodies, reservations, replies."""

    def batch_body(self, conversation: Conversation, metadata: Mapping[str, Any]) -> dict[str, Any]:
        """The chat-completions body the online route would send."""
        ...

    def batch_reservation(self, body: dict[str, Any]) -> int | None:
        """Reserve a request's worst case (nano-dollars) against the budget; None: over it."""
        ...

    def release_reservation(self, amount: int) -> None:
        """Give back a reservation."""
        ...

    def read_batch_reply(
        self, response: Mapping[str, Any], turns: Mapping[str, int] | None = None
    ) -> ClassifierOutput:
        """A line's chat completion, validated and counted; InvalidReplyError if unusable."""
        ...


class AnswerCache(Classifier, Protocol):
    """The dedupe cache in front of the LLM: identical texts are answered once."""

    async def prefetch(self, texts: Sequence[Conversation | str]) -> None:
        """Look a page's texts up in one query."""
        ...

    def key(self, text: Conversation | str) -> str:
        """What identical texts share."""
        ...

    async def cached(self, key: str) -> ClassifierOutput | None:
        """The cached answer of ``key``, if any."""
        ...

    def remember(self, text: Conversation | str, output: ClassifierOutput) -> None:
        """Keep an answer for the texts that repeat it."""
        ...

    async def flush(self) -> None:
        """Save what was remembered."""
        ...


class Triage(Protocol):
    """The confidence cascade in front of the route (``--classifier cascade``).

    Only the documents it is unsure of (or audits) are requested; the others are stored at
    once with the offline answer, like dedupe hits.
    """

    async def triage(
        self, conversation: Conversation | str, metadata: Mapping[str, Any]
    ) -> ClassifierOutput:
        """The offline answer; its ``cascade.route`` is ``offline`` when no request is needed."""
        ...

    async def rejoin(
        self,
        conversation: Conversation | str,
        metadata: Mapping[str, Any],
        answer: ClassifierOutput,
    ) -> ClassifierOutput:
        """The result of a document the LLM answered (the batch, or online after a failed line)."""
        ...
