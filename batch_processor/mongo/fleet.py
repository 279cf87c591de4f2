"""The fleet's heartbeats: one document per worker in the workers collection.

Each worker upserts its own document (``_id`` = worker id) every lease renewal: its host, pid,
job, mode, the time of the beat, and what it holds and has done. ``status`` reads them with the
claims per worker to list live workers and mark dead ones (no beat for a lease period).
"""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.collection import AsyncCollection

from batch_processor.mongo.codec import Raw
from batch_processor.mongo.errors import translated


class MongoFleet:
    """Heartbeat documents of the workers sharing one database."""

    def __init__(self, collection: AsyncCollection[Raw]) -> None:
        self._collection = collection

    async def beat(self, worker_id: str, record: dict[str, Any]) -> None:
        """Record this worker's heartbeat (one upsert)."""
        with translated("write heartbeat"):
            await self._collection.update_one({"_id": worker_id}, {"$set": record}, upsert=True)

    async def workers(self) -> list[dict[str, Any]]:
        """Every worker's last heartbeat, by worker id."""
        with translated("read heartbeats"):
            return [dict(raw) async for raw in self._collection.find({}).sort("_id", 1)]
