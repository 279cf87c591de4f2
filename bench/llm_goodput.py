"""Benchmark: the LLM classifier against the simulator, 3,000 documents end to end with MongoDB.

Scenarios (issue 3), each on a fresh database of the embedded server (or --mongodb-uri):

    a  RPM 6,000, latency 200 +- 50 ms, max concurrency 64          target goodput >= 97 %
    b  the same at RPM 1,200 with 5 % injected 500s                 target >= 95 %, 0 lost,
                                                                    <= 1.1 requests per result
    c  RPM 6,000 with 20 % duplicate texts                          LLM calls saved by dedupe

Goodput is stored results per second of the job's wall time (from run_job's start to its end,
MongoDB writes included) as a percentage of the simulator's capacity
min(RPM / 60, max_concurrency / mean latency). The openai SDK is imported before the clock
starts: a daemon pays that second once per process, not per job. The simulator runs as its own
process so that it does not share the daemon's event loop. Run on demand, not in CI:

    .venv/bin/python bench/llm_goodput.py                 # all scenarios
    .venv/bin/python bench/llm_goodput.py --scenario b --no-tell-rpm
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from batch_processor.service.embedded import EmbeddedServer, free_port
from batch_processor.service.logs import configure_logging
from batch_processor.service.runner import open_store, run_job
from batch_processor.settings import load_settings

LATENCY, JITTER, MAX_CONCURRENCY = 0.2, 0.05, 64


@dataclass(frozen=True)
class Scenario:
    """One benchmark run."""

    name: str
    rpm: int
    error_rate: float = 0.0
    duplicates: float = 0.0


SCENARIOS = {
    "a": Scenario("a: RPM 6000", rpm=6000),
    "b": Scenario("b: RPM 1200, 5% 500s", rpm=1200, error_rate=0.05),
    "c": Scenario("c: RPM 6000, 20% duplicates", rpm=6000, duplicates=0.2),
}


def texts(count: int, duplicates: float) -> list[str]:
    """``count`` support texts of which a ``duplicates`` share repeat earlier ones."""
    unique = count - int(count * duplicates)
    base = [
        f"Hello, order {i} was charged twice and the parcel {i * 13 % 997} has not arrived. "
        f"Please refund the second charge, this is my third message about ticket {i}."
        for i in range(unique)
    ]
    repeats = [base[(i * 7) % unique].upper() for i in range(count - unique)]
    return base + repeats


def start_simulator(scenario: Scenario) -> tuple[subprocess.Popen[str], str]:
    """The simulator process and its base URL."""
    port = free_port()
    command = [
        sys.executable, "-m", "batch_processor.testing.simulator", "--port", str(port),
        "--latency", str(LATENCY), "--jitter", str(JITTER), "--rpm", str(scenario.rpm),
        "--max-concurrency", str(MAX_CONCURRENCY), "--error-rate", str(scenario.error_rate),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    if "listening on" not in line:
        process.kill()
        raise RuntimeError(f"simulator did not start: {line!r}")
    return process, line.rsplit(" ", 1)[1].strip()


def simulator_stats(base_url: str) -> dict[str, int]:
    """The simulator's counters."""
    url = base_url.removesuffix("/v1") + "/stats"
    with urllib.request.urlopen(url, timeout=5) as response:
        return dict(json.load(response))


async def run(
    scenario: Scenario, uri: str, batch_dir: Path, *, count: int, tell_rpm: bool
) -> dict[str, Any]:
    """Seed, classify, and measure one scenario."""
    database = f"bench_llm_{scenario.name[0]}_{int(time.time())}"
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    docs = [
        {"messages": [{"role": "customer", "content": text}], "channel": "email"}
        for text in texts(count, scenario.duplicates)
    ]
    await client[database].conversation_set.insert_many(docs)
    simulator, base_url = start_simulator(scenario)
    try:
        settings = load_settings(
            {
                "mongodb_uri": uri,
                "database": database,
                "batch_dir": batch_dir / database,
                "classifier": "llm",
                "llm_base_url": base_url,
                "concurrent": MAX_CONCURRENCY,
                "rpm": scenario.rpm if tell_rpm else None,
                "batch_size": 200,
                "progress": False,
            },
            environ={},
        )
        async with open_store(settings) as store:
            started, wall_started = time.monotonic(), time.time()
            stats = await run_job(settings, store=store)
            seconds = time.monotonic() - started
            wall_ended = time.time()
        served = simulator_stats(base_url)
    finally:
        simulator.terminate()
        simulator.wait()
    sources = client[database].conversation_set
    done = await sources.count_documents({"processing.status": "done"})
    stored = await client[database].sentimental_analysis.count_documents({})
    from_llm = await client[database].sentimental_analysis.count_documents({"cached": False})
    await client.drop_database(database)
    await client.close()
    capacity = min(scenario.rpm / 60, MAX_CONCURRENCY / LATENCY)
    summary = stats.summary()
    return {
        "scenario": scenario.name,
        "documents": count,
        "stored": stored,
        "done": done,
        "lost": count - done - stats.failed_total,
        "queued": stats.queued_classify,
        "seconds": round(seconds, 2),
        "results_per_second": round(stored / seconds, 2),
        "capacity_per_second": capacity,
        "goodput_pct": round(100 * from_llm / seconds / capacity, 1),
        "requests": served.get("requests", 0),
        "requests_per_stored_result": round(served.get("requests", 0) / max(stored, 1), 3),
        "simulator": served,
        "seconds_to_first_request": round(served.get("first_arrival", 0) - wall_started, 2),
        "seconds_after_last_request": round(wall_ended - served.get("last_arrival", 0), 2),
        "arrival_rate_while_active": round(
            served.get("requests", 0)
            / max(served.get("last_arrival", 0) - served.get("first_arrival", 0), 1e-9),
            2,
        ),
        "llm_calls_saved": summary.get("llm_calls_saved", 0),
        "retries_by_category": summary["retries_by_category"],
        "governor": summary.get("governor"),
        "tell_rpm": tell_rpm,
        "peak_rss_mb": summary["peak_rss_mb"],
    }


async def main(names: list[str], count: int, uri: str | None, tell_rpm: bool) -> list[Any]:
    """Run the chosen scenarios on one server."""
    configure_logging(os.environ.get("BENCH_LOG_LEVEL", "WARNING"), "json")
    # A daemon pays the SDK's import (about a second) once per process, not once per job.
    import openai.resources.chat.completions  # noqa: F401

    with tempfile.TemporaryDirectory(prefix="bp-llm-bench-") as tmp:
        server = EmbeddedServer(Path(tmp) / "server") if uri is None else None
        target = uri or await server.start()  # type: ignore[union-attr]
        try:
            return [
                await run(SCENARIOS[name], target, Path(tmp), count=count, tell_rpm=tell_rpm)
                for name in names
            ]
        finally:
            if server is not None:
                await server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), action="append")
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--mongodb-uri")
    parser.add_argument(
        "--no-tell-rpm",
        dest="tell_rpm",
        action="store_false",
        help="do not give the governor --rpm; it must find the limit from 429s",
    )
    args = parser.parse_args()
    results = asyncio.run(
        main(args.scenario or sorted(SCENARIOS), args.count, args.mongodb_uri, args.tell_rpm)
    )
    print(json.dumps(results, indent=2))
