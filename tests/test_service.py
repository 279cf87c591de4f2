"""Service behaviour: continuous mode (change streams and polling) and graceful shutdown."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from batch_processor.errors import ConfigurationError
from batch_processor.runner import run_job
from batch_processor.schedule import CronSchedule
from batch_processor.shutdown import Stopper
from batch_processor.simulator import Simulator, SimulatorConfig

from .conftest import conversation, worker_command


async def checkpoint_status(batch_dir: Path) -> str | None:
    """The status in the checkpoint file, if there is one."""
    path = batch_dir / "checkpoint.json"
    if not path.exists():
        return None
    return str(json.loads(path.read_text())["checkpoint"]["status"])


async def wait_until(condition: Any, limit: float) -> float:
    """Poll ``condition`` until true; return the seconds it took, fail past ``limit``."""
    start = time.monotonic()
    async with asyncio.timeout(limit):
        while True:
            if await condition():
                return time.monotonic() - start
            await asyncio.sleep(0.05)


@pytest.mark.parametrize(
    ("change_streams", "interval", "bound"), [(True, 60.0, 5.0), (False, 1.0, 3.0)]
)
async def test_continuous_mode_takes_documents_inserted_while_idle(
    db: Any, make_settings: Any, tmp_path: Path, change_streams: bool, interval: float, bound: float
) -> None:
    """Idle after the backlog, a new document wakes it: a change stream at once, else the poll."""
    await db.conversation_set.insert_many([conversation(f"backlog {i}") for i in range(5)])
    settings = make_settings(mode="continuous", interval=interval, change_streams=change_streams)
    stopper = Stopper()
    service = asyncio.create_task(run_job(settings, stopper=stopper))
    batch_dir = tmp_path / "batch_files"
    try:

        async def backlog_done() -> bool:
            done = await db.conversation_set.count_documents({"processing.status": "done"})
            return done == 5 and await checkpoint_status(batch_dir) == "finished"

        await wait_until(backlog_done, 30)
        await asyncio.sleep(0.5)  # idle now: waiting on the stream or the poll
        await db.conversation_set.insert_one(conversation("a new complaint about my bill"))

        async def new_one_done() -> bool:
            return await db.sentimental_analysis.count_documents({}) == 6

        # With change streams the 60 s poll cannot be what wakes it within the bound.
        await wait_until(new_one_done, bound)
    finally:
        stopper.stop()
        stats = await asyncio.wait_for(service, 30)
    assert stats.succeeded == 1  # the last job: the new document
    assert await checkpoint_status(batch_dir) == "finished"


@pytest.fixture
async def slow_provider() -> AsyncIterator[Simulator]:
    """A provider that takes half a second per request."""
    async with Simulator(SimulatorConfig(latency=0.5, jitter=0.0)) as sim:
        yield sim


async def start_worker(
    mongo_uri: str, db_name: str, batch_dir: Path, simulator: Simulator, *extra: str
) -> asyncio.subprocess.Process:
    """A worker classifying through the slow provider, 4 requests at a time."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("BATCH_")}
    base["BATCH_HTTP_PORT"] = "0"
    args = [
        "--mongodb-uri", mongo_uri, "--database", db_name, "--batch-dir", str(batch_dir),
        "--classifier", "llm", "--llm-base-url", simulator.base_url, "--concurrent", "4",
        "--batch-size", "20", "--log-format", "json", "--no-progress", *extra,
    ]  # fmt: skip
    return await asyncio.create_subprocess_exec(
        *worker_command(*args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=base,
    )


async def test_sigterm_finishes_in_flight_documents_and_exits_0(
    db: Any, db_name: str, mongo_uri: str, tmp_path: Path, slow_provider: Simulator
) -> None:
    """SIGTERM mid-run: in-flight documents are stored, the rest stay pending, exit 0."""
    await db.conversation_set.insert_many([conversation(f"question {i}") for i in range(100)])
    batch_dir = tmp_path / "batch_files"
    worker = await start_worker(mongo_uri, db_name, batch_dir, slow_provider)

    async def some_done() -> bool:
        return await db.sentimental_analysis.count_documents({}) >= 8

    await wait_until(some_done, 60)
    worker.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(worker.communicate(), 30)

    assert worker.returncode == 0, err.decode()
    sources = db.conversation_set
    done = await sources.count_documents({"processing.status": "done"})
    assert 8 <= done < 100
    assert await sources.count_documents({"processing.status": None}) == 100 - done
    assert await db.sentimental_analysis.count_documents({}) == done
    assert await checkpoint_status(batch_dir) == "finished"
    assert slow_provider.stats["ok"] == done  # every answered request was stored

    slow_provider.config.latency = 0.01
    again = await start_worker(mongo_uri, db_name, batch_dir, slow_provider)  # no --recover
    _, err = await asyncio.wait_for(again.communicate(), 60)
    assert again.returncode == 0, err.decode()
    assert await sources.count_documents({"processing.status": "done"}) == 100


async def test_second_signal_gives_in_flight_documents_back_at_once(
    db: Any, db_name: str, mongo_uri: str, tmp_path: Path, slow_provider: Simulator
) -> None:
    """With requests hanging, a second SIGTERM ends the run at once, consistent and clean."""
    await db.conversation_set.insert_many([conversation(f"question {i}") for i in range(20)])
    slow_provider.config.hang_rate = 1.0
    batch_dir = tmp_path / "batch_files"
    worker = await start_worker(mongo_uri, db_name, batch_dir, slow_provider)

    async def requests_hanging() -> bool:
        return slow_provider.stats["hang"] >= 4

    await wait_until(requests_hanging, 60)
    worker.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.5)
    assert worker.returncode is None  # still waiting for the hanging requests
    worker.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(worker.communicate(), 20)

    assert worker.returncode == 0, err.decode()
    assert "giving back documents still in flight" in err.decode()
    sources = db.conversation_set
    assert await sources.count_documents({"processing.status": None}) == 20
    assert await checkpoint_status(batch_dir) == "finished"
    assert list((batch_dir / "batches").glob("*.jsonl")) == []


def test_cron_schedule_decisions() -> None:
    """Next firing in the schedule's zone, missed firings counted, bad settings named."""
    schedule = CronSchedule.parse("*/15 * * * *", "Europe/Berlin")
    moment = datetime(2026, 11, 22, 21, 7, tzinfo=UTC)  # 22:07 in Berlin
    assert schedule.next_after(moment) == datetime(2026, 11, 22, 21, 15, tzinfo=UTC)
    assert schedule.firings_between(moment, moment + timedelta(hours=1)) == 4
    with pytest.raises(ConfigurationError, match="cron"):
        CronSchedule.parse("every monday", "UTC")
    with pytest.raises(ConfigurationError, match="timezone"):
        CronSchedule.parse("* * * * *", "Mars/Olympus")


async def test_scheduled_mode_fires_and_never_overlaps_a_long_run(
    db: Any, db_name: str, mongo_uri: str, tmp_path: Path, slow_provider: Simulator
) -> None:
    """Every 2 s a run fires; a run of ~5 s makes the firings during it skipped and logged."""
    await db.conversation_set.insert_many([conversation(f"question {i}") for i in range(10)])
    batch_dir = tmp_path / "batch_files"
    worker = await start_worker(
        mongo_uri, db_name, batch_dir, slow_provider,
        "--mode", "scheduled", "--cron", "* * * * * */2", "--concurrent", "1",
    )  # fmt: skip

    async def all_done() -> bool:
        return await db.conversation_set.count_documents({"processing.status": "done"}) == 10

    await wait_until(all_done, 60)
    await db.conversation_set.insert_one(conversation("one more"))

    async def next_firing_took_it() -> bool:
        return await db.conversation_set.count_documents({"processing.status": "done"}) == 11

    await wait_until(next_firing_took_it, 10)
    worker.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(worker.communicate(), 30)

    assert worker.returncode == 0, err.decode()
    events = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    names = [event["event"] for event in events]
    assert names.index("next scheduled run") < names.index("job started")  # no run at start
    skipped = [e for e in events if e["event"].startswith("firings skipped")]
    assert skipped and skipped[0]["skipped"] >= 1
    # Runs never overlap: every job starts after the previous one finished.
    order = [name for name in names if name in {"job started", "run finished"}]
    assert order == ["job started", "run finished"] * (len(order) // 2)


async def test_run_now_runs_once_at_start(db: Any, make_settings: Any) -> None:
    """With --run-now a far-off schedule still runs one job at start."""
    await db.conversation_set.insert_many([conversation(f"question {i}") for i in range(3)])
    settings = make_settings(mode="scheduled", cron="0 0 1 1 *", run_now=True)
    stopper = Stopper()
    service = asyncio.create_task(run_job(settings, stopper=stopper))

    async def done() -> bool:
        return await db.conversation_set.count_documents({"processing.status": "done"}) == 3

    try:
        await wait_until(done, 30)
    finally:
        stopper.stop()
        stats = await asyncio.wait_for(service, 30)
    assert stats.succeeded == 3
