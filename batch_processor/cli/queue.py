"""``batch-processor queue``: list, show, requeue or purge retry-queue and dead-letter entries."""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from batch_processor.files.atomic import exclusive_lock
from batch_processor.files.layout import Layout
from batch_processor.files.retry_queues import RetryQueues
from batch_processor.models import ClassifyRetry, DeadLetter, StoreRetry
from batch_processor.plain_ids import plain_id

QueueName = Literal["classify", "store", "dead"]


def dead_key(entry: DeadLetter) -> str:
    """A stable short key of a dead-letter entry (its line has no other name)."""
    return hashlib.sha256(entry.model_dump_json().encode()).hexdigest()[:12]


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


#: Keys shown per group in the table (``--json`` lists them all).
SHOWN_KEYS = 5


def grouped_entries(batch_dir: Path, queues: list[QueueName]) -> list[dict[str, Any]]:
    """Entries of ``queues`` with identical errors grouped: counts, whole keys, time span."""
    groups: dict[tuple[str, str, str], dict[str, Any]] = {}
    for name in queues:
        for row in queue_entries(batch_dir, name):
            category, error = str(row.get("category", "")), str(row.get("error", ""))
            group = groups.setdefault(
                (name, category, error),
                {
                    "queue": name,
                    "category": category,
                    "error": error,
                    "entries": 0,
                    "documents": 0,
                    "max_attempts": 0,
                    "first_at": None,
                    "last_at": None,
                    "keys": [],
                },
            )
            group["entries"] += 1
            group["documents"] += row.get("documents", 0)
            group["max_attempts"] = max(group["max_attempts"], row.get("attempts", 0))
            at = row.get("at")
            if at is not None:
                group["first_at"] = min(filter(None, [group["first_at"], at]))
                group["last_at"] = max(filter(None, [group["last_at"], at]))
            group["keys"].append(row["key"])
    return sorted(groups.values(), key=lambda group: (group["queue"], -group["entries"]))


def shown_keys(keys: list[str]) -> str:
    """A group's keys for the table: whole, one per line, the first few."""
    more = len(keys) - SHOWN_KEYS
    return "\n".join(keys[:SHOWN_KEYS]) + (
        f"\n(+{more} more: --json lists all)" if more > 0 else ""
    )


def show_entry(batch_dir: Path, key: str) -> dict[str, Any] | None:
    """The whole entry with ``key`` in any queue or the dead letter, or None."""
    queues = RetryQueues(batch_dir)
    for name, retry_queue in (("classify", queues.classify), ("store", queues.store)):
        if key in retry_queue.pending_keys():
            item = retry_queue.get(key)
            ids = (
                [item.doc.id]
                if isinstance(item, ClassifyRetry)
                else [r.doc_id for r in item.results] + [f.doc_id for f in item.failures]
            )
            return {"found_in": name, "key": key, "documents": [plain_id(i) for i in ids],
                    **item.model_dump(mode="json")}  # fmt: skip
    for entry in queues.dead_letter.entries():
        if dead_key(entry) == key:
            documents = [plain_id(i) for i in entry.doc_ids]
            return {"found_in": "dead", "key": key, "documents": documents,
                    **entry.model_dump(mode="json")}  # fmt: skip
    return None


def requeue(batch_dir: Path, *, category: str | None = None, keys: list[str] | None = None) -> int:
    """Move dead-letter entries (all, by category or by key) back to their retry queue."""
    with exclusive_lock(Layout(batch_dir).lock):
        return RetryQueues(batch_dir).requeue_dead(lambda e: _selected(e, category, keys))


def purge(
    batch_dir: Path, queue: QueueName, *, category: str | None = None, keys: list[str] | None = None
) -> int:
    """Delete entries of ``queue`` (all, by category or by key); return how many.

    Purged classify or store entries give their documents back: the worker's next start
    releases their claims and they are classified again. Purged dead-letter entries leave their
    documents failed.
    """
    with exclusive_lock(Layout(batch_dir).lock):
        queues = RetryQueues(batch_dir)
        if queue == "dead":
            return queues.purge_dead(lambda e: _selected(e, category, keys))
        return queues.purge(
            queue,
            lambda key, item: (
                (keys is None or key in keys) and (category is None or item.category == category)
            ),
        )


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
        "error": error if len(error) <= 200 else error[:199] + "…",
        "at": when.isoformat(),
    }
