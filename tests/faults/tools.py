"""Tools of the fault suite: a corrupting wire proxy, and servers a test may restart or freeze."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from batch_processor.runtime.embedded import EmbeddedServer, free_port

#: Same-length ASCII markers a test writes, and the bytes the proxy puts in their place.
INVALID_UTF8 = b"~~INVALID~~"
LONE_SURROGATE = b"~~SURROGT~~"
REWRITES = {
    INVALID_UTF8: b"\xff\xfe" + b"~" * (len(INVALID_UTF8) - 2),
    LONE_SURROGATE: b"\xed\xa0\x80" + b"~" * (len(LONE_SURROGATE) - 3),
}


class CorruptingProxy:
    """A MongoDB wire proxy that rewrites the markers above in the server's replies.

    SecantusDB refuses invalid UTF-8 on insert, while a real MongoDB can hold it (written by
    other drivers or imports); the proxy makes the server *answer* with such strings. The
    rewrite keeps every message's length, so the framing stays valid.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def uri(self) -> str:
        """The URI a client uses to go through the proxy."""
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    async def __aenter__(self) -> CorruptingProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in [*self._pipes, *self._handlers]:
            task.cancel()
        await asyncio.gather(*self._pipes, *self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        if handler is not None:
            self._handlers.add(handler)
            handler.add_done_callback(self._handlers.discard)
        streams = [writer]
        tasks: list[asyncio.Task[None]] = []
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            streams.append(up_writer)
            tasks = [
                asyncio.create_task(self._pipe(reader, up_writer, rewrite=False)),
                asyncio.create_task(self._pipe(up_reader, writer, rewrite=True)),
            ]
            self._pipes.update(tasks)
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._pipes.difference_update(tasks)
            for stream in streams:
                stream.close()  # both at once, before any await
            for stream in streams:
                with contextlib.suppress(OSError):
                    await stream.wait_closed()

    @staticmethod
    async def _pipe(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, rewrite: bool
    ) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readexactly(4)
                (length,) = struct.unpack("<i", head)
                message = head + await reader.readexactly(length - 4)
                if rewrite:
                    for marker, replacement in REWRITES.items():
                        message = message.replace(marker, replacement)
                writer.write(message)
                await writer.drain()


class OwnServer:
    """A SecantusDB server of the test's own, which it may restart, freeze and thaw."""

    def __init__(self, data_dir: Path) -> None:
        self.server = EmbeddedServer(data_dir, port=free_port())

    @property
    def uri(self) -> str:
        """The server's URI (the same across restarts)."""
        return self.server.uri

    async def start(self) -> None:
        """Start (or start again, on the same port and data)."""
        await self.server.start()

    async def stop(self) -> None:
        """Stop it (SIGTERM): every open cursor and connection is lost."""
        await self.server.stop()

    def freeze(self) -> None:
        """SIGSTOP: sockets stay open, nothing answers (a hung primary)."""
        assert self.server.process is not None
        os.kill(self.server.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT."""
        assert self.server.process is not None
        os.kill(self.server.process.pid, signal.SIGCONT)


@contextlib.asynccontextmanager
async def own_server(data_dir: Path) -> AsyncIterator[OwnServer]:
    """A started :class:`OwnServer`, stopped (and thawed) at the end."""
    server = OwnServer(data_dir)
    await server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.thaw()
        await server.stop()


@contextlib.asynccontextmanager
async def database(uri: str, name: str) -> AsyncIterator[Any]:
    """A database through a client of the test's own, dropped at the end."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        uri, tz_aware=True, serverSelectionTimeoutMS=20_000
    )
    try:
        yield client[name]
    finally:
        with contextlib.suppress(Exception):
            await client.drop_database(name)
        await client.close()


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str = "256k") -> Iterator[bool]:
    """Mount a small tmpfs at ``path`` if the machine allows it; yield whether it did."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = run_root_command(f"mount -t tmpfs -o size={size} tmpfs {path}")
    try:
        yield mounted
    finally:
        if mounted:
            run_root_command(f"umount -l {path}")


async def poll_until(predicate: Callable[[], Awaitable[bool]], within: float = 60) -> None:
    """Check ``predicate`` every 20 ms until it holds; fail after ``within`` seconds."""
    async with asyncio.timeout(within):
        while True:
            if await predicate():
                return
            await asyncio.sleep(0.02)


def run_root_command(command: str) -> bool:
    """Run a mount-style shell command; whether it succeeded."""
    return os.system(f"{command} 2>/dev/null") == 0


@contextlib.asynccontextmanager
async def quiet_worker(command: list[str]) -> AsyncIterator[asyncio.subprocess.Process]:
    """A worker subprocess (no BATCH_* from outside, output discarded), killed if still alive."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCH_")}
    worker = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, env=env
    )
    try:
        yield worker
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()


class WatchedLog:
    """A worker's stderr, read as it comes, so a test can wait for a log line."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        assert process.stderr is not None, "start the worker with stderr=PIPE"
        self.lines: list[str] = []
        self._new = asyncio.Event()
        self._reading = asyncio.ensure_future(self._read(process.stderr))

    async def _read(self, stream: asyncio.StreamReader) -> None:
        async for line in stream:
            self.lines.append(line.decode(errors="replace"))
            self._new.set()
        self._new.set()

    async def seen(self, text: str, within: float = 60) -> None:
        """Wait until a line containing ``text`` has been logged; fail after ``within`` s."""
        async with asyncio.timeout(within):
            while not any(text in line for line in self.lines):
                if self._reading.done():
                    raise AssertionError(f"the worker ended without logging {text!r}")
                self._new.clear()
                await self._new.wait()

    async def text(self) -> str:
        """Everything the worker logged (waits for its stderr to close)."""
        await self._reading
        return "".join(self.lines)
