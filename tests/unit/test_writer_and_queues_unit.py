"""The result writer, the batch tracker and the retry-queue drain on in-memory fakes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from batch_processor.errors import ErrorCategory, TransientError
from batch_processor.files.batch_files import BatchFiles
from batch_processor.models import ClassifiedDocument, ClassifyRetry, FailedDocument, StoreRetry
from batch_processor.outage import Availability, DatabaseCalls
from batch_processor.pipeline.stats import RunStats
from batch_processor.pipeline.tracker import BatchTracker, FinishedBatch
from batch_processor.pipeline.writer import ResultWriter
from batch_processor.retry import RetryPolicy
from batch_processor.testing.fakes import documents, neutral_classification

from .conftest import Rig


def _result(doc_id: str) -> ClassifiedDocument:
    return ClassifiedDocument(
        doc_id=doc_id,
        classification=neutral_classification(),
        classifier="scripted",
        classifier_version="1",
        attempts=1,
        text_chars=10,
        truncated=False,
        job_id="job-1",
    )


def _writer(rig: Rig, stats: RunStats, *, flush_size: int) -> ResultWriter:
    policy = RetryPolicy(max_attempts=2, sleep=rig.sleep)
    db = DatabaseCalls(patient=policy, brief=policy, availability=Availability("mongodb"))
    return ResultWriter(
        sink=rig.sink,
        db=db,
        queues=rig.queues,
        stats=stats,
        flush_size=flush_size,
        flush_interval=60.0,
        on_fatal=lambda error: None,
    )


async def test_writer_stores_in_bulks_of_flush_size_and_settles_each(rig: Rig) -> None:
    """Ten results with a flush size of five: two bulk writes, ten documents settled stored."""
    settled: list[str] = []
    writer = _writer(rig, RunStats(), flush_size=5)
    task = asyncio.create_task(writer.run())
    for doc in documents(10):
        writer.add(_result(doc.id), settled.append)
    await writer.drained()
    writer.close()
    await task
    assert rig.sink.writes == 2
    assert settled == ["stored"] * 10
    assert rig.source.count("done") == 10


async def test_writer_marks_failures_failed(rig: Rig) -> None:
    """A failed document is marked failed with its category, and settled failed."""
    settled: list[str] = []
    writer = _writer(rig, RunStats(), flush_size=5)
    task = asyncio.create_task(writer.run())
    failure = FailedDocument(
        doc_id="d0001", error="empty", category=ErrorCategory.DATA, attempts=0, job_id="j"
    )
    writer.add(failure, settled.append)
    writer.close()
    await task
    assert settled == ["failed"]
    assert rig.source.states["d0001"].category == "DATA"


async def test_writer_spills_to_the_store_queue_when_mongodb_refuses(rig: Rig) -> None:
    """Storage down past the retries: the results are on disk in the store queue, not lost."""
    rig.sink.store_faults.fail_next(TransientError("down"), TransientError("down"))
    settled: list[str] = []
    stats = RunStats()
    writer = _writer(rig, stats, flush_size=5)
    task = asyncio.create_task(writer.run())
    for doc in documents(3):
        writer.add(_result(doc.id), settled.append)
    writer.close()
    await task
    assert settled == ["queued_store"] * 3
    assert stats.queued_store == 3
    assert rig.queues.store_documents() == 3
    assert rig.sink.results == {}


def test_tracker_deletes_a_batch_file_when_its_last_document_ends(tmp_path: Path) -> None:
    """The file stays while any document is open; its outcomes are counted when it closes."""
    finished: list[FinishedBatch] = []
    files = BatchFiles(tmp_path)
    docs = documents(3)
    name = asyncio.run(files.save("job", 1, docs, claim="job:1"))
    tracker = BatchTracker(files, on_finished=finished.append)
    tracker.add(name, [doc.id for doc in docs])
    tracker.settle(docs[0].id, "stored")
    tracker.settle(docs[1].id, "failed")
    assert files.names() == [name] and finished == []
    tracker.settle(docs[2].id, "stored")
    assert files.names() == []
    assert finished[0].outcomes == {"stored": 2, "failed": 1}


async def test_drain_stores_a_queued_flush_once_mongodb_is_back(rig: Rig) -> None:
    """A store-queue entry from an earlier outage is stored at the next run's start."""
    results = [_result(doc.id) for doc in documents(25)[:2]]
    rig.queues.store.add(
        StoreRetry(results=results, error="down", category=ErrorCategory.TRANSIENT)
    )
    await rig.pipeline().run()
    assert len(rig.queues.store) == 0
    assert set(rig.sink.results) == {doc.id for doc in documents(25)}


async def test_drain_classifies_queued_documents_and_dead_letters_exhausted_ones(
    rig: Rig,
) -> None:
    """A queued document is classified again; one past its attempts goes to the dead letter."""
    fine, hopeless = (
        doc.model_copy(update={"id": f"queued-{doc.id}"}) for doc in documents(2, text="queued")
    )
    rig.source.add([fine, hopeless])
    await rig.source.claim([fine.id, hopeless.id], job_id="old", worker_id="worker-a", token="t")
    rig.queues.classify.add(ClassifyRetry(doc=fine, error="x", category=ErrorCategory.TRANSIENT))
    rig.queues.classify.add(
        ClassifyRetry(doc=hopeless, attempts=3, error="x", category=ErrorCategory.TRANSIENT)
    )
    rig.classifier.answer = lambda text: (
        TransientError("still down")
        if text == hopeless.fields["messages"]
        else neutral_classification()
    )
    await rig.pipeline(queue_max_attempts=3).run()
    assert fine.id in rig.sink.results
    assert len(rig.queues.classify) == 0
    assert [entry.doc_ids for entry in rig.queues.dead_letter.entries()] == [[hopeless.id]]
    assert rig.source.count("done") == 26


async def test_results_arriving_during_a_write_wait_for_a_full_batch(rig: Rig) -> None:
    """Results handed over while a batch is written are not sent in a trickle of small writes."""
    writer = _writer(rig, RunStats(), flush_size=10)
    rig.sink.gate = asyncio.Event()  # the first write waits until released
    task = asyncio.create_task(writer.run())
    docs = documents(13)
    for doc in docs[:10]:
        writer.add(_result(doc.id), lambda outcome: None)
    await asyncio.sleep(0)  # the writer takes the full batch and waits in its write
    for doc in docs[10:]:
        writer.add(_result(doc.id), lambda outcome: None)
    rig.sink.gate.set()
    for _ in range(20):
        await asyncio.sleep(0)
    assert rig.sink.writes == 1  # the three later results wait for the size or the timer
    assert writer.holding == 3
    writer.close()
    await task
    assert rig.sink.writes == 2 and len(rig.sink.results) == 13
