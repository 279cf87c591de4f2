"""MongoDB: the only module that imports pymongo (reads, claims, result writes, marks).

Source documents carry their processing state in one sub-document, ``processing``::

    {status: None | "claimed" | "done" | "failed", job, claimed_at, done_at, classifier,
     classifier_version, attempts, error, category}

A worker pages unprocessed documents (``processing.status`` null) in ``_id`` order through one
long cursor (resumed with ``_id > last`` if it dies), claims each page with one ``update_many``,
writes results with one unordered bulk of upserts keyed by the source ``_id`` (so a result written
twice is one document), and only then marks the sources done with one bulk write. Every write uses
``w="majority", j=True``. pymongo's exceptions are translated into :mod:`batch_processor.errors`.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

import bson
import pymongo
import structlog
from bson import json_util
from bson.codec_options import CodecOptions
from bson.errors import InvalidBSON
from bson.json_util import CANONICAL_JSON_OPTIONS, RELAXED_JSON_OPTIONS
from bson.raw_bson import RawBSONDocument
from pymongo import ASCENDING, AsyncMongoClient, UpdateOne, WriteConcern
from pymongo import errors as mongo_errors
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.cursor import AsyncCursor
from pymongo.monitoring import (
    CommandListener as CommandListener,
)  # re-exported: only this module imports pymongo

from batch_processor.errors import (
    BatchProcessorError,
    ConfigurationError,
    DataError,
    PermanentError,
    ResourceError,
    TransientError,
)
from batch_processor.models import ClassifiedDocument, FailedDocument, SourceDocument, utcnow

_log = structlog.get_logger("batch_processor.mongo.store")
_SURROGATES = re.compile("[\ud800-\udfff]")

STATE = "processing"
STATUS = f"{STATE}.status"
CLAIMED, DONE, FAILED = "claimed", "done", "failed"
Raw = dict[str, Any]

_AUTH_CODES = {13, 18}  # Unauthorized, AuthenticationFailed
_DATA_CODES = {121, 10334, 17419, 2}  # validation failed, BSON too large, bad value
_DUPLICATE_KEY = 11000
# Codes that say "the server or the cursor went away; try again": a restart loses every open
# cursor (CursorNotFound 43, CursorKilled 237), a step-down or shutdown interrupts operations.
_TRANSIENT_CODES = {
    6,  # HostUnreachable
    7,  # HostNotFound
    43,  # CursorNotFound
    89,  # NetworkTimeout
    91,  # ShutdownInProgress
    189,  # PrimarySteppedDown
    237,  # CursorKilled
    9001,  # SocketException
    10107,  # NotWritablePrimary
    11600,  # InterruptedAtShutdown
    11602,  # InterruptedDueToReplStateChange
    13435,  # NotPrimaryNoSecondaryOk
    13436,  # NotPrimaryOrSecondary
}
# Source documents are read raw and decoded one by one, so one undecodable document (a string
# that is not UTF-8, written by another driver) cannot fail the page that holds it.
_RAW = CodecOptions(document_class=RawBSONDocument, tz_aware=True)
_STRICT: CodecOptions[Raw] = CodecOptions(tz_aware=True)
_ESCAPED: CodecOptions[Raw] = CodecOptions(
    tz_aware=True, unicode_decode_error_handler="surrogateescape"
)


def encode_id(value: Any) -> str:
    """A MongoDB ``_id`` as canonical extended JSON: stable, type-preserving, JSON-safe."""
    return json_util.dumps(value, json_options=CANONICAL_JSON_OPTIONS)


def decode_id(value: str) -> Any:
    """The inverse of :func:`encode_id`."""
    return json_util.loads(value, json_options=CANONICAL_JSON_OPTIONS)


def _json_safe(value: Any) -> Any:
    return json.loads(json_util.dumps(value, json_options=RELAXED_JSON_OPTIONS))


@contextlib.contextmanager
def translated(action: str) -> Iterator[None]:
    """Raise pymongo's errors during ``action`` as batch_processor errors."""
    try:
        yield
    except BatchProcessorError:
        raise
    except (mongo_errors.InvalidURI, mongo_errors.ConfigurationError) as exc:
        raise ConfigurationError(
            f"invalid setting mongodb_uri: {action}: {_first_line(exc)}"
        ) from exc
    except (mongo_errors.AutoReconnect, mongo_errors.ConnectionFailure) as exc:
        # Covers NetworkTimeout and ServerSelectionTimeoutError (server down or unreachable).
        raise TransientError(f"{action}: MongoDB unreachable: {_first_line(exc)}") from exc
    except (mongo_errors.ExecutionTimeout, mongo_errors.WTimeoutError) as exc:
        raise TransientError(f"{action}: MongoDB timed out: {_first_line(exc)}") from exc
    except mongo_errors.WriteConcernError as exc:
        raise TransientError(f"{action}: write concern not met: {_first_line(exc)}") from exc
    except mongo_errors.DocumentTooLarge as exc:
        raise DataError(f"{action}: document too large: {_first_line(exc)}") from exc
    except mongo_errors.OperationFailure as exc:
        raise _operation_failure(action, exc) from exc
    except mongo_errors.PyMongoError as exc:
        raise PermanentError(f"{action}: {_first_line(exc)}") from exc


def _operation_failure(action: str, exc: mongo_errors.OperationFailure) -> BatchProcessorError:
    if exc.code in _AUTH_CODES:
        return ConfigurationError(f"{action}: not authorised: {_first_line(exc)}")
    if exc.has_error_label("RetryableWriteError") or exc.has_error_label("TransientTransaction"):
        return TransientError(f"{action}: {_first_line(exc)}")
    if exc.code in _TRANSIENT_CODES:
        return TransientError(f"{action}: {_first_line(exc)}")
    if exc.code == 14031:  # OutOfDiskSpace
        return ResourceError(f"{action}: MongoDB out of disk space")
    return PermanentError(f"{action}: {_first_line(exc)}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class MongoStore:
    """The source and target collections of one database, with the daemon's queries."""

    def __init__(
        self,
        *,
        uri: str,
        database: str,
        source_collection: str,
        target_collection: str,
        projection: Sequence[str],
        server_selection_timeout: float = 10.0,
        socket_timeout: float = 60.0,
        listeners: Sequence[CommandListener] = (),
        cache_collection: str = "classification_cache",
    ) -> None:
        # A frozen server (SIGSTOP, a hung primary) keeps its sockets open: without a socket
        # timeout an operation on it would wait forever instead of failing and being retried.
        self.socket_timeout = socket_timeout
        with translated("connect"):
            try:
                self.client: AsyncMongoClient[Raw] = AsyncMongoClient(
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
                    f"invalid setting mongodb_uri: {_first_line(exc)}"
                ) from None
        db = self.client[database]
        self.source: AsyncCollection[Raw] = db[source_collection]
        self.target: AsyncCollection[Raw] = db[target_collection]
        self.cache: AsyncCollection[Raw] = db[cache_collection]
        self.projection = {field.split(".")[0]: 1 for field in projection}

    async def close(self) -> None:
        """Close the client's connections."""
        await self.client.close()

    async def ping(self, within: float | None = None) -> None:
        """Check that the server answers; raise TransientError or ConfigurationError if not.

        ``within`` (seconds) bounds the whole ping inside the driver. Never bound it by
        cancelling the task instead: pymongo 4.20 leaks the socket of a connection cancelled
        while it is being created (PYTHON-5867).
        """
        with translated("ping"), pymongo.timeout(within):
            await self.client.admin.command("ping")

    async def ensure_indexes(self) -> None:
        """Create the indexes the daemon's queries need (idempotent)."""
        with translated("create indexes"):
            # Serves the page query {status: null, _id > last} sorted by _id, and stale claims.
            await self.source.create_index(
                [(STATUS, ASCENDING), ("_id", ASCENDING)], name="bp_status_id"
            )

    async def insert_sources(self, docs: Sequence[Raw], *, chunk: int = 1000) -> int:
        """Insert source documents (the demo and benchmarks seed with this); return the count."""
        inserted = 0
        with translated("insert documents"):
            for start in range(0, len(docs), chunk):
                part = [dict(doc) for doc in docs[start : start + chunk]]
                result = await self.source.insert_many(part, ordered=False)
                inserted += len(result.inserted_ids)
        return inserted

    async def drop_collections(self) -> None:
        """Drop the source and target collections (the demo's ``--reset``)."""
        with translated("drop collections"):
            await self.source.drop()
            await self.target.drop()

    async def count_pending(self) -> int:
        """How many source documents are neither done, failed nor claimed."""
        with translated("count pending"):
            return await self.source.count_documents({STATUS: None})

    async def has_pending(self) -> bool:
        """Whether any source document waits (one indexed point query: the idle poll)."""
        with translated("poll for new documents"):
            return await self.source.find_one({STATUS: None}, {"_id": 1}) is not None

    @contextlib.asynccontextmanager
    async def insert_events(self, max_await: float) -> AsyncIterator[InsertWaiter]:
        """A change stream on source inserts; ``wait()`` returns True when one happened.

        Each ``wait()`` is one ``getMore`` that the server holds for up to ``max_await`` seconds,
        so an idle stream costs one command per wait. Raises TransientError or PermanentError
        where change streams are unavailable (a standalone mongod); callers then poll.
        """
        pipeline: list[Raw] = [{"$match": {"operationType": "insert"}}]
        # The server holds each getMore this long: keep it well inside the socket timeout.
        held = min(max_await, self.socket_timeout / 2)
        with translated("open change stream"):
            stream = await self.source.watch(pipeline, max_await_time_ms=max(1, int(held * 1000)))
        try:
            yield InsertWaiter(stream)
        finally:
            with contextlib.suppress(mongo_errors.PyMongoError):
                await stream.close()

    def page_cursor(self, page_size: int) -> PageCursor:
        """Unprocessed documents in ``_id`` order, a page at a time (see :class:`PageCursor`)."""
        raw_source = self.source.with_options(codec_options=_RAW)
        return PageCursor(raw_source, self.projection or None, page_size)

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
            result = await self.source.update_many({"_id": {"$in": ids}, **free}, {"$set": claim})
            if result.modified_count == len(ids):
                return set(doc_ids)
            # Some were taken already (rare): one more query tells which ones this claim won.
            mine = self.source.find({"_id": {"$in": ids}, f"{STATE}.claim": token}, {"_id": 1})
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
            result = await self.source.update_many(query, {"$set": {STATUS: None}})
        return result.modified_count

    async def release_ids(self, doc_ids: Sequence[str], job_id: str) -> None:
        """Give back this job's claims on ``doc_ids`` (a page that could not be saved)."""
        ids = [decode_id(doc_id) for doc_id in doc_ids]
        with translated("release claims"):
            await self.source.update_many(
                {"_id": {"$in": ids}, STATUS: CLAIMED, f"{STATE}.job": job_id},
                {"$set": {STATUS: None}},
            )

    async def finish_stored(self, doc_ids: Sequence[str], job_id: str) -> set[str]:
        """Mark done the documents whose result is already stored; return their ids.

        Used in recovery: a crash between storing a result and marking its source leaves it
        stored but not marked; it is marked from the stored result, not classified again.
        """
        if not doc_ids:
            return set()
        ids = [decode_id(doc_id) for doc_id in doc_ids]
        now = utcnow()
        with translated("look up stored results"):
            found = self.target.find({"_id": {"$in": ids}}, {"classifier": 1, "attempts": 1})
            stored = [raw async for raw in found]
        ops = [
            _done_op(raw["_id"], job_id, raw.get("classifier") or {}, raw.get("attempts", 1), now)
            for raw in stored
        ]
        await self._bulk_or_raise(ops, "mark processed")
        return {encode_id(raw["_id"]) for raw in stored}

    async def stored_ids(self, doc_ids: Sequence[str]) -> set[str]:
        """Which of these documents already have a stored result."""
        if not doc_ids:
            return set()
        ids = [decode_id(doc_id) for doc_id in doc_ids]
        with translated("look up results"):
            cursor = self.target.find({"_id": {"$in": ids}}, {"_id": 1})
            return {encode_id(raw["_id"]) async for raw in cursor}

    async def store_results(
        self, results: Sequence[ClassifiedDocument]
    ) -> dict[str, BatchProcessorError]:
        """Upsert results keyed by source ``_id``; return per-document errors that will not heal.

        A whole-command failure (server down, timeout) raises, so the caller retries the bulk;
        writing the same result again is harmless.
        """
        if not results:
            return {}
        by_id = {result.doc_id: result for result in results}
        failures: dict[str, BatchProcessorError] = {}
        pending = list(by_id)
        for _ in range(2):  # a concurrent-upsert E11000 succeeds as an update on the second pass
            ops = [
                UpdateOne({"_id": decode_id(i)}, {"$set": _result_doc(by_id[i])}, upsert=True)
                for i in pending
            ]
            errors = await self._bulk(self.target, ops, "store results")
            for index, (code, message) in errors.items():
                if code != _DUPLICATE_KEY:
                    kind = DataError if code in _DATA_CODES else PermanentError
                    failures[pending[index]] = kind(f"store result: {message}")
            pending = [pending[i] for i, (code, _) in errors.items() if code == _DUPLICATE_KEY]
            if not pending:
                break
        for doc_id in pending:
            failures[doc_id] = PermanentError("store results: duplicate key persisted")
        return failures

    async def mark_done(self, results: Sequence[ClassifiedDocument]) -> None:
        """Mark sources processed; called only after their results are stored."""
        now = utcnow()
        ops = [
            _done_op(
                decode_id(result.doc_id),
                result.job_id,
                {"name": result.classifier, "version": result.classifier_version},
                result.attempts,
                now,
            )
            for result in results
        ]
        await self._bulk_or_raise(ops, "mark processed")

    async def mark_failed(self, failures: Sequence[FailedDocument]) -> None:
        """Mark sources failed with the reason and the error category."""
        now = utcnow()
        ops = [
            UpdateOne(
                {"_id": decode_id(failure.doc_id), STATUS: {"$ne": DONE}},
                {
                    "$set": {
                        STATUS: FAILED,
                        f"{STATE}.failed_at": now,
                        f"{STATE}.job": failure.job_id,
                        f"{STATE}.error": failure.error,
                        f"{STATE}.category": str(failure.category),
                        f"{STATE}.attempts": failure.attempts,
                    }
                },
            )
            for failure in failures
        ]
        await self._bulk_or_raise(ops, "mark failed")

    async def _bulk_or_raise(self, ops: list[UpdateOne], action: str) -> None:
        if not ops:
            return
        errors = await self._bulk(self.source, ops, action)
        if errors:
            code, message = next(iter(errors.values()))
            raise PermanentError(f"{action}: {len(errors)} write errors, first ({code}): {message}")

    async def _bulk(
        self, collection: AsyncCollection[Raw], ops: list[UpdateOne], action: str
    ) -> dict[int, tuple[int, str]]:
        """One unordered bulk write; return {op index: (code, message)} of per-op errors."""
        try:
            with translated(action):
                await collection.bulk_write(ops, ordered=False)
        except PermanentError as exc:
            cause = exc.__cause__
            if isinstance(cause, mongo_errors.BulkWriteError):
                details = cause.details
                if details.get("writeConcernErrors"):
                    raise TransientError(f"{action}: write concern not met") from cause
                return {
                    int(e["index"]): (int(e.get("code", 0)), str(e.get("errmsg", "")))
                    for e in details.get("writeErrors", [])
                }
            raise
        return {}


def _done_op(
    raw_id: Any, job_id: str, classifier: dict[str, Any], attempts: int, now: datetime
) -> UpdateOne:
    """The update that marks one source document processed."""
    return UpdateOne(
        {"_id": raw_id},
        {
            "$set": {
                STATUS: DONE,
                f"{STATE}.done_at": now,
                f"{STATE}.job": job_id,
                f"{STATE}.classifier": classifier.get("name"),
                f"{STATE}.classifier_version": classifier.get("version"),
                f"{STATE}.attempts": attempts,
            },
            "$unset": {f"{STATE}.error": "", f"{STATE}.category": ""},
        },
    )


def _result_doc(result: ClassifiedDocument) -> Raw:
    """The target document for one result (``_id`` is the source ``_id``, set by the filter)."""
    return {
        "classification": result.classification.model_dump(mode="json"),
        "classifier": {
            "name": result.classifier,
            "version": result.classifier_version,
            "model": result.model,
            "taxonomy_version": result.taxonomy_version,
        },
        "usage": result.usage.model_dump() if result.usage is not None else None,
        "cost_usd": result.cost_usd,
        "cached": result.cached,
        "repairs": list(result.repairs),
        "attempts": result.attempts,
        "text": {"chars": result.text_chars, "truncated": result.truncated},
        "job_id": result.job_id,
        "classified_at": result.classified_at,
        "stored_at": utcnow(),
    }


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
            self.after = encode_id(_raw_id(raws[-1]))
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


def _raw_id(raw: RawBSONDocument) -> Any:
    return bson.decode(raw.raw, codec_options=_ESCAPED)["_id"]


def decode_source(raw: RawBSONDocument) -> SourceDocument | None:
    """One source document from its raw BSON; one that cannot be decoded carries a problem.

    A string that is not valid UTF-8 (or encodes a lone surrogate) is read with its bad bytes
    replaced by U+FFFD and the document carries a DATA problem naming each such field, so it
    ends ``failed`` instead of failing its whole page. None if even its ``_id`` is unusable (it
    is logged and left pending: no query could address it).
    """
    try:
        doc = bson.decode(raw.raw, codec_options=_STRICT)
        return SourceDocument(id=encode_id(doc.pop("_id")), fields=_json_safe(doc))
    except InvalidBSON:
        pass
    try:
        doc = bson.decode(raw.raw, codec_options=_ESCAPED)
    except InvalidBSON as exc:
        _log.error("unreadable source document skipped", error=_first_line(exc))
        return None
    bad: list[str] = []
    raw_id = _scrub(doc.pop("_id"), "_id", bad)
    if bad:
        _log.error("source document with a non-UTF-8 _id skipped", id=repr(raw_id)[:120])
        return None
    fields = _scrub(doc, "", bad)
    problem = f"not valid UTF-8 in field(s) {', '.join(repr(path) for path in bad[:5])}"
    return SourceDocument(id=encode_id(raw_id), fields=_json_safe(fields), problem=problem)


def _scrub(value: Any, path: str, bad: list[str]) -> Any:
    """``value`` with undecodable bytes replaced by U+FFFD; their paths appended to ``bad``."""
    if isinstance(value, str):
        if _SURROGATES.search(value) is None:
            return value
        bad.append(path)
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if isinstance(value, dict):
        return {
            _scrub(key, _join(path, "<key>"), bad): _scrub(item, _join(path, str(key)), bad)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_scrub(item, _join(path, str(index)), bad) for index, item in enumerate(value)]
    return value


def _join(path: str, part: str) -> str:
    return f"{path}.{part}" if path else part


class InsertWaiter:
    """Waits on an open change stream of inserts (see :meth:`MongoStore.insert_events`)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    async def wait(self) -> bool:
        """True if a document was inserted since the last wait (or during this one)."""
        with translated("wait for inserts"):
            return await self._stream.try_next() is not None


class MongoResultCache:
    """The dedupe cache in MongoDB: one document per content key, shared by all workers."""

    def __init__(self, store: MongoStore) -> None:
        self._collection = store.cache

    async def lookup(self, key: str) -> Raw | None:
        """The cached entry for ``key`` (a point read on ``_id``), or None."""
        with translated("cache lookup"):
            return await self._collection.find_one({"_id": key}, {"_id": 0})

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
                if any(error.get("code") != _DUPLICATE_KEY for error in errors):
                    raise
                # Two workers cached the same text at once: the first entry stands.
