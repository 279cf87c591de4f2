"""The health endpoint against hostile clients: slow senders, oversized requests, floods."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from batch_processor.runtime.health import HealthServer
from batch_processor.runtime.telemetry import Telemetry

from .faults.tools import poll_until


async def _ready() -> list[str]:
    return []


@contextlib.asynccontextmanager
async def _server(
    request_timeout: float = 5.0, max_connections: int = 256
) -> AsyncIterator[tuple[HealthServer, int]]:
    server = HealthServer(
        Telemetry(),
        _ready,
        stall_after=60,
        request_timeout=request_timeout,
        max_connections=max_connections,
    )
    async with server.serving("127.0.0.1", 0) as port:
        yield server, port


def _accepted(server: HealthServer, count: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return server.connections >= count

    return check


async def _get(port: int, path: str = "/healthz") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


async def test_a_slow_client_neither_blocks_others_nor_stays_forever() -> None:
    """A client that never finishes its request is cut off; others are answered meanwhile."""
    async with _server(request_timeout=1.0) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /heal")  # and nothing more
        await writer.drain()
        assert (await _get(port)).startswith(b"HTTP/1.1 200 OK")
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed by the server
        writer.close()


@pytest.mark.parametrize("size", [200_000, 1_000_000])
async def test_an_oversized_request_is_refused_and_the_server_carries_on(size: int) -> None:
    """A 200 KB or 1 MB request head is refused at once, and the next request is served."""
    async with _server() as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * size + b"\r\n\r\n")
        reply = b""
        with contextlib.suppress(ConnectionError):  # refused before it was all sent: a reset
            await writer.drain()
            reply = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert reply[:12] in (b"", b"HTTP/1.0 400", b"HTTP/1.1 400", b"HTTP/1.1 431")
        assert (await _get(port, "/metrics")).startswith(b"HTTP/1.1 200 OK")


async def test_when_full_the_oldest_unfinished_connection_makes_room() -> None:
    """Every slot held by slow clients: a probe still gets in (the oldest slow one is closed)."""
    async with _server(request_timeout=30.0, max_connections=2) as (server, port):
        now = [1000.0]
        server.admission.clock = lambda: now[0]
        held = []
        for _ in range(2):
            held.append(await asyncio.open_connection("127.0.0.1", port))
            held[-1][1].write(b"GET")
            await held[-1][1].drain()
            await poll_until(_accepted(server, len(held)), within=10)
            now[0] += 1.0  # each has waited a second for the next one
        assert (await _get(port)).startswith(b"HTTP/1.1 200 OK")
        oldest_reader = held[0][0]
        assert await asyncio.wait_for(oldest_reader.read(), 10) == b""  # closed to make room
        assert server.admission.evicted >= 1
        for _, writer in held:
            writer.close()


async def _probes(port: int, count: int) -> int:
    """How many of ``count`` /healthz probes, one after another, were answered 200."""
    answered = 0
    for _ in range(count):
        with contextlib.suppress(OSError, TimeoutError):
            answered += (await _get(port)).startswith(b"HTTP/1.1 200 OK")
    return answered


async def _open(port: int, count: int, first_bytes: bytes) -> list[asyncio.StreamWriter]:
    """``count`` connections that each send ``first_bytes`` and then nothing."""
    writers = []
    for _ in range(count):
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            if first_bytes:
                writer.write(first_bytes)
            writers.append(writer)
    return writers


@pytest.mark.parametrize(
    ("clients", "first_bytes"),
    [
        (200, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: a"),  # slowloris
        (1_000, b""),  # idle connections
        (200, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage"),  # a TLS hello, garbage
    ],
)
async def test_probes_are_answered_while_hostile_clients_hold_connections(
    clients: int, first_bytes: bytes
) -> None:
    """Slowloris, idle floods and garbage from one client: every probe is still answered."""
    async with _server(request_timeout=30.0, max_connections=64) as (_, port):
        writers = await _open(port, clients, first_bytes)
        try:
            assert await _probes(port, 20) == 20
        finally:
            for writer in writers:
                writer.close()


async def test_probes_are_answered_during_a_metrics_flood() -> None:
    """A thousand /metrics requests at once: probes are answered, the flood too."""
    async with _server() as (_, port):
        flood = [asyncio.create_task(_get(port, "/metrics")) for _ in range(1_000)]
        answered = await _probes(port, 20)
        replies = await asyncio.gather(*flood, return_exceptions=True)
    assert answered == 20
    served = [r for r in replies if isinstance(r, bytes) and r.startswith(b"HTTP/1.1 200")]
    assert len(served) >= 500  # the rest made room for others; none hung


async def test_readiness_is_checked_once_for_a_burst_of_probes() -> None:
    """Fifty /readyz at once cost one readiness check (MongoDB ping), not fifty."""
    calls = 0

    async def ready() -> list[str]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return ["mongodb: unreachable"]

    server = HealthServer(Telemetry(), ready, stall_after=60)
    async with server.serving("127.0.0.1", 0) as port:
        replies = await asyncio.gather(*(_get(port, "/readyz") for _ in range(50)))
    assert all(r.startswith(b"HTTP/1.1 503") and b"mongodb: unreachable" in r for r in replies)
    assert calls == 1


@pytest.mark.parametrize("method", ["POST", "DELETE"])
async def test_other_methods_are_refused(method: str) -> None:
    """Only GET is served."""
    async with _server() as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"{method} /healthz HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert reply.startswith(b"HTTP/1.1 405")
