"""A run that reaches --budget-usd ends: nothing claimed, the rest pending, spend within it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import structlog.testing

from batch_processor.service.runner import run_job
from batch_processor.testing.simulator import Simulator, SimulatorConfig

from .conftest import conversation

#: Real list prices: each request costs fractions of a cent, the sums binary floats miss.
BUDGET = 0.002


@pytest.mark.parametrize("route", ["online", "batch"])
async def test_a_run_at_its_budget_ends_with_nothing_claimed(
    db: Any, make_settings: Any, route: str
) -> None:
    """At concurrency 8 the run ends within a minute of its budget; nothing stays claimed."""
    await db.conversation_set.insert_many(
        [
            conversation(f"My parcel {i} is late and nobody answers, order {i * 7}")
            for i in range(120)
        ]
    )
    config = SimulatorConfig(latency=0.02, jitter=0.01, batch_delay=0.2)
    async with Simulator(config) as sim:
        settings = make_settings(
            classifier="llm",
            llm_base_url=sim.base_url,
            llm_model="gpt-4o-mini",
            llm_route=route,
            batch_route_min_docs=1,
            batch_route_max_requests=30,
            batch_route_poll_seconds=0.05,
            budget_usd=BUDGET,
            concurrent=8,
            batch_size=20,
        )
        stats = await asyncio.wait_for(run_job(settings), timeout=60)
    sources = db.conversation_set
    assert await sources.count_documents({"processing.status": "claimed"}) == 0
    pending = await sources.count_documents({"processing.status": None})
    done = await sources.count_documents({"processing.status": "done"})
    assert pending > 0 and done > 0 and pending + done == 120
    spent = sum([r["cost_usd"] async for r in db.sentimental_analysis.find({}, {"cost_usd": 1})])
    assert spent <= BUDGET
    summary = stats.summary()
    assert summary.get("reserved_usd") in (0, None) or summary["reserved_usd"] == 0


async def test_a_service_at_its_budget_idles_and_says_why(db: Any, make_settings: Any) -> None:
    """Continuous mode at its budget: one warning, no more jobs, nothing claimed, still alive."""
    from batch_processor.runtime.shutdown import Stopper
    from tests.faults.tools import poll_until

    await db.conversation_set.insert_many(
        [conversation(f"My parcel {i} is late, order {i * 7}") for i in range(120)]
    )
    async with Simulator(SimulatorConfig(latency=0.02, jitter=0.01)) as sim:
        settings = make_settings(
            classifier="llm", llm_base_url=sim.base_url, llm_model="gpt-4o-mini",
            budget_usd=BUDGET, mode="continuous", interval=0.2, batch_size=20,
        )  # fmt: skip
        stopper = Stopper()
        with structlog.testing.capture_logs() as logs:
            service = asyncio.create_task(run_job(settings, stopper=stopper))
            try:

                async def idle() -> bool:
                    return any(e["event"].startswith("budget reached: the service") for e in logs)

                await poll_until(idle, within=60)
                jobs = sum(e["event"] == "job started" for e in logs)
                await asyncio.sleep(1.0)  # five intervals: a churning service would start jobs
                assert sum(e["event"] == "job started" for e in logs) == jobs
                assert not service.done()
            finally:
                stopper.stop()
                await asyncio.wait_for(service, 30)
    assert await db.conversation_set.count_documents({"processing.status": "claimed"}) == 0
    assert sum(e["event"].startswith("budget reached: the service") for e in logs) == 1
