"""Takeover after a SIGKILL: how long until a dead worker's documents are taken over.

Three continuous workers, one killed mid-run; does every source end with exactly one result?
Usage: .venv/bin/python -m bench.takeover --lease-seconds 60 --interval 5 [--docs 3000]

It starts one embedded SecantusDB and the simulator (200 ± 50 ms, 6,000 RPM, 64 in flight),
seeds ``--docs`` sample conversations, starts three workers (each told a third of the limits),
SIGKILLs the first once a quarter of the results are stored, and prints one JSON line:
seconds from the kill until none of its claims is left (``takeover_seconds``), the bound it
should meet (lease + one lease tick), seconds to the last result, LLM requests per stored
result, and results per source.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from batch_processor.runtime.embedded import EmbeddedServer
from bench.harness import SimulatorProcess, daemon_command


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    """One takeover run; the figures as a dict."""
    with tempfile.TemporaryDirectory(prefix="bp-takeover-") as tmp:
        server = EmbeddedServer(Path(tmp) / "server")
        await server.start()
        uri = f"mongodb://127.0.0.1:{server.port}/?directConnection=true"
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, tz_aware=True)
        db = client["takeover"]
        docs = [
            {"messages": [{"role": "customer", "content": f"Where is my refund? (#{i})"}]}
            for i in range(args.docs)
        ]
        await db.conversation_set.insert_many(docs)
        sim_options = {"latency": 0.2, "jitter": 0.05, "rpm": 6000, "max_concurrency": 64}
        try:
            with SimulatorProcess(sim_options) as sim:
                return await _run(args, uri, db, sim, Path(tmp))
        finally:
            await client.close()
            await server.stop()


async def _run(
    args: argparse.Namespace, uri: str, db: Any, sim: SimulatorProcess, tmp: Path
) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCH_")}
    env |= {
        "BATCH_PROCESSOR_LOG_FORMAT": "json",
        "BATCH_PROCESSOR_LOG_LEVEL": "WARNING",
        "BATCH_PROCESSOR_HTTP_PORT": "0",
    }
    started = time.monotonic()
    workers = []
    for index in range(3):
        command = daemon_command(
            uri=uri, database="takeover", batch_dir=tmp / f"w{index}", classifier="llm",
            base_url=sim.base_url, concurrent=21, rpm=2000,
            extra=["--mode", "continuous", "--interval", str(args.interval),
                   "--lease-seconds", str(args.lease_seconds)],
        )  # fmt: skip
        workers.append(
            await asyncio.create_subprocess_exec(
                *command, env=env, stdout=asyncio.subprocess.DEVNULL
            )
        )
    try:
        return await _kill_one(args, db, sim, tmp, workers, started)
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()


async def _kill_one(
    args: argparse.Namespace,
    db: Any,
    sim: SimulatorProcess,
    tmp: Path,
    workers: list[asyncio.subprocess.Process],
    started: float,
) -> dict[str, Any]:
    target, sources = db.sentimental_analysis, db.conversation_set
    identity = tmp / "w0" / "worker_id"

    async def victim_busy() -> bool:
        if not identity.exists():
            return False
        busy = {"processing.worker": json.loads(identity.read_text())["worker_id"]}
        stored = await target.estimated_document_count()
        return stored >= args.docs // 4 and bool(await sources.count_documents(busy))

    await _until(victim_busy)
    victim_id = json.loads(identity.read_text())["worker_id"]
    workers[0].send_signal(signal.SIGKILL)
    killed = time.monotonic()
    victims = {"processing.worker": victim_id, "processing.status": "claimed"}
    held = await sources.count_documents(victims)

    async def taken_over() -> bool:
        return not await sources.count_documents(victims)

    await _until(taken_over)
    takeover = time.monotonic() - killed

    async def all_done() -> bool:
        return bool(await sources.count_documents({"processing.status": "done"}) == args.docs)

    await _until(all_done)
    last_result = time.monotonic() - started
    for worker in workers[1:]:
        worker.send_signal(signal.SIGTERM)
    for worker in workers:
        await asyncio.wait_for(worker.wait(), 120)
    stored = await target.count_documents({})
    served = sim.stats()
    tick = min(args.lease_seconds / 3, args.interval)
    return {
        "documents": args.docs,
        "lease_seconds": args.lease_seconds,
        "interval": args.interval,
        "claims_held_by_the_killed_worker": held,
        "takeover_seconds": round(takeover, 1),
        "bound_seconds": round(args.lease_seconds + tick, 1),
        "seconds_to_last_result": round(last_result, 1),
        "stored": stored,
        "results_per_source": round(stored / args.docs, 3),
        "requests_per_stored_result": round(served.get("requests", 0) / max(stored, 1), 3),
        "taken_over_documents": await sources.count_documents({"processing.taken_from": victim_id}),
    }


async def _until(condition: Any) -> None:
    """Check ``condition`` every 50 ms until it holds."""
    while True:
        if await condition():
            return
        await asyncio.sleep(0.05)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=3000)
    parser.add_argument("--lease-seconds", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=5.0)
    print(json.dumps(asyncio.run(measure(parser.parse_args()))), file=sys.stdout)
