"""MongoDB restarts, outages and a frozen server are waited out; nothing is lost or doubled."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import structlog.testing

from batch_processor.classifiers import OfflineClassifier
from batch_processor.errors import TransientError
from batch_processor.llm.dedupe import CachedClassifier
from batch_processor.runtime.embedded import free_port

from ..conftest import conversation, worker_cli
from ..test_telemetry import http_get
from .tools import WatchedLog, database, own_server, poll_until

DOWN = "MongoDB unavailable: waiting for it"

COUNT = 300


def worker(uri: str, db_name: str, batch_dir: Path, *extra: str) -> list[str]:
    """A worker with small pages, so a restart lands between many of them."""
    return worker_cli(uri, db_name, batch_dir, "--batch-size", "20", *extra)


def fast_env(**extra: str) -> dict[str, str]:
    """Short timeouts, so an outage is noticed in seconds, not minutes."""
    return {
        **os.environ,
        "BATCH_PROCESSOR_SERVER_SELECTION_TIMEOUT": "1",
        "BATCH_PROCESSOR_DB_SOCKET_TIMEOUT": "2",
        "BATCH_PROCESSOR_RETRY_BASE_DELAY": "0.2",
        "BATCH_PROCESSOR_RETRY_MAX_DELAY": "1",
        **extra,
    }


async def exactly_once(db: Any, count: int) -> None:
    """Every source done once with one result; nothing claimed or pending."""
    assert await db.conversation_set.count_documents({"processing.status": "done"}) == count
    assert await db.sentimental_analysis.count_documents({}) == count
    assert await db.conversation_set.count_documents({"processing.status": {"$ne": "done"}}) == 0


def events(log: str) -> list[str]:
    """The event names of a JSON log."""
    names = []
    for line in log.splitlines():
        try:
            names.append(json.loads(line)["event"])
        except (ValueError, KeyError):
            continue
    return names


async def test_batch_run_waits_out_a_server_restart(tmp_path: Path) -> None:
    """A restart mid-run (cursors lost) ends exit 0 with every document once.

    The server comes back once the worker has noticed it gone (its warning), not after a fixed
    time: the outage is as long as it needs to be on a slow machine, and no longer.
    """
    name = f"bp_fault_{secrets.token_hex(3)}"
    async with own_server(tmp_path / "server") as server, database(server.uri, name) as db:
        await db.conversation_set.insert_many([conversation(f"refund {i}") for i in range(COUNT)])
        process = await asyncio.create_subprocess_exec(
            *worker(server.uri, name, tmp_path / "batch"),
            env=fast_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        watched = WatchedLog(process)
        await poll_until(lambda: _stored_at_least(db, 60))
        await server.stop()
        await watched.seen(DOWN)
        await server.start()
        await asyncio.wait_for(process.wait(), 120)
        log = await watched.text()

        assert process.returncode == 0, log[-3000:]
        await exactly_once(db, COUNT)
        names = events(log)
        assert names.count("MongoDB unavailable: waiting for it") >= 1
        assert names.count("MongoDB available again") >= 1
        # One warning per state change, not one per attempt or document.
        assert names.count("MongoDB unavailable: waiting for it") <= 3


async def test_continuous_service_outlives_an_outage_longer_than_its_retries(
    tmp_path: Path,
) -> None:
    """A continuous worker stays up through a 5 s outage and then classifies new documents."""
    name = f"bp_fault_{secrets.token_hex(3)}"
    async with own_server(tmp_path / "server") as server, database(server.uri, name) as db:
        await db.conversation_set.insert_many([conversation(f"refund {i}") for i in range(40)])
        port = free_port()
        process = await asyncio.create_subprocess_exec(
            *worker(
                server.uri, name, tmp_path / "batch", "--mode", "continuous", "--interval", "1"
            ),
            env=fast_env(BATCH_PROCESSOR_RETRIES="2", BATCH_PROCESSOR_HTTP_PORT=str(port)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            await poll_until(lambda: _stored_at_least(db, 40))
            assert (await http_get(port, "/readyz"))[0] == 200
            await server.stop()
            await asyncio.sleep(3.5)  # longer than 2 attempts of 1 s server selection
            assert process.returncode is None, "the service exited during the outage"
            status, body = await http_get(port, "/readyz")
            assert status == 503 and "MongoDB" in body
            await server.start()
            await db.conversation_set.insert_many(
                [conversation(f"refund late {i}") for i in range(20)]
            )
            await poll_until(lambda: _stored_at_least(db, 60))
            assert process.returncode is None
            assert (await http_get(port, "/readyz"))[0] == 200
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, stderr.decode()[-3000:]
        await exactly_once(db, 60)


async def test_sigterm_during_an_outage_stops_the_service_at_once(tmp_path: Path) -> None:
    """A service waiting out an outage stops on SIGTERM with exit 0, not when MongoDB returns."""
    name = f"bp_fault_{secrets.token_hex(3)}"
    async with own_server(tmp_path / "server") as server, database(server.uri, name) as db:
        await db.conversation_set.insert_many([conversation(f"refund {i}") for i in range(200)])
        process = await asyncio.create_subprocess_exec(
            *worker(server.uri, name, tmp_path / "batch", "--mode", "continuous"),
            env=fast_env(BATCH_PROCESSOR_HTTP="false"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        watched = WatchedLog(process)
        await poll_until(lambda: _stored_at_least(db, 40))
        await server.stop()
        await watched.seen(DOWN)  # the worker is now waiting for MongoDB
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 20)
        assert process.returncode == 0, (await watched.text())[-3000:]
        await server.start()
        restart = await asyncio.create_subprocess_exec(
            *worker(server.uri, name, tmp_path / "batch"),
            env=fast_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        _, stderr = await asyncio.wait_for(restart.communicate(), 90)
        assert restart.returncode == 0, stderr.decode()[-3000:]  # no --recover needed
        await exactly_once(db, 200)


async def _stopped_in_an_outage(
    tmp_path: Path, extra: tuple[str, ...], signals: tuple[float, ...], *, recover: bool = False
) -> tuple[float, int, str]:
    """A worker on 600 documents; MongoDB stops; SIGTERMs after ``signals`` seconds each.

    Returns the seconds from the last signal to the exit, the exit code and stderr's tail; with
    ``recover``, checks that a recovery run on a restarted server stores each document once.
    """
    name = f"bp_fault_{secrets.token_hex(3)}"
    async with own_server(tmp_path / "server") as server, database(server.uri, name) as db:
        await db.conversation_set.insert_many([conversation(f"refund {i}") for i in range(600)])
        process = await asyncio.create_subprocess_exec(
            *worker(server.uri, name, tmp_path / "batch", *extra),
            env={**os.environ, "BATCH_PROCESSOR_HTTP": "false"},  # default timeouts, as deployed
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        watched = WatchedLog(process)
        await poll_until(lambda: _stored_at_least(db, 40))
        await server.stop()
        # Fixed delays: they place the signal inside the driver's server selection (10 s by
        # default), which logs nothing to wait for.
        for delay in signals:
            await asyncio.sleep(delay)
            process.send_signal(signal.SIGTERM)
        started = asyncio.get_running_loop().time()
        await asyncio.wait_for(process.wait(), 60)
        took = asyncio.get_running_loop().time() - started
        stderr = await watched.text()
        await server.start()  # the test's own client closes cleanly, and the recovery can run
        if not recover:
            return took, process.returncode or 0, stderr[-3000:]
        restart = await asyncio.create_subprocess_exec(
            *worker(server.uri, name, tmp_path / "batch", "--recover"),
            env=fast_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        _, restart_err = await asyncio.wait_for(restart.communicate(), 120)
        assert restart.returncode == 0, restart_err.decode()[-3000:]
        await exactly_once(db, 600)
    return took, process.returncode or 0, stderr[-3000:]


# Fixed waits (3 s into the outage, a stop allowed 15 s) and then a recovery of 600 documents:
# about 20 s alone, past the suite's 30 s on a loaded CI machine.
@pytest.mark.timeout(90)
@pytest.mark.parametrize("mode", ["batch", "continuous"])
async def test_a_stop_during_an_outage_ends_within_the_grace(mode: str, tmp_path: Path) -> None:
    """SIGTERM 3 s into an outage (default timeouts): exit 0 within the grace + 5 s, 0 lost.

    Three seconds in, the worker is inside a server selection (10 s by default), the call a
    stop must not wait for; a recovery run then stores every document once.
    """
    extra = ("--mode", mode, "--shutdown-grace", "10", "--flush-size", "20")
    took, code, stderr = await _stopped_in_an_outage(
        tmp_path, extra, signals=(3.0,), recover=mode == "batch"
    )
    assert took <= 10 + 5, f"{took:.1f} s to stop: {stderr}"
    assert code == 0, stderr


async def test_a_second_signal_ends_the_process_within_a_second(tmp_path: Path) -> None:
    """Two SIGTERMs while MongoDB is gone: the process is gone a second after the second."""
    extra = ("--mode", "continuous")
    took, _, stderr = await _stopped_in_an_outage(tmp_path, extra, signals=(1.0, 0.5))
    assert took <= 1.5, f"{took:.1f} s after the second signal: {stderr}"


async def test_frozen_server_is_waited_out(tmp_path: Path) -> None:
    """A server that stops answering (SIGSTOP) without closing sockets does not hang the run."""
    name = f"bp_fault_{secrets.token_hex(3)}"
    async with own_server(tmp_path / "server") as server, database(server.uri, name) as db:
        await db.conversation_set.insert_many([conversation(f"refund {i}") for i in range(150)])
        process = await asyncio.create_subprocess_exec(
            *worker(server.uri, name, tmp_path / "batch"),
            env=fast_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        watched = WatchedLog(process)
        await poll_until(lambda: _stored_at_least(db, 40))
        server.freeze()
        await watched.seen(DOWN)  # a call outlived the 2 s socket timeout: the worker waits
        server.thaw()
        await asyncio.wait_for(process.wait(), 120)
        assert process.returncode == 0, (await watched.text())[-3000:]
        await exactly_once(db, 150)


@pytest.mark.parametrize("grace", ["1"])
async def test_batch_run_gives_up_after_the_outage_grace(tmp_path: Path, grace: str) -> None:
    """A batch run whose server never comes back stops after db_outage_grace, exit 1."""
    name = f"bp_fault_{secrets.token_hex(3)}"
    async with own_server(tmp_path / "server") as server, database(server.uri, name) as db:
        await db.conversation_set.insert_many([conversation(f"refund {i}") for i in range(200)])
        process = await asyncio.create_subprocess_exec(
            *worker(server.uri, name, tmp_path / "batch"),
            env=fast_env(BATCH_PROCESSOR_DB_OUTAGE_GRACE=grace),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        await poll_until(lambda: _stored_at_least(db, 40))
        await server.stop()
        _, stderr = await asyncio.wait_for(process.communicate(), 120)
        assert process.returncode == 1, stderr.decode()[-3000:]
        checkpoint = json.loads((tmp_path / "batch" / "checkpoint.json").read_text())
        assert checkpoint["checkpoint"]["status"] == "failed"
        assert "MongoDB" in checkpoint["checkpoint"]["error"]
        await server.start()


async def _stored_at_least(db: Any, count: int) -> bool:
    return bool(await db.sentimental_analysis.count_documents({}) >= count)


class FlakyCache:
    """A dedupe cache whose MongoDB is away until ``back`` is set."""

    def __init__(self) -> None:
        self.back = False

    async def lookup(self, key: str) -> dict[str, Any] | None:
        """Fail while away; find nothing once back."""
        if not self.back:
            raise TransientError("cache lookup: MongoDB unreachable: " + "x" * 1000)
        return None

    async def lookup_many(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        """Fail while away; find nothing once back."""
        return {key: entry for key in keys if (entry := await self.lookup(key)) is not None}

    async def save(self, entries: dict[str, dict[str, Any]]) -> None:
        """Accept anything."""


async def test_dedupe_cache_outage_is_logged_once_per_state_change() -> None:
    """Fifty lookups during an outage give one warning, and one more when it is back."""
    cache = FlakyCache()
    classifier = CachedClassifier(OfflineClassifier(), cache, scope="s")
    with structlog.testing.capture_logs() as logs:
        for i in range(50):
            await classifier.classify(f"refund please {i}", {})
        cache.back = True
        await classifier.classify("refund please, again", {})
    warnings = [entry["event"] for entry in logs if entry["log_level"] == "warning"]
    assert warnings == [
        "dedupe cache (classifying without it) unavailable: waiting for it",
        "dedupe cache (classifying without it) available again",
    ]
    await classifier.aclose()
