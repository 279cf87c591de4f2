"""Fault run: SIGKILL a worker at random moments, over and over, then check exactly-once.

Each trial seeds a fresh database, then repeatedly starts ``batch-processor --recover`` and
kills it with SIGKILL after a random delay, until one run finishes on its own. It then checks
that every good document is done with exactly one result, and every bad one failed with DATA.
Run on demand (not in CI):

    .venv/bin/python bench/kill_recover_soak.py --trials 10 --count 1500
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from batch_processor.service.embedded import EmbeddedServer
from batch_processor.testing.samples import sample_conversations


async def trial(
    uri: str, number: int, count: int, rng: random.Random, work: Path
) -> dict[str, Any]:
    """One database, killed until a run completes; returns the kills and the verdict."""
    database = f"soak_{number}"
    batch_dir = work / f"batch_{number}"
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    db = client[database]
    docs = sample_conversations(count, seed=number)
    await db.conversation_set.insert_many(docs)
    args = [
        sys.executable,
        "-m",
        "batch_processor",
        "--mongodb-uri",
        uri,
        "--database",
        database,
        "--batch-dir",
        str(batch_dir),
        "--batch-size",
        "50",
        "--concurrent",
        "8",
        "--checkpoint-interval",
        "25",
        "--log-format",
        "json",
        "--no-progress",
        "--recover",
    ]
    kills = 0
    while True:
        process = await asyncio.create_subprocess_exec(
            *args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            await asyncio.wait_for(process.wait(), rng.uniform(0.3, 2.5))
        except TimeoutError:
            process.send_signal(signal.SIGKILL)
            await process.wait()
            kills += 1
            continue
        if process.returncode != 0:
            raise RuntimeError(f"trial {number}: worker exited {process.returncode}")
        break
    sources = db.conversation_set
    done = await sources.count_documents({"processing.status": "done"})
    failed = await sources.count_documents(
        {"processing.status": "failed", "processing.category": "DATA"}
    )
    stuck = await sources.count_documents({"processing.status": {"$in": [None, "claimed"]}})
    results = await db.sentimental_analysis.count_documents({})
    done_ids = set(await sources.distinct("_id", {"processing.status": "done"}))
    result_ids = set(await db.sentimental_analysis.distinct("_id"))
    await client.drop_database(database)
    await client.close()
    ok = done + failed == count and stuck == 0 and results == done and done_ids == result_ids
    return {
        "trial": number,
        "kills": kills,
        "done": done,
        "failed_data": failed,
        "results": results,
        "stuck": stuck,
        "exactly_once": ok,
    }


async def main(trials: int, count: int, seed: int) -> dict[str, Any]:
    """Run the trials against one embedded server."""
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="bp-soak-") as tmp:
        server = EmbeddedServer(Path(tmp) / "server")
        uri = await server.start()
        try:
            outcomes = [await trial(uri, n, count, rng, Path(tmp)) for n in range(trials)]
        finally:
            await server.stop()
    return {
        "trials": trials,
        "documents_per_trial": count,
        "total_kills": sum(o["kills"] for o in outcomes),
        "all_exactly_once": all(o["exactly_once"] for o in outcomes),
        "outcomes": outcomes,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--count", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.trials, args.count, args.seed)), indent=2))
