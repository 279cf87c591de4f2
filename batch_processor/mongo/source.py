"""The source collection: paging unprocessed documents, claims, and waiting for inserts.

Source documents carry their processing state in one sub-document, ``processing``::

    {status: None | "claimed" | "done" | "failed", job, worker, claim, claimed_at, done_at,
     classifier, classifier_version, attempts, error, category}

A worker pages unprocessed documents (``processing.status`` null) in ``_id`` order through one
long cursor (resumed with ``_id > last`` if it dies) and claims each page with one
``update_many``, so several workers never take the same document.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from typing import Any

from pymongo import ASCENDING
from pymongo import errors as mongo_errors
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.cursor import AsyncCursor

from batch_processor.errors import BatchProcessorError
from batch_processor.models import SourceDocument, utcnow
from batch_processor.mongo.codec import RAW, Raw, decode_id, decode_source, encode_id, raw_id
from batch_processor.mongo.errors import translated

STATE = "processing"
STATUS = f"{STATE}.status"
CLAIMED, DONE, FAILED = "claimed", "done", "failed"


class MongoSource:
    """The daemon's reads and claims on the source collection."""

    def __init__(
        self, collection: AsyncCollection[Raw], projection: Raw, socket_timeout: float
    ) -> None:
        self._collection = collection
        self._projection = projection
        self._socket_timeout = socket_timeout

    async def count_pending(self) -> int:
        """How many source documents are neither done, failed nor claimed."""
        with translated("count pending"):
            return await self._collection.count_documents({STATUS: None})

    async def has_pending(self) -> bool:
        """Whether any source document waits (one indexed point query: the idle poll)."""
        with translated("poll for new documents"):
            return await self._collection.find_one({STATUS: None}, {"_id": 1}) is not None

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

    def page_cursor(self, page_size: int) -> PageCursor:
        """Unprocessed documents in ``_id`` order, a page at a time (see :class:`PageCursor`)."""
        raw_source = self._collection.with_options(codec_options=RAW)
        return PageCursor(raw_source, self._projection or None, page_size)

    async def claim(
        self,
        doc_ids: Sequence[str],
        *,
        job_id: str,
        worker_id: str,
        token: str,
        reclaim: bool = False,
        previous_claim: str | None = None,
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
            own: list[Raw] = [{STATUS: CLAIMED, f"{STATE}.worker": worker_id}]
            if previous_claim is not None:
                own.append({STATUS: CLAIMED, f"{STATE}.claim": previous_claim})
            free = {"$or": [free, *own]}
        claim = {
            STATUS: CLAIMED,
            f"{STATE}.job": job_id,
            f"{STATE}.worker": worker_id,
            f"{STATE}.claim": token,
            f"{STATE}.claimed_at": utcnow(),
        }
        with translated("claim"):
            result = await self._collection.update_many(
                {"_id": {"$in": ids}, **free}, {"$set": claim}
            )
            if result.modified_count == len(ids):
                return set(doc_ids)
            # Some were taken already (rare): one more query tells which ones this claim won.
            mine = self._collection.find({"_id": {"$in": ids}, f"{STATE}.claim": token}, {"_id": 1})
            return {encode_id(raw["_id"]) async for raw in mine}

    async def release_claims(
        self,
        *,
        worker_id: str,
        job_id: str,
        older_than: timedelta,
        exclude: Sequence[str] = (),
        claims: Sequence[str] = (),
    ) -> int:
        """Free the claims of this worker's dead jobs, and anyone's claims past ``older_than``.

        Only one process runs as a worker at a time (its batch directory is locked), so every
        claim of ``worker_id`` not made by the running ``job_id`` belongs to a dead job, and so
        does every claim token in ``claims`` (recorded by this directory's batch files).
        Documents in ``exclude`` (waiting in a retry queue) keep their claim.
        """
        dead: list[Raw] = [
            {f"{STATE}.worker": worker_id, f"{STATE}.job": {"$ne": job_id}},
            {f"{STATE}.claimed_at": {"$lt": utcnow() - older_than}},
        ]
        if claims:
            dead.append({f"{STATE}.claim": {"$in": list(claims)}})
        query: Raw = {STATUS: CLAIMED, "$or": dead}
        if exclude:
            query["_id"] = {"$nin": [decode_id(doc_id) for doc_id in exclude]}
        with translated("release claims"):
            result = await self._collection.update_many(query, {"$set": {STATUS: None}})
        return result.modified_count

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


class PageCursor:
    """One long server cursor over the unprocessed documents, reopened if it dies.

    A server restart or failover loses every open cursor (the next ``getMore`` answers
    CursorNotFound). :meth:`next_page` then raises a TransientError and forgets the cursor; the
    next call reopens it after the last ``_id`` returned, so a retry resumes where it stopped.
    """

    def __init__(
        self, collection: AsyncCollection[Any], projection: Raw | None, page_size: int
    ) -> None:
        self._collection = collection
        self._projection = projection
        self._page_size = page_size
        self._cursor: AsyncCursor[Any] | None = None
        self.after: str | None = None

    async def next_page(self) -> list[SourceDocument]:
        """The next page (empty only when the pass is over)."""
        while True:
            try:
                with translated("read page"):
                    if self._cursor is None:
                        self._cursor = self._open()
                    raws = await self._cursor.to_list(self._page_size)
            except BatchProcessorError:
                await self.close()
                raise
            if not raws:
                return []
            self.after = encode_id(raw_id(raws[-1]))
            page = [doc for doc in map(decode_source, raws) if doc is not None]
            if page:  # a page of only unaddressable documents is skipped, not the end
                return page

    def _open(self) -> AsyncCursor[Any]:
        query: Raw = {STATUS: None}
        if self.after is not None:
            query["_id"] = {"$gt": decode_id(self.after)}
        cursor = self._collection.find(query, self._projection).sort("_id", ASCENDING)
        return cursor.batch_size(self._page_size)

    async def close(self) -> None:
        """Close the server cursor, if one is open."""
        cursor, self._cursor = self._cursor, None
        if cursor is not None:
            with contextlib.suppress(mongo_errors.PyMongoError):
                await cursor.close()


class InsertWaiter:
    """Waits on an open change stream of inserts (see :meth:`MongoSource.insert_events`)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    async def wait(self) -> bool:
        """True if a document was inserted since the last wait (or during this one)."""
        with translated("wait for inserts"):
            return await self._stream.try_next() is not None
