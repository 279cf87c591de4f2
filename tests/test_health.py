"""The health endpoint against hostile clients: slow senders, oversized requests, floods."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from batch_processor.service.health import HealthServer
from batch_processor.service.telemetry import Telemetry

from .faults.tools import poll_until


async def _ready() -> list[str]:
    return []


@contextlib.asynccontextmanager
async def _server(
    request_timeout: float = 5.0, max_connections: int = 64
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


async def test_an_oversized_request_gets_431_and_the_server_carries_on() -> None:
    """A 200 KB request head is answered 431, and the next request is served normally."""
    async with _server() as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n")
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert reply.startswith(b"HTTP/1.1 431")
        assert (await _get(port, "/metrics")).startswith(b"HTTP/1.1 200 OK")


async def test_connections_over_the_limit_are_closed_at_once() -> None:
    """With two slow clients holding both slots, a third is closed; later ones are served."""
    async with _server(request_timeout=1.0, max_connections=2) as (server, port):
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        for _, writer in held:
            writer.write(b"GET")
            await writer.drain()
        await poll_until(_accepted(server, 2), within=10)
        third, closer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(third.read(), 10) == b""
        closer.close()
        for reader, writer in held:  # the slow ones time out ...
            assert await asyncio.wait_for(reader.read(), 10) == b""
            writer.close()
        assert (await _get(port)).startswith(b"HTTP/1.1 200 OK")  # ... and room is back


@pytest.mark.parametrize("method", ["POST", "DELETE"])
async def test_other_methods_are_refused(method: str) -> None:
    """Only GET is served."""
    async with _server() as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"{method} /healthz HTTP/1.1\r\n\r\n".encode())
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert reply.startswith(b"HTTP/1.1 405")
