"""Benchmark: N sample documents, offline classifier, embedded server, end to end.

Reports docs/s, MongoDB commands per 1,000 documents (counted with a pymongo CommandListener,
the machine-independent figure), the command mix, and peak RSS. Run on demand, not in CI:

    .venv/bin/python bench/offline_throughput.py --count 5000

SecantusDB is 2-27x slower than mongod per command; do not read docs/s as a MongoDB figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.monitoring import (
    CommandFailedEvent,
    CommandListener,
    CommandStartedEvent,
    CommandSucceededEvent,
)

from batch_processor.runtime.embedded import EmbeddedServer
from batch_processor.runtime.logs import configure_logging
from batch_processor.service.runner import run_job
from batch_processor.settings import load_settings
from batch_processor.testing.samples import sample_conversations

IGNORED = {"hello", "ismaster", "isMaster", "ping", "endSessions", "buildInfo"}


class CommandCounter(CommandListener):
    """Counts the commands the daemon sends, by name (server monitoring excluded)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def started(self, event: CommandStartedEvent) -> None:
        """Count one command."""
        if event.command_name not in IGNORED:
            self.counts[event.command_name] += 1

    def succeeded(self, event: CommandSucceededEvent) -> None:
        """Nothing to do."""

    def failed(self, event: CommandFailedEvent) -> None:
        """Nothing to do."""


async def main(count: int, batch_size: int, concurrent: int) -> dict[str, Any]:
    """Seed ``count`` documents into a fresh embedded server and classify them all."""
    with tempfile.TemporaryDirectory(prefix="bp-bench-") as tmp:
        server = EmbeddedServer(Path(tmp) / "server")
        uri = await server.start()
        try:
            client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
            await client.bench.conversation_set.insert_many(sample_conversations(count, seed=11))
            await client.close()
            counter = CommandCounter()
            settings = load_settings(
                {
                    "mongodb_uri": uri,
                    "database": "bench",
                    "batch_dir": Path(tmp) / "batch_files",
                    "batch_size": batch_size,
                    "concurrent": concurrent,
                    "flush_size": batch_size,
                    "progress": False,
                    "log_level": "WARNING",
                },
                environ={},
            )
            stats = await run_job(settings, listeners=[counter])
        finally:
            await server.stop()
    summary = stats.summary()
    total = sum(counter.counts.values())
    return {
        "documents": count,
        "batch_size": batch_size,
        "concurrent": concurrent,
        "processed": summary["processed"],
        "failed_by_category": summary["failed_by_category"],
        "seconds": summary["seconds"],
        "docs_per_second": summary["docs_per_second"],
        "mongodb_commands": total,
        "commands_per_1000_docs": round(total * 1000 / max(count, 1), 1),
        "command_mix": dict(counter.counts.most_common()),
        "peak_rss_mb": summary["peak_rss_mb"],
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--concurrent", type=int, default=8)
    args = parser.parse_args()
    configure_logging("WARNING", "json")
    print(json.dumps(asyncio.run(main(args.count, args.batch_size, args.concurrent)), indent=2))
