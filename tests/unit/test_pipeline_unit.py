"""The pipeline on in-memory fakes: outcomes, bounds, retries, stops (no server, no sleeping)."""

from __future__ import annotations

import asyncio

import pytest

from batch_processor.errors import (
    ConfigurationError,
    DataError,
    PermanentError,
    TransientError,
)
from batch_processor.models import Classification, JobStatus
from batch_processor.testing.fakes import documents, neutral_classification

from .conftest import Rig


async def test_every_document_is_stored_once_and_marked_done(rig: Rig) -> None:
    """25 documents: 25 results, 25 done, no batch file left, checkpoint finished."""
    stats = await rig.pipeline().run()
    assert len(rig.sink.results) == 25
    assert rig.source.count("done") == 25
    assert stats.succeeded == 25
    assert rig.files.names() == []
    checkpoint = rig.checkpoints.load().checkpoint
    assert checkpoint is not None and checkpoint.status is JobStatus.FINISHED


async def test_a_document_without_text_fails_alone_with_a_data_reason(rig: Rig) -> None:
    """An empty text is a DATA failure on that document; the others are stored."""
    rig.source.add([documents(1)[0].model_copy(update={"id": "empty", "fields": {}})])
    await rig.pipeline().run()
    assert rig.source.status("empty") == "failed"
    assert rig.source.states["empty"].category == "DATA"
    assert len(rig.sink.results) == 25


async def test_classifier_errors_are_sorted_by_category(rig: Rig) -> None:
    """DATA and PERMANENT fail the document; TRANSIENT is retried until it succeeds."""
    flaky: dict[str, int] = {}

    def answer(text: str) -> Classification | BaseException:
        if "#3)" in text:
            return DataError("unreadable")
        if "#4)" in text:
            return PermanentError("model refused")
        if "#5)" in text and flaky.setdefault(text, 0) < 2:
            flaky[text] += 1
            return TransientError("blip")
        return neutral_classification()

    rig.classifier.answer = answer
    stats = await rig.pipeline().run()
    assert rig.source.count("failed") == 2
    assert rig.source.count("done") == 23
    assert stats.failed == {"DATA": 1, "PERMANENT": 1}
    assert len(rig.sink.results) == 23
    assert len(rig.sleep.delays) == 2  # the two transient retries waited (on the fake sleep)
    assert len(rig.queues.dead_letter) == 2  # both failures are kept for a person to look at
    # One reason rule: the dead letter says what the document's failure record says.
    kept = {entry.doc_ids[0]: entry.error for entry in rig.queues.dead_letter.entries()}
    marked = {doc: state.error for doc, state in rig.source.states.items() if state.error}
    assert kept == marked and sorted(kept.values()) == ["model refused", "unreadable"]


async def test_retries_exhausted_put_the_document_in_the_classify_queue(rig: Rig) -> None:
    """A classifier that stays down: the documents wait in the classify queue on disk."""
    rig.classifier.answer = lambda _text: TransientError("down")
    stats = await rig.pipeline(queue_max_attempts=3).run()
    assert stats.queued_classify == 25
    assert len(rig.queues.classify) == 25
    assert rig.sink.results == {}
    assert rig.source.count("claimed") == 25  # kept claimed while they wait in the queue


async def test_claims_never_exceed_the_in_flight_bound(rig: Rig) -> None:
    """With storage stalled, at most max_in_flight documents are claimed and not stored."""
    rig.sink.gate = asyncio.Event()
    pipeline = rig.pipeline(batch_size=5, concurrent=2, max_in_flight=7)
    run = asyncio.create_task(pipeline.run())
    for _ in range(200):
        await asyncio.sleep(0)
    assert 0 < rig.source.count("claimed") <= 7
    rig.sink.gate.set()
    await run
    assert rig.source.count("done") == 25


async def test_a_storage_outage_is_retried_and_loses_nothing(rig: Rig) -> None:
    """Two failed bulk writes, then the server is back: every result is stored once."""
    rig.sink.store_faults.fail_next(TransientError("down"), TransientError("down"))
    await rig.pipeline().run()
    assert len(rig.sink.results) == 25
    assert rig.source.count("done") == 25


async def test_a_long_storage_outage_spills_to_the_store_queue_then_drains(rig: Rig) -> None:
    """More failures than retries: results go to the store queue and are stored at the end."""
    rig.sink.store_faults.fail_next(*[TransientError("down")] * 3)
    stats = await rig.pipeline(flush_size=100).run()
    assert stats.queued_store > 0
    assert len(rig.sink.results) == 25
    assert len(rig.queues.store) == 0


async def test_a_lost_cursor_is_reopened_and_paging_goes_on(rig: Rig) -> None:
    """A page read failing twice (cursor lost) is waited out; all documents are processed."""
    rig.source.read_faults.fail_next(TransientError("cursor lost"), TransientError("again"))
    await rig.pipeline().run()
    assert rig.source.count("done") == 25


async def test_stop_now_gives_in_flight_documents_back(rig: Rig) -> None:
    """An immediate stop: nothing stays claimed, the checkpoint says running, nothing is lost."""
    rig.classifier.gate = asyncio.Event()
    pipeline = rig.pipeline()
    run = asyncio.create_task(pipeline.run())
    for _ in range(100):
        await asyncio.sleep(0)
    pipeline.stop(now=True)
    stats = await run
    assert rig.source.count("claimed") == 0
    assert rig.source.count(None) + rig.source.count("done") == 25
    assert stats.released > 0


async def test_a_configuration_error_stops_the_run_and_gives_everything_back(rig: Rig) -> None:
    """A wrong key is not the documents' fault: the run fails, nothing is marked failed."""
    rig.classifier.answer = lambda _text: ConfigurationError("bad key")
    with pytest.raises(ConfigurationError):
        await rig.pipeline().run()
    assert rig.source.count("failed") == 0
    assert rig.source.count("claimed") == 0
    checkpoint = rig.checkpoints.load().checkpoint
    assert checkpoint is not None and checkpoint.status is JobStatus.FAILED


async def test_recovery_finishes_an_old_batch_file_without_classifying_stored_ones(
    rig: Rig,
) -> None:
    """A dead job's batch file: stored results are only marked, the rest classified."""
    old = documents(25)[:4]
    await rig.source.claim(
        [doc.id for doc in old], job_id="dead", worker_id="worker-b", token="dead:1"
    )
    await rig.files.save("dead", 1, old, claim="dead:1")
    first = await rig.pipeline(job_id="first").run()  # stores the 21 free documents
    assert first.succeeded == 21
    stored_before = dict(rig.sink.results)
    # The dead job stored one result (under its claim) before it died; another document has
    # only an older result (from before a reclassification), which must not count.
    result = next(iter(stored_before.values()))
    rig.sink.results[old[0].id] = result.model_copy(update={"doc_id": old[0].id, "claim": "dead:1"})
    rig.sink.results[old[1].id] = result.model_copy(update={"doc_id": old[1].id, "claim": "dead:0"})
    calls_before = len(rig.classifier.calls)
    stats = await rig.pipeline(job_id="second").run(recover=True)
    assert stats.already_stored == 1
    assert len(rig.classifier.calls) - calls_before == 3
    assert rig.source.count("done") == 25
    assert rig.sink.results[old[1].id].claim != "dead:0"  # replaced by the new result
    assert rig.files.names() == []
