"""The Batch API route's slice records: one document per slice, shared by every worker.

Each record (``_id`` = slice id, see :mod:`batch_processor.slice_record`) is owned by one
worker under a lease. Every write is fenced by the owner, so a worker that lost its slice to
another (its lease ran out while it was stopped) cannot move it on behind the new owner's back;
a lease that ran out is taken with one conditional update, so two workers never both take it.

One more document, ``_id: "@installation"``, holds this database's installation id: provider
batches carry it in their metadata, so the orphan check only ever touches this database's
batches, never those of another deployment sharing the provider account.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection

from batch_processor.errors import LostLeaseError
from batch_processor.models import utcnow
from batch_processor.mongo.codec import Raw
from batch_processor.mongo.errors import translated
from batch_processor.slice_record import SliceRecord, Stage

INSTALLATION = "@installation"
_SLICES: Raw = {"stage": {"$exists": True}}


class MongoSlices:
    """Slice records on one collection (see the module docstring)."""

    def __init__(self, collection: AsyncCollection[Raw]) -> None:
        self._collection = collection

    async def installation(self) -> str:
        """The database's installation id (created once, by whichever worker asks first)."""
        with translated("read the installation id"):
            raw = await self._collection.find_one_and_update(
                {"_id": INSTALLATION},
                {"$setOnInsert": {"installation": secrets.token_hex(8)}},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        if raw is None:  # an upsert returning the document after always finds one
            raise RuntimeError("the installation id was not recorded")
        return str(raw["installation"])

    async def begin(self, record: SliceRecord) -> None:
        """Record a new slice (before any of its documents is claimed)."""
        with translated("record a provider batch"):
            await self._collection.insert_one(_raw(record))

    async def save(self, record: SliceRecord, lease: timedelta) -> None:
        """Write ``record`` (its owner's lease renewed); LostLeaseError if another owns it."""
        record.updated_at = utcnow()
        record.lease_until = record.updated_at + lease
        with translated("record a provider batch"):
            result = await self._collection.replace_one(
                {"_id": record.slice_id, "owner": record.owner}, _raw(record)
            )
        if result.matched_count == 0:
            raise LostLeaseError(f"provider batch {record.slice_id} was taken over")

    async def take(self, record: SliceRecord, owner: str, lease: timedelta) -> SliceRecord | None:
        """Take ``record`` as ``owner`` if it is still as read (None: someone else moved it)."""
        now = utcnow()
        previous = [*record.taken_from, record.owner] if record.owner != owner else []
        with translated("take over a provider batch"):
            raw = await self._collection.find_one_and_update(
                {"_id": record.slice_id, "owner": record.owner, "updated_at": record.updated_at},
                {
                    "$set": {
                        "owner": owner,
                        "lease_until": now + lease,
                        "updated_at": now,
                        "taken_from": previous or record.taken_from,
                    }
                },
                return_document=ReturnDocument.AFTER,
            )
        return None if raw is None else _record(raw)

    async def renew(self, owner: str, slice_ids: Sequence[str], lease: timedelta) -> set[str]:
        """Renew ``owner``'s leases on ``slice_ids``; return the ids it no longer owns."""
        if not slice_ids:
            return set()
        with translated("renew provider batch leases"):
            result = await self._collection.update_many(
                {"_id": {"$in": list(slice_ids)}, "owner": owner},
                {"$set": {"lease_until": utcnow() + lease}},
            )
            if result.matched_count == len(slice_ids):
                return set()  # all still ours: no need to ask which
            held = self._collection.find({"_id": {"$in": list(slice_ids)}, "owner": owner})
            mine = {str(raw["_id"]) async for raw in held}
        return set(slice_ids) - mine

    async def remove(self, record: SliceRecord) -> None:
        """Delete a slice that holds nothing (released while claiming, or refused)."""
        with translated("remove a provider batch record"):
            await self._collection.delete_one({"_id": record.slice_id, "owner": record.owner})

    async def unfinished(self) -> list[SliceRecord]:
        """Every slice not finished, oldest first."""
        query = {"stage": {"$exists": True, "$ne": Stage.FINISHED.value}}
        with translated("read provider batches"):
            cursor = self._collection.find(query).sort("created_at", ASCENDING)
            return [_record(raw) async for raw in cursor]

    async def get(self, slice_ids: Sequence[str]) -> dict[str, SliceRecord]:
        """The records of ``slice_ids`` that exist (finished or not)."""
        with translated("read provider batches"):
            cursor = self._collection.find({"_id": {"$in": list(slice_ids)}, **_SLICES})
            return {str(raw["_id"]): _record(raw) async for raw in cursor}

    async def adopt(self, record: SliceRecord) -> bool:
        """Insert a record found on a worker's disk (an older version) unless one exists."""
        with translated("record a provider batch"):
            result = await self._collection.update_one(
                {"_id": record.slice_id}, {"$setOnInsert": _raw(record)}, upsert=True
            )
        return result.upserted_id is not None

    async def ensure_indexes(self) -> None:
        """The index of the unfinished-slices query."""
        with translated("create indexes"):
            await self._collection.create_index(
                [("stage", ASCENDING), ("created_at", ASCENDING)], name="bp_stage_created"
            )


def _raw(record: SliceRecord) -> dict[str, Any]:
    raw = record.model_dump(mode="python")
    raw["_id"] = raw.pop("slice_id")
    raw["stage"] = record.stage.value
    return raw


def _record(raw: Raw) -> SliceRecord:
    values = dict(raw)
    values["slice_id"] = values.pop("_id")
    return SliceRecord.model_validate(values)
