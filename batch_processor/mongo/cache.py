"""The dedupe cache in MongoDB: one document per content key, shared by all workers."""

from __future__ import annotations

from pymongo import UpdateOne, WriteConcern
from pymongo import errors as mongo_errors
from pymongo.asynchronous.collection import AsyncCollection

from batch_processor.mongo.codec import Raw
from batch_processor.mongo.errors import DUPLICATE_KEY, translated


class MongoResultCache:
    """The dedupe cache in MongoDB: one document per content key, shared by all workers."""

    def __init__(self, collection: AsyncCollection[Raw]) -> None:
        self._collection = collection

    async def lookup(self, key: str) -> Raw | None:
        """The cached entry for ``key`` (a point read on ``_id``), or None."""
        with translated("cache lookup"):
            return await self._collection.find_one({"_id": key}, {"_id": 0})

    async def lookup_many(self, keys: list[str]) -> dict[str, Raw]:
        """The cached entries among ``keys`` (one ``find`` with ``$in`` on ``_id``), by key."""
        if not keys:
            return {}
        with translated("cache lookup"):
            cursor = self._collection.find({"_id": {"$in": keys}}, batch_size=len(keys))
            return {str(entry["_id"]): entry async for entry in cursor}

    async def save(self, entries: dict[str, Raw]) -> None:
        """Insert entries (key -> entry) in one unordered bulk; an existing key is kept."""
        if not entries:
            return
        ops = [
            UpdateOne({"_id": key}, {"$setOnInsert": entry}, upsert=True)
            for key, entry in entries.items()
        ]
        with translated("cache save"):
            # w=1: a lost cache entry costs one LLM call, not a result, so no journal wait.
            fast = self._collection.with_options(write_concern=WriteConcern(w=1))
            try:
                await fast.bulk_write(ops, ordered=False)
            except mongo_errors.BulkWriteError as exc:
                errors = exc.details.get("writeErrors", [])
                if any(error.get("code") != DUPLICATE_KEY for error in errors):
                    raise
                # Two workers cached the same text at once: the first entry stands.
