"""Health, readiness and Prometheus metrics over HTTP, and the systemd notify protocol."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from batch_processor.errors import ConfigurationError
from batch_processor.runtime.embedded import free_port
from batch_processor.runtime.shutdown import Stopper
from batch_processor.service.runner import run_job

from .conftest import conversation, worker_command
from .test_service import wait_until


async def http_get(port: int, path: str) -> tuple[int, str]:
    """GET ``path`` from the local endpoint; return the status code and the body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    await writer.drain()
    response = (await reader.read()).decode()
    writer.close()
    await writer.wait_closed()  # else the socket may outlive the test's event loop
    head, _, body = response.partition("\r\n\r\n")
    return int(head.split(" ")[1]), body


def samples(text: str) -> dict[str, float]:
    """Metric samples by name (with labels), as prometheus_client's parser reads them."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            found[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return found


async def test_metrics_parse_and_match_the_database(db: Any, make_settings: Any) -> None:
    """/metrics parses with prometheus_client and its counters equal the database's counts."""
    docs = [conversation(f"my invoice {i} is wrong") for i in range(30)]
    await db.conversation_set.insert_many([*docs, {"messages": ""}, {"messages": 7}])
    port = free_port()
    settings = make_settings(mode="continuous", http_port=port, interval=0.5)
    stopper = Stopper()
    service = asyncio.create_task(run_job(settings, stopper=stopper))
    try:

        async def all_ended() -> bool:
            sources = db.conversation_set
            unfinished = {"processing.status": {"$in": [None, "claimed"]}}
            return int(await sources.count_documents(unfinished)) == 0

        await wait_until(all_ended, 30)

        async def job_ended() -> bool:  # the job's end is recorded after its last write
            _, text = await http_get(port, "/metrics")
            seen = samples(text)
            return bool(
                seen.get("batch_processor_documents_processed_total") == 32
                and seen.get("batch_processor_last_success_timestamp_seconds", 0) > 0
            )

        await wait_until(job_ended, 30)
        status, text = await http_get(port, "/metrics")
        health, _ = await http_get(port, "/healthz")
        ready, _ = await http_get(port, "/readyz")
        missing, _ = await http_get(port, "/nothing")
    finally:
        stopper.stop()
        await asyncio.wait_for(service, 30)

    assert (status, health, ready, missing) == (200, 200, 200, 404)
    metrics = samples(text)
    done = await db.conversation_set.count_documents({"processing.status": "done"})
    failed = await db.conversation_set.count_documents({"processing.status": "failed"})
    assert metrics["batch_processor_documents_succeeded_total"] == done == 30
    assert metrics["batch_processor_documents_processed_total"] == done + failed
    assert metrics["batch_processor_documents_failed_total{category=DATA}"] == failed == 2
    assert metrics["batch_processor_classifier_latency_seconds_count"] == 30
    assert metrics["batch_processor_retry_queue_size{queue=classify}"] == 0
    assert metrics["batch_processor_last_success_timestamp_seconds"] > 0


async def test_systemd_notify_protocol(
    db: Any, db_name: str, mongo_uri: str, tmp_path: Path
) -> None:
    """READY=1 when connected, WATCHDOG=1 while it progresses, STATUS= progress, STOPPING=1."""
    await db.conversation_set.insert_many([conversation(f"hello {i}") for i in range(5)])
    address = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(address)
    listener.setblocking(False)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCH_")}
    env |= {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "200000", "BATCH_PROCESSOR_HTTP_PORT": "0"}
    args = ["--mongodb-uri", mongo_uri, "--database", db_name, "--batch-dir", str(tmp_path / "b")]
    worker = await asyncio.create_subprocess_exec(
        *worker_command(*args, "--mode", "continuous", "--log-format", "json"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    loop = asyncio.get_running_loop()
    messages: list[str] = []
    try:
        async with asyncio.timeout(30):
            # The progress line is refreshed every 5 s: the second one counts the five.
            while sum("WATCHDOG=1" in m for m in messages) < 3 or not any(
                "STATUS=continuous: 5 processed (0 failed), 0 pending" in m for m in messages
            ):
                messages.append((await loop.sock_recv(listener, 4096)).decode())
        worker.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            while not any("STOPPING=1" in m for m in messages):
                messages.append((await loop.sock_recv(listener, 4096)).decode())
        # Its exit closes a change stream and the client on the session's shared server, which
        # the other xdist workers may keep busy: allow a minute.
        _, err = await asyncio.wait_for(worker.communicate(), 60)
    finally:
        listener.close()
        if worker.returncode is None:
            worker.kill()
    assert worker.returncode == 0, err.decode()
    assert messages[0].startswith("READY=1") and "STATUS=continuous mode" in messages[0]
    assert "STOPPING=1" in messages[-1]


async def test_port_in_use_is_a_configuration_error(make_settings: Any) -> None:
    """A metrics port another process holds stops the start with a message naming the setting."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = make_settings(mode="continuous", http_port=port)
        with pytest.raises(ConfigurationError, match="http_port"):
            await run_job(settings)
