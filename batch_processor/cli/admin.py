"""Operator commands: ``status`` (where a worker's job is) and ``queue`` (inspect and fix failures).

``status`` reads the batch directory (checkpoint, batch files, queues, dead letter) and, when a
MongoDB URI is configured, the database (pending, claimed, done, failed by category). ``queue``
lists and shows retry-queue and dead-letter entries, requeues dead-lettered ones (all, by error
category, or by key: the user's "analyse failures, recover failed batch") and purges entries.
Commands that change the files take the batch directory's lock, so they refuse to run beside
the worker that owns it.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from batch_processor.files.atomic import exclusive_lock
from batch_processor.files.batch_files import BatchFiles
from batch_processor.files.checkpoints import CheckpointStore
from batch_processor.files.retry_queues import RetryQueues
from batch_processor.models import ClassifyRetry, DeadLetter, StoreRetry, utcnow
from batch_processor.mongo.store import MongoStore

QueueName = Literal["classify", "store", "dead"]


def dead_key(entry: DeadLetter) -> str:
    """A stable short key of a dead-letter entry (its line has no other name)."""
    return hashlib.sha256(entry.model_dump_json().encode()).hexdigest()[:12]


def job_status(batch_dir: Path, now: datetime | None = None) -> dict[str, Any]:
    """What the batch directory says about the current or last job."""
    now = now or utcnow()
    loaded = CheckpointStore(batch_dir).load()
    queues = RetryQueues(batch_dir)
    dead_letter = len(queues.dead_letter)
    report: dict[str, Any] = {
        "batch_dir": str(batch_dir),
        "in_flight_batch_files": len(BatchFiles(batch_dir / "batches").names()),
        "queued_classify": len(queues.classify),
        "queued_store": len(queues.store),
        "queued_store_documents": queues.store_documents(),
        "dead_letter": dead_letter,
        "dead_letter_damaged_lines": queues.dead_letter.damaged,
        "checkpoint": loaded.source,
        "checkpoint_problems": list(loaded.problems),
    }
    checkpoint = loaded.checkpoint
    if checkpoint is None:
        return report
    counters = checkpoint.counters
    processed = sum(counters.get(k, 0) for k in ("succeeded", "already_stored", "failed"))
    seconds = max((checkpoint.updated_at - checkpoint.started_at).total_seconds(), 1e-9)
    report |= {
        "job_id": checkpoint.job_id,
        "job_status": checkpoint.status.value,
        "job_error": checkpoint.error,
        "started_at": checkpoint.started_at.isoformat(),
        "checkpoint_age_seconds": round((now - checkpoint.updated_at).total_seconds(), 1),
        "processed": processed,
        "succeeded": counters.get("succeeded", 0),
        "failed_by_category": {
            key.removeprefix("failed_").upper(): value
            for key, value in sorted(counters.items())
            if key.startswith("failed_")
        },
        "docs_per_second": round(processed / seconds, 2),
    }
    return report


async def database_status(store: MongoStore) -> dict[str, Any]:
    """Documents by processing state, and failures by category, from the source collection."""
    by_state: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    for (state, category), count in (await store.source.status_counts()).items():
        by_state[state] += count
        if state == "failed":
            failed[category or "UNKNOWN"] += count
    return {
        "total": sum(by_state.values()),
        "pending": by_state["pending"],
        "claimed": by_state["claimed"],
        "done": by_state["done"],
        "failed": by_state["failed"],
        "failed_by_category_in_db": dict(sorted(failed.items())),
    }


def with_eta(report: dict[str, Any]) -> dict[str, Any]:
    """Add the ETA of the pending documents at the job's rate, when both are known."""
    rate, pending = report.get("docs_per_second"), report.get("pending")
    if rate and pending is not None and report.get("job_status") == "running":
        report["eta_seconds"] = round(pending / rate, 1)
    return report


def queue_entries(batch_dir: Path, queue: QueueName) -> list[dict[str, Any]]:
    """One summary row per entry of ``queue``."""
    queues = RetryQueues(batch_dir)
    rows: list[dict[str, Any]] = []
    if queue == "dead":
        for entry in queues.dead_letter.entries():
            rows.append(
                _row(
                    dead_key(entry),
                    entry.doc_ids,
                    entry.attempts,
                    entry.category,
                    entry.error,
                    entry.dead_at,
                )
            )
        return rows
    retry_queue = queues.classify if queue == "classify" else queues.store
    for key in retry_queue.pending_keys():
        try:
            item = retry_queue.get(key)
        except ValueError as exc:
            rows.append({"key": key, "error": str(exc)})
            continue
        if isinstance(item, ClassifyRetry):
            doc_ids = [item.doc.id]
        else:
            assert isinstance(item, StoreRetry)
            doc_ids = [r.doc_id for r in item.results] + [f.doc_id for f in item.failures]
        rows.append(_row(key, doc_ids, item.attempts, item.category, item.error, item.queued_at))
    return rows


def show_entry(batch_dir: Path, key: str) -> dict[str, Any] | None:
    """The whole entry with ``key`` in any queue or the dead letter, or None."""
    queues = RetryQueues(batch_dir)
    for name, retry_queue in (("classify", queues.classify), ("store", queues.store)):
        if key in retry_queue.pending_keys():
            return {"found_in": name, "key": key, **retry_queue.get(key).model_dump(mode="json")}
    for entry in queues.dead_letter.entries():
        if dead_key(entry) == key:
            return {"found_in": "dead", "key": key, **entry.model_dump(mode="json")}
    return None


def requeue(batch_dir: Path, *, category: str | None = None, keys: list[str] | None = None) -> int:
    """Move dead-letter entries back to their retry queue, attempts reset; return how many.

    The next run drains them first; a document stored then is marked done again.
    """
    with exclusive_lock(batch_dir / ".lock"):
        queues = RetryQueues(batch_dir)
        keep, moved = [], 0
        for entry in queues.dead_letter.entries():
            if not _selected(entry, category, keys):
                keep.append(entry)
                continue
            if entry.queue == "classify":
                item = ClassifyRetry.model_validate(entry.item)
                queues.classify.add(item.model_copy(update={"attempts": 1, "queued_at": utcnow()}))
            else:
                retry = StoreRetry.model_validate(entry.item)
                queues.store.add(retry.model_copy(update={"attempts": 1, "queued_at": utcnow()}))
            moved += 1
        queues.dead_letter.keep_only(keep)
        return moved


def purge(
    batch_dir: Path, queue: QueueName, *, category: str | None = None, keys: list[str] | None = None
) -> int:
    """Delete entries of ``queue`` (all, by category or by key); return how many.

    Purged classify or store entries give their documents back: the worker's next start
    releases their claims and they are classified again. Purged dead-letter entries leave their
    documents failed.
    """
    with exclusive_lock(batch_dir / ".lock"):
        queues = RetryQueues(batch_dir)
        if queue == "dead":
            entries = list(queues.dead_letter.entries())
            keep = [e for e in entries if not _selected(e, category, keys)]
            queues.dead_letter.keep_only(keep)
            return len(entries) - len(keep)
        retry_queue = queues.classify if queue == "classify" else queues.store
        removed = 0
        for key in retry_queue.pending_keys():
            item = retry_queue.get(key)
            if (keys is None or key in keys) and (category is None or item.category == category):
                retry_queue.remove(key)
                removed += 1
        return removed


def _selected(entry: DeadLetter, category: str | None, keys: list[str] | None) -> bool:
    return (keys is None or dead_key(entry) in keys) and (
        category is None or str(entry.category) == category
    )


def _row(
    key: str, doc_ids: list[str], attempts: int, category: Any, error: str, when: datetime
) -> dict[str, Any]:
    return {
        "key": key,
        "documents": len(doc_ids),
        "doc_ids": doc_ids[:5],
        "attempts": attempts,
        "category": str(category),
        "error": error[:200],
        "at": when.isoformat(),
    }
