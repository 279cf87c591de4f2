"""The fault suite at full size, on demand: one line of figures per scenario.

Each scenario seeds a fresh database on a SecantusDB server of its own, runs real worker
processes (``python -m batch_processor``) through the fault, and checks the end state against
the database: documents lost (pending, or claimed by nobody alive), duplicated (more than one
result for a source, or a result without a done source), stuck (claimed at the end), requests
per stored result where an LLM is involved, and the workers' exit codes. Not run by CI:

    .venv/bin/python bench/faults.py                       # everything, full size
    .venv/bin/python bench/faults.py --only restart-batch --count 2000 --outage 10

Writes ``bench/results/faults.json`` as well.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from batch_processor.documents.text import extract_text
from batch_processor.errors import DataError
from batch_processor.files.retry_queues import RetryQueues
from batch_processor.models import SourceDocument
from batch_processor.testing.samples import sample_conversations
from batch_processor.testing.simulator import Simulator, SimulatorConfig
from tests.faults.tools import (
    INVALID_UTF8,
    CorruptingProxy,
    OwnServer,
    database,
    own_server,
    poll_until,
    small_tmpfs,
)

Scenario = Callable[["Context"], Awaitable[dict[str, Any]]]
FAST = {
    "BATCH_PROCESSOR_SERVER_SELECTION_TIMEOUT": "2",
    "BATCH_PROCESSOR_DB_SOCKET_TIMEOUT": "5",
    "BATCH_PROCESSOR_RETRY_BASE_DELAY": "0.2",
    "BATCH_PROCESSOR_RETRY_MAX_DELAY": "2",
}


class Context:
    """One scenario's server, database, work directory and options."""

    def __init__(self, server: OwnServer, db: Any, name: str, work: Path, args: Any) -> None:
        self.server, self.db, self.name, self.work, self.args = server, db, name, work, args
        self.codes: list[int] = []

    def command(self, uri: str | None = None, *extra: str, batch: str = "batch") -> list[str]:
        """A worker command line on this scenario's database."""
        return [
            sys.executable,
            "-m",
            "batch_processor",
            "--mongodb-uri",
            uri or self.server.uri,
            "--database",
            self.name,
            "--batch-dir",
            str(self.work / batch),
            "--batch-size",
            "100",
            "--concurrent",
            "16",
            "--log-format",
            "json",
            "--no-progress",
            *extra,
        ]

    async def start(self, command: list[str], **env: str) -> asyncio.subprocess.Process:
        """Start a worker with the fast-outage environment."""
        return await asyncio.create_subprocess_exec(
            *command,
            env={**os.environ, **FAST, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def finish(self, process: asyncio.subprocess.Process, limit: float = 1800) -> int:
        """Wait for a worker's end; record its exit code."""
        code = await asyncio.wait_for(process.wait(), limit)
        self.codes.append(code)
        return code

    async def seed(self, count: int, *, poison_every: int = 0) -> int:
        """Sample conversations (some with invalid UTF-8 through the proxy); how many are bad.

        The sample has a few bad documents of its own (empty or missing text): those count.
        """
        docs = sample_conversations(count, seed=7)
        for index, doc in enumerate(docs):
            if poison_every and index % poison_every == 0:
                doc["messages"] = [{"role": "customer", "content": INVALID_UTF8.decode()}]
        await self.db.conversation_set.insert_many(docs)
        return sum(1 for doc in docs if not _readable(doc))

    async def stored(self) -> int:
        """Results stored so far."""
        return int(await self.db.sentimental_analysis.count_documents({}))

    async def when_stored(self, count: int) -> None:
        """Wait until ``count`` results are stored."""

        async def enough() -> bool:
            return await self.stored() >= count

        await poll_until(enough, within=1800)

    async def verdict(self, *, expected_failed: int | None = None) -> dict[str, Any]:
        """Lost, duplicated and stuck documents, from the database."""
        sources = self.db.conversation_set
        total = await sources.count_documents({})
        done = await sources.count_documents({"processing.status": "done"})
        failed = await sources.count_documents({"processing.status": "failed"})
        claimed = await sources.count_documents({"processing.status": "claimed"})
        queued = 0
        for batch_dir in self.work.glob("*/queues"):
            queues = RetryQueues(batch_dir.parent)
            queued += len(queues.classify) + queues.store_documents()
        pending = await sources.count_documents({"processing.status": None})
        results = await self.db.sentimental_analysis.count_documents({})
        done_ids = set(await sources.distinct("_id", {"processing.status": "done"}))
        result_ids = set(await self.db.sentimental_analysis.distinct("_id"))
        figures = {
            "documents": total,
            "done": done,
            "failed": failed,
            "lost": pending + len(done_ids - result_ids),
            "duplicated": (results - len(result_ids)) + len(result_ids - done_ids),
            "queued": queued,  # claimed, waiting in a retry queue on disk for the next drain
            "stuck": claimed - queued,
            "exit_codes": self.codes,
        }
        if expected_failed is not None:
            figures["failed_as_expected"] = failed == expected_failed
        return figures


def _readable(doc: dict[str, Any]) -> bool:
    """Whether the product can read a text out of ``doc`` (a poisoned one it cannot)."""
    if INVALID_UTF8.decode() in json.dumps(doc, default=str):
        return False
    try:
        extract_text(SourceDocument(id="x", fields=doc), "messages", 20_000)
    except DataError:
        return False
    return True


async def poison(ctx: Context) -> dict[str, Any]:
    """1 % of the documents hold invalid UTF-8 (served through a corrupting proxy)."""
    bad = await ctx.seed(ctx.args.count, poison_every=100)
    async with CorruptingProxy(int(ctx.server.uri.split(":")[2].split("/")[0])) as proxy:
        await ctx.finish(await ctx.start(ctx.command(proxy.uri)))
    return await ctx.verdict(expected_failed=bad)


async def restart_batch(ctx: Context) -> dict[str, Any]:
    """The server goes away for ``--outage`` seconds mid-run (every cursor lost)."""
    bad = await ctx.seed(ctx.args.count)
    worker = await ctx.start(ctx.command())
    await ctx.when_stored(ctx.args.count // 4)
    await ctx.server.stop()
    await asyncio.sleep(ctx.args.outage)
    await ctx.server.start()
    await ctx.finish(worker)
    return await ctx.verdict(expected_failed=bad)


async def restart_continuous(ctx: Context) -> dict[str, Any]:
    """A continuous worker through an outage of ``--outage`` seconds, then more documents."""
    bad = await ctx.seed(ctx.args.count // 2)
    worker = await ctx.start(
        ctx.command(None, "--mode", "continuous", "--interval", "2"), BATCH_PROCESSOR_HTTP="false"
    )
    await ctx.when_stored(ctx.args.count // 4)
    await ctx.server.stop()
    await asyncio.sleep(ctx.args.outage)
    alive = worker.returncode is None
    await ctx.server.start()
    later = sample_conversations(ctx.args.count // 2, seed=8)
    bad += sum(1 for doc in later if not _readable(doc))
    await ctx.db.conversation_set.insert_many(later)
    await ctx.when_stored(ctx.args.count - bad)
    worker.send_signal(signal.SIGTERM)
    await ctx.finish(worker)
    return {**await ctx.verdict(expected_failed=bad), "alive_through_outage": alive}


async def freeze(ctx: Context) -> dict[str, Any]:
    """The server is frozen (SIGSTOP) for ``--outage`` seconds: sockets open, no answers."""
    bad = await ctx.seed(ctx.args.count)
    worker = await ctx.start(ctx.command())
    await ctx.when_stored(ctx.args.count // 4)
    ctx.server.freeze()
    await asyncio.sleep(ctx.args.outage)
    ctx.server.thaw()
    await ctx.finish(worker)
    return await ctx.verdict(expected_failed=bad)


async def kills(ctx: Context) -> dict[str, Any]:
    """``--kills`` SIGKILLs at random moments, each followed by a ``--recover`` start."""
    bad = await ctx.seed(ctx.args.count)
    rng = random.Random(1)
    done_kills = 0
    while True:
        worker = await ctx.start(ctx.command(None, "--recover"))
        if done_kills >= ctx.args.kills:
            await ctx.finish(worker)
            break
        try:
            await asyncio.wait_for(worker.wait(), rng.uniform(0.5, 3.0))
            ctx.codes.append(worker.returncode or 0)
            break  # it finished before the kill
        except TimeoutError:
            worker.send_signal(signal.SIGKILL)
            await worker.wait()
            done_kills += 1
    return {**await ctx.verdict(expected_failed=bad), "kills": done_kills}


async def disk_full(ctx: Context) -> dict[str, Any]:
    """The batch directory fills up mid-run; the same worker restarted with room finishes."""
    docs = sample_conversations(ctx.args.count, seed=7)
    for doc in docs:
        doc["padding"] = "x" * 2000
    bad = sum(1 for doc in docs if not _readable(doc))
    await ctx.db.conversation_set.insert_many(docs)
    small = ctx.work / "small"
    with small_tmpfs(small, "512k") as mounted:
        if not mounted:
            return {"skipped": "cannot mount a tmpfs here"}
        command = ctx.command(None, batch="small")
        command[command.index("--batch-size") + 1] = "200"
        padded = await ctx.start(command, BATCH_PROCESSOR_METADATA_FIELDS='["padding"]')
        await ctx.finish(padded, limit=600)
        checkpoint = json.loads((small / "checkpoint.json").read_text())["checkpoint"]
    await ctx.finish(await ctx.start(ctx.command(None, batch="roomy")))
    return {**await ctx.verdict(expected_failed=bad), "first_run": checkpoint["status"]}


async def sigterm_twice(ctx: Context) -> dict[str, Any]:
    """SIGTERM and a second signal while results wait for the writer; then a plain restart."""
    bad = await ctx.seed(ctx.args.count)
    worker = await ctx.start(ctx.command())
    await ctx.when_stored(ctx.args.count // 5)
    worker.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.05)
    worker.send_signal(signal.SIGTERM)
    await ctx.finish(worker)
    claimed_after_stop = await ctx.db.conversation_set.count_documents(
        {"processing.status": "claimed"}
    )
    await ctx.finish(await ctx.start(ctx.command()))
    return {**await ctx.verdict(expected_failed=bad), "claimed_after_stop": claimed_after_stop}


async def llm_replies(ctx: Context) -> dict[str, Any]:
    """30 % near-miss, 3 % malformed, 3 % out-of-enum replies from the simulator."""
    await ctx.seed(ctx.args.count)
    config = SimulatorConfig(
        latency=0.05,
        jitter=0.02,
        near_miss_rate=0.3,
        malformed_rate=0.03,
        out_of_enum_rate=0.03,
        max_concurrency=64,
        seed=5,
    )
    async with Simulator(config) as sim:
        command = ctx.command(
            None, "--classifier", "llm", "--llm-base-url", sim.base_url, "--no-dedupe"
        )
        await ctx.finish(await ctx.start(command))
        requests = sim.stats["requests"]
    figures = await ctx.verdict()
    figures["requests_per_stored_result"] = round(requests / max(1, await ctx.stored()), 3)
    return figures


SCENARIOS: dict[str, Scenario] = {
    "poison": poison,
    "restart-batch": restart_batch,
    "restart-continuous": restart_continuous,
    "freeze": freeze,
    "kills": kills,
    "disk-full": disk_full,
    "sigterm-twice": sigterm_twice,
    "llm-replies": llm_replies,
}


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Each chosen scenario on a server of its own; one printed line each."""
    rows = []
    for number, (title, scenario) in enumerate(SCENARIOS.items()):
        if args.only and title not in args.only:
            continue
        with tempfile.TemporaryDirectory(prefix=f"bp-fault-{title}-") as directory:
            work = Path(directory)
            name = f"faults_{number}"
            started = time.monotonic()
            async with own_server(work / "server") as server, database(server.uri, name) as db:
                figures = await scenario(Context(server, db, name, work, args))
            row = {"scenario": title, "seconds": round(time.monotonic() - started, 1), **figures}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    """Parse the options, run, write bench/results/faults.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000, help="documents per scenario")
    parser.add_argument("--outage", type=float, default=30.0, help="seconds a server is away")
    parser.add_argument("--kills", type=int, default=50, help="SIGKILLs in the kills scenario")
    parser.add_argument("--only", nargs="*", choices=list(SCENARIOS), help="scenarios to run")
    args = parser.parse_args()
    rows = asyncio.run(run(args))
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "faults.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
