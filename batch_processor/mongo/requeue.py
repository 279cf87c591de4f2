"""Reclassification: done or failed source documents made pending again, old results kept.

After a taxonomy, model, prompt or classifier change, the results an older version produced
are selected (on the target collection), each result is copied to the history collection, and
only then are their sources made pending again. The next run classifies them like new
documents, under the same claims, batch files and fences; the old result stays in the target
collection until the new one replaces it (the upsert by source ``_id``), so a reader always
sees exactly one result per source, never none.

Each step can be repeated after a crash: a history entry's ``_id`` is the source id and the
claim token (or store time) of the result it copies, so a second copy is a duplicate key,
ignored; a source is made pending only while it is still ``done`` (or ``failed``). Failed
documents (a DATA failure under a wrong ``--text-field``) are selected on the source by their
error category and made pending with their last error kept as ``processing.previous_error``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection

from batch_processor.errors import PermanentError
from batch_processor.models import RESULT_SCHEMA_VERSION, utcnow
from batch_processor.mongo.codec import Raw, encode_id
from batch_processor.mongo.errors import DUPLICATE_KEY, bulk_write_errors, translated
from batch_processor.mongo.source import (
    DONE,
    FAILED,
    IN_CHUNK,
    STATE,
    STATUS,
    check_source_filter,
    within,
)


@dataclass(frozen=True, slots=True)
class Selection:
    """Which documents to classify again (every given condition must hold)."""

    failed: bool = False  # failed documents instead of done ones
    category: str | None = None  # failed ones of this error category only
    produced_by: str | None = None  # results of this classifier (offline, llm)
    classifier_version: str | None = None  # ... of this classifier or prompt version
    model: str | None = None  # ... of this model
    taxonomy_version: str | None = None  # ... under this taxonomy version
    outdated_from: dict[str, Any] | None = None  # results not produced by this identity
    source_filter: Raw = field(default_factory=dict)  # source documents matching this
    limit: int | None = None

    def result_query(self) -> Raw:
        """The condition on the target collection's results (empty: no result condition)."""
        query: Raw = {}
        for key, value in (
            ("classifier.name", self.produced_by),
            ("classifier.version", self.classifier_version),
            ("classifier.model", self.model),
            ("classifier.taxonomy_version", self.taxonomy_version),
        ):
            if value is not None:
                query[key] = value
        if self.outdated_from:
            # Produced by another classifier identity, or stored in an older result shape.
            query["$or"] = [
                *({f"classifier.{key}": {"$ne": v}} for key, v in self.outdated_from.items()),
                {"schema_version": {"$ne": RESULT_SCHEMA_VERSION}},
            ]
        return query


@dataclass(slots=True)
class Requeued:
    """What a reclassification selected and did."""

    selected: int = 0
    requeued: int = 0
    kept_in_history: int = 0  # copies made now
    already_in_history: int = 0  # copied by an earlier run (reclassify run again)
    already_pending: int = 0  # requeued by an earlier run, not classified yet
    skipped_in_flight: int = 0  # selected, but claimed meanwhile: left alone


class Reclassification:
    """Selects documents to classify again and makes them pending (see the module docstring)."""

    def __init__(
        self,
        source: AsyncCollection[Raw],
        target: AsyncCollection[Raw],
        history: AsyncCollection[Raw],
    ) -> None:
        self._source = source
        self._target = target
        self._history = history

    async def run(self, selection: Selection, *, dry_run: bool = False) -> Requeued:
        """Requeue the selected documents (with ``dry_run``, only count them)."""
        if selection.source_filter:
            await check_source_filter(self._source, selection.source_filter)
        done = Requeued()
        async for chunk in self._selected(selection):
            done.selected += len(chunk)
            if dry_run:
                continue
            if not selection.failed:
                copied, before = await self._keep_history(chunk)
                done.kept_in_history += copied
                done.already_in_history += before
            ids = [raw["_id"] for raw in chunk]
            requeued = await self._make_pending(ids, selection)
            done.requeued += requeued
            if requeued < len(chunk):
                pending = await self._count_pending(ids)
                done.already_pending += pending
                done.skipped_in_flight += len(chunk) - requeued - pending
        return done

    async def _count_pending(self, ids: Sequence[Any]) -> int:
        """How many of ``ids`` are pending already."""
        with translated("count pending documents"):
            return await self._source.count_documents({"_id": {"$in": list(ids)}, STATUS: None})

    async def _selected(self, selection: Selection) -> AsyncIterator[list[Raw]]:
        """The selected documents, a chunk at a time: results (done) or sources (failed)."""
        results = selection.result_query()
        if selection.failed or not results:
            query: Raw = {STATUS: FAILED if selection.failed else DONE}
            if selection.failed and selection.category is not None:
                query[f"{STATE}.category"] = selection.category.upper()
            chunks = self._chunks(self._source, within(query, selection.source_filter), selection)
            async for chunk in chunks:
                yield chunk if selection.failed else await self._results_of(chunk)
            return
        async for chunk in self._chunks(self._target, results, selection):
            if selection.source_filter:
                chunk = await self._matching_sources(chunk, selection.source_filter)
            yield chunk

    async def _chunks(
        self, collection: AsyncCollection[Raw], query: Raw, selection: Selection
    ) -> AsyncIterator[list[Raw]]:
        """Documents matching ``query`` in chunks, up to the selection's limit."""
        left = selection.limit
        chunk: list[Raw] = []
        with translated("select documents to reclassify"):
            cursor = collection.find(query).sort("_id", 1)
            if left is not None:
                cursor = cursor.limit(left)
            async for raw in cursor:
                chunk.append(raw)
                if len(chunk) == IN_CHUNK:
                    yield chunk
                    chunk = []
        if chunk:
            yield chunk

    async def _results_of(self, sources: Sequence[Raw]) -> list[Raw]:
        """The stored results of these done sources (a source without one is kept as is)."""
        ids = [raw["_id"] for raw in sources]
        with translated("read results"):
            found = {raw["_id"]: raw async for raw in self._target.find({"_id": {"$in": ids}})}
        return [found.get(doc_id, {"_id": doc_id}) for doc_id in ids]

    async def _matching_sources(self, results: Sequence[Raw], source_filter: Raw) -> list[Raw]:
        """The results whose source matches the source filter."""
        ids = [raw["_id"] for raw in results]
        with translated("filter sources"):
            cursor = self._source.find({"$and": [{"_id": {"$in": ids}}, source_filter]}, {"_id": 1})
            matching = {raw["_id"] async for raw in cursor}
        return [raw for raw in results if raw["_id"] in matching]

    async def _keep_history(self, results: Sequence[Raw]) -> tuple[int, int]:
        """Copy results to the history collection; (copies made, copies there before)."""
        entries = [_history_entry(raw) for raw in results if "classification" in raw]
        if not entries:
            return 0, 0
        try:
            with translated("keep result history"):
                await self._history.insert_many(entries, ordered=False)
        except PermanentError as exc:
            errors = bulk_write_errors(exc, "keep result history")
            if any(code != DUPLICATE_KEY for code, _ in errors.values()):
                raise
            return len(entries) - len(errors), len(errors)  # a duplicate: copied before
        return len(entries), 0

    async def _make_pending(self, ids: Sequence[Any], selection: Selection) -> int:
        """Make these sources pending while they are still done (failed); return how many."""
        status = FAILED if selection.failed else DONE
        update: Raw = {
            "$set": {
                STATUS: None,
                f"{STATE}.requeued_at": utcnow(),
                f"{STATE}.requeued_from": status,
            }
        }
        if selection.failed:
            update["$rename"] = {f"{STATE}.error": f"{STATE}.previous_error"}
            update["$unset"] = {f"{STATE}.category": ""}
        with translated("make documents pending"):
            result = await self._source.update_many(
                {"_id": {"$in": list(ids)}, STATUS: status}, update
            )
        return result.modified_count


def _history_entry(result: Raw) -> Raw:
    """The history copy of one result: keyed by its source and the claim it was stored under."""
    version = result.get("claim") or str(result.get("stored_at") or "")
    entry = {key: value for key, value in result.items() if key != "_id"}
    return {
        "_id": f"{encode_id(result['_id'])}|{version}",
        "doc_id": result["_id"],
        "replaced_at": utcnow(),
        **entry,
    }
