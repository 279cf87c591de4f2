"""The benchmark suite's instruments: simulator and worker processes, a command counter, samplers.

Everything is measured from outside the processes under test, the same way for the daemon and
for the contenders: wall time from spawning the process to the last stored result, CPU time
from the kernel (``wait4``), peak and sampled RSS from ``/proc``, MongoDB commands counted by a
wire proxy between the processes and the server, and the simulator's own log of every request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import struct
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from batch_processor.runtime.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent
#: Monitoring and handshakes, which no contender chooses to send.
IGNORED_COMMANDS = {"hello", "ismaster", "isMaster", "ping", "endSessions", "buildInfo"}
OP_MSG = 2013


def machine() -> dict[str, Any]:
    """What the figures depend on: versions, the machine and its load."""
    versions = {}
    for package in ("batch_processor", "openai", "pymongo", "secantusdb", "httpx2", "aiohttp"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "commit": commit,
        "versions": versions,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


# -- the simulator --------------------------------------------------------------------------


@dataclass
class SimulatorProcess:
    """The project's OpenAI-compatible simulator in its own process (not sharing our loop)."""

    options: dict[str, Any]
    process: subprocess.Popen[str] | None = None
    base_url: str = ""

    def __enter__(self) -> SimulatorProcess:
        command = [sys.executable, "-m", "batch_processor.testing.simulator", "--port"]
        command.append(str(free_port()))
        for name, value in self.options.items():
            command += [f"--{name.replace('_', '-')}", str(value)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if "listening on" not in line:
            self.process.kill()
            raise RuntimeError(f"simulator did not start: {line!r}")
        self.base_url = line.rsplit(" ", 1)[1].strip()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait()

    def _get(self, path: str) -> Any:
        url = self.base_url.removesuffix("/v1") + path
        with urllib.request.urlopen(url, timeout=30) as response:
            return json.load(response)

    def stats(self) -> dict[str, Any]:
        """The simulator's counters (requests, ok, 429, 500, first and last arrival)."""
        return dict(self._get("/stats"))

    def events(self, since: float) -> list[tuple[float, int]]:
        """(wall-clock arrival, status) of each request since ``since``."""
        return [(float(t), int(s)) for t, s in self._get(f"/events?since={since}")["events"]]


# -- counting MongoDB commands on the wire ---------------------------------------------------


class CommandProxy:
    """A TCP proxy in front of MongoDB that counts the commands clients send, by name.

    OP_MSG's first section is the command document, whose first key is the command's name.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.counts: Counter[str] = Counter()
        self.by_collection: Counter[str] = Counter()
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    @property
    def uri(self) -> str:
        """A MongoDB URI through the proxy."""
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def total(self) -> int:
        """Commands counted, monitoring excluded."""
        return sum(n for name, n in self.counts.items() if name not in IGNORED_COMMANDS)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[CommandProxy]:
        """Serve on a free port while the context lasts."""
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            self._server.close()
            for task in self._pipes:
                task.cancel()
            await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        for task in (
            asyncio.create_task(self._pipe(reader, up_writer, count=True)),
            asyncio.create_task(self._pipe(up_reader, writer, count=False)),
        ):
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, count: bool
    ) -> None:
        try:
            while True:
                header = await reader.readexactly(16)
                length, _, _, opcode = struct.unpack("<iiii", header)
                body = await reader.readexactly(length - 16)
                if count and opcode == OP_MSG and len(body) > 10 and body[4] == 0:
                    # flags (4), section kind 0, BSON length (4), element type (1), name
                    end = body.index(b"\x00", 10)
                    name = body[10:end].decode(errors="replace")
                    self.counts[name] += 1
                    if body[9] == 2:  # a string: the collection the command acts on
                        (size,) = struct.unpack("<i", body[end + 1 : end + 5])
                        target = body[end + 5 : end + 4 + size].decode(errors="replace")
                        self.by_collection[f"{name} {target}"] += 1
                writer.write(header + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            writer.close()


# -- running processes -------------------------------------------------------------------------


@dataclass
class Sample:
    """One reading during a run."""

    t: float  # seconds since the processes were spawned
    rss_mb: float  # summed over the processes
    stored: int
    extra: dict[str, float] = field(default_factory=dict)


@dataclass
class ProcessRun:
    """What the kernel and the samplers saw of one run of one or more processes."""

    started: float  # wall clock at spawn
    seconds_to_exit: float
    seconds_to_last_result: float
    cpu_seconds: float
    peak_rss_mb: float
    exit_codes: list[int]
    samples: list[Sample]
    stderr_tail: list[str]


def rss_mb(pid: int) -> float:
    """The resident set of a process in MB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


async def run_processes(
    commands: Sequence[list[str]],
    *,
    env: dict[str, str],
    stored: Callable[[], Any],
    extra: Callable[[], Any] | None = None,
    interval: float = 0.25,
    limit: float = 3600.0,
    cwd: Path = ROOT,
) -> ProcessRun:
    """Spawn ``commands`` at once and sample them until all exit.

    ``stored`` is an async callable giving the results stored so far (read on a connection of
    its own, not through the proxy); ``extra`` an optional async callable giving more readings
    (the daemon's governor window). The time of the last result is the first sample at which
    the final count was reached.
    """
    started = time.time()
    procs = [
        subprocess.Popen(  # noqa: ASYNC220 - spawning does not block; wait4 below polls
            command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        for command in commands
    ]
    stderr_tasks = [asyncio.create_task(asyncio.to_thread(_read_all, p)) for p in procs]
    live = {p.pid: p for p in procs}
    cpu, codes = 0.0, {}
    samples: list[Sample] = []
    peak = 0.0
    try:
        while live:
            now = time.time() - started
            if now > limit:
                raise TimeoutError(f"the run took more than {limit} s")
            rss = sum(rss_mb(pid) for pid in live)
            peak = max(peak, rss)
            readings = await extra() if extra is not None else {}
            samples.append(Sample(now, rss, int(await stored()), readings))
            for pid in list(live):
                done, status, usage = os.wait4(pid, os.WNOHANG)  # noqa: ASYNC222 - WNOHANG
                if done:
                    cpu += usage.ru_utime + usage.ru_stime
                    codes[pid] = os.waitstatus_to_exitcode(status)
                    del live[pid]
            if live:
                await asyncio.sleep(interval)
    finally:
        for proc in live.values():
            proc.kill()
            os.waitpid(proc.pid, 0)  # noqa: ASYNC222 - killed: it is gone at once
    ended = time.time() - started
    final = int(await stored())
    samples.append(Sample(ended, 0.0, final))
    last = next((s.t for s in samples if s.stored >= final), ended)
    tails = [line for task in stderr_tasks for line in (await task)[-5:]]
    return ProcessRun(
        started=started,
        seconds_to_exit=round(ended, 3),
        seconds_to_last_result=round(last, 3),
        cpu_seconds=round(cpu, 3),
        peak_rss_mb=round(peak, 1),
        exit_codes=[codes.get(p.pid, -9) for p in procs],
        samples=samples,
        stderr_tail=tails,
    )


def _read_all(process: subprocess.Popen[bytes]) -> list[str]:
    assert process.stderr is not None
    return process.stderr.read().decode(errors="replace").splitlines()


def daemon_command(
    *,
    uri: str,
    database: str,
    batch_dir: Path,
    classifier: str,
    base_url: str | None = None,
    concurrent: int = 64,
    rpm: int | None = None,
    http_port: int | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """The daemon's command line for one worker (``batch-processor run`` in batch mode)."""
    command = [
        str(Path(sys.executable).parent / "batch-processor"), "run",
        "--mongodb-uri", uri, "--database", database, "--batch-dir", str(batch_dir),
        "--classifier", classifier, "--concurrent", str(concurrent), "--batch-size", "200",
        "--no-progress",
    ]  # fmt: skip
    if base_url is not None:
        command += ["--llm-base-url", base_url]
    if rpm is not None:
        command += ["--rpm", str(rpm)]
    if http_port is not None:
        command += ["--http", "--http-port", str(http_port)]
    return [*command, *extra]


def contender_command(name: str, *, uri: str, database: str, base_url: str) -> list[str]:
    """A contender's command line (``bench/contenders/<name>.py``)."""
    return [
        sys.executable, "-m", f"bench.contenders.{name}",
        "--mongodb-uri", uri, "--database", database, "--llm-base-url", base_url,
    ]  # fmt: skip


def metrics_reader(port: int) -> Callable[[], Any]:
    """An async callable reading the daemon's governor window and requests in flight."""

    def read() -> dict[str, float]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as r:
                text = r.read().decode()
        except OSError:
            return {}
        values = {}
        for line in text.splitlines():
            for name in ("governor_window", "inflight_requests"):
                if line.startswith(f"batch_processor_{name} "):
                    values[name] = float(line.split()[1])
        return values

    async def reading() -> dict[str, float]:
        return await asyncio.to_thread(read)

    return reading
