"""Benchmark: continuous mode's wake-up latency and the MongoDB cost of an idle worker.

For change streams on and off: insert one document at a time into an idle worker and time
until its result is stored; then count the commands (pymongo CommandListener) an idle worker
sends in 20 s. Run on demand, not in CI:

    .venv/bin/python -m bench.service_wakeup
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from batch_processor.runtime.embedded import EmbeddedServer
from batch_processor.runtime.logs import configure_logging
from batch_processor.runtime.shutdown import Stopper
from batch_processor.service.runner import run_job
from batch_processor.settings import load_settings
from bench.offline_throughput import CommandCounter


async def measure(uri: str, batch_dir: Path, *, change_streams: bool) -> dict[str, Any]:
    """Wake-up latencies of 5 inserts, then 20 s of idle commands, at a 2 s interval."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    db = client[f"wakeup_{int(change_streams)}"]
    counter = CommandCounter()
    settings = load_settings(
        {
            "mongodb_uri": uri,
            "database": db.name,
            "batch_dir": batch_dir,
            "mode": "continuous",
            "interval": 2.0,
            "change_streams": change_streams,
            "http_port": 0,
            "flush_interval": 0.05,
            "progress": False,
        },
        environ={},
    )
    stopper = Stopper()
    service = asyncio.create_task(run_job(settings, stopper=stopper, listeners=[counter]))
    await asyncio.sleep(2)
    latencies = []
    for i in range(5):
        started = time.monotonic()
        await db.conversation_set.insert_one({"messages": f"my bill is wrong ({i})"})
        while True:
            if await db.sentimental_analysis.count_documents({}) >= i + 1:
                break
            await asyncio.sleep(0.01)
        latencies.append(round(time.monotonic() - started, 3))
        await asyncio.sleep(1.3)
    await asyncio.sleep(2)
    before = dict(counter.counts)
    await asyncio.sleep(20)
    idle = {k: v - before.get(k, 0) for k, v in counter.counts.items() if v - before.get(k, 0)}
    stopper.stop()
    await service
    await client.drop_database(db.name)
    await client.close()
    return {
        "change_streams": change_streams,
        "wakeup_seconds": latencies,
        "idle_commands_20s": idle,
    }


async def main() -> list[dict[str, Any]]:
    """Both variants against one embedded server."""
    configure_logging("WARNING", "json")
    with tempfile.TemporaryDirectory(prefix="bp-wakeup-") as tmp:
        server = EmbeddedServer(Path(tmp) / "server")
        uri = await server.start()
        try:
            return [
                await measure(uri, Path(tmp) / f"b{flag}", change_streams=flag)
                for flag in (True, False)
            ]
        finally:
            await server.stop()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main()), indent=2))
