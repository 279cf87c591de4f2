"""The stop switch's race never swallows a cancellation of its caller."""

from __future__ import annotations

import asyncio

from batch_processor.runtime.shutdown import Stopper


async def test_a_loop_around_race_ends_when_cancelled_at_any_moment() -> None:
    """A keeper looping on race() after a stop ends when cancelled, wherever the cancel lands."""
    stopper = Stopper()
    stopper.stop()

    async def keeper() -> None:
        while True:  # the shape of a lease keeper that relies on cancellation to end
            await stopper.race(asyncio.sleep(60))

    for steps in range(12):
        task = asyncio.create_task(keeper())
        for _ in range(steps):
            await asyncio.sleep(0)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=1.0)
        assert task in done, f"not cancelled after {steps} steps"
