"""Fault run: SIGKILL a worker at random moments, over and over, then check exactly-once.

Each trial seeds a fresh database, then repeatedly starts ``batch-processor --recover`` and
kills it with SIGKILL after a random delay, until one run finishes on its own. It then checks
that every good document is done with exactly one result, and every bad one failed with DATA.
With ``--llm`` the workers classify through the LLM simulator (200 ± 50 ms) and each trial
is killed 1 to 3 times (at random moments up to 8 s), then the report gives the LLM requests
per stored result: what the kills cost in requests asked twice. Run on demand (not in CI):

    .venv/bin/python bench/kill_recover_soak.py --trials 10 --count 1500
    .venv/bin/python bench/kill_recover_soak.py --trials 10 --count 600 --llm
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from batch_processor.runtime.embedded import EmbeddedServer
from batch_processor.testing.samples import sample_conversations
from batch_processor.testing.simulator import Simulator, SimulatorConfig


async def trial(
    uri: str, number: int, count: int, rng: random.Random, work: Path, llm: str | None = None
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
    env = dict(os.environ)
    if llm is not None:
        args += ["--classifier", "llm", "--llm-base-url", llm, "--no-dedupe"]
        env["BATCH_PROCESSOR_LLM_API_KEY"] = "sk-soak"
    most = rng.randint(1, 3) if llm is not None else None
    kills = 0
    while True:
        process = await asyncio.create_subprocess_exec(
            *args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            if most is not None and kills >= most:
                await process.wait()
            else:
                delay = rng.uniform(1.0, 8.0) if llm is not None else rng.uniform(0.3, 2.5)
                await asyncio.wait_for(process.wait(), delay)
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


async def main(trials: int, count: int, seed: int, llm: bool) -> dict[str, Any]:
    """Run the trials against one embedded server (and the LLM simulator with ``llm``)."""
    rng = random.Random(seed)
    outcomes = []
    async with contextlib.AsyncExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="bp-soak-"))
        server = EmbeddedServer(Path(tmp) / "server")
        uri = await server.start()
        stack.push_async_callback(server.stop)
        for n in range(trials):
            base_url = None
            if llm:
                config = SimulatorConfig(latency=0.2, jitter=0.05, rpm=60_000)
                sim = await stack.enter_async_context(Simulator(config))
                base_url = sim.base_url
            outcome = await trial(uri, n, count, rng, Path(tmp), base_url)
            if llm:
                requests = sim.stats["requests"]
                outcome["llm_requests"] = requests
                outcome["requests_per_result"] = round(requests / max(outcome["results"], 1), 3)
            outcomes.append(outcome)
    report: dict[str, Any] = {
        "trials": trials,
        "documents_per_trial": count,
        "total_kills": sum(o["kills"] for o in outcomes),
        "all_exactly_once": all(o["exactly_once"] for o in outcomes),
    }
    if llm:
        per = [o["requests_per_result"] for o in outcomes]
        report["requests_per_result_mean"] = round(sum(per) / len(per), 3)
        report["requests_per_result_max"] = max(per)
    return report | {"outcomes": outcomes}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--count", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--llm", action="store_true", help="classify through the simulator")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.trials, args.count, args.seed, args.llm)), indent=2))
