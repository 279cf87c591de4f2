"""The provider's Batch API: upload a request file, create a batch, poll it, fetch its results.

OpenAI's Batch API (and Azure OpenAI's global batch) takes a JSONL file of chat-completions
requests and answers within a completion window (24 h) at half the price. This module is the
provider side of :mod:`batch_processor.route`: each call is one SDK request,
its errors translated to ours (:func:`batch_processor.llm.errors.translate`), so the route's
retry policy decides what is tried again. Lookups make the route's steps repeatable after a
crash: :meth:`ProviderBatches.find_file` finds an upload by its name and size, and
:meth:`ProviderBatches.find_batch` a batch by the slice id in its ``metadata``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batch_processor.errors import BatchProcessorError
from batch_processor.llm.client import LLMClassifier
from batch_processor.llm.errors import translate

#: The metadata key naming the slice a batch was created for (how a crash finds it again).
SLICE_KEY = "bp_slice"
#: The metadata key naming the database's installation (whose orphans are ours to clean).
INSTALLATION_KEY = "bp_installation"
#: Batches looked through for a slice's batch: the account's most recent ones.
FIND_DEPTH = 500
#: A batch in one of these states changes no more.
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})


@dataclass(frozen=True, slots=True)
class ProviderBatch:
    """What the route needs of a provider's batch object."""

    id: str
    status: str
    input_file_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    errors: tuple[str, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def ended(self) -> bool:
        """Whether the batch is in a final state."""
        return self.status in TERMINAL

    @classmethod
    def of(cls, raw: dict[str, Any]) -> ProviderBatch:
        """From the SDK's batch object (as a dict)."""
        errors = ((raw.get("errors") or {}).get("data")) or []
        return cls(
            id=str(raw["id"]),
            status=str(raw.get("status")),
            input_file_id=raw.get("input_file_id"),
            output_file_id=raw.get("output_file_id"),
            error_file_id=raw.get("error_file_id"),
            counts={
                k: int(v) for k, v in (raw.get("request_counts") or {}).items() if v is not None
            },
            errors=tuple(
                f"{e.get('code')}: {e.get('message')}"
                + (f" (line {e['line']})" if e.get("line") else "")
                for e in errors
                if isinstance(e, dict)
            ),
            metadata={str(k): str(v) for k, v in (raw.get("metadata") or {}).items()},
        )


class ProviderBatches:
    """The Batch API through the LLM classifier's SDK client (see the module docstring)."""

    def __init__(self, classifier: LLMClassifier, *, window: str = "24h") -> None:
        self._classifier = classifier
        self.window = window

    async def supported(self) -> bool:
        """Whether the endpoint serves the Batch API (a 404 or 405 on ``/files`` says no)."""
        try:
            await self._call("list batch files", "batch_files")
        except BatchProcessorError as exc:
            if _answered(exc, 404, 405):
                return False
            raise
        return True

    async def find_file(self, filename: str, size: int) -> str | None:
        """The id of an uploaded batch file of this name and size (an upload before a crash)."""
        files: list[dict[str, Any]] = await self._call("list batch files", "batch_files")
        for item in files:
            if item.get("filename") == filename and item.get("bytes") == size:
                return str(item["id"])
        return None

    async def files(self) -> list[tuple[str, str]]:
        """The batch files uploaded: (file id, file name), newest first."""
        files: list[dict[str, Any]] = await self._call("list batch files", "batch_files")
        return [(str(item["id"]), str(item.get("filename") or "")) for item in files]

    async def batches(self) -> list[ProviderBatch]:
        """The account's most recent batches (up to ``FIND_DEPTH``), newest first."""
        recent: list[dict[str, Any]] = await self._call(
            "list batches", "recent_batches", FIND_DEPTH
        )
        return [ProviderBatch.of(raw) for raw in recent]

    async def upload(self, path: Path, filename: str) -> str:
        """Upload a request file; its file id."""
        created = await self._call("upload", "upload_batch_file", str(path), filename)
        return str(created["id"])

    async def find_batch(self, slice_id: str) -> ProviderBatch | None:
        """The batch created for ``slice_id`` (by its metadata), if the provider has one."""
        for batch in await self.batches():
            if batch.metadata.get(SLICE_KEY) == slice_id:
                return batch
        return None

    async def create(self, file_id: str, metadata: dict[str, str]) -> ProviderBatch:
        """Create a chat-completions batch of ``file_id``."""
        raw = await self._call("create batch", "create_batch", file_id, self.window, metadata)
        return ProviderBatch.of(raw)

    async def retrieve(self, batch_id: str) -> ProviderBatch:
        """The batch's current state."""
        return ProviderBatch.of(await self._call("retrieve batch", "retrieve_batch", batch_id))

    async def cancel(self, batch_id: str) -> ProviderBatch:
        """Ask the provider to cancel the batch."""
        return ProviderBatch.of(await self._call("cancel batch", "cancel_batch", batch_id))

    async def content(self, file_id: str) -> bytes:
        """A result file's bytes."""
        data: bytes = await self._call("download", "file_content", file_id)
        return data

    async def delete(self, file_id: str) -> None:
        """Delete a file at the provider; one already gone is fine."""
        try:
            await self._call("delete file", "delete_file", file_id)
        except BatchProcessorError as exc:
            if not _answered(exc, 404):
                raise

    async def _call(self, what: str, name: str, *args: Any) -> Any:
        """One SDK call; its errors as ours, naming ``what`` was attempted."""
        sdk, client = await self._classifier.sdk_client()
        try:
            return await getattr(sdk, name)(client, *args)
        except sdk.OpenAIError as exc:
            error = translate(exc, timeout=self._classifier.options.timeout).error
            error.message = f"Batch API {what}: {error.message}"
            error.args = (error.message,)
            raise error from None


def _answered(exc: BatchProcessorError, *statuses: int) -> bool:
    """Whether the provider answered with one of ``statuses`` (see llm.errors)."""
    return any(f"answered {status}:" in exc.message for status in statuses)
