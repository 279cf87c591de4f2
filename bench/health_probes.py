"""Probes answered by the health port while hostile clients hold it (issue 23's scenarios).

    python -m bench.health_probes                       # this checkout's health port
    python -m bench.health_probes --module OLD.py       # also another version of the module

Each scenario starts a health server with its defaults on loopback, lets one client do its
worst (200 slowloris connections, 1,000 idle ones, 200 sending garbage, 20 sending a 1 MB
header, 1,000 simultaneous ``/metrics`` requests), and sends 50 ``/healthz`` probes one after
another meanwhile. It prints how many were answered 200. Everything stays on 127.0.0.1 and ends
by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from batch_processor.runtime import health
from batch_processor.runtime.telemetry import Telemetry

PROBES = 50
SCENARIOS = ("200 slowloris", "1000 idle", "200 garbage", "20 x 1 MB header", "1000 /metrics")


async def _get(port: int, path: str = "/healthz") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: probe\r\n\r\n".encode())
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


async def _probes(port: int) -> int:
    answered = 0
    for _ in range(PROBES):
        with contextlib.suppress(OSError, TimeoutError):
            answered += (await _get(port)).startswith(b"HTTP/1.1 200")
        await asyncio.sleep(0.02)
    return answered


async def _hold(port: int, count: int, first: bytes) -> list[asyncio.StreamWriter]:
    writers = []
    for _ in range(count):
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            if first:
                writer.write(first)
            writers.append(writer)
    return writers


async def scenario(module: ModuleType, name: str) -> int:
    """Probes answered (of ``PROBES``) during one scenario against ``module``'s server."""

    async def ready() -> list[str]:
        return []

    server = module.HealthServer(Telemetry(), ready, stall_after=60)
    async with server.serving("127.0.0.1", 0) as port:
        writers: list[asyncio.StreamWriter] = []
        flood: list[asyncio.Task[bytes]] = []
        if name == "200 slowloris":
            writers = await _hold(port, 200, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: a")
        elif name == "1000 idle":
            writers = await _hold(port, 1_000, b"")
        elif name == "200 garbage":
            writers = await _hold(port, 200, b"\x16\x03\x01\x02\x00garbage\xff\xfe")
        elif name == "20 x 1 MB header":
            head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 1_000_000
            writers = await _hold(port, 20, head)
        else:
            flood = [asyncio.create_task(_get(port, "/metrics")) for _ in range(1_000)]
        answered = await _probes(port)
        await asyncio.gather(*flood, return_exceptions=True)
        for writer in writers:
            writer.close()
    return answered


def _load(path: Path) -> ModuleType:
    """Another version of the health module, loaded from a file."""
    spec = importlib.util.spec_from_file_location("health_under_test", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


async def run(modules: dict[str, ModuleType]) -> None:
    """Print one line per module: probes answered in each scenario."""
    for label, module in modules.items():
        shares = [f"{name}: {await scenario(module, name)}/{PROBES}" for name in SCENARIOS]
        print(f"{label}: " + " | ".join(shares))


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the options and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", type=Path, help="another health.py to measure first")
    args = parser.parse_args(argv)
    modules = {"this checkout": health}
    if args.module is not None:
        modules = {str(args.module): _load(args.module), **modules}
    asyncio.run(run(modules))
    return 0


if __name__ == "__main__":
    sys.exit(main())
