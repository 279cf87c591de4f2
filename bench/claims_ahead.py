"""How far claims run ahead of stored results: peak claimed, batch files, claim-to-store time.

Runs one worker process (offline classifier, the defaults) over N sample documents on a
SecantusDB server of its own, sampling every 50 ms the documents claimed and not yet done and
the batch files on disk; at the end it reads, per document, the time from its claim to its
stored result, and the worker's peak RSS from its summary. Run on demand, not in CI:

    .venv/bin/python bench/claims_ahead.py --count 3000
    .venv/bin/python bench/claims_ahead.py --count 20000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from batch_processor.testing.samples import sample_conversations
from tests.faults.tools import database, own_server


async def measure(count: int, work: Path) -> dict[str, Any]:
    """One run; its figures."""
    async with own_server(work / "server") as server, database(server.uri, "ahead") as db:
        for start in range(0, count, 5000):
            await db.conversation_set.insert_many(
                sample_conversations(min(5000, count - start), seed=start)
            )
        batches = work / "batch" / "batches"
        command = [
            sys.executable, "-m", "batch_processor", "--mongodb-uri", server.uri,
            "--database", "ahead", "--batch-dir", str(work / "batch"),
            "--log-format", "json", "--no-progress",
        ]  # fmt: skip
        started = time.monotonic()
        worker = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        stderr_task = asyncio.ensure_future(worker.communicate())
        peak_claimed = peak_files = 0
        while not stderr_task.done():
            claimed = await db.conversation_set.count_documents({"processing.status": "claimed"})
            files = len(list(batches.glob("*.jsonl"))) if batches.exists() else 0
            peak_claimed, peak_files = max(peak_claimed, claimed), max(peak_files, files)
            await asyncio.sleep(0.05)
        _, stderr = await stderr_task
        seconds = time.monotonic() - started
        summary = next(
            json.loads(line)
            for line in reversed(stderr.decode().splitlines())
            if '"run finished"' in line
        )
        delays = []
        async for result in db.sentimental_analysis.find({}, {"stored_at": 1}):
            source = await db.conversation_set.find_one({"_id": result["_id"]}, {"processing": 1})
            delays.append(
                (result["stored_at"] - source["processing"]["claimed_at"]).total_seconds()
            )
        delays.sort()
    return {
        "documents": count,
        "exit_code": worker.returncode,
        "seconds": round(seconds, 1),
        "peak_claimed_not_done": peak_claimed,
        "peak_batch_files": peak_files,
        "claim_to_store_p50_s": round(delays[len(delays) // 2], 2),
        "claim_to_store_max_s": round(delays[-1], 2),
        "peak_rss_mb": summary["peak_rss_mb"],
        "succeeded": summary["succeeded"],
    }


def main() -> None:
    """Parse, run, print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bp-ahead-") as directory:
        print(json.dumps(asyncio.run(measure(args.count, Path(directory)))))


if __name__ == "__main__":
    main()
