"""The source's cursors: one long pass over the pending documents, and the insert stream.

:class:`PageCursor` reads a level's pending documents in ``_id`` order through one server
cursor, reopened after the last ``_id`` returned if the server loses it; each raw document is
decoded on its own (see :mod:`.codec`). :class:`InsertWaiter` waits on a change stream for an
insert, for continuous mode's wake-ups.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pymongo
from pymongo import ASCENDING
from pymongo import errors as mongo_errors
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.cursor import AsyncCursor

from batch_processor.errors import BatchProcessorError
from batch_processor.models import SourceDocument
from batch_processor.mongo.codec import Raw, decode_id, decode_source, encode_id, raw_id
from batch_processor.mongo.errors import translated

#: Seconds a cursor's close may take (see PageCursor.close).
CLOSE_WITHIN = 1.0


class PageCursor:
    """One long server cursor over the unprocessed documents, reopened if it dies.

    A server restart or failover loses every open cursor (the next ``getMore`` answers
    CursorNotFound). :meth:`next_page` then raises a TransientError and forgets the cursor; the
    next call reopens it after the last ``_id`` returned, so a retry resumes where it stopped.
    """

    def __init__(
        self,
        collection: AsyncCollection[Any],
        projection: Raw | None,
        page_size: int,
        query: Raw,
        decode: Callable[[Any], SourceDocument | None] = decode_source,
    ) -> None:
        self._collection = collection
        self._decode = decode
        self._projection = projection
        self.page_size = page_size
        self._query = query
        self._cursor: AsyncCursor[Any] | None = None
        self.after: str | None = None

    async def next_page(self) -> list[SourceDocument]:
        """The next page (empty only when the pass is over)."""
        while True:
            try:
                with translated("read page"):
                    if self._cursor is None:
                        self._cursor = self._open()
                    raws = await self._cursor.to_list(self.page_size)
            except BatchProcessorError:
                await self.close()
                raise
            if not raws:
                return []
            self.after = encode_id(raw_id(raws[-1]))
            page = [doc for doc in map(self._decode, raws) if doc is not None]
            if page:  # a page of only unaddressable documents is skipped, not the end
                return page

    def _open(self) -> AsyncCursor[Any]:
        query: Raw = dict(self._query)
        if self.after is not None:
            query["_id"] = {"$gt": decode_id(self.after)}
        cursor = self._collection.find(query, self._projection).sort("_id", ASCENDING)
        return cursor.batch_size(self.page_size)

    async def close(self) -> None:
        """Close the server cursor, if one is open (waiting at most ``CLOSE_WITHIN`` seconds).

        Closing kills the cursor on the server, which first selects it: during an outage that
        would wait the whole server selection timeout, and a stop must not. A cursor left open
        times out on the server by itself.
        """
        cursor, self._cursor = self._cursor, None
        if cursor is not None:
            with contextlib.suppress(mongo_errors.PyMongoError), pymongo.timeout(CLOSE_WITHIN):
                await cursor.close()


class InsertWaiter:
    """Waits on an open change stream of inserts (see :meth:`MongoSource.insert_events`)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    async def wait(self) -> bool:
        """True if a document was inserted since the last wait (or during this one)."""
        with translated("wait for inserts"):
            return await self._stream.try_next() is not None
