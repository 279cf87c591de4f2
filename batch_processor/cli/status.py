"""``batch-processor status``: the current or last job's progress, from its files and MongoDB."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from batch_processor.files.atomic import lock_holder
from batch_processor.files.batch_files import BatchFiles
from batch_processor.files.checkpoints import CheckpointStore
from batch_processor.files.layout import Layout
from batch_processor.files.retry_queues import RetryQueues
from batch_processor.models import utcnow
from batch_processor.mongo.store import MongoStore


async def provider_batches(store: MongoStore) -> list[dict[str, Any]]:
    """The Batch API route's unfinished slices: stage, owner, provider state, documents, spend."""
    return [
        {
            "slice": record.slice_id,
            "stage": record.stage.value,
            "owner": record.owner,
            "lease_until": record.lease_until.isoformat(timespec="seconds"),
            "batch_id": record.batch_id,
            "provider_status": record.batch_status,
            "documents": record.documents,
            "request_mb": round(record.request_bytes / 1e6, 2),
            "stored": record.stored,
            "online": record.online,
            "failed": record.failed,
            "cost_usd": round(record.cost_usd, 6),
            "updated_at": record.updated_at.isoformat(timespec="seconds"),
        }
        for record in await store.slices.unfinished()
    ]


#: The checkpoint's counters of documents that ended.
PROCESSED = ("succeeded", "already_stored", "failed")


def job_status(batch_dir: Path, now: datetime | None = None) -> dict[str, Any]:
    """What the batch directory says about the current or last job."""
    now = now or utcnow()
    loaded = CheckpointStore(batch_dir).load()
    queues = RetryQueues(batch_dir)
    dead_letter = len(queues.dead_letter)
    report: dict[str, Any] = {
        "batch_dir": str(batch_dir),
        "in_flight_batch_files": len(BatchFiles(Layout(batch_dir).batches).names()),
        "queued_classify": len(queues.classify),
        "queued_store": len(queues.store),
        "queued_store_documents": queues.store_documents(),
        "dead_letter": dead_letter,
        "dead_letter_damaged_lines": queues.dead_letter.damaged,
        "checkpoint": loaded.source,
        "checkpoint_problems": list(loaded.problems),
    }
    holder = lock_holder(Layout(batch_dir).lock)
    if holder is not None:
        report["worker_process"] = f"pid {holder.pid}, " + ("alive" if holder.alive else "dead")
    checkpoint = loaded.checkpoint
    if checkpoint is None:
        return report
    counters = checkpoint.counters
    processed = sum(counters.get(k, 0) for k in PROCESSED)
    seconds = max((checkpoint.updated_at - checkpoint.started_at).total_seconds(), 1e-9)
    job_status = checkpoint.status.value
    if job_status == "running" and not (holder is not None and holder.alive):
        # The checkpoint says running, but no live process holds the directory: it died
        # (SIGKILL, a crash, a power cut).
        job_status = "interrupted (its process is gone: run with --recover)"
    report |= {
        "job_id": checkpoint.job_id,
        "job_status": job_status,
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


async def fleet_status(store: MongoStore, now: datetime | None = None) -> list[dict[str, Any]]:
    """The workers on this database: their heartbeats and claims; alive or dead.

    A worker is dead when it has not beaten for a lease period: by then its leases have
    expired and any live worker takes its documents over. A batch worker whose job ended
    says so in its last beat: ``ended``. Claims of a worker without a heartbeat (a version
    before heartbeats) are listed too.
    """
    now = now or utcnow()
    claims = await store.source.claims_by_worker()
    rows = []
    for beat in await store.fleet.workers():
        worker = str(beat["_id"])
        age = (now - beat["beat_at"]).total_seconds() if "beat_at" in beat else None
        lease = float(beat.get("lease_seconds") or 60.0)
        claimed, _ = claims.pop(worker, (0, None))
        rows.append(
            {
                "worker": worker,
                "state": _state(beat, age, lease),
                "host": beat.get("host"),
                "pid": beat.get("pid"),
                "mode": beat.get("mode"),
                "job_id": beat.get("job_id"),
                "last_beat_seconds_ago": round(age, 1) if age is not None else None,
                "in_flight": beat.get("in_flight", 0),
                "claims_in_db": claimed,
                "done": beat.get("done", 0),
                "taken_over": beat.get("taken_over", 0),
                "lost_lease": beat.get("lost_lease", 0),
                "rss_mb": beat.get("rss_mb"),
            }
        )
    for worker, (claimed, until) in sorted(claims.items()):
        expired = until is None or until < now
        rows.append(
            {"worker": worker, "state": "dead" if expired else "unknown", "claims_in_db": claimed}
        )
    return rows


def as_this_directory_knows(rows: list[dict[str, Any]], batch_dir: Path) -> None:
    """Correct the state of this batch directory's own worker by its lock: the local truth.

    A heartbeat says ``alive`` for a lease after the last one; the lock file knows at once
    that the process is gone (a Ctrl-C, a kill). Gone: ``ended`` if it left no claims, else
    ``dead`` (they wait for their leases to expire and another worker to take them). A stop
    by a signal skips the last beat (a stop is bounded): the checkpoint has the count.
    """
    checkpoint = CheckpointStore(batch_dir).load().checkpoint
    holder = lock_holder(Layout(batch_dir).lock)
    if checkpoint is None or checkpoint.worker_id is None or (holder and holder.alive):
        return
    for row in rows:
        if row["worker"] == checkpoint.worker_id and row["state"] != "ended":
            row["state"] = "dead" if row.get("claims_in_db") else "ended"
            processed = sum(checkpoint.counters.get(k, 0) for k in PROCESSED)
            row["done"] = max(row.get("done") or 0, processed)


def _state(beat: dict[str, Any], age: float | None, lease: float) -> str:
    """``ended`` (its last beat said so), ``alive`` (beating) or ``dead`` (silent a lease)."""
    ended = beat.get("ended_at")
    if ended is not None and ended >= beat.get("beat_at", ended):
        return "ended"
    return "alive" if age is not None and age <= lease else "dead"


def with_eta(report: dict[str, Any]) -> dict[str, Any]:
    """Add the ETA of the pending documents at the job's rate, when both are known."""
    rate, pending = report.get("docs_per_second"), report.get("pending")
    if rate and pending is not None and report.get("job_status") == "running":
        report["eta_seconds"] = round(pending / rate, 1)
    return report
