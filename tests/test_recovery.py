"""Crash safety: a worker SIGKILLed at any point and restarted with --recover loses nothing."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from batch_processor.files.identity import decode_identity
from batch_processor.models import utcnow

from .conftest import conversation, worker_command

GOOD = 200
BAD: list[dict[str, Any]] = [{"messages": ""}, {"messages": 7}, {"subject": "no text"}]

Condition = Callable[[Any, Path], Awaitable[bool]]


async def batch_file_saved(db: Any, batch_dir: Path) -> bool:
    """At least one batch file is on disk."""
    return any((batch_dir / "batches").glob("*.jsonl"))


async def some_results_stored(db: Any, batch_dir: Path) -> bool:
    """Some results are stored (their sources may not be marked yet)."""
    return bool(await db.sentimental_analysis.count_documents({}) >= 30)


async def half_marked(db: Any, batch_dir: Path) -> bool:
    """Half of the sources are marked done."""
    done = await db.conversation_set.count_documents({"processing.status": "done"})
    return bool(done >= GOOD // 2)


async def nearly_done(db: Any, batch_dir: Path) -> bool:
    """All but the last pages are marked done."""
    done = await db.conversation_set.count_documents({"processing.status": "done"})
    return bool(done >= GOOD - 60)


def worker_args(mongo_uri: str, db_name: str, batch_dir: Path, *extra: str) -> list[str]:
    """A worker with small pages and frequent checkpoints, so kills land mid-flight."""
    return worker_command(
        "--mongodb-uri",
        mongo_uri,
        "--database",
        db_name,
        "--batch-dir",
        str(batch_dir),
        "--batch-size",
        "20",
        "--concurrent",
        "4",
        "--checkpoint-interval",
        "10",
        "--log-format",
        "json",
        "--no-progress",
        *extra,
    )


async def seed(db: Any) -> None:
    """GOOD conversations plus a few bad documents."""
    docs = [conversation(f"My order {i} never arrived, tracking is stuck.") for i in range(GOOD)]
    await db.conversation_set.insert_many(docs + [dict(doc) for doc in BAD])


async def kill_when(args: list[str], condition: Condition, db: Any, batch_dir: Path) -> None:
    """Start a worker, SIGKILL it as soon as ``condition`` holds; fail if it ended first."""
    process = await asyncio.create_subprocess_exec(
        *args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        async with asyncio.timeout(60):
            while not await condition(db, batch_dir):
                assert process.returncode is None, "the worker ended before the kill point"
                await asyncio.sleep(0.01)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGKILL)
        await process.wait()
    assert process.returncode == -signal.SIGKILL


async def run_worker(args: list[str]) -> tuple[int, str]:
    """Run a worker to its end; return its exit code and its log."""
    process = await asyncio.create_subprocess_exec(
        *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode is not None
    return process.returncode, stderr.decode()


async def assert_exactly_once(db: Any, batch_dir: Path) -> None:
    """Every good source done with one result, every bad one failed, nothing in between."""
    sources = db.conversation_set
    assert await sources.count_documents({"processing.status": "done"}) == GOOD
    assert await sources.count_documents(
        {"processing.status": "failed", "processing.category": "DATA"}
    ) == len(BAD)
    assert await sources.count_documents({"processing.status": {"$in": [None, "claimed"]}}) == 0
    done_ids = set(await sources.distinct("_id", {"processing.status": "done"}))
    result_ids = [doc["_id"] async for doc in db.sentimental_analysis.find({}, {"_id": 1})]
    assert len(result_ids) == GOOD and set(result_ids) == done_ids
    assert list((batch_dir / "batches").glob("*.jsonl")) == []
    checkpoint = json.loads((batch_dir / "checkpoint.json").read_text())["checkpoint"]
    assert checkpoint["status"] == "finished" and checkpoint["in_flight"] == []


@pytest.mark.slow
@pytest.mark.parametrize(
    "condition",
    [batch_file_saved, some_results_stored, half_marked, nearly_done],
    ids=lambda condition: condition.__name__,
)
async def test_sigkill_then_recover_processes_every_document_once(
    db: Any, db_name: str, mongo_uri: str, tmp_path: Path, condition: Condition
) -> None:
    """Kill mid-run; a plain restart refuses and says how; --recover finishes exactly once."""
    batch_dir = tmp_path / "batch_files"
    await seed(db)
    await kill_when(worker_args(mongo_uri, db_name, batch_dir), condition, db, batch_dir)

    code, log = await run_worker(worker_args(mongo_uri, db_name, batch_dir))
    assert code == 3 and "--recover" in log

    code, log = await run_worker(worker_args(mongo_uri, db_name, batch_dir, "--recover"))
    assert code == 0, log
    await assert_exactly_once(db, batch_dir)


@pytest.mark.soak
async def test_killed_again_during_recovery(
    db: Any, db_name: str, mongo_uri: str, tmp_path: Path
) -> None:
    """A recovery run that is itself killed is recovered by the next one."""
    batch_dir = tmp_path / "batch_files"
    await seed(db)
    await kill_when(worker_args(mongo_uri, db_name, batch_dir), some_results_stored, db, batch_dir)
    await kill_when(
        worker_args(mongo_uri, db_name, batch_dir, "--recover"), half_marked, db, batch_dir
    )

    code, log = await run_worker(worker_args(mongo_uri, db_name, batch_dir, "--recover"))

    assert code == 0, log
    await assert_exactly_once(db, batch_dir)


async def test_corrupt_checkpoint_is_reported_and_survived(
    db: Any, db_name: str, mongo_uri: str, tmp_path: Path
) -> None:
    """A truncated checkpoint is reported; the backup is used and the recovery completes."""
    batch_dir = tmp_path / "batch_files"
    await seed(db)
    await kill_when(worker_args(mongo_uri, db_name, batch_dir), half_marked, db, batch_dir)
    checkpoint = batch_dir / "checkpoint.json"
    checkpoint.write_bytes(checkpoint.read_bytes()[:40])

    code, log = await run_worker(worker_args(mongo_uri, db_name, batch_dir, "--recover"))

    assert code == 0, log
    events = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    unusable = [e for e in events if e["event"] == "checkpoint unusable"]
    assert unusable and unusable[0]["using"] == "the backup checkpoint"
    await assert_exactly_once(db, batch_dir)


async def test_both_checkpoints_corrupt_falls_back_to_database_state(
    db: Any, db_name: str, mongo_uri: str, tmp_path: Path
) -> None:
    """With checkpoint and backup destroyed, batch files and the database still finish the job."""
    batch_dir = tmp_path / "batch_files"
    await seed(db)
    await kill_when(worker_args(mongo_uri, db_name, batch_dir), some_results_stored, db, batch_dir)
    for name in ("checkpoint.json", "checkpoint.json.bak"):
        (batch_dir / name).write_text("{not json")

    code, log = await run_worker(worker_args(mongo_uri, db_name, batch_dir, "--recover"))

    assert code == 0, log
    assert "the database state" in log
    await assert_exactly_once(db, batch_dir)


@pytest.mark.slow
async def test_orphan_claims_of_a_forgotten_dead_run_are_recovered(
    db: Any, db_name: str, mongo_uri: str, tmp_path: Path
) -> None:
    """Claims whose run no checkpoint or batch file remembers are still found and finished.

    A run killed between claiming a page and saving its batch file leaves claims and no file;
    if the next run is killed too, before it releases them, no checkpoint names that run any
    more. The kill windows are milliseconds wide (a 420-kill soak hit them), so the state such
    a run leaves is made here exactly: a page claimed by this worker under a job nobody knows.
    """
    batch_dir = tmp_path / "batch_files"
    await seed(db)
    await kill_when(worker_args(mongo_uri, db_name, batch_dir), some_results_stored, db, batch_dir)
    worker = decode_identity((batch_dir / "worker_id").read_bytes())
    page = await db.conversation_set.find({"processing.status": None}, {"_id": 1}).to_list(30)
    claim = {
        "status": "claimed",
        "job": "20260101T000000Z-forgotten",
        "worker": worker,
        "claim": "20260101T000000Z-forgotten:9",
        "claimed_at": utcnow(),
    }
    await db.conversation_set.update_many(
        {"_id": {"$in": [doc["_id"] for doc in page]}}, {"$set": {"processing": claim}}
    )

    code, log = await run_worker(worker_args(mongo_uri, db_name, batch_dir, "--recover"))

    assert code == 0, log
    await assert_exactly_once(db, batch_dir)


@pytest.mark.soak
async def test_killed_many_times_in_a_row(
    db: Any, db_name: str, mongo_uri: str, tmp_path: Path
) -> None:
    """Five runs in a row, each killed soon after it makes progress; the sixth finishes it all."""
    batch_dir = tmp_path / "batch_files"
    await seed(db)
    for _ in range(5):
        stored = await db.sentimental_analysis.count_documents({})

        async def progressed(db: Any, batch_dir: Path, floor: int = stored) -> bool:
            """The current run stored at least 20 more results."""
            return bool(await db.sentimental_analysis.count_documents({}) >= floor + 20)

        await kill_when(
            worker_args(mongo_uri, db_name, batch_dir, "--recover"), progressed, db, batch_dir
        )

    code, log = await run_worker(worker_args(mongo_uri, db_name, batch_dir, "--recover"))

    assert code == 0, log
    await assert_exactly_once(db, batch_dir)
