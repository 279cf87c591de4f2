"""The lease keeper stops when cancelled, whatever the driver does with the cancellation."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from types import SimpleNamespace
from typing import Any, cast

import pytest

from batch_processor.errors import TransientError
from batch_processor.mongo.store import MongoStore
from batch_processor.runtime.fleet import LeaseKeeper
from batch_processor.runtime.telemetry import Telemetry


class Job:
    """A running job holding one document."""

    def held_ids(self) -> list[str]:
        """One claimed document."""
        return ["d1"]

    def refresh(self) -> None:
        """Nothing to read again."""


def store(renew: Any) -> MongoStore:
    """A store whose renewal is ``renew`` and whose other calls answer at once."""

    async def take_over(_worker: str) -> Counter[str]:
        return Counter()

    async def beat(_worker: str, _doc: dict[str, Any]) -> None:
        return None

    source = SimpleNamespace(renew=renew, take_over=take_over, lease=timedelta(seconds=90))
    return cast(MongoStore, SimpleNamespace(source=source, fleet=SimpleNamespace(beat=beat)))


@pytest.mark.parametrize("driver", ["converts", "swallows"])
async def test_a_cancel_the_driver_turns_into_an_error_still_stops_the_keeper(driver: str) -> None:
    """A cancel turned into a connection error, or swallowed: the keeper stops all the same."""
    entered = asyncio.Event()

    async def renew(_held: list[str], _worker: str) -> int:
        entered.set()
        try:
            await asyncio.Event().wait()  # a MongoDB operation in flight
        except asyncio.CancelledError:
            if driver == "converts":
                raise TransientError("renew: MongoDB unreachable: connection closed") from None
            return 0  # swallowed: the operation "finished"
        return 1

    keeper = LeaseKeeper(store(renew), interval=3600.0, mode="batch", telemetry=Telemetry())
    keeper.attach(Job(), worker_id="w1", job_id="j1")
    task = asyncio.create_task(keeper.run())
    await asyncio.wait_for(entered.wait(), 5)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=5)
    assert done, "the lease keeper did not stop when cancelled"
    assert task.cancelled()
