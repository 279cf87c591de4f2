"""The LLM classifier alone, without MongoDB: how many requests one process keeps in flight.

    .venv/bin/python -m bench.llm_client --llm-base-url http://127.0.0.1:8000/v1 --count 5000

Classifies ``--count`` distinct texts with the daemon's LLM classifier (the same request,
governor, validation and repair) at ``--concurrent``, and prints requests per second and CPU
milliseconds per request (``time.process_time``, the whole process, event loop included). The
benchmark suite runs it against the simulator with no rate limit: the figure is what one core
can drive when neither the provider nor the database is the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from batch_processor.runtime.logs import configure_logging
from batch_processor.service.classifier_setup import build_classifier
from batch_processor.settings import load_settings


async def main(base_url: str, count: int, concurrent: int) -> dict[str, float]:
    """Classify ``count`` texts; return the rate and the CPU per request."""
    configure_logging("WARNING", "json")  # stdout carries the figures alone
    settings = load_settings(
        {"classifier": "llm", "llm_base_url": base_url, "concurrent": concurrent}, environ={}
    )
    classifier = build_classifier(settings)
    warm_up = getattr(classifier, "warm_up", None)
    if warm_up is not None:
        await warm_up()
    slots = asyncio.Semaphore(concurrent)

    async def one(i: int) -> None:
        async with slots:
            text = f"Order {i} arrived damaged and I want my money back, ticket {i * 7}."
            await classifier.classify(text, {"channel": "email"})

    await one(-1)  # the first request opens the connection pool
    cpu, wall = time.process_time(), time.monotonic()
    await asyncio.gather(*(one(i) for i in range(count)))
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    await classifier.aclose()
    return {
        "requests": count,
        "concurrent": concurrent,
        "requests_per_second": round(count / wall, 1),
        "cpu_ms_per_request": round(1000 * cpu / count, 3),
        "cpu_share_of_one_core": round(cpu / wall, 2),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llm-base-url", required=True)
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--concurrent", type=int, default=128)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.llm_base_url, args.count, args.concurrent))))
