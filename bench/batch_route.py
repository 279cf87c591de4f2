"""The two LLM routes on one backlog: cost per 1,000 documents, requests per result, wall time.

Usage: .venv/bin/python -m bench.batch_route [--docs 20000] [--window 60]

It starts one embedded SecantusDB and the simulator (200 ± 50 ms, 6,000 RPM, 64 in flight;
the Batch API completing ``--window`` seconds after a batch is created, the 24 h window
compressed; 0.5 % of batch lines failing), seeds ``--docs`` distinct sample conversations,
and classifies them twice with the daemon as a process (``batch-processor run``), once per
route, at gpt-4o-mini's list prices. It prints one JSON line per route and the ratio: wall time
from spawning the process to its exit (every result stored), results, the route's cost and
cost per 1,000 documents (from the stored results, as ``batch-processor report`` shows it),
requests (online) or request lines (batch) per stored result, and batches created.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from batch_processor.runtime.embedded import EmbeddedServer
from batch_processor.testing.samples import sample_conversations
from bench.harness import SimulatorProcess, daemon_command


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Both routes on the same backlog; the figures by route."""
    with tempfile.TemporaryDirectory(prefix="bp-routes-") as tmp:
        server = EmbeddedServer(Path(tmp) / "server")
        await server.start()
        uri = f"mongodb://127.0.0.1:{server.port}/?directConnection=true"
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, tz_aware=True)
        sim_options = {
            "latency": 0.2,
            "jitter": 0.05,
            "rpm": 6000,
            "max_concurrency": 64,
            "batch_delay": args.window,
            "batch_failed_line_rate": 0.005,
            "models": "gpt-4o-mini",
        }
        figures: dict[str, Any] = {"docs": args.docs, "window_seconds": args.window}
        try:
            for route in ("online", "batch"):
                db = client[f"routes_{route}"]
                docs = [
                    d | {"messages": [*d["messages"], {"role": "customer", "content": f"#{i}"}]}
                    for i, d in enumerate(sample_conversations(args.docs, seed=11))
                    if isinstance(d.get("messages"), list)
                ]
                await db.conversation_set.insert_many(docs)
                with SimulatorProcess(sim_options) as sim:
                    figures[route] = await _run(route, uri, db, sim, Path(tmp) / route)
        finally:
            await client.close()
            await server.stop()
    online, batch = figures["online"]["usd_per_1000"], figures["batch"]["usd_per_1000"]
    figures["batch_cost_share_of_online"] = round(batch / online, 4) if online else None
    return figures


async def _run(
    route: str, uri: str, db: Any, sim: SimulatorProcess, batch_dir: Path
) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCH_")}
    env |= {
        "BATCH_PROCESSOR_LOG_FORMAT": "json",
        "BATCH_PROCESSOR_LOG_LEVEL": "WARNING",
        "BATCH_PROCESSOR_LLM_API_KEY": "sk",
    }
    command = daemon_command(
        uri=uri, database=db.name, batch_dir=batch_dir, classifier="llm",
        base_url=sim.base_url, concurrent=64,
        extra=["--llm-route", route, "--llm-model", "gpt-4o-mini", "--no-dedupe",
               "--batch-route-poll-seconds", "2", "--batch-route-poll-max-seconds", "5"],
    )  # fmt: skip
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(*command, env=env)
    code = await process.wait()
    seconds = time.monotonic() - started
    results = db.sentimental_analysis
    by_route: Counter[str] = Counter()
    cost = 0.0
    async for row in results.find({}, {"route": 1, "cost_usd": 1}):
        by_route[str(row.get("route"))] += 1
        cost += float(row.get("cost_usd") or 0)
    stored = sum(by_route.values())
    stats = sim.stats()
    return {
        "exit_code": code,
        "seconds_to_exit": round(seconds, 1),
        "results": stored,
        "results_by_route": dict(by_route),
        "cost_usd": round(cost, 4),
        "usd_per_1000": round(1000 * cost / stored, 5) if stored else None,
        "online_requests_per_result": round(stats.get("requests", 0) / stored, 3),
        "batch_lines_per_result": round(stats.get("batch_lines", 0) / stored, 3),
        "batches_created": stats.get("batches_created", 0),
        "per_source": await _per_source(db),
    }


async def _per_source(db: Any) -> dict[str, int]:
    """Sources with exactly one result (all of them, when nothing was lost or doubled)."""
    done = await db.conversation_set.count_documents({"processing.status": "done"})
    return {"done": done, "results": await db.sentimental_analysis.count_documents({})}


def main() -> None:
    """Parse the arguments, measure, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--window", type=float, default=60.0, help="simulated batch window (s)")
    args = parser.parse_args()
    json.dump(asyncio.run(measure(args)), sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
