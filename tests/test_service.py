"""Service behaviour: continuous mode (change streams and polling) and graceful shutdown."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog.testing

from batch_processor.classifiers import OfflineClassifier
from batch_processor.classifiers.base import Classifier
from batch_processor.conversation import Conversation
from batch_processor.errors import ConfigurationError
from batch_processor.models import ClassifierOutput
from batch_processor.runtime.schedule import CronSchedule
from batch_processor.runtime.shutdown import Stopper
from batch_processor.service.runner import run_job
from batch_processor.testing.simulator import Simulator, SimulatorConfig

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
            return bool(await db.sentimental_analysis.count_documents({}) == 6)

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
    base["BATCH_PROCESSOR_HTTP_PORT"] = "0"
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
        return bool(await db.sentimental_analysis.count_documents({}) >= 8)

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


class FakeClock:
    """Wall time that moves only when slept on (or pushed by the test's classifier)."""

    def __init__(self, start: datetime, *, until: datetime, stopper: Stopper) -> None:
        self.moment = start
        self.until = until
        self.stopper = stopper

    def now(self) -> datetime:
        """The fake time."""
        return self.moment

    async def sleep(self, seconds: float) -> None:
        """Jump ahead at once; stop the service once the end of the test's day is reached."""
        self.moment += timedelta(seconds=seconds)
        if self.moment >= self.until:
            self.stopper.stop()
        await asyncio.sleep(0)


class SlowClassifier(Classifier):
    """The offline classifier, each call taking seven fake minutes (fake for the cron test)."""

    name = "slow"
    version = "1"

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.inner = OfflineClassifier()

    async def classify(
        self, conversation: Conversation | str, metadata: Mapping[str, Any]
    ) -> ClassifierOutput:
        """Advance the clock, then classify."""
        self.clock.moment += timedelta(minutes=7)
        return await self.inner.classify(conversation, metadata)

    def summary(self) -> dict[str, Any]:
        """Nothing to add."""
        return {}

    async def aclose(self) -> None:
        """Release the inner classifier."""
        await self.inner.aclose()


async def test_scheduled_mode_fires_and_never_overlaps_a_long_run(
    db: Any, make_settings: Any
) -> None:
    """Every 15 minutes a run fires; a 21-minute run skips (and logs) the firing during it."""
    await db.conversation_set.insert_many([conversation(f"question {i}") for i in range(3)])
    stopper = Stopper()
    start = datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC)
    clock = FakeClock(start, until=start + timedelta(hours=1), stopper=stopper)
    settings = make_settings(mode="scheduled", cron="*/15 * * * *", concurrent=1)

    with structlog.testing.capture_logs() as logs:
        stats = await asyncio.wait_for(
            run_job(settings, stopper=stopper, clock=clock, classifier=SlowClassifier(clock)), 60
        )

    names = [entry["event"] for entry in logs]
    assert await db.conversation_set.count_documents({"processing.status": "done"}) == 3
    assert names.index("next scheduled run") < names.index("job started")  # no run at start
    skipped = [entry for entry in logs if entry["event"].startswith("firings skipped")]
    assert [entry["skipped"] for entry in skipped] == [1]  # 00:30 fell inside 00:15-00:36
    fired = [e["at"] for e in logs if e["event"] == "next scheduled run"]
    assert fired[:3] == [
        "2026-01-01T00:15:00+00:00",
        "2026-01-01T00:45:00+00:00",
        "2026-01-01T01:00:00+00:00",
    ]
    # Runs never overlap: every job starts after the previous one finished.
    order = [name for name in names if name in {"job started", "run finished"}]
    assert order == ["job started", "run finished"] * (len(order) // 2) and len(order) >= 4
    assert stats.processed == 0  # the last run found nothing new


async def test_run_now_runs_once_at_start(db: Any, make_settings: Any) -> None:
    """With --run-now a far-off schedule still runs one job at start."""
    await db.conversation_set.insert_many([conversation(f"question {i}") for i in range(3)])
    settings = make_settings(mode="scheduled", cron="0 0 1 1 *", run_now=True)
    stopper = Stopper()
    service = asyncio.create_task(run_job(settings, stopper=stopper))

    async def done() -> bool:
        return bool(await db.conversation_set.count_documents({"processing.status": "done"}) == 3)

    try:
        await wait_until(done, 30)
    finally:
        stopper.stop()
        stats = await asyncio.wait_for(service, 30)
    assert stats.succeeded == 3
