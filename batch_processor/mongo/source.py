"""The source collection: paging unprocessed documents, claims, and waiting for inserts.

Source documents carry their processing state in one sub-document, ``processing``::

    {status: None | "claimed" | "done" | "failed", job, worker, claim, claimed_at, lease_until,
     done_at, classifier, classifier_version, attempts, error, category, taken_from}

A worker pages unprocessed documents (``processing.status`` null) one priority level at a time
(see :mod:`batch_processor.priority`), each in ``_id`` order through one long cursor (resumed
with ``_id > last`` if it dies), and claims each page with one ``update_many``, so several
workers never take the same document. A claim is a lease: it records the worker, a claim token
(the fence of every later write, see :mod:`.sink`) and ``lease_until``, which the worker renews
while it holds the document. A claim whose lease has expired is taken over by any worker: it
is released to pending, and the next page read takes it.
"""

from __future__ import annotations

import contextlib
import functools
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from pymongo import ASCENDING
from pymongo import errors as mongo_errors
from pymongo.asynchronous.collection import AsyncCollection

from batch_processor.errors import (
    ConfigurationError,
    DataError,
    PermanentError,
)
from batch_processor.models import SourceDocument, utcnow
from batch_processor.mongo.codec import RAW, Raw, decode_id, decode_source, encode_id
from batch_processor.mongo.cursors import InsertWaiter, PageCursor
from batch_processor.mongo.errors import translated
from batch_processor.priority import STORED_VALUES, Priority, excluded_from_normal

STATE = "processing"
STATUS = f"{STATE}.status"
LEASE = f"{STATE}.lease_until"
CLAIM = f"{STATE}.claim"
WORKER = f"{STATE}.worker"
CLAIMED, DONE, FAILED = "claimed", "done", "failed"
#: Keeps each ``$in`` list short: the test server checks ``$in`` linearly per document.
IN_CHUNK = 500


class MongoSource:
    """The daemon's reads and claims on the source collection."""

    def __init__(
        self,
        collection: AsyncCollection[Raw],
        projection: Raw,
        socket_timeout: float,
        *,
        priority_field: str,
        lease_seconds: float,
        source_filter: Raw | None,
        text_field: str | None,
    ) -> None:
        self._collection = collection
        self._decode = functools.partial(decode_source, text_field=text_field)
        self._filter = dict(source_filter or {})
        self._projection = projection
        self._socket_timeout = socket_timeout
        self.priority_field = priority_field
        self.lease = timedelta(seconds=lease_seconds)

    async def count_pending(self) -> int:
        """How many source documents (matching the filter) are neither done, failed nor claimed."""
        with translated("count pending"):
            return await self._collection.count_documents(self._pending(None))

    async def check_filter(self) -> None:
        """Ask the server once whether the source filter is a query it accepts.

        Raises ConfigurationError naming the setting when the server rejects it (an unknown
        operator, a malformed expression), before any document is claimed with it.
        """
        if self._filter:
            await check_source_filter(self._collection, self._pending(None))

    async def has_pending(self, level: Priority | None = None) -> bool:
        """Whether any source document (of ``level``, if given) waits: one indexed query.

        Only HIGH and LOW are asked for a level: they are equality matches on the
        ``{status, priority, _id}`` index, cheap on any server.
        """
        with translated("poll for new documents"):
            found = await self._collection.find_one(self._pending(level), {"_id": 1})
            return found is not None

    @contextlib.asynccontextmanager
    async def insert_events(self, max_await: float) -> AsyncIterator[InsertWaiter]:
        """A change stream on source inserts; ``wait()`` returns True when one happened.

        Each ``wait()`` is one ``getMore`` that the server holds for up to ``max_await`` seconds,
        so an idle stream costs one command per wait. Raises TransientError or PermanentError
        where change streams are unavailable (a standalone mongod); callers then poll.
        """
        pipeline: list[Raw] = [{"$match": {"operationType": "insert"}}]
        # The server holds each getMore this long: keep it well inside the socket timeout.
        held = min(max_await, self._socket_timeout / 2)
        with translated("open change stream"):
            stream = await self._collection.watch(
                pipeline, max_await_time_ms=max(1, int(held * 1000))
            )
        try:
            yield InsertWaiter(stream)
        finally:
            with contextlib.suppress(mongo_errors.PyMongoError):
                await stream.close()

    def page_cursor(self, page_size: int, level: Priority | None = None) -> PageCursor:
        """Unprocessed documents (of ``level``) in ``_id`` order, a page at a time."""
        raw_source = self._collection.with_options(codec_options=RAW)
        return PageCursor(
            raw_source, self._projection or None, page_size, self._pending(level), self._decode
        )

    def _pending(self, level: Priority | None) -> Raw:
        """The filter of pending documents (of one priority level), within the source filter."""
        query: Raw = {STATUS: None}
        if level is not None:
            values = STORED_VALUES.get(level)
            match: Raw = {"$in": list(values)} if values else {"$nin": excluded_from_normal()}
            query[self.priority_field] = match
        return within(query, self._filter)

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
        """Claim the free documents (and, with ``reclaim``, this worker's old claims).

        Returns the ids this claim won. ``token`` is unique per claim, so a document this job
        claimed earlier (a cursor may return a document again after it changed) is never taken a
        second time. Claims carry the worker id, so a worker's crashed jobs are recognised as
        its own however many times it was killed; ``previous_claim`` (the token a batch file
        recorded) recognises them even if the worker's identity was lost.
        """
        if not doc_ids:
            return set()
        ids = [decode_id(doc_id) for doc_id in doc_ids]
        free: Raw = {STATUS: None}
        if reclaim:
            own: list[Raw] = [{STATUS: CLAIMED, WORKER: worker_id}]
            if previous_claim is not None:
                own.append({STATUS: CLAIMED, CLAIM: previous_claim})
            free = {"$or": [free, *own]}
        now = utcnow()
        claim = {
            STATUS: CLAIMED,
            f"{STATE}.job": job_id,
            WORKER: worker_id,
            CLAIM: token,
            f"{STATE}.claimed_at": now,
            LEASE: now + (lease or self.lease),
        }
        with translated("claim"):
            result = await self._collection.update_many(
                {"_id": {"$in": ids}, **free}, {"$set": claim}
            )
            if result.modified_count == len(ids):
                return set(doc_ids)
            # Some were taken already (rare): one more query tells which ones this claim won.
            mine = self._collection.find({"_id": {"$in": ids}, CLAIM: token}, {"_id": 1})
            return {encode_id(raw["_id"]) async for raw in mine}

    async def release_claims(
        self,
        *,
        worker_id: str,
        job_id: str,
        exclude: Sequence[str] = (),
        claims: Sequence[str] = (),
    ) -> int:
        """Free the claims of this worker's dead jobs (other workers' expire: see take_over).

        Only one process runs as a worker at a time (its batch directory is locked), so every
        claim of ``worker_id`` not made by the running ``job_id`` belongs to a dead job, and so
        does every claim token in ``claims`` (recorded by this directory's batch files).
        Documents in ``exclude`` (waiting in a retry queue) keep their claim.
        """
        dead: list[Raw] = [{WORKER: worker_id, f"{STATE}.job": {"$ne": job_id}}]
        if claims:
            dead.append({CLAIM: {"$in": list(claims)}})
        query: Raw = {STATUS: CLAIMED, "$or": dead}
        if exclude:
            query["_id"] = {"$nin": [decode_id(doc_id) for doc_id in exclude]}
        with translated("release claims"):
            result = await self._collection.update_many(query, {"$set": {STATUS: None}})
        return result.modified_count

    async def release_tokens(self, claims: Sequence[str]) -> int:
        """Give back every document still claimed under one of ``claims`` (made pending)."""
        if not claims:
            return 0
        with translated("release claims"):
            result = await self._collection.update_many(
                {STATUS: CLAIMED, CLAIM: {"$in": list(claims)}}, {"$set": {STATUS: None}}
            )
        return result.modified_count

    async def hold(self, claim: str, worker_id: str, lease: timedelta) -> int:
        """Renew every document still claimed under ``claim``, as ``worker_id``'s; the count.

        The Batch API route holds a slice's documents by its claim token: renewed while its
        batch is polled, and restamped with the new owner when a worker takes a slice over.
        """
        with translated("renew leases"):
            result = await self._collection.update_many(
                {STATUS: CLAIMED, CLAIM: claim},
                {"$set": {WORKER: worker_id, LEASE: utcnow() + lease}},
            )
        return result.matched_count

    async def claimed(self, claim: str) -> list[SourceDocument]:
        """The documents still claimed under ``claim``, in ``_id`` order (a slice's rest)."""
        raw_source = self._collection.with_options(codec_options=RAW)
        cursor = raw_source.find({STATUS: CLAIMED, CLAIM: claim}, self._projection or None)
        with translated("read claimed documents"):
            raws = await cursor.sort("_id", ASCENDING).to_list(None)
        docs = [doc for doc in map(self._decode, raws) if doc is not None]
        return [doc.model_copy(update={"claim": claim}) for doc in docs]

    async def renew(
        self, doc_ids: Sequence[str], worker_id: str, lease: timedelta | None = None
    ) -> int:
        """Extend this worker's leases on ``doc_ids``; return how many it still holds.

        One ``update_many`` per few hundred documents. A document another worker took over
        is not renewed (its worker is no longer ours) and is not counted.
        """
        held = 0
        until = utcnow() + (lease or self.lease)
        for start in range(0, len(doc_ids), IN_CHUNK):
            ids = [decode_id(doc_id) for doc_id in doc_ids[start : start + IN_CHUNK]]
            with translated("renew leases"):
                result = await self._collection.update_many(
                    {"_id": {"$in": ids}, STATUS: CLAIMED, WORKER: worker_id},
                    {"$set": {LEASE: until}},
                )
            held += result.matched_count
        return held

    async def take_over(self, worker_id: str, now: datetime | None = None) -> Counter[str]:
        """Release the claims of other workers whose lease expired; return counts by worker.

        The claimed documents are few (what the fleet has in flight), so they are read and
        checked here; the update matches each expired claim's own token, so a claim renewed
        or taken meanwhile is left alone. Claims made before leases existed (no
        ``lease_until``) expire one lease after they were made.
        """
        now = now or utcnow()
        fields = {"_id": 1, WORKER: 1, CLAIM: 1, LEASE: 1, f"{STATE}.claimed_at": 1}
        expired: list[tuple[Any, str, str]] = []
        with translated("find expired leases"):
            async for raw in self._collection.find({STATUS: CLAIMED}, fields):
                state = raw.get(STATE) or {}
                owner = state.get("worker")
                if owner == worker_id or not isinstance(state.get("claim"), str):
                    continue
                until = state.get("lease_until")
                if until is None and isinstance(state.get("claimed_at"), datetime):
                    until = state["claimed_at"] + self.lease
                if isinstance(until, datetime) and until < now:
                    expired.append((raw["_id"], str(owner), state["claim"]))
        taken: Counter[str] = Counter()
        for start in range(0, len(expired), IN_CHUNK):
            chunk = expired[start : start + IN_CHUNK]
            with translated("take over expired leases"):
                for owner, claims in _by_owner(chunk).items():
                    result = await self._collection.update_many(
                        {"_id": {"$in": claims[0]}, STATUS: CLAIMED, CLAIM: {"$in": claims[1]}},
                        {"$set": {STATUS: None, f"{STATE}.taken_from": owner}},
                    )
                    taken[owner] += result.modified_count
        return +taken

    async def claims_by_worker(self) -> dict[str, tuple[int, datetime | None]]:
        """Documents claimed per worker, with the latest lease expiry of each (for ``status``)."""
        group: list[Raw] = [
            {"$match": {STATUS: CLAIMED}},
            {"$group": {"_id": f"${WORKER}", "n": {"$sum": 1}, "until": {"$max": f"${LEASE}"}}},
        ]
        with translated("count claims by worker"):
            rows = [row async for row in await self._collection.aggregate(group)]
        return {str(row["_id"]): (row["n"], row.get("until")) for row in rows}

    async def release_ids(self, doc_ids: Sequence[str], job_id: str) -> None:
        """Give back this job's claims on ``doc_ids`` (a page that could not be saved)."""
        ids = [decode_id(doc_id) for doc_id in doc_ids]
        with translated("release claims"):
            await self._collection.update_many(
                {"_id": {"$in": ids}, STATUS: CLAIMED, f"{STATE}.job": job_id},
                {"$set": {STATUS: None}},
            )

    async def status_counts(self) -> Counter[tuple[str, str | None]]:
        """Documents by (processing state, error category); ``pending`` for unprocessed."""
        counts: Counter[tuple[str, str | None]] = Counter()
        group: list[Raw] = [
            {"$group": {"_id": {"s": f"${STATUS}", "c": f"${STATE}.category"}, "n": {"$sum": 1}}}
        ]
        with translated("count documents by state"):
            async for row in await self._collection.aggregate(group):
                counts[(row["_id"].get("s") or "pending", row["_id"].get("c"))] += row["n"]
        return counts


def within(query: Raw, source_filter: Raw) -> Raw:
    """``query`` restricted by a source filter.

    The filter's conditions are merged at the top level when their fields differ (the planner
    then sees the status equality first and uses our index) and joined with ``$and`` when
    they name the same field.
    """
    if not source_filter:
        return query
    if query.keys() & source_filter.keys():
        return {"$and": [query, source_filter]}
    return {**query, **source_filter}


def _by_owner(expired: list[tuple[Any, str, str]]) -> dict[str, tuple[list[Any], list[str]]]:
    """Expired claims grouped by their worker: (raw ids, claim tokens)."""
    owners: dict[str, tuple[list[Any], list[str]]] = {}
    for doc_key, owner, claim in expired:
        ids, claims = owners.setdefault(owner, ([], []))
        ids.append(doc_key)
        if claim not in claims:
            claims.append(claim)
    return owners


async def check_source_filter(collection: AsyncCollection[Raw], query: Raw) -> None:
    """Ask the server once whether ``query`` (holding the source filter) is one it accepts.

    Raises ConfigurationError naming the setting when it is not (an unknown operator, a
    malformed expression), so that a command ends in one line, not on a raw server error.
    """
    try:
        with translated("check the source filter"):
            await collection.find_one(query, {"_id": 1})
    except (PermanentError, DataError) as exc:
        raise ConfigurationError(
            f"invalid setting source_filter (--filter / BATCH_PROCESSOR_SOURCE_FILTER): the server "
            f"rejected it: {exc.message}"
        ) from None
