"""Waiting for MongoDB ends at a stop, even inside a call the driver keeps waiting in."""

from __future__ import annotations

import asyncio

import pytest

from batch_processor.errors import Interrupted
from batch_processor.outage import STOP_PATIENCE, Availability, DatabaseCalls
from batch_processor.retry import RetryPolicy
from batch_processor.testing.fakes import InstantSleep


def calls(stop: asyncio.Event) -> DatabaseCalls:
    """Database calls with instant retries and the stop switch ``stop``."""
    policy = RetryPolicy(max_attempts=None, sleep=InstantSleep())
    return DatabaseCalls(
        patient=policy, brief=policy, availability=Availability("MongoDB"), stop=stop
    )


async def test_a_call_stuck_in_the_driver_is_abandoned_shortly_after_a_stop() -> None:
    """A read that never returns (a server gone mid-call) ends at a stop, not after minutes."""
    stop = asyncio.Event()
    hung = asyncio.Event()

    async def read() -> int:
        await hung.wait()  # the driver selecting a server that is gone
        return 1

    waiting = asyncio.create_task(calls(stop).wait(read))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    started = asyncio.get_running_loop().time()
    stop.set()
    with pytest.raises(Interrupted):
        await asyncio.wait_for(waiting, STOP_PATIENCE + 1.0)
    assert asyncio.get_running_loop().time() - started <= STOP_PATIENCE + 0.5


async def test_a_call_that_finishes_soon_after_a_stop_keeps_its_result() -> None:
    """A claim answered within the patience is kept (its documents get saved and given back)."""
    stop = asyncio.Event()

    async def claim() -> str:
        stop.set()  # the stop arrives while the claim is on the wire
        await asyncio.sleep(0.05)
        return "won"

    assert await calls(stop).wait(claim) == "won"
