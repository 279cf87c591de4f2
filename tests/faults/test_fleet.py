"""Several workers on one collection: dead workers' leases taken over, stale writes fenced off."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from batch_processor.errors import LostLeaseError
from batch_processor.models import ClassifiedDocument, claim_token
from batch_processor.mongo.codec import encode_id
from batch_processor.runtime.shutdown import Stopper
from batch_processor.service.runner import open_store, run_job
from batch_processor.testing.fakes import neutral_classification
from batch_processor.testing.simulator import Simulator, SimulatorConfig

from ..conftest import conversation, worker_cli, worker_command
from .tools import poll_until

LEASE = 3.0
POLL = 1.0
DOCS = 120


@pytest.fixture
async def provider() -> AsyncIterator[Simulator]:
    """A provider taking 0.3 s per request: a run of 120 documents lasts several leases."""
    async with Simulator(SimulatorConfig(latency=0.3, jitter=0.0)) as sim:
        yield sim


async def start(
    mongo_uri: str, db_name: str, batch_dir: Path, provider: Simulator
) -> asyncio.subprocess.Process:
    """A continuous worker with a 3 s lease, polling every second, 4 requests at a time."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCH_")}
    env["BATCH_PROCESSOR_HTTP_PORT"] = "0"
    args = worker_cli(
        mongo_uri, db_name, batch_dir,
        "--mode", "continuous", "--interval", str(POLL), "--lease-seconds", str(LEASE),
        "--classifier", "llm", "--llm-base-url", provider.base_url,
        "--concurrent", "4", "--batch-size", "10", "--flush-interval", "0.2",
    )  # fmt: skip
    return await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )


def worker_id(batch_dir: Path) -> str:
    """The worker id a worker keeps in its batch directory."""
    return str(json.loads((batch_dir / "worker_id").read_text())["worker_id"])


async def stop_all(*workers: asyncio.subprocess.Process) -> list[str]:
    """SIGTERM (and SIGCONT) each live worker; return each one's log."""
    logs = []
    for worker in workers:
        if worker.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                worker.send_signal(signal.SIGCONT)
                worker.send_signal(signal.SIGTERM)
        reading = asyncio.ensure_future(worker.communicate())
        if not (await asyncio.wait({reading}, timeout=60))[0]:
            # Keep all it said (a monitor that ignored its cancellation is logged with its
            # stack after 10 s): a hang at shutdown is then diagnosable from the failure alone.
            worker.kill()
            _, err = await reading
            raise AssertionError(
                "a worker did not stop within 60 s of SIGTERM; its log ends:\n"
                + err.decode()[-6000:]
            )
        _, err = reading.result()
        logs.append(err.decode())
    return logs


async def status_workers(mongo_uri: str, db_name: str, batch_dir: Path) -> dict[str, str]:
    """``status --json``'s workers: worker id to alive or dead."""
    args = ["status", "--mongodb-uri", mongo_uri, "--database", db_name]
    process = await asyncio.create_subprocess_exec(
        *worker_command(*args, "--batch-dir", str(batch_dir), "--json"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    return {row["worker"]: row["state"] for row in json.loads(out)["workers"]}


def events(log: str, name: str) -> list[dict[str, Any]]:
    """The JSON log lines of one event."""
    found = []
    for line in log.splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if record.get("event") == name:
                found.append(record)
    return found


async def assert_one_result_each_by_its_owner(db: Any) -> None:
    """Every source is done with exactly one result, written under the source's own claim."""
    assert await db.conversation_set.count_documents({"processing.status": "done"}) == DOCS
    assert await db.sentimental_analysis.count_documents({}) == DOCS
    async for source in db.conversation_set.find({}, {"processing": 1}):
        result = await db.sentimental_analysis.find_one({"_id": source["_id"]})
        assert result is not None
        assert result["claim"] == source["processing"]["claim"]
        assert result["job_id"] == source["processing"]["job"]


async def test_a_killed_workers_documents_are_taken_over_and_none_is_done_twice(
    db: Any, db_name: str, mongo_uri: str, tmp_path: Path, provider: Simulator
) -> None:
    """Three workers, one SIGKILLed holding claims: the others take them over and finish."""
    await db.conversation_set.insert_many([conversation(f"refund {i}") for i in range(DOCS)])
    dirs = [tmp_path / f"w{n}" for n in range(3)]
    workers = [await start(mongo_uri, db_name, d, provider) for d in dirs]
    victim = dirs[0]

    async def victim_holds_claims() -> bool:
        if not (victim / "worker_id").exists():
            return False
        query = {"processing.status": "claimed", "processing.worker": worker_id(victim)}
        return bool(await db.conversation_set.count_documents(query) >= 5)

    await poll_until(victim_holds_claims, 60)
    workers[0].send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    dead = worker_id(victim)
    held = await db.conversation_set.count_documents({"processing.worker": dead})

    async def taken_over() -> bool:
        query = {"processing.status": "claimed", "processing.worker": dead}
        return not await db.conversation_set.count_documents(query)

    await poll_until(taken_over, 60)
    takeover = time.monotonic() - killed_at

    async def all_done() -> bool:
        done = await db.conversation_set.count_documents({"processing.status": "done"})
        return bool(done == DOCS)

    await poll_until(all_done, 120)
    fleet = await status_workers(mongo_uri, db_name, dirs[1])
    logs = await stop_all(*workers)

    await assert_one_result_each_by_its_owner(db)
    assert fleet[dead] == "dead"
    assert [fleet[worker_id(d)] for d in dirs[1:]] == ["alive", "alive"]
    taken = [e for log in logs[1:] for e in events(log, "took over expired leases")]
    assert sum(e["taken_from"].get(dead, 0) for e in taken) >= 1
    # Requests: one per document, plus at most one more for each the dead worker held.
    assert DOCS <= provider.stats["ok"] <= DOCS + held
    print(f"takeover {takeover:.1f} s after SIGKILL (lease {LEASE} s, poll {POLL} s)")

    # The dead worker's batch files name documents now done by others: --recover takes none.
    # (It may have none: a SIGKILL between a claim and its batch file leaves only claims.)
    batch_files = list((victim / "batches").glob("*.jsonl"))
    requests = provider.stats["requests"]
    recover = worker_cli(
        mongo_uri, db_name, victim, "--recover", "--classifier", "llm",
        "--llm-base-url", provider.base_url,
    )  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        *recover, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()[-2000:]
    assert provider.stats["requests"] == requests
    recovered = events(err.decode(), "recovering batch file")
    assert len(recovered) == len(batch_files)
    assert all(e["to_classify"] == 0 for e in recovered)
    await assert_one_result_each_by_its_owner(db)


async def test_a_paused_worker_cannot_overwrite_the_new_owners_results(
    db: Any, db_name: str, mongo_uri: str, tmp_path: Path, provider: Simulator
) -> None:
    """SIGSTOP past the lease, another worker finishes, SIGCONT: the stale writes are dropped."""
    await db.conversation_set.insert_many([conversation(f"late parcel {i}") for i in range(DOCS)])
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first = await start(mongo_uri, db_name, first_dir, provider)

    async def first_is_working() -> bool:
        stored = await db.sentimental_analysis.count_documents({})
        claimed = await db.conversation_set.count_documents({"processing.status": "claimed"})
        return bool(stored >= 5 and claimed >= 5)

    await poll_until(first_is_working, 60)
    first.send_signal(signal.SIGSTOP)
    paused = worker_id(first_dir)
    second = await start(mongo_uri, db_name, second_dir, provider)

    async def all_done() -> bool:
        done = await db.conversation_set.count_documents({"processing.status": "done"})
        return bool(done == DOCS)

    await poll_until(all_done, 120)
    first.send_signal(signal.SIGCONT)  # its in-flight answers and buffered results arrive late
    resumed = datetime.now(UTC)

    async def first_caught_up() -> bool:
        # Its heartbeat, written after it resumed, says it holds nothing any more.
        beat = await db.batch_workers.find_one({"_id": paused})
        return bool(beat and beat["beat_at"] > resumed and beat["in_flight"] == 0)

    await poll_until(first_caught_up, 60)
    first_log, _ = await stop_all(first, second)

    await assert_one_result_each_by_its_owner(db)
    summary = events(first_log, "run finished")
    assert summary, first_log[-2000:]
    lost = sum(record["lost_lease"] for record in summary)
    # Each document taken over from it was written by it too late: each write was dropped.
    taken = await db.conversation_set.count_documents({"processing.taken_from": paused})
    assert lost == taken >= 1
    assert events(first_log, "lease lost: another worker took these documents over; writes dropped")
    print(f"{taken} documents taken over from the paused worker; {lost} of its writes dropped")


def dead_workers_claims(count: int) -> list[dict[str, Any]]:
    """Source documents claimed by a worker that died 30 s ago (its lease long expired)."""
    expired = datetime.now(UTC) - timedelta(seconds=30)
    return [
        {
            **conversation(f"stranded {i}"),
            "processing": {
                "status": "claimed",
                "worker": "dead-worker",
                "job": "dead-job",
                "claim": claim_token("dead-job", 1, expired),
                "claimed_at": expired,
                "lease_until": expired + timedelta(seconds=LEASE),
            },
        }
        for i in range(count)
    ]


async def test_a_starting_batch_worker_takes_over_expired_leases(
    db: Any, make_settings: Any
) -> None:
    """A one-shot run started after a worker died finishes the dead worker's documents too."""
    await db.conversation_set.insert_many(dead_workers_claims(7))
    await db.conversation_set.insert_many([conversation(f"new {i}") for i in range(5)])

    stats = await run_job(make_settings(lease_seconds=LEASE))

    assert stats.succeeded == 12
    assert await db.conversation_set.count_documents({"processing.taken_from": "dead-worker"}) == 7


async def test_an_idle_continuous_worker_takes_over_expired_leases(
    db: Any, make_settings: Any
) -> None:
    """Documents a dead worker claimed wait only for their lease, not for a new insert."""
    dead_claims = dead_workers_claims(7)
    await db.create_collection("conversation_set")  # empty: the worker runs a job, then idles
    stopper = Stopper()
    settings = make_settings(mode="continuous", interval=0.5, lease_seconds=LEASE)
    service = asyncio.create_task(run_job(settings, stopper=stopper))
    try:

        async def idle() -> bool:
            beat = await db.batch_workers.find_one({})
            return beat is not None

        await poll_until(idle, 30)  # the worker is up, has run its first job and waits
        await db.conversation_set.insert_many(dead_claims, ordered=True)

        async def all_done() -> bool:
            return bool(
                await db.conversation_set.count_documents({"processing.status": "done"}) == 7
            )

        await poll_until(all_done, 30)
    finally:
        stopper.stop()
        await service
    assert await db.conversation_set.count_documents({"processing.taken_from": "dead-worker"}) == 7
    assert await db.sentimental_analysis.count_documents({}) == 7


async def test_the_old_claim_ttl_name_still_sets_the_lease(make_settings: Any) -> None:
    """BATCH_PROCESSOR_CLAIM_TTL is deprecated but works for one release: it sets lease_seconds."""
    assert make_settings(claim_ttl=8).lease_seconds == 8
    assert make_settings(claim_ttl=8, lease_seconds=30).lease_seconds == 30
    assert make_settings().lease_seconds == 60


async def test_a_write_under_an_older_claim_never_replaces_the_newer_owners(
    db: Any, make_settings: Any
) -> None:
    """The fence itself: an older token's result and marks are refused, a newer one's go in."""
    await db.conversation_set.insert_one(conversation("my parcel is lost"))
    settings = make_settings()
    async with open_store(settings) as store:
        source = await db.conversation_set.find_one({})
        doc_id = encode_id(source["_id"])
        old = claim_token("job-a", 1, datetime.now(UTC) - timedelta(minutes=1))
        new = claim_token("job-b", 1)
        assert await store.source.claim([doc_id], job_id="job-b", worker_id="b", token=new)

        def result(job: str, claim: str) -> ClassifiedDocument:
            return ClassifiedDocument(
                doc_id=doc_id,
                classification=neutral_classification(),
                classifier="test",
                classifier_version="1",
                attempts=1,
                text_chars=10,
                job_id=job,
                claim=claim,
            )

        assert await store.sink.store_results([result("job-b", new)]) == {}
        refused = await store.sink.store_results([result("job-a", old)])
        assert isinstance(refused[doc_id], LostLeaseError)
        assert await store.sink.mark_done([result("job-a", old)]) == {doc_id}
        assert await store.sink.mark_done([result("job-b", new)]) == set()

    stored = await db.sentimental_analysis.find_one({})
    assert stored["job_id"] == "job-b" and stored["claim"] == new
    marked = await db.conversation_set.find_one({})
    assert marked["processing"]["status"] == "done" and marked["processing"]["job"] == "job-b"
