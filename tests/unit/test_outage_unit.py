"""Waiting for MongoDB ends at a stop, even inside a call the driver keeps waiting in."""

from __future__ import annotations

import asyncio

import pytest

from batch_processor.errors import Interrupted, TransientError
from batch_processor.outage import STOP_PATIENCE, Availability, DatabaseCalls, abandonable
from batch_processor.retry import RetryPolicy
from batch_processor.testing.fakes import InstantSleep


class HeldSleep:
    """An injected sleep that lasts until the test lets it end (records each delay)."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.over = asyncio.Event()

    async def __call__(self, delay: float) -> None:
        """Record the delay; wait for the test."""
        self.delays.append(delay)
        await self.over.wait()


def calls(stop: asyncio.Event, sleep: object) -> DatabaseCalls:
    """Database calls retrying forever on the injected ``sleep``, with the stop switch."""
    policy = RetryPolicy(max_attempts=None, sleep=sleep)  # type: ignore[arg-type]
    return DatabaseCalls(
        patient=policy, brief=policy, availability=Availability("MongoDB"), stop=stop
    )


async def settle() -> None:
    """Let the tasks started so far run until they wait."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_call_stuck_in_the_driver_is_abandoned_after_the_patience() -> None:
    """A read that never returns (a server gone mid-call) ends at a stop, not after minutes."""
    stop = asyncio.Event()
    sleep = HeldSleep()

    async def read() -> int:
        await asyncio.Event().wait()  # the driver selecting a server that is gone
        return 1

    waiting = asyncio.create_task(calls(stop, sleep).wait(read))
    await settle()
    assert not waiting.done() and sleep.delays == []
    stop.set()
    await settle()
    assert sleep.delays == [STOP_PATIENCE] and not waiting.done()  # the patience runs
    sleep.over.set()
    with pytest.raises(Interrupted):
        await waiting


async def test_a_call_that_finishes_within_the_patience_keeps_its_result() -> None:
    """A claim answered within the patience is kept (its documents get saved and given back)."""
    stop = asyncio.Event()
    answer = asyncio.Event()

    async def claim() -> str:
        stop.set()  # the stop arrives while the claim is on the wire
        await answer.wait()
        return "won"

    waiting = asyncio.create_task(calls(stop, HeldSleep()).wait(claim))
    await settle()
    answer.set()
    assert await waiting == "won"


async def test_a_backoff_sleep_is_the_injected_one_and_a_stop_cuts_it_short() -> None:
    """Retries wait on the injected sleep (no real time); a stop ends the wait and the call."""
    stop = asyncio.Event()
    sleep = HeldSleep()
    attempts = 0

    async def down() -> int:
        nonlocal attempts
        attempts += 1
        raise TransientError("no server")

    waiting = asyncio.create_task(calls(stop, sleep).wait(down))
    await settle()
    assert attempts == 1 and len(sleep.delays) == 1  # backing off, on the injected sleep
    stop.set()
    with pytest.raises(Interrupted):
        await waiting
    assert attempts == 1


async def test_retries_go_on_until_the_call_succeeds() -> None:
    """A patient call outlives any number of failures: MongoDB down, then back."""
    failures = 0

    async def flaky() -> str:
        nonlocal failures
        if failures < 5:
            failures += 1
            raise TransientError("no server")
        return "ok"

    availability = Availability("MongoDB")
    policy = RetryPolicy(max_attempts=None, sleep=InstantSleep())
    db = DatabaseCalls(patient=policy, brief=policy, availability=availability)
    assert await db.wait(flaky) == "ok"
    assert failures == 5 and availability.available


async def test_a_call_that_ignores_its_cancellation_does_not_hold_its_caller() -> None:
    """The lease keeper stops at once even when the driver answers a cancel seconds later."""
    lock_free = asyncio.Event()
    ended: list[str] = []

    async def renew() -> int:
        while True:
            try:
                await lock_free.wait()  # pymongo re-acquiring its topology lock
                ended.append("renew")
                return 1
            except asyncio.CancelledError:
                continue

    keeper = asyncio.create_task(abandonable(renew()))
    await settle()
    keeper.cancel()
    await settle()
    assert keeper.cancelled() and ended == []  # the caller went on; the call still waits
    lock_free.set()
    await settle()
    assert ended == ["renew"]  # and it ends on its own later
