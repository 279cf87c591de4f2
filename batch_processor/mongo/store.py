"""The MongoDB connection: one client, its indexes, and the source, sink and cache on it.

This subpackage is the only code that imports pymongo; no raw collection leaves it. Every write
uses ``w="majority", j=True``; pymongo's exceptions are translated into
:mod:`batch_processor.errors` by :func:`batch_processor.mongo.errors.translated`.
"""

from __future__ import annotations

import asyncio
import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pymongo
import structlog
from pymongo import ASCENDING, AsyncMongoClient
from pymongo.monitoring import (
    CommandListener as CommandListener,
)  # re-exported: only this subpackage imports pymongo

from batch_processor.errors import ConfigurationError
from batch_processor.mongo.cache import MongoResultCache
from batch_processor.mongo.codec import Raw
from batch_processor.mongo.errors import first_line, translated
from batch_processor.mongo.fleet import MongoFleet
from batch_processor.mongo.model_versions import MongoModelVersions
from batch_processor.mongo.reports import Reports
from batch_processor.mongo.requeue import Reclassification
from batch_processor.mongo.sink import MongoSink
from batch_processor.mongo.slices import MongoSlices
from batch_processor.mongo.source import STATUS, MongoSource

log = structlog.get_logger("batch_processor.mongo.store")


@dataclass(frozen=True, slots=True)
class SourcePresence:
    """What :meth:`MongoStore.source_presence` found."""

    exists: bool
    documents: int
    other_collections: tuple[str, ...]


class MongoStore:
    """One database: the source to page and claim, the sink for results, the dedupe cache.

    Every value comes from the settings of the same name (their defaults live there alone).
    """

    def __init__(
        self,
        *,
        uri: str,
        database: str,
        source_collection: str,
        target_collection: str,
        projection: Sequence[str],
        server_selection_timeout: float,
        socket_timeout: float,
        cache_collection: str,
        workers_collection: str,
        slices_collection: str,
        models_collection: str,
        priority_field: str,
        lease_seconds: float,
        source_filter: Raw | None,
        history_collection: str | None,
        text_field: str,
        listeners: Sequence[CommandListener] = (),
    ) -> None:
        # A frozen server (SIGSTOP, a hung primary) keeps its sockets open: without a socket
        # timeout an operation on it would wait forever instead of failing and being retried.
        with translated("connect"):
            try:
                self._client: AsyncMongoClient[Raw] = AsyncMongoClient(
                    uri,
                    serverSelectionTimeoutMS=int(server_selection_timeout * 1000),
                    socketTimeoutMS=int(socket_timeout * 1000),
                    w="majority",
                    journal=True,
                    appname="batch-processor",
                    event_listeners=list(listeners),
                    tz_aware=True,
                )
            except (ValueError, TypeError) as exc:  # e.g. a port out of range
                raise ConfigurationError(
                    f"invalid setting mongodb_uri: {first_line(exc)}"
                ) from None
        db = self._client[database]
        self._source_collection = db[source_collection]
        self._target_collection = db[target_collection]
        fields = {field.split(".")[0]: 1 for field in [*projection, priority_field]}
        self._priority_field = priority_field
        self.source = MongoSource(
            self._source_collection,
            fields,
            socket_timeout,
            priority_field=priority_field,
            lease_seconds=lease_seconds,
            source_filter=source_filter,
            text_field=text_field,
        )
        self.sink = MongoSink(self._source_collection, self._target_collection)
        self.cache = MongoResultCache(db[cache_collection])
        self.reports = Reports(self._source_collection, self._target_collection)
        history = db[history_collection or f"{target_collection}_history"]
        self.reclassification = Reclassification(
            self._source_collection, self._target_collection, history
        )
        self.fleet = MongoFleet(db[workers_collection])
        self.slices = MongoSlices(db[slices_collection])
        self.models = MongoModelVersions(
            db[models_collection], self._source_collection, self._target_collection
        )

    async def close(self, within: float = 1.0) -> None:
        """Close the client's connections, waiting at most ``within`` seconds.

        pymongo's async ``close`` joins its monitor tasks without a time limit; one stuck in a
        server's long-polled ``hello`` would hold the process's exit for as long (seen once in
        a thousand test runs). A stop must not hang on the driver: past ``within`` the rest of
        the teardown is left to the event loop's end.
        """
        # Waited for beside, not cancelled: pymongo's close joins its cursor killer, which
        # may be selecting a server that is gone and does not give way to a cancellation.
        closing = asyncio.ensure_future(self._client.close())
        closing.add_done_callback(lambda task: task.cancelled() or task.exception())
        done, _ = await asyncio.wait({closing}, timeout=within)
        if not done:
            log.warning("the MongoDB client did not close in time; exiting anyway", within=within)

    async def ping(self, within: float | None = None) -> None:
        """Check that the server answers; raise TransientError or ConfigurationError if not.

        ``within`` (seconds) bounds the whole ping inside the driver. Never bound it by
        cancelling the task instead: pymongo 4.20 leaks the socket of a connection cancelled
        while it is being created (PYTHON-5867).
        """
        with translated("ping"), pymongo.timeout(within):
            await self._client.admin.command("ping")

    async def source_presence(self) -> SourcePresence:
        """Whether the source collection exists, and roughly how many documents it holds.

        A missing one comes with the database's collections of a similar name (a mistyped
        name is the usual cause).
        """
        name = self._source_collection.name
        with translated("list collections"):
            names = await self._source_collection.database.list_collection_names()
            if name not in names:
                similar = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
                return SourcePresence(False, 0, tuple(similar) or tuple(sorted(names)[:5]))
            count = await self._source_collection.estimated_document_count()
        return SourcePresence(True, count, ())

    @property
    def source_name(self) -> str:
        """``database.collection`` of the source, for messages."""
        return self._source_collection.full_name

    async def ensure_indexes(self) -> None:
        """Create the indexes the daemon's queries need (idempotent)."""
        with translated("create indexes"):
            # Serves the page query {status: null, _id > last} sorted by _id (the normal
            # level's pages, whose priority filter is a $nin) and the claimed documents.
            await self._source_collection.create_index(
                [(STATUS, ASCENDING), ("_id", ASCENDING)], name="bp_status_id"
            )
            # Serves the high and low levels' pages and the "any high pending?" check: an
            # equality ($in) on both fields, then _id order (see batch_processor.priority).
            await self._source_collection.create_index(
                [(STATUS, ASCENDING), (self._priority_field, ASCENDING), ("_id", ASCENDING)],
                name=f"bp_status_{self._priority_field}_id",
            )

    async def insert_sources(self, docs: Sequence[Raw], *, chunk: int = 1000) -> int:
        """Insert source documents (the demo and benchmarks seed with this); return the count."""
        inserted = 0
        with translated("insert documents"):
            for start in range(0, len(docs), chunk):
                part: list[dict[str, Any]] = [dict(doc) for doc in docs[start : start + chunk]]
                result = await self._source_collection.insert_many(part, ordered=False)
                inserted += len(result.inserted_ids)
        return inserted

    async def drop_collections(self) -> None:
        """Drop the source and target collections (the demo's ``--reset``)."""
        with translated("drop collections"):
            await self._source_collection.drop()
            await self._target_collection.drop()
