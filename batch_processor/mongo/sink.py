"""Result writes: results upserted by source ``_id``, then their sources marked in bulk.

Results are written with one unordered bulk of upserts keyed by the source ``_id`` (so a result
written twice is one document), and only then are the sources marked done with one bulk write.
Every write uses ``w="majority", j=True`` (set on the client).

Every write is fenced by the claim token the worker holds the document under (see
:func:`batch_processor.models.claim_token`): a result replaces only a result written under an
older or equal token (a worker whose lease was taken over cannot overwrite the new owner's),
and a source is marked only while its claim token is still ours. A fenced write is reported
as :class:`~batch_processor.errors.LostLeaseError` (results) or in the returned set (marks).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pymongo import UpdateOne
from pymongo.asynchronous.collection import AsyncCollection

from batch_processor.errors import BatchProcessorError, DataError, LostLeaseError, PermanentError
from batch_processor.models import (
    RESULT_SCHEMA_VERSION,
    ClassifiedDocument,
    FailedDocument,
    utcnow,
)
from batch_processor.mongo.codec import Raw, decode_id, encode_id
from batch_processor.mongo.errors import DATA_CODES, DUPLICATE_KEY, bulk_write_errors, translated
from batch_processor.mongo.source import CLAIM, DONE, FAILED, IN_CHUNK, STATE, STATUS


class MongoSink:
    """Writes results to the target collection and marks their sources."""

    def __init__(self, source: AsyncCollection[Raw], target: AsyncCollection[Raw]) -> None:
        self._source = source
        self._target = target

    async def finish_stored(
        self,
        doc_ids: Sequence[str],
        job_id: str,
        claim: str | None = None,
        since_claim: str | None = None,
    ) -> set[str]:
        """Mark done the documents whose result is already stored; return their ids.

        Used in recovery: a crash between storing a result and marking its source leaves it
        stored but not marked; it is marked from the stored result, not classified again.
        ``claim`` is the token the documents were just reclaimed under (the marks' fence).
        ``since_claim`` is the token the batch file recorded: only a result stored under it
        or a later one counts, so the previous result of a document being reclassified is
        not taken for the new one.
        """
        if not doc_ids:
            return set()
        ids = [decode_id(doc_id) for doc_id in doc_ids]
        now = utcnow()
        query: Raw = {"_id": {"$in": ids}}
        if since_claim is not None:
            query["claim"] = {"$gte": since_claim}
        with translated("look up stored results"):
            found = self._target.find(query, {"classifier": 1, "attempts": 1})
            stored = [raw async for raw in found]
        ops = [
            _done_op(
                raw["_id"], claim, job_id, raw.get("classifier") or {}, raw.get("attempts", 1), now
            )
            for raw in stored
        ]
        await self._bulk_or_raise(ops, "mark processed")
        return {encode_id(raw["_id"]) for raw in stored}

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
                UpdateOne(_result_fence(by_id[i]), _result_update(by_id[i]), upsert=True)
                for i in pending
            ]
            _, errors = await self._bulk(self._target, ops, "store results")
            for index, (code, message) in errors.items():
                if code != DUPLICATE_KEY:
                    kind = DataError if code in DATA_CODES else PermanentError
                    failures[pending[index]] = kind(f"store result: {message}")
            pending = [pending[i] for i, (code, _) in errors.items() if code == DUPLICATE_KEY]
            if not pending:
                break
        for doc_id in pending:
            # The upsert's filter found a result under a newer claim token: another worker
            # took the document over and stored its own result, which stays.
            failures[doc_id] = LostLeaseError("store result: a newer owner's result is stored")
        return failures

    async def mark_done(self, results: Sequence[ClassifiedDocument]) -> set[str]:
        """Mark sources processed (only after their results are stored); return fenced ids."""
        now = utcnow()
        ops = [
            _done_op(
                decode_id(result.doc_id),
                result.claim,
                result.job_id,
                {"name": result.classifier, "version": result.classifier_version},
                result.attempts,
                now,
            )
            for result in results
        ]
        matched = await self._bulk_or_raise(ops, "mark processed")
        if matched == len(ops):
            return set()
        return await self._not_ours([(r.doc_id, r.claim) for r in results])

    async def mark_failed(self, failures: Sequence[FailedDocument]) -> set[str]:
        """Mark sources failed with the reason and the error category; return fenced ids."""
        now = utcnow()
        ops = [
            UpdateOne(
                {**_source_fence(decode_id(failure.doc_id), failure.claim), STATUS: {"$ne": DONE}},
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
        matched = await self._bulk_or_raise(ops, "mark failed")
        if matched == len(ops):
            return set()
        return await self._not_ours([(f.doc_id, f.claim) for f in failures])

    async def _not_ours(self, marks: list[tuple[str, str | None]]) -> set[str]:
        """Which of these (id, claim) marks did not apply because the claim is no longer ours.

        Asked only when a bulk mark matched fewer documents than it had (rare): a mark
        matches only while the document is still held under its token.
        """
        fenced = {doc_id: claim for doc_id, claim in marks if claim is not None}
        lost: set[str] = set()
        ids = list(fenced)
        for start in range(0, len(ids), IN_CHUNK):
            chunk = [decode_id(doc_id) for doc_id in ids[start : start + IN_CHUNK]]
            with translated("check claims"):
                async for raw in self._source.find({"_id": {"$in": chunk}}, {CLAIM: 1}):
                    doc_id = encode_id(raw["_id"])
                    if (raw.get(STATE) or {}).get("claim") != fenced[doc_id]:
                        lost.add(doc_id)
        return lost

    async def _bulk_or_raise(self, ops: list[UpdateOne], action: str) -> int:
        """One bulk write of marks; return how many documents its filters matched."""
        if not ops:
            return 0
        matched, errors = await self._bulk(self._source, ops, action)
        if errors:
            code, message = next(iter(errors.values()))
            raise PermanentError(f"{action}: {len(errors)} write errors, first ({code}): {message}")
        return matched

    async def _bulk(
        self, collection: AsyncCollection[Raw], ops: list[UpdateOne], action: str
    ) -> tuple[int, dict[int, tuple[int, str]]]:
        """One unordered bulk write; return (matched, {op index: (code, message)})."""
        try:
            with translated(action):
                result = await collection.bulk_write(ops, ordered=False)
        except PermanentError as exc:
            return 0, bulk_write_errors(exc, action)
        return result.matched_count + result.upserted_count, {}


def _source_fence(raw_id: Any, claim: str | None) -> Raw:
    """The filter of a mark: the document, while it is still held under ``claim``.

    ``None`` (an outcome queued by a version without claim tokens) is not fenced.
    """
    fence: Raw = {"_id": raw_id}
    if claim is not None:
        fence[CLAIM] = claim
    return fence


def _result_fence(result: ClassifiedDocument) -> Raw:
    """The filter of a result upsert: no result, or one written under an older or equal token.

    A result under a newer token makes the upsert insert a duplicate ``_id`` (E11000): the
    caller reports it as a lost lease.
    """
    fence: Raw = {"_id": decode_id(result.doc_id)}
    if result.claim is not None:
        fence["claim"] = {"$not": {"$gt": result.claim}}
    return fence


def _done_op(
    raw_id: Any,
    claim: str | None,
    job_id: str,
    classifier: dict[str, Any],
    attempts: int,
    now: datetime,
) -> UpdateOne:
    """The update that marks one source document processed (while held under ``claim``)."""
    return UpdateOne(
        _source_fence(raw_id, claim),
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


def _result_update(result: ClassifiedDocument) -> Raw:
    """The update that stores one result (a cascade record left by an earlier run goes)."""
    update: Raw = {"$set": _result_doc(result)}
    if result.cascade is None:
        update["$unset"] = {"cascade": ""}
    return update


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
        "route": result.route,
        "repairs": list(result.repairs),
        "attempts": result.attempts,
        "text": {
            "chars": result.text_chars,
            "truncated": result.truncated,
            "turns": result.turns,
            **({"invalid_utf8_replaced": list(result.replaced)} if result.replaced else {}),
        },
        **({"cascade": result.cascade.model_dump(mode="json")} if result.cascade else {}),
        "schema_version": RESULT_SCHEMA_VERSION,
        "job_id": result.job_id,
        "claim": result.claim,
        "classified_at": result.classified_at,
        "stored_at": utcnow(),
    }
