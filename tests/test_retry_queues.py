"""Retry queues end to end: a MongoDB outage, a failing classifier, and the dead letter."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from batch_processor.classifiers import OfflineClassifier
from batch_processor.classifiers.base import Classifier
from batch_processor.conversation import Conversation
from batch_processor.errors import TransientError
from batch_processor.models import ClassifierOutput
from batch_processor.runtime.embedded import EmbeddedServer
from batch_processor.service.runner import run_job

from .conftest import PYMONGO_CLOSE_WHILE_DOWN, conversation


class GatedClassifier(Classifier):
    """The offline classifier, held until the test opens the gate (fake for pipeline tests)."""

    name = "gated"
    version = "1"

    def __init__(self, expected: int) -> None:
        self.gate = asyncio.Event()
        self.all_waiting = asyncio.Event()
        self.calls = 0
        self._expected = expected
        self._inner = OfflineClassifier()

    async def classify(
        self, conversation: Conversation | str, metadata: Mapping[str, Any]
    ) -> ClassifierOutput:
        """Count the call, wait for the gate, then classify offline."""
        self.calls += 1
        if self.calls == self._expected:
            self.all_waiting.set()
        await self.gate.wait()
        return await self._inner.classify(conversation, metadata)

    def summary(self) -> dict[str, Any]:
        """Nothing to add to the summary."""
        return {}

    async def aclose(self) -> None:
        """Nothing to release."""


class FailingClassifier(Classifier):
    """A classifier whose provider is always unavailable (a retryable error)."""

    name = "failing"
    version = "1"

    def __init__(self) -> None:
        self.calls = 0

    async def classify(
        self, conversation: Conversation | str, metadata: Mapping[str, Any]
    ) -> ClassifierOutput:
        """Always fail with a TRANSIENT error."""
        self.calls += 1
        raise TransientError("provider unavailable (HTTP 503)")

    def summary(self) -> dict[str, Any]:
        """Nothing to add to the summary."""
        return {}

    async def aclose(self) -> None:
        """Nothing to release."""


def queue_files(batch_dir: Path, queue: str) -> list[Path]:
    """The entries of one retry queue."""
    return sorted((batch_dir / "queues" / queue).glob("*.json"))


@dataclass
class OutageRun:
    """A run whose 30 classifications are held while its own MongoDB server is stopped."""

    server: EmbeddedServer
    settings: Any
    classifier: GatedClassifier
    run: asyncio.Task[Any]

    async def assert_all_stored_once(self, db_name: str) -> None:
        """Each of the 30 documents has one result and is marked done."""
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(self.server.uri)
        try:
            db = client[db_name]
            assert await db.sentimental_analysis.count_documents({}) == 30
            assert await db.conversation_set.count_documents({"processing.status": "done"}) == 30
        finally:
            await client.close()


@contextlib.asynccontextmanager
async def outage_run(tmp_path: Path, make_settings: Any, db_name: str) -> AsyncIterator[OutageRun]:
    """A run with 30 classifications in flight when its own MongoDB server stops.

    The classifier holds every call at its gate; the server is stopped again at the end.
    """
    server = EmbeddedServer(tmp_path / "own-server")
    uri = await server.start()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    await client[db_name].conversation_set.insert_many(
        [conversation(f"refund order {i}") for i in range(30)]
    )
    await client.close()
    # A read of the next page may fall in the outage: it gives up after 2 s (TRANSIENT).
    settings = make_settings(
        mongodb_uri=uri,
        batch_size=50,
        concurrent=50,
        retries=2,
        server_selection_timeout=0.3,
        db_outage_grace=2,
    )
    classifier = GatedClassifier(expected=30)
    try:
        run = asyncio.create_task(run_job(settings, classifier=classifier))
        await asyncio.wait_for(classifier.all_waiting.wait(), 30)
        await server.stop()
        yield OutageRun(server, settings, classifier, run)
    finally:
        await server.stop()


@PYMONGO_CLOSE_WHILE_DOWN
async def test_mongodb_outage_keeps_results_in_store_queue_until_it_is_back(
    tmp_path: Path, make_settings: Any, db_name: str
) -> None:
    """Results computed while MongoDB is down go to the store queue and are written later."""
    async with outage_run(tmp_path, make_settings, db_name) as outage:
        settings = outage.settings
        outage.classifier.gate.set()
        # The run may end cleanly, or stop with TRANSIENT if it reads again while the server is
        # down; either way the in-flight results must be on disk, none stored, none lost.
        with contextlib.suppress(TransientError):
            await outage.run

        entries = [json.loads(p.read_text()) for p in queue_files(settings.batch_dir, "store")]
        assert sum(len(e["results"]) for e in entries) == 30
        assert all(e["category"] == "TRANSIENT" for e in entries)
        assert list((settings.batch_dir / "batches").glob("*.jsonl")) == []

        await outage.server.start()  # same data directory and port: MongoDB is back
        stats = await run_job(settings, classifier=OfflineClassifier())

        assert stats.recovered_from_queues == 30 and stats.succeeded == 30
        assert queue_files(settings.batch_dir, "store") == []
        await outage.assert_all_stored_once(db_name)


async def test_classification_failures_are_queued_then_retried_next_run(
    db: Any, make_settings: Any
) -> None:
    """Documents whose classification keeps failing wait in the classify queue, not lost."""
    await db.conversation_set.insert_many([conversation(f"app crashes {i}") for i in range(5)])
    settings = make_settings(retries=2)
    failing = FailingClassifier()

    stats = await run_job(settings, classifier=failing)

    assert stats.queued_classify == 5 and failing.calls == 10  # 2 attempts each
    assert len(queue_files(settings.batch_dir, "classify")) == 5
    assert await db.conversation_set.count_documents({"processing.status": "claimed"}) == 5

    stats = await run_job(settings, classifier=OfflineClassifier())

    assert stats.recovered_from_queues == 5 and stats.succeeded == 5
    assert queue_files(settings.batch_dir, "classify") == []
    assert await db.sentimental_analysis.count_documents({}) == 5


async def test_items_failing_past_the_limit_go_to_dead_letter_and_fail(
    db: Any, make_settings: Any
) -> None:
    """After queue_max_attempts failed drains the item is dead-lettered and the doc failed."""
    ids = (
        await db.conversation_set.insert_many([conversation("my bill is wrong")] * 1)
    ).inserted_ids
    settings = make_settings(retries=1, queue_max_attempts=2)

    for _ in range(3):  # the first run queues it; two more failed drains reach the limit
        await run_job(settings, classifier=FailingClassifier())

    dead = [
        json.loads(line)
        for line in (settings.batch_dir / "dead_letter.jsonl").read_text().splitlines()
    ]
    assert len(dead) == 1 and dead[0]["queue"] == "classify" and dead[0]["attempts"] == 3
    assert dead[0]["item"]["doc"]["fields"]["messages"][0]["content"] == "my bill is wrong"
    source = await db.conversation_set.find_one({"_id": ids[0]})
    assert source["processing"]["status"] == "failed"
    assert source["processing"]["category"] == "TRANSIENT"
    assert "dead-lettered after 3 classify rounds" in source["processing"]["error"]
    assert queue_files(settings.batch_dir, "classify") == []
