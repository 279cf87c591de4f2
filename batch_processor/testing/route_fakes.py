"""In-memory fakes of the Batch API route's seams: slice records, the provider, the LLM.

:class:`MemorySlices` keeps slice records with MongoDB's fencing (a write by a worker that no
longer owns the slice raises LostLeaseError). :class:`MemoryProvider` is a Batch API whose
batches end when the test says so (:meth:`MemoryProvider.complete`, ``expire``, ``fail``),
answering each line with the classification :class:`BatchLLM` reads back. :class:`BatchLLM`
builds bodies, reserves a fixed price per request against an optional budget, and classifies
online too (counting its calls).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from batch_processor.classifiers.base import Classifier
from batch_processor.conversation import Conversation
from batch_processor.errors import BudgetExhaustedError, InvalidReplyError, LostLeaseError
from batch_processor.llm.batch_api import ProviderBatch
from batch_processor.models import ClassifierOutput, TokenUsage, utcnow
from batch_processor.route.lines import split_custom_id
from batch_processor.slice_record import SliceRecord
from batch_processor.testing.fakes import neutral_classification


class MemorySlices:
    """Slice records in memory, fenced by owner as in MongoDB."""

    def __init__(self) -> None:
        self.records: dict[str, SliceRecord] = {}

    async def installation(self) -> str:
        """A fixed installation id."""
        return "install-1"

    async def begin(self, record: SliceRecord) -> None:
        """Record a new slice."""
        self.records[record.slice_id] = record.model_copy()

    async def save(self, record: SliceRecord, lease: timedelta) -> None:
        """Write it unless another worker owns it now."""
        held = self.records.get(record.slice_id)
        if held is None or held.owner != record.owner:
            raise LostLeaseError(f"provider batch {record.slice_id} was taken over")
        now = utcnow()
        self.records[record.slice_id] = record.model_copy(
            update={"updated_at": now, "lease_until": now + lease}
        )

    async def take(self, record: SliceRecord, owner: str, lease: timedelta) -> SliceRecord | None:
        """Take it if it is unchanged since read."""
        held = self.records.get(record.slice_id)
        if held is None or held.owner != record.owner or held.updated_at != record.updated_at:
            return None
        previous = [*held.taken_from, held.owner] if held.owner != owner else held.taken_from
        now = utcnow()
        taken = held.model_copy(
            update={"owner": owner, "lease_until": now + lease, "updated_at": now,
                    "taken_from": previous}
        )  # fmt: skip
        self.records[record.slice_id] = taken
        return taken.model_copy()

    async def renew(self, owner: str, slice_ids: Sequence[str], lease: timedelta) -> set[str]:
        """Renew ``owner``'s leases; the ids it lost."""
        lost = set()
        for slice_id in slice_ids:
            held = self.records.get(slice_id)
            if held is None or held.owner != owner:
                lost.add(slice_id)
            else:
                held.lease_until = utcnow() + lease
        return lost

    async def remove(self, record: SliceRecord) -> None:
        """Delete it."""
        self.records.pop(record.slice_id, None)

    async def unfinished(self) -> list[SliceRecord]:
        """The unfinished records, oldest first."""
        found = [r.model_copy() for r in self.records.values() if r.unfinished]
        return sorted(found, key=lambda r: r.created_at)

    async def get(self, slice_ids: Sequence[str]) -> dict[str, SliceRecord]:
        """The records of these ids."""
        return {i: self.records[i].model_copy() for i in slice_ids if i in self.records}

    async def adopt(self, record: SliceRecord) -> bool:
        """Insert unless present."""
        if record.slice_id in self.records:
            return False
        self.records[record.slice_id] = record
        return True

    async def ensure_indexes(self) -> None:
        """Nothing to index."""


@dataclass
class _Batch:
    id: str
    input_file_id: str
    metadata: dict[str, str]
    status: str = "in_progress"
    output_file_id: str | None = None
    error_file_id: str | None = None

    def view(self) -> ProviderBatch:
        return ProviderBatch(
            id=self.id, status=self.status, input_file_id=self.input_file_id,
            output_file_id=self.output_file_id, error_file_id=self.error_file_id,
            metadata=dict(self.metadata),
        )  # fmt: skip


@dataclass
class MemoryProvider:
    """A Batch API in memory; batches end when the test ends them."""

    kept: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # file id -> (name, bytes)
    made: dict[str, _Batch] = field(default_factory=dict)  # batch id -> batch
    uploads: int = 0
    created: int = 0
    #: An error to raise on the next call of an operation ("upload", "create"), once.
    fail_next: dict[str, BaseException] = field(default_factory=dict)

    async def supported(self) -> bool:
        """Always."""
        return True

    async def find_file(self, filename: str, size: int) -> str | None:
        """An uploaded file of this name and size."""
        for file_id, (name, data) in self.kept.items():
            if name == filename and len(data) == size:
                return file_id
        return None

    async def files(self) -> list[tuple[str, str]]:
        """(id, name) of each file."""
        return [(file_id, name) for file_id, (name, _) in self.kept.items()]

    async def upload(self, path: Path, filename: str) -> str:
        """Keep the file."""
        if "upload" in self.fail_next:
            raise self.fail_next.pop("upload")
        self.uploads += 1
        return self.keep(filename, await asyncio.to_thread(path.read_bytes))

    async def find_batch(self, slice_id: str) -> ProviderBatch | None:
        """The batch of ``slice_id``."""
        for batch in self.made.values():
            if batch.metadata.get("bp_slice") == slice_id:
                return batch.view()
        return None

    async def batches(self) -> list[ProviderBatch]:
        """Every batch."""
        return [batch.view() for batch in self.made.values()]

    async def create(self, file_id: str, metadata: dict[str, str]) -> ProviderBatch:
        """A batch in progress."""
        if "create" in self.fail_next:
            raise self.fail_next.pop("create")
        self.created += 1
        batch = _Batch(f"batch-{secrets.token_hex(4)}", file_id, dict(metadata))
        self.made[batch.id] = batch
        return batch.view()

    async def retrieve(self, batch_id: str) -> ProviderBatch:
        """The batch as it stands."""
        return self.made[batch_id].view()

    async def cancel(self, batch_id: str) -> ProviderBatch:
        """Cancelled."""
        self.made[batch_id].status = "cancelled"
        return self.made[batch_id].view()

    async def content(self, file_id: str) -> bytes:
        """A file's bytes."""
        return self.kept[file_id][1]

    async def delete(self, file_id: str) -> None:
        """Gone (already gone is fine)."""
        self.kept.pop(file_id, None)

    def complete(self, *, expired_share: float = 0.0, failing: Sequence[str] = ()) -> None:
        """End every batch: each line answered, except ``failing`` ids and an expired share."""
        for batch in self.made.values():
            if batch.status != "in_progress":
                continue
            output, errors = [], []
            lines = self.kept[batch.input_file_id][1].splitlines()
            cut = len(lines) - int(len(lines) * expired_share)
            for number, raw in enumerate(lines):
                custom_id = json.loads(raw)["custom_id"]
                ids = split_custom_id(custom_id)
                if number >= cut:
                    expired = {"code": "batch_expired", "message": "expired"}
                    errors.append({"custom_id": custom_id, "error": expired})
                elif ids is not None and ids[0] in failing:
                    errors.append({"custom_id": custom_id, "response": {"status_code": 500,
                                   "body": {"error": {"message": "server error"}}}})  # fmt: skip
                else:
                    body = {"choices": [{"message": {"content": "ok"}}],
                            "usage": {"prompt_tokens": 10, "completion_tokens": 5}}  # fmt: skip
                    output.append({"custom_id": custom_id,
                                   "response": {"status_code": 200, "body": body}})  # fmt: skip
            batch.status = "expired" if expired_share else "completed"
            batch.output_file_id = self.keep("out", _jsonl(output), purpose="batch_output")
            batch.error_file_id = self.keep("err", _jsonl(errors), purpose="batch_output")

    def keep(self, name: str, data: bytes, purpose: str = "batch") -> str:
        """Store a file (as an upload would); its id."""
        file_id = f"file-{secrets.token_hex(4)}"
        self.kept[file_id] = (name if purpose == "batch" else f"{purpose}:{name}", data)
        return file_id


def _jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


@dataclass
class BatchLLM(Classifier):
    """The LLM's Batch API side and online classify, priced at ``price`` nano-dollars a request."""

    price: int = 1_000
    budget: int | None = None
    name: str = "fake-llm"
    version: str = "1"
    reserved: int = 0
    online_calls: list[str] = field(default_factory=list)

    def batch_body(self, conversation: Conversation, metadata: Mapping[str, Any]) -> dict[str, Any]:
        """The text as the body."""
        return {"text": conversation.customer_text}

    def batch_reservation(self, body: dict[str, Any]) -> int | None:
        """Reserve the price, unless the budget is reached."""
        if self.budget is not None and self.reserved + self.price > self.budget:
            return None
        self.reserved += self.price
        return self.price

    def release_reservation(self, amount: int) -> None:
        """Give a reservation back."""
        self.reserved -= amount

    def read_batch_reply(
        self, response: Mapping[str, Any], turns: Mapping[str, int] | None = None
    ) -> ClassifierOutput:
        """A neutral classification, costed; an empty answer is invalid."""
        if not response.get("choices"):
            raise InvalidReplyError("batch reply invalid: no choices")
        usage = TokenUsage(input_tokens=10, output_tokens=5)
        return ClassifierOutput(classification=neutral_classification(), usage=usage,
                                cost_usd=self.price / 2e9, model="fake")  # fmt: skip

    async def classify(
        self, conversation: Conversation | str, metadata: Mapping[str, Any]
    ) -> ClassifierOutput:
        """Online: a neutral classification (BudgetExhaustedError past the budget)."""
        if self.budget is not None and self.reserved + self.price > self.budget:
            raise BudgetExhaustedError("budget reached")
        self.online_calls.append(Conversation.of(conversation).customer_text)
        return ClassifierOutput(classification=neutral_classification(), model="fake")

    def summary(self) -> dict[str, Any]:
        """Nothing."""
        return {}

    async def aclose(self) -> None:
        """Nothing to release."""
