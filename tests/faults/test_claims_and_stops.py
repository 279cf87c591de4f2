"""Claims never run ahead of the work, and a stop gives back everything it holds."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from batch_processor.files.layout import Layout
from batch_processor.runtime.embedded import EmbeddedServer
from batch_processor.service.runner import run_job

from ..conftest import conversation, worker_cli, worker_command
from .tools import WatchedLog, poll_until


async def stored_at_least(db: Any, count: int) -> bool:
    """Whether ``count`` results are stored."""
    return bool(await db.sentimental_analysis.count_documents({}) >= count)


async def test_claimed_but_unstored_documents_stay_within_the_bound(
    db: Any, make_settings: Any
) -> None:
    """However fast classification is, at most two pages plus the concurrency are claimed."""
    await db.conversation_set.insert_many([conversation(f"refund {i}") for i in range(600)])
    settings = make_settings(batch_size=20, concurrent=4)
    limit = 2 * 20 + 4
    peak_claimed, peak_files = 0, 0
    run = asyncio.create_task(run_job(settings))
    while not run.done():
        claimed = await db.conversation_set.count_documents({"processing.status": "claimed"})
        files = len(list((settings.batch_dir / "batches").glob("*.jsonl")))
        peak_claimed, peak_files = max(peak_claimed, claimed), max(peak_files, files)
        await asyncio.sleep(0.01)
    stats = await run

    assert stats.succeeded == 600
    assert 0 < peak_claimed <= limit
    assert peak_files <= 3


@pytest.mark.parametrize("how", ["second-signal", "grace-0"])
async def test_immediate_stop_leaves_nothing_claimed_and_needs_no_recover(
    db: Any, db_name: str, mongo_uri: str, tmp_path: Path, how: str
) -> None:
    """SIGTERM then a second signal (or no grace): exit 0, nothing claimed, a clean restart."""
    await db.conversation_set.insert_many([conversation(f"refund {i}") for i in range(600)])
    batch_dir = tmp_path / "batch"
    grace = ["--shutdown-grace", "0"] if how == "grace-0" else []
    args = worker_cli(
        mongo_uri, db_name, batch_dir, "--batch-size", "50", "--concurrent", "16", *grace
    )
    process = await asyncio.create_subprocess_exec(
        *args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    await poll_until(lambda: stored_at_least(db, 200))
    process.send_signal(signal.SIGTERM)
    if how == "second-signal":
        await asyncio.sleep(0.05)
        process.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.wait_for(process.communicate(), 60)

    assert process.returncode == 0, stderr.decode()[-2000:]
    assert await db.conversation_set.count_documents({"processing.status": "claimed"}) == 0
    checkpoint = json.loads((batch_dir / "checkpoint.json").read_text())["checkpoint"]
    assert checkpoint["status"] == "finished" and checkpoint["in_flight"] == []
    done = await db.conversation_set.count_documents({"processing.status": "done"})
    assert done == await db.sentimental_analysis.count_documents({}) < 600

    restart = await asyncio.create_subprocess_exec(
        *args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(restart.communicate(), 90)
    assert restart.returncode == 0, stderr.decode()[-2000:]  # no --recover asked for
    assert await db.conversation_set.count_documents({"processing.status": "done"}) == 600
    assert await db.sentimental_analysis.count_documents({}) == 600


async def test_results_classified_before_a_kill_are_not_asked_again(
    db: Any, mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    """SIGKILL with 40 answers not yet stored: the recovery stores them without asking again."""
    import os

    from batch_processor.testing.simulator import Simulator, SimulatorConfig

    await db.conversation_set.insert_many([conversation(f"refund {i} please") for i in range(60)])
    async with Simulator(SimulatorConfig(latency=0.05, jitter=0.0)) as provider:
        flags = ("--classifier", "llm", "--llm-base-url", provider.base_url, "--no-dedupe",
                 "--concurrent", "4")  # fmt: skip
        env = {
            **os.environ,
            "BATCH_PROCESSOR_LLM_API_KEY": "sk-test",
            "BATCH_PROCESSOR_HTTP": "false",
        }
        # Results wait in the writer (a long flush interval) when the worker is killed.
        slow_writes = ("--flush-size", "1000", "--flush-interval", "60")
        first = await asyncio.create_subprocess_exec(
            *worker_cli(mongo_uri, db_name, tmp_path / "b", *flags, *slow_writes),
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

        async def answered() -> bool:
            return provider.stats["requests"] >= 40

        await poll_until(answered, within=60)
        first.send_signal(signal.SIGKILL)
        await first.wait()
        asked_before = provider.stats["requests"]
        again = await asyncio.create_subprocess_exec(
            *worker_cli(mongo_uri, db_name, tmp_path / "b", *flags, "--recover"),
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        _, stderr = await asyncio.wait_for(again.communicate(), 60)
        asked = provider.stats["requests"]

    assert again.returncode == 0, stderr.decode()[-2000:]
    assert await db.sentimental_analysis.count_documents({}) == 60
    # Each document is asked for once, plus at most the four in flight at the kill (without
    # the kept answers: 100 requests for 60 documents).
    assert asked_before >= 40 and asked <= 64


@pytest.mark.timeout(90)
async def test_ctrl_c_during_the_demo_stores_its_work_and_exits_130(tmp_path: Path) -> None:
    """Ctrl-C in the demo (SIGINT to its group): exit 130 in 15 s, no traceback, none claimed."""
    batch_dir = tmp_path / "demo"
    process = await asyncio.create_subprocess_exec(
        *worker_command("demo", "--count", "2500", "--batch-dir", str(batch_dir),
                        "--log-format", "json"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # a terminal's foreground group: the Ctrl-C goes to all of it
    )  # fmt: skip
    log = WatchedLog(process)
    await log.seen("batch finished")
    os.killpg(process.pid, signal.SIGINT)
    started = time.monotonic()
    await asyncio.wait_for(process.wait(), 30)
    took = time.monotonic() - started
    logged = await log.text()

    assert process.returncode == 130, logged[-2000:]
    assert took < 15
    assert "Traceback" not in logged
    server = EmbeddedServer(Layout(batch_dir).embedded)
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(await server.start())
    try:
        source = client["batch_processor"]["conversation_set"]
        assert await source.count_documents({"processing.status": "claimed"}) == 0
        done = await source.count_documents({"processing.status": "done"})
        stored = await client["batch_processor"]["sentimental_analysis"].count_documents({})
        assert 0 < done == stored < 2500  # stopped partway, everything it took stored
    finally:
        await client.close()
        await server.stop()
