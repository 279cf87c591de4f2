"""The benchmark suite: the daemon beside the contenders a user could write, in one invocation.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python -m bench.suite --out bench/results/latest          # everything (~40 min)
    .venv/bin/python -m bench.suite --only startup,goodput --repeats 1  # a part

Parts (``--only``), all against one embedded SecantusDB server and the project's simulator
(200 +- 50 ms, at most 64 requests in flight), every process measured from its spawn:

* ``startup``: seconds from spawning a worker to its first LLM request (and for the plain
  script), median of ``--repeats`` x 2.
* ``goodput``: two workloads -- a) RPM 6,000 (capacity 100/s); b) RPM 1,200 with 5 % HTTP 500s
  (capacity 20/s) -- each run by the daemon (finding the limit from 429s), the daemon told
  ``--rpm``, the plain asyncio script and seed 002's design, in alternating order. Goodput is
  stored results per second from spawn to the last stored result, as a share of the
  simulator's capacity. Seed 002's design runs on a fifth of the documents (it is slow; its
  goodput is a rate, so the figures compare).
* ``workers``: workload a with 1, 2 and 4 daemon workers on one database.
* ``cpu``: no rate limit (the provider allows 2,500 requests/s), the daemon at ``--concurrent
  96`` and the plain script: requests per second and CPU milliseconds per document, the
  daemon's top functions under cProfile, and the LLM classifier alone (``bench/llm_client.py``,
  no database) at 64 and 128 requests in flight.
* ``memory``: ``--memory-docs`` documents, offline and LLM: RSS against documents stored.

Each part records MongoDB commands per 1,000 documents (a wire proxy counts them), requests per
stored result, documents lost, CPU per document, and the machine's load. Results go to
``<out>/results.json`` and the plots to ``<out>/*.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from batch_processor.runtime.embedded import EmbeddedServer, free_port
from batch_processor.testing.samples import sample_conversations
from bench.harness import (
    ROOT,
    CommandProxy,
    ProcessRun,
    SimulatorProcess,
    contender_command,
    daemon_command,
    machine,
    metrics_reader,
    run_processes,
)

LATENCY, JITTER, MAX_CONCURRENCY = 0.2, 0.05, 64
Mongo = AsyncMongoClient[dict[str, Any]]


@dataclass(frozen=True)
class Workload:
    """What the simulated provider allows."""

    name: str
    rpm: int
    error_rate: float = 0.0
    max_concurrency: int = MAX_CONCURRENCY

    @property
    def capacity(self) -> float:
        """Results per second the provider can serve at most."""
        return min(self.rpm / 60, self.max_concurrency / LATENCY)

    def simulator(self) -> SimulatorProcess:
        """The simulator for this workload."""
        return SimulatorProcess(
            {
                "latency": LATENCY,
                "jitter": JITTER,
                "rpm": self.rpm,
                "max_concurrency": self.max_concurrency,
                "error_rate": self.error_rate,
            }
        )


WORKLOADS = {
    "a": Workload("a: RPM 6,000", rpm=6000),
    "b": Workload("b: RPM 1,200 + 5% 500s", rpm=1200, error_rate=0.05),
}
UNLIMITED = Workload("no limit (2,500/s)", rpm=150_000, max_concurrency=512)


class Bench:
    """One invocation: the server, the proxy, the output folder and the results so far."""

    def __init__(self, uri: str, proxy: CommandProxy, out: Path, args: argparse.Namespace):
        self.uri = uri
        self.proxy = proxy
        self.out = out
        self.args = args
        self.client: Mongo = AsyncMongoClient(uri)
        self.tmp = Path(tempfile.mkdtemp(prefix="bp-suite-"))
        self.runs = 0

    async def seed(self, count: int) -> str:
        """A fresh database holding ``count`` sample conversations; its name."""
        self.runs += 1
        database = f"suite_{os.getpid()}_{self.runs}"
        docs = [
            _unique(doc, i) for i, doc in enumerate(sample_conversations(count, seed=self.runs))
        ]
        await self.client[database].conversation_set.insert_many(docs)
        return database

    async def run(
        self,
        contender: str,
        workload: Workload | None,
        count: int,
        *,
        workers: int = 1,
        base_url: str | None = None,
        classifier: str = "llm",
        concurrent: int = MAX_CONCURRENCY,
        profile: Path | None = None,
        sample_every: float = 0.25,
    ) -> dict[str, Any]:
        """Seed, run one contender to its end, measure, drop the database."""
        database = await self.seed(count)
        target = self.client[database].sentimental_analysis
        port = free_port()
        commands, extra = [], None
        env = {
            **os.environ,
            "BATCH_PROCESSOR_LOG_LEVEL": "WARNING",
            "BATCH_PROCESSOR_LOG_FORMAT": "json",
        }
        if contender == "baseline":
            # The daemon as it was at --baseline-tree (a worktree), in the same run.
            env["PYTHONPATH"] = str(self.args.baseline_tree)
            contender, profile = "daemon", None
            baseline = True
        else:
            baseline = False
        if contender.startswith("daemon"):
            rpm = None
            if workload is not None and contender == "daemon+rpm":
                # Each worker told its share of the provider's limits (the README's advice).
                rpm, concurrent = workload.rpm // workers, max(1, concurrent // workers)
            for worker in range(workers):
                command = daemon_command(
                    uri=self.proxy.uri,
                    database=database,
                    batch_dir=self.tmp / database / str(worker),
                    classifier=classifier,
                    base_url=base_url,
                    concurrent=concurrent,
                    rpm=rpm,
                    http_port=port if worker == 0 else None,
                )
                if profile is not None:
                    command = [sys.executable, "-m", "cProfile", "-o", str(profile), "-m",
                               "batch_processor", *command[1:]]  # fmt: skip
                elif baseline:
                    command = [sys.executable, "-m", "batch_processor", *command[1:]]
                commands.append(command)
            extra = metrics_reader(port)
        else:
            assert base_url is not None
            commands.append(
                contender_command(
                    contender, uri=self.proxy.uri, database=database, base_url=base_url
                )
            )
        before = self.proxy.total()
        mix_before = self.proxy.by_collection.copy()

        async def stored() -> int:
            return await target.estimated_document_count()

        run = await run_processes(
            commands,
            env=env,
            stored=stored,
            extra=extra,
            interval=sample_every,
            # From its own tree: ``-m`` puts the working directory first on sys.path.
            cwd=self.args.baseline_tree if baseline else ROOT,
        )
        commands_sent = self.proxy.total() - before
        result = await self._outcome(database, contender, count, run, commands_sent)
        if baseline:
            result["contender"] = "baseline"
        result["command_mix"] = dict(self.proxy.by_collection - mix_before)
        await self.client.drop_database(database)
        return result

    async def _outcome(
        self, database: str, contender: str, count: int, run: ProcessRun, commands: int
    ) -> dict[str, Any]:
        db = self.client[database]
        stored = await db.sentimental_analysis.count_documents({})
        failed = waiting = 0
        if contender.startswith("daemon"):
            failed = await db.conversation_set.count_documents({"processing.status": "failed"})
            # Documents whose retries ran out wait on disk for the next run: not lost.
            for report in (self.tmp / database).glob("*/reports/*.json"):
                queues = json.loads(report.read_text())["summary"].get("waiting_in_queues") or {}
                waiting += sum(queues.values())
        done = await db.conversation_set.count_documents({"processing.status": "done"})
        return {
            "contender": contender,
            "documents": count,
            "stored": stored,
            # Results are upserted by source _id: more results than sources done would mean
            # a document stored twice under two ids (it cannot), fewer a result not marked.
            "results_per_done_source": round(stored / max(done, 1), 3),
            "failed": failed,  # documents ended with a reason (the sample's few bad ones)
            "waiting_in_queues": waiting,
            "lost": count - stored - failed - waiting,
            "seconds_to_last_result": run.seconds_to_last_result,
            "seconds_to_exit": run.seconds_to_exit,
            "cpu_seconds": run.cpu_seconds,
            "cpu_ms_per_document": round(1000 * run.cpu_seconds / max(stored, 1), 2),
            "peak_rss_mb": run.peak_rss_mb,
            "mongodb_commands": commands,
            "commands_per_1000_docs": round(1000 * commands / max(count, 1), 1),
            "exit_codes": run.exit_codes,
            "stderr_tail": run.stderr_tail if any(run.exit_codes) else [],
            "started": run.started,
            "samples": [asdict(s) for s in run.samples],
        }


def _unique(doc: dict[str, Any], index: int) -> dict[str, Any]:
    """``doc`` with a text of its own: the sample's repeats would flatter the dedupe cache."""
    messages = doc.get("messages")
    if isinstance(messages, list) and messages and isinstance(messages[0], dict):
        first = dict(messages[0])
        first["content"] = f"{first.get('content', '')} [ref {index}]"
        doc = {**doc, "messages": [first, *messages[1:]]}
    return {key: value for key, value in doc.items() if key != "_id"}


# -- the parts ------------------------------------------------------------------------------


async def part_startup(bench: Bench) -> dict[str, Any]:
    """Spawn to first LLM request, daemon and plain script, alternating."""
    seconds: dict[str, list[float]] = {"daemon": [], "plain_asyncio": []}
    for _ in range(bench.args.repeats * 2):
        for contender in seconds:
            with UNLIMITED.simulator() as sim:
                result = await bench.run(contender, UNLIMITED, 300, base_url=sim.base_url)
                first = sim.stats().get("first_arrival", 0.0)
            seconds[contender].append(round(first - result["started"], 3))
    return {
        name: {"median": statistics.median(values), "all": values}
        for name, values in seconds.items()
    }


async def part_goodput(bench: Bench) -> dict[str, Any]:
    """Both workloads, every contender, alternating order across repeats."""
    contenders = bench.args.contenders + (["baseline"] if bench.args.baseline_tree else [])
    results: dict[str, Any] = {}
    for key in bench.args.workloads:
        workload = WORKLOADS[key]
        runs: list[dict[str, Any]] = []
        for repeat in range(bench.args.repeats):
            order = contenders if repeat % 2 == 0 else contenders[::-1]
            for contender in order:
                count = bench.args.docs // 5 if contender == "seed002" else bench.args.docs
                runs.append(await _llm_run(bench, contender, workload, count))
        results[key] = {"workload": workload.name, "capacity": workload.capacity, "runs": runs}
    return results


async def part_workers(bench: Bench) -> dict[str, Any]:
    """Workload a with 1, 2 and 4 daemon workers: untold, and each told its share of the limit."""
    workload = WORKLOADS["a"]
    runs = []
    for repeat in range(bench.args.repeats):
        for workers in (1, 2, 4) if repeat % 2 == 0 else (4, 2, 1):
            for contender in ("daemon", "daemon+rpm"):
                run = await _llm_run(bench, contender, workload, bench.args.docs, workers=workers)
                runs.append({"workers": workers, **run})
    return {"workload": workload.name, "capacity": workload.capacity, "runs": runs}


async def part_cpu(bench: Bench) -> dict[str, Any]:
    """No rate limit: requests per second and CPU per document; the daemon's profile."""
    runs = []
    count = bench.args.docs * 2
    for contender in ("daemon", "plain_asyncio"):
        runs.append(await _llm_run(bench, contender, UNLIMITED, count, concurrent=96))
    profile = bench.out / "daemon.prof"
    await _llm_run(bench, "daemon", UNLIMITED, count, concurrent=96, profile=profile)
    client = []
    for concurrent in (64, 128):
        with UNLIMITED.simulator() as sim:
            command = [sys.executable, "-m", "bench.llm_client", "--llm-base-url", sim.base_url,
                       "--count", str(count), "--concurrent", str(concurrent)]  # fmt: skip
            done = await asyncio.to_thread(
                subprocess.run, command, capture_output=True, text=True, check=True
            )
            client.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {
        "workload": UNLIMITED.name,
        "runs": runs,
        "llm_client_alone": client,
        "profile_top": _profile_top(profile),
    }


async def part_memory(bench: Bench) -> dict[str, Any]:
    """RSS against documents stored, offline and LLM, on ``--memory-docs`` documents."""
    count = bench.args.memory_docs
    offline = await bench.run("daemon", None, count, classifier="offline", sample_every=2.0)
    fast = Workload("fast", rpm=600_000, max_concurrency=512)
    with SimulatorProcess({"latency": 0.02, "jitter": 0.01}) as sim:
        llm = await bench.run(
            "daemon", fast, count, base_url=sim.base_url, concurrent=64, sample_every=2.0
        )
    return {"offline": _memory_summary(offline), "llm": _memory_summary(llm)}


async def _llm_run(
    bench: Bench, contender: str, workload: Workload, count: int, **options: Any
) -> dict[str, Any]:
    with workload.simulator() as sim:
        run = await bench.run(contender, workload, count, base_url=sim.base_url, **options)
        served = sim.stats()
        events = sim.events(run["started"])
    llm_results = run["stored"]
    seconds = run["seconds_to_last_result"]
    requests = served.get("requests", 0)
    run.update(
        goodput_pct=round(100 * llm_results / max(seconds, 1e-9) / workload.capacity, 1),
        results_per_second=round(llm_results / max(seconds, 1e-9), 1),
        requests=requests,
        requests_per_stored_result=round(requests / max(llm_results, 1), 3),
        http_429=served.get("429", 0),
        share_429_pct=round(100 * served.get("429", 0) / max(requests, 1), 2),
        http_500=served.get("500", 0),
        seconds_to_first_request=round(served.get("first_arrival", 0) - run["started"], 3),
        events=[(round(t - run["started"], 3), status) for t, status in events],
    )
    return run


def _memory_summary(run: dict[str, Any]) -> dict[str, Any]:
    samples = [s for s in run["samples"] if s["rss_mb"] > 0]
    total = run["documents"]

    def rss_at(fraction: float) -> float:
        reached = [s["rss_mb"] for s in samples if s["stored"] >= total * fraction]
        return round(reached[0], 1) if reached else 0.0

    at_10, at_100 = rss_at(0.1), max((s["rss_mb"] for s in samples), default=0.0)
    return {
        **{k: v for k, v in run.items() if k != "samples"},
        "rss_mb_at_10pct": at_10,
        "rss_mb_peak": round(at_100, 1),
        "growth_mb_10_to_100pct": round(at_100 - at_10, 1),
        "rss_by_documents": [(s["stored"], round(s["rss_mb"], 1)) for s in samples],
    }


def _profile_top(path: Path, limit: int = 25) -> list[dict[str, Any]]:
    """The profile's top functions by own time."""
    if not path.exists():
        return []
    stats = pstats.Stats(str(path))
    rows = []
    for (filename, line, name), (_, calls, own, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append(
            {
                "function": f"{Path(filename).name}:{line}({name})",
                "calls": calls,
                "own_s": round(own, 3),
                "cumulative_s": round(cumulative, 3),
            }
        )
    return sorted(rows, key=lambda row: -row["own_s"])[:limit]


PARTS: dict[str, Callable[[Bench], Awaitable[dict[str, Any]]]] = {
    "startup": part_startup,
    "goodput": part_goodput,
    "workers": part_workers,
    "cpu": part_cpu,
    "memory": part_memory,
}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    """Run the chosen parts on one embedded server; write results.json and the plots."""
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"settings": vars(args) | {"out": str(args.out)}}
    results["machine_before"] = machine()
    with tempfile.TemporaryDirectory(prefix="bp-suite-db-") as tmp:
        server = EmbeddedServer(Path(tmp) / "server")
        await server.start()
        try:
            proxy = CommandProxy(server.port)
            async with proxy.running():
                bench = Bench(f"mongodb://127.0.0.1:{server.port}/?directConnection=true",
                              proxy, args.out, args)  # fmt: skip
                for name in args.only:
                    started = time.monotonic()
                    print(f"[suite] {name} ...", file=sys.stderr, flush=True)
                    results[name] = await PARTS[name](bench)
                    results[name]["part_seconds"] = round(time.monotonic() - started, 1)
                    _write(args.out, results)
                await bench.client.close()
        finally:
            await server.stop()
    results["machine_after"] = {"load_average": os.getloadavg()}
    _write(args.out, results)
    from bench.plots import plot_all  # matplotlib: only once there is something to draw

    results["plots"] = plot_all(results, args.out)
    _write(args.out, results)
    return results


def _write(out: Path, results: dict[str, Any]) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/latest"))
    parser.add_argument(
        "--only", type=lambda s: s.split(","), default=list(PARTS), help=",".join(PARTS)
    )
    parser.add_argument("--docs", type=int, default=3000)
    parser.add_argument(
        "--baseline-tree",
        type=Path,
        help="a checkout of an earlier commit (git worktree add): adds it as the contender "
        "'baseline' of the goodput part",
    )
    parser.add_argument(
        "--contenders",
        type=lambda s: s.split(","),
        default=["daemon", "daemon+rpm", "plain_asyncio", "seed002"],
        help="of the goodput part",
    )
    parser.add_argument(
        "--workloads", type=lambda s: s.split(","), default=list(WORKLOADS), help="a,b"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-docs", type=int, default=100_000)
    from bench.report import print_table

    print_table(asyncio.run(main(parser.parse_args())))
