"""The cascade's learnt offline model versions, shared by every worker (one collection).

* a version document per trained version (``_id`` ``v1``, ``v2`` ...), written whole by one
  insert: the weight change (compressed ``.npz`` bytes), its calibration, what it was trained
  on and how it and the version in use agreed with the LLM on the held-back slice;
* ``@active``: which version every worker classifies with, changed only by one conditional
  update (compare-and-set on the version it replaces), with the history of promotions, so a
  rollback goes back one step;
* ``@learning``: the LLM labels gathered since the last training (each worker adds its own)
  and the lease of the worker training now, so that one worker trains at a time and a killed
  one's lease runs out.

A worker killed during training leaves at most an expired lease; killed between writing a
version and promoting it, a complete version that was never promoted: either way the active
version is the previous one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from bson import Binary
from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from batch_processor.models import SourceDocument, utcnow
from batch_processor.mongo.codec import RAW, Raw, decode_id, decode_source, encode_id
from batch_processor.mongo.errors import translated

ACTIVE = "@active"
LEARNING = "@learning"
SHIPPED = "shipped"
#: Source documents read per query when the labelled texts are fetched.
CHUNK = 500


class MongoModelVersions:
    """Model versions, the active pointer and the learning lease (see the module docstring)."""

    def __init__(
        self,
        collection: AsyncCollection[Raw],
        source: AsyncCollection[Raw],
        target: AsyncCollection[Raw],
    ) -> None:
        self._collection = collection
        self._source = source
        self._target = target

    async def active(self) -> str:
        """The version every worker classifies with (``shipped`` before any promotion)."""
        with translated("read the active model version"):
            raw = await self._collection.find_one({"_id": ACTIVE}, {"version": 1})
        return str(raw["version"]) if raw is not None else SHIPPED

    async def version(self, name: str) -> dict[str, Any] | None:
        """A version document (its ``change`` as bytes), or None."""
        with translated("read a model version"):
            raw = await self._collection.find_one({"_id": name})
        if raw is None:
            return None
        return {**raw, "change": bytes(raw["change"])}

    async def versions(self) -> list[dict[str, Any]]:
        """Every version, oldest first, without its weights."""
        with translated("list the model versions"):
            cursor = self._collection.find(
                {"_id": {"$regex": "^v[0-9]+$"}}, {"change": 0}, sort=[("number", ASCENDING)]
            )
            return [raw async for raw in cursor]

    async def history(self) -> list[str]:
        """The versions promoted before the active one, latest last."""
        with translated("read the active model version"):
            raw = await self._collection.find_one({"_id": ACTIVE})
        return [str(v) for v in raw.get("history", [])] if raw is not None else []

    async def add(self, document: dict[str, Any]) -> str:
        """Store a new version whole under the next free name; return the name."""
        with translated("store a model version"):
            while True:
                count = await self._collection.count_documents({"number": {"$exists": True}})
                name = f"v{count + 1}"
                stored = {**document, "_id": name, "number": count + 1,
                          "change": Binary(document["change"]), "created_at": utcnow()}  # fmt: skip
                try:
                    await self._collection.insert_one(stored)
                except DuplicateKeyError:
                    continue  # another worker took the name first (a learn command beside)
                return name

    async def promote(self, name: str, replacing: str) -> bool:
        """Make ``name`` active if ``replacing`` still is; False if another change came first."""
        with translated("promote a model version"):
            if replacing == SHIPPED:
                # A pointer with another version makes this upsert a duplicate: the update
                # below then finds no match and says so.
                with contextlib.suppress(DuplicateKeyError):
                    await self._collection.update_one(
                        {"_id": ACTIVE, "version": SHIPPED},
                        {"$setOnInsert": {"history": []}},
                        upsert=True,
                    )
            result = await self._collection.update_one(
                {"_id": ACTIVE, "version": replacing},
                {"$set": {"version": name, "changed_at": utcnow()},
                 "$push": {"history": replacing}},
            )  # fmt: skip
        return result.modified_count == 1

    async def roll_back(self, to: str | None = None) -> str | None:
        """Make the previous version (or ``to``) active; the version now active, or None."""
        with translated("roll back the model version"):
            raw = await self._collection.find_one({"_id": ACTIVE})
            if raw is None:
                return None
            history = [str(v) for v in raw.get("history", [])]
            if to is None:
                if not history:
                    return None
                to, history = history[-1], history[:-1]
            result = await self._collection.update_one(
                {"_id": ACTIVE, "version": raw["version"]},
                {"$set": {"version": to, "history": history, "changed_at": utcnow()}},
            )
        return to if result.modified_count == 1 else None

    async def add_labels(self, count: int) -> int:
        """Count ``count`` new LLM labels; the labels gathered since the last training."""
        with translated("count the cascade's LLM labels"):
            raw = await self._collection.find_one_and_update(
                {"_id": LEARNING},
                {"$inc": {"new_labels": count}},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        return int(raw["new_labels"]) if raw is not None else count

    async def claim_learning(self, holder: str, lease: timedelta, at_least: int) -> int | None:
        """Take the learning lease if free and ``at_least`` labels wait; the labels counted."""
        now = utcnow()
        with translated("claim the model learning"):
            raw = await self._collection.find_one_and_update(
                {"_id": LEARNING, "new_labels": {"$gte": at_least},
                 "$or": [{"until": {"$exists": False}}, {"until": {"$lt": now}}]},
                {"$set": {"holder": holder, "until": now + lease}},
                return_document=ReturnDocument.AFTER,
            )  # fmt: skip
        return int(raw["new_labels"]) if raw is not None else None

    async def end_learning(self, holder: str, counted: int) -> None:
        """Release the lease; the labels it counted are used."""
        with translated("end the model learning"):
            await self._collection.update_one(
                {"_id": LEARNING, "holder": holder},
                {"$inc": {"new_labels": -counted}, "$unset": {"holder": "", "until": ""}},
            )

    async def labels(self, taxonomy_version: str | None) -> list[tuple[str, str, str]]:
        """(document id, the LLM's sentiment, the route) of every LLM answer the cascade stored."""
        query: Raw = {"cascade.llm": {"$type": "object"}}
        if taxonomy_version is not None:
            query["classifier.taxonomy_version"] = taxonomy_version
        with translated("read the LLM labels"):
            cursor = self._target.find(
                query, {"cascade.llm.sentiment": 1, "cascade.route": 1}, sort=[("_id", 1)]
            )
            return [
                (encode_id(raw["_id"]), str(raw["cascade"]["llm"]["sentiment"]),
                 str(raw["cascade"]["route"]))
                async for raw in cursor
            ]  # fmt: skip

    async def sources(self, doc_ids: Sequence[str], text_field: str) -> list[SourceDocument]:
        """The source documents of ``doc_ids`` (those that still exist), as the pipeline reads."""
        found: list[SourceDocument] = []
        raw_source = self._source.with_options(codec_options=RAW)
        for start in range(0, len(doc_ids), CHUNK):
            ids = [decode_id(doc_id) for doc_id in doc_ids[start : start + CHUNK]]
            with translated("read the labelled documents"):
                cursor = raw_source.find({"_id": {"$in": ids}})
                async for raw in cursor:
                    doc = decode_source(raw, text_field)
                    if doc is not None:
                        found.append(doc)
        return found
