"""The Batch API route: a backlog through the provider's batches, crash-safe at every step."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from batch_processor.llm.cost import DEFAULT_PRICES
from batch_processor.models import TokenUsage
from batch_processor.service.runner import run_job
from batch_processor.testing.simulator import Simulator, SimulatorConfig
from tests.conftest import conversation, worker_cli

#: Fast polls: the simulator's window is seconds, not hours.
FAST = {"llm_route": "batch", "batch_route_poll_seconds": 0.1, "batch_route_poll_max_seconds": 0.2}


def route_settings(make_settings: Any, provider: Simulator, **overrides: Any) -> Any:
    """LLM settings on the simulator with the batch route and fast polls."""
    values = {"classifier": "llm", "llm_base_url": provider.base_url, "llm_model": "gpt-4o-mini"}
    return make_settings(**(values | FAST | overrides))


async def routes(db: Any) -> Counter[str | None]:
    """Stored results by the route that produced them."""
    return Counter([r.get("route") async for r in db.sentimental_analysis.find({}, {"route": 1})])


async def test_a_backlog_goes_through_one_batch_at_half_the_price(
    db: Any, make_settings: Any, tmp_path: Path
) -> None:
    """60 documents: one upload, one batch, 60 results from it at half price; nothing left over."""
    await db.conversation_set.insert_many([conversation(f"refund {i} please") for i in range(60)])
    async with Simulator(SimulatorConfig(batch_delay=0.3, latency=0.0, jitter=0.0)) as provider:
        stats = await run_job(route_settings(make_settings, provider))
        api = provider.batches

    assert await routes(db) == {"batch": 60}
    assert await db.conversation_set.count_documents({"processing.status": "done"}) == 60
    assert (api.stats["uploads"], api.stats["batches_created"]) == (1, 1)
    assert api.files == {}  # the request, output and error files were deleted
    assert list((tmp_path / "batch_files" / "provider_batches").iterdir()) == []
    result = await db.sentimental_analysis.find_one({})
    usage = TokenUsage(**result["usage"])
    online = DEFAULT_PRICES["gpt-4o-mini"].cost(usage)
    assert result["cost_usd"] == pytest.approx(online / 2)
    assert stats.route is not None and stats.route["stored_from_batch"] == 60
    assert stats.succeeded == 60  # the run summary counts the route's documents
    assert stats.route["requests"] == 60
    report = json.loads(next((tmp_path / "batch_files" / "reports").glob("*.json")).read_text())
    summary = report["summary"]  # the job's report counts the route too, as `report` does
    assert (summary["processed"], summary["succeeded"]) == (60, 60)
    spent = [r["cost_usd"] async for r in db.sentimental_analysis.find({}, {"cost_usd": 1})]
    assert summary["llm_calls"] == 60
    assert summary["cost_usd"] == pytest.approx(sum(spent), abs=1e-5)


async def test_failed_lines_and_an_expired_batch_are_classified_online(
    db: Any, make_settings: Any
) -> None:
    """Lines the provider failed or never ran (expiry) end classified online, one result each."""
    await db.conversation_set.insert_many([conversation(f"late parcel {i}") for i in range(80)])
    config = SimulatorConfig(
        batch_delay=2.0, batch_window=1.0, batch_failed_line_rate=0.2, latency=0.0, jitter=0.0
    )
    async with Simulator(config) as provider:
        await run_job(route_settings(make_settings, provider))
        api = provider.batches

    by_route = await routes(db)
    assert by_route["batch"] + by_route["online"] == 80
    assert by_route["online"] >= 40  # half expired, and a fifth of the rest failed
    assert api.stats["batches_expired"] == 1 and api.stats["batches_created"] == 1
    assert await db.conversation_set.count_documents({"processing.status": "done"}) == 80


async def test_a_batch_that_fails_validation_is_classified_online(
    db: Any, make_settings: Any
) -> None:
    """A batch the provider refuses: its documents are classified online, none lost."""
    await db.conversation_set.insert_many([conversation(f"hello {i}") for i in range(10)])
    async with Simulator(SimulatorConfig(batch_invalid=True, latency=0.0)) as provider:
        await run_job(route_settings(make_settings, provider))

    assert await routes(db) == {"online": 10}


async def test_identical_texts_are_requested_once(db: Any, make_settings: Any) -> None:
    """Twenty copies of one text and ten others: eleven request lines, thirty results."""
    docs = [conversation("where is my parcel") for _ in range(20)]
    docs += [conversation(f"other {i}") for i in range(10)]
    await db.conversation_set.insert_many(docs)
    async with Simulator(SimulatorConfig(batch_delay=0.2, latency=0.0)) as provider:
        await run_job(route_settings(make_settings, provider))
        answered = provider.batches.stats["lines_answered"]

    assert answered == 11
    assert await db.sentimental_analysis.count_documents({"route": "batch"}) == 30
    assert await db.sentimental_analysis.count_documents({"cached": True}) == 19


async def test_auto_sends_a_backlog_to_batches_and_the_rest_online(
    db: Any, make_settings: Any
) -> None:
    """auto: below the threshold online; above it the backlog in a batch, high priority online."""
    await db.conversation_set.insert_many([conversation(f"small {i}") for i in range(5)])
    async with Simulator(SimulatorConfig(batch_delay=0.2, latency=0.0, jitter=0.0)) as provider:
        auto = {"llm_route": "auto", "batch_route_min_docs": 20}
        await run_job(route_settings(make_settings, provider, **auto))
        assert await routes(db) == {"online": 5}
        assert provider.batches.stats["batches_created"] == 0

        backlog = [conversation(f"backlog {i}") for i in range(30)]
        backlog += [conversation(f"urgent {i}") | {"priority": "high"} for i in range(3)]
        await db.conversation_set.insert_many(backlog)
        await run_job(route_settings(make_settings, provider, **auto))

    assert provider.batches.stats["batches_created"] == 1
    assert await routes(db) == {"online": 8, "batch": 30}
    urgent = db.sentimental_analysis.find({"route": "online"}, {"_id": 1})
    ids = [doc["_id"] async for doc in urgent]
    assert await db.conversation_set.count_documents({"_id": {"$in": ids}, "priority": "high"}) == 3


async def test_auto_stays_online_where_the_endpoint_has_no_batch_api(
    db: Any, make_settings: Any
) -> None:
    """An endpoint without /v1/batches (a local server): auto classifies the backlog online."""
    await db.conversation_set.insert_many([conversation(f"text {i}") for i in range(25)])
    async with Simulator(SimulatorConfig(batch_api=False, latency=0.0)) as provider:
        auto = {"llm_route": "auto", "batch_route_min_docs": 20}
        await run_job(route_settings(make_settings, provider, **auto))

    assert await routes(db) == {"online": 25}


#: Each step of the lifecycle, and the moments between a provider call and its record on disk.
STEPS = [
    "before_upload",
    "upload_unrecorded",
    "after_upload",
    "create_unrecorded",
    "after_create",
    "polling",
    "after_download",
    "half_stored",
]


@pytest.mark.parametrize("step", STEPS)
async def test_a_kill_at_each_step_resumes_the_same_batch(
    step: str, db: Any, mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    """SIGKILL after each step, then a restart: one batch, one result per source, nothing lost."""
    await db.conversation_set.insert_many([conversation(f"order {i} is late") for i in range(40)])
    await db.conversation_set.insert_one({"messages": ""})  # a DATA failure, marked at claim
    batch_dir = tmp_path / "b"
    async with Simulator(SimulatorConfig(batch_delay=0.5, latency=0.0, jitter=0.0)) as provider:
        command = worker_cli(
            mongo_uri, db_name, batch_dir, "--classifier", "llm", "--llm-base-url",
            provider.base_url, "--llm-route", "batch", "--batch-route-poll-seconds", "0.2",
            "--batch-route-poll-max-seconds", "0.2", "--flush-size", "10",
        )  # fmt: skip
        killed = await _run(command, {"BATCH_PROCESSOR_FAILPOINTS": step})
        assert killed.returncode == -9, killed.stderr[-2000:]
        again = await _run([*command, "--recover"], {})
        assert again.returncode == 0, again.stderr[-2000:]
        api = provider.batches

    assert api.stats["batches_created"] == 1  # never submitted twice
    assert api.stats["uploads"] == 1  # an upload made before the kill is found again
    assert await db.sentimental_analysis.count_documents({}) == 40
    assert await routes(db) == {"batch": 40}
    states = Counter([d["processing"]["status"] async for d in db.conversation_set.find()])
    assert states == {"done": 40, "failed": 1}
    assert api.files == {}
    assert list((batch_dir / "provider_batches").iterdir()) == []


@pytest.mark.parametrize(
    "step", ["before_upload", "upload_unrecorded", "create_unrecorded", "polling", "half_stored"]
)
async def test_a_kill_at_each_step_is_finished_by_a_second_worker(
    step: str, db: Any, mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    """SIGKILL, then a worker with an empty batch directory: it finishes the same batch."""
    await db.conversation_set.insert_many([conversation(f"parcel {i} lost") for i in range(30)])
    async with Simulator(SimulatorConfig(batch_delay=0.5, latency=0.0, jitter=0.0)) as provider:
        flags = (
            "--classifier", "llm", "--llm-base-url", provider.base_url, "--llm-route", "batch",
            "--batch-route-poll-seconds", "0.2", "--batch-route-poll-max-seconds", "0.2",
            "--lease-seconds", "3",
        )  # fmt: skip
        first = worker_cli(mongo_uri, db_name, tmp_path / "first", *flags)
        assert (await _run(first, {"BATCH_PROCESSOR_FAILPOINTS": step})).returncode == -9
        second = await _run(worker_cli(mongo_uri, db_name, tmp_path / "second", *flags), {})
        api = provider.batches

    assert second.returncode == 0, second.stderr[-2000:]
    assert "taking over a provider batch" in second.stdout + second.stderr
    assert api.stats["batches_created"] == 1  # the same provider batch, never a second one
    assert await routes(db) == {"batch": 30}
    assert await db.conversation_set.count_documents({"processing.status": "claimed"}) == 0
    assert api.files == {}  # no orphan file: every upload was used or deleted
    running = [b for b in api.batches.values() if b.status not in {"completed", "cancelled"}]
    assert running == []


async def test_a_plain_restart_resumes_a_submitted_batch(
    db: Any, mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    """Killed while its batch runs; a plain start (no --recover) finishes that batch."""
    await db.conversation_set.insert_many([conversation(f"bill {i}") for i in range(15)])
    async with Simulator(SimulatorConfig(batch_delay=1.0, latency=0.0)) as provider:
        command = worker_cli(
            mongo_uri, db_name, tmp_path / "b", "--classifier", "llm", "--llm-base-url",
            provider.base_url, "--llm-route", "batch", "--batch-route-poll-seconds", "0.2",
        )  # fmt: skip
        assert (
            await _run(command, {"BATCH_PROCESSOR_FAILPOINTS": "after_create"})
        ).returncode == -9
        assert (await _run(command, {})).returncode == 0
        created = provider.batches.stats["batches_created"]

    assert created == 1 and await routes(db) == {"batch": 15}


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--llm-route", "batch"], "needs an LLM (--classifier llm or cascade)"),
        (["--llm-route", "batch", "--mode", "continuous", "--classifier", "llm"], "uses auto"),
    ],
)
async def test_a_route_that_cannot_work_is_refused_in_one_line(
    flags: list[str], message: str, mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    """The batch route with the offline classifier, or in continuous mode: exit 2, one line."""
    done = await _run(worker_cli(mongo_uri, db_name, tmp_path / "b", *flags), {})
    assert done.returncode == 2 and message in done.stderr


async def _run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a worker to its end (or its death) without blocking the simulator's event loop."""
    environ = {**os.environ, "BATCH_PROCESSOR_LLM_API_KEY": "sk-test", **env}
    process = await asyncio.create_subprocess_exec(
        *command, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    code = process.returncode if process.returncode is not None else 0
    return subprocess.CompletedProcess(command, code, out.decode(), err.decode())


async def test_a_budget_caps_what_is_sent_to_the_batch_api(db: Any, make_settings: Any) -> None:
    """--budget-usd: only what its worst case covers is submitted; the rest stays pending."""
    await db.conversation_set.insert_many([conversation(f"charged twice {i}") for i in range(40)])
    async with Simulator(SimulatorConfig(batch_delay=0.2, latency=0.0, jitter=0.0)) as provider:
        stats = await run_job(route_settings(make_settings, provider, budget_usd=0.001))

    stored = await db.sentimental_analysis.count_documents({})
    assert 0 < stored < 40
    assert await db.conversation_set.count_documents({"processing.status": None}) == 40 - stored
    assert stats.classifier["cost_usd"] <= 0.001


async def test_a_batch_the_provider_refuses_gives_its_documents_back(
    db: Any, make_settings: Any, tmp_path: Path
) -> None:
    """An upload over the provider's size limit: the run fails, every document pending again."""
    from batch_processor.errors import BatchProcessorError

    await db.conversation_set.insert_many([conversation(f"refund {i}") for i in range(20)])
    async with Simulator(SimulatorConfig(batch_max_bytes=2000, latency=0.0)) as provider:
        with pytest.raises(BatchProcessorError, match="Batch API upload"):
            await run_job(route_settings(make_settings, provider))

    assert await db.conversation_set.count_documents({"processing.status": None}) == 20
    assert list((tmp_path / "batch_files" / "provider_batches").iterdir()) == []


async def test_a_backlog_over_the_request_limit_is_split(db: Any, make_settings: Any) -> None:
    """60 documents, 25 requests per batch: three batches, one result each."""
    await db.conversation_set.insert_many([conversation(f"invoice {i}") for i in range(60)])
    async with Simulator(SimulatorConfig(batch_delay=0.2, latency=0.0, jitter=0.0)) as provider:
        await run_job(route_settings(make_settings, provider, batch_route_max_requests=25))
        created = provider.batches.stats["batches_created"]

    assert created == 3 and await routes(db) == {"batch": 60}


async def test_a_service_sends_its_backlog_to_batches_and_new_documents_online(
    db: Any, make_settings: Any
) -> None:
    """Continuous, auto: the backlog at start in a batch, then an insert classified online."""
    from batch_processor.runtime.shutdown import Stopper
    from tests.faults.tools import poll_until

    await db.conversation_set.insert_many([conversation(f"old {i}") for i in range(30)])
    config = SimulatorConfig(batch_delay=1.0, latency=0.0, jitter=0.0)
    async with Simulator(config) as provider:
        settings = route_settings(
            make_settings, provider, mode="continuous", llm_route="auto",
            batch_route_min_docs=20, interval=0.5,
        )  # fmt: skip
        stopper = Stopper()
        service = asyncio.create_task(run_job(settings, stopper=stopper))
        try:

            async def backlog_done() -> bool:
                return await routes(db) == {"batch": 30}

            await poll_until(backlog_done, within=60)
            await db.conversation_set.insert_one(conversation("a new complaint"))

            async def new_one_done() -> bool:
                return await routes(db) == {"batch": 30, "online": 1}

            await poll_until(new_one_done, within=60)
        finally:
            stopper.stop()
            await asyncio.wait_for(service, 60)
        assert provider.batches.stats["batches_created"] == 1
