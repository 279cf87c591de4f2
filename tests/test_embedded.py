"""The embedded server: two commands on one folder's data take turns, never fail."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from batch_processor.runtime.embedded import EmbeddedServer


async def test_a_start_waits_for_another_commands_server_to_let_go_of_the_data(
    tmp_path: Path,
) -> None:
    """A worker started while ``status`` has the data open starts once it closes (was exit 1)."""
    first, second = EmbeddedServer(tmp_path), EmbeddedServer(tmp_path)
    await first.start()
    starting = asyncio.ensure_future(second.start())
    try:
        await asyncio.sleep(1.5)  # long enough for the second to find the data busy
        assert not starting.done()
        await first.stop()
        uri = await asyncio.wait_for(starting, 30)
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
        try:
            assert (await client.admin.command("ping"))["ok"] == 1
        finally:
            await client.close()
    finally:
        starting.cancel()
        await first.stop()
        await second.stop()
