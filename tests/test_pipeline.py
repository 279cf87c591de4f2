"""End-to-end batch runs against the real MongoDB test server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from batch_processor.classifiers import load_taxonomy
from batch_processor.service.runner import run_job

from .conftest import conversation


async def seed(db: Any, count: int) -> list[Any]:
    """Insert ``count`` varied conversations; return their ids."""
    texts = [
        "I was charged twice for my subscription, see invoice 1234.",
        "The app crashes every time I open settings. Urgent!",
        "Thanks, everything works great now!",
        "My package never arrived and the tracking has not moved.",
    ]
    docs = [conversation(f"{texts[i % len(texts)]} (ticket {i})") for i in range(count)]
    result = await db.conversation_set.insert_many(docs)
    return list(result.inserted_ids)


async def test_every_document_gets_one_result_and_is_marked(db: Any, make_settings: Any) -> None:
    """N documents give N results, and each source is marked done with classifier and attempts."""
    ids = await seed(db, 120)
    stats = await run_job(make_settings(batch_size=25, concurrent=4))

    assert stats.succeeded == 120 and stats.failed_total == 0
    assert await db.sentimental_analysis.count_documents({}) == 120
    assert set(await db.sentimental_analysis.distinct("_id")) == set(ids)
    done = db.conversation_set.find({"processing.status": "done"})
    marks = [doc["processing"] async for doc in done]
    assert len(marks) == 120
    assert all(m["classifier"] == "offline" and m["attempts"] == 1 for m in marks)
    result = await db.sentimental_analysis.find_one({"_id": ids[0]})
    assert result["classification"]["category"] == "billing"
    assert result["classifier"] == {
        "name": "offline",
        "version": "3.0",
        "model": None,
        "taxonomy_version": load_taxonomy().version,
    }
    assert result["cached"] is False and result["usage"] is None


async def test_second_run_does_nothing(db: Any, make_settings: Any) -> None:
    """A run after a complete run finds no work and writes nothing."""
    await seed(db, 40)
    await run_job(make_settings(batch_size=10))
    before = [doc async for doc in db.sentimental_analysis.find({}, {"stored_at": 1})]

    stats = await run_job(make_settings(batch_size=10))

    assert stats.processed == 0 and stats.fetched == 0
    after = [doc async for doc in db.sentimental_analysis.find({}, {"stored_at": 1})]
    assert after == before


async def test_documents_added_later_are_picked_up(db: Any, make_settings: Any) -> None:
    """Only new documents are classified by the next run; results stay one per source."""
    await seed(db, 30)
    await run_job(make_settings(batch_size=10))
    await seed(db, 12)

    stats = await run_job(make_settings(batch_size=10))

    assert stats.succeeded == 12
    assert await db.sentimental_analysis.count_documents({}) == 42


async def test_bad_documents_fail_with_reason_and_the_run_goes_on(
    db: Any, make_settings: Any
) -> None:
    """Missing, empty and non-text inputs end failed with a DATA reason; others are stored."""
    good = await seed(db, 20)
    bad = {
        "missing": {"subject": "no messages at all"},
        "empty": {"messages": "   "},
        "number": {"messages": 42},
        "no_text": {"messages": [{"role": "customer", "attachment": "x.png"}]},
        "empty_list": {"messages": []},
    }
    inserted = {
        name: (await db.conversation_set.insert_one(doc)).inserted_id for name, doc in bad.items()
    }

    stats = await run_job(make_settings(batch_size=8))

    assert stats.succeeded == len(good) and stats.failed["DATA"] == len(bad)
    failed = {
        d["_id"]: d["processing"]
        async for d in db.conversation_set.find({"processing.status": "failed"})
    }
    assert set(failed) == set(inserted.values())
    assert all(p["category"] == "DATA" for p in failed.values())
    assert "missing" in failed[inserted["missing"]]["error"]
    assert "is a number" in failed[inserted["number"]]["error"]
    assert "is empty" in failed[inserted["empty"]]["error"]
    assert (
        await db.sentimental_analysis.count_documents({"_id": {"$in": list(inserted.values())}})
        == 0
    )


async def test_oversized_text_is_truncated_and_says_so(db: Any, make_settings: Any) -> None:
    """A text over the limit is classified from its first characters; the result records it."""
    doc_id = (
        await db.conversation_set.insert_one(conversation("refund please " * 500))
    ).inserted_id

    await run_job(make_settings(max_text_chars=1000))

    result = await db.sentimental_analysis.find_one({"_id": doc_id})
    # The original length is the message's own: no role prefix is counted or classified.
    expected_chars = len(("refund please " * 500).strip())
    assert result["text"] == {
        "chars": expected_chars,
        "truncated": True,
        "turns": {"customer": 1, "agent": 0},
    }


async def test_plain_string_text_field_and_custom_collections(db: Any, make_settings: Any) -> None:
    """The text field may be a dotted path to a plain string, in other collections."""
    await db.tickets.insert_many(
        [{"body": {"text": f"I cannot log in, password reset {i}"}} for i in range(15)]
    )

    stats = await run_job(
        make_settings(
            source_collection="tickets", target_collection="labels", text_field="body.text"
        )
    )

    assert stats.succeeded == 15
    categories = await db.labels.distinct("classification.category")
    assert categories == ["account_access"]


async def test_batch_files_are_gone_and_checkpoint_finished(db: Any, make_settings: Any) -> None:
    """After a clean run no batch file remains and the checkpoint says finished."""
    await seed(db, 30)
    settings = make_settings(batch_size=7, checkpoint_interval=5)

    await run_job(settings)

    assert list((settings.batch_dir / "batches").glob("*.jsonl")) == []
    checkpoint = (settings.batch_dir / "checkpoint.json").read_text()
    assert '"status": "finished"' in checkpoint
    assert (settings.batch_dir / "checkpoint.json.bak").exists()


async def test_each_run_writes_a_performance_report_without_secrets(
    db: Any, make_settings: Any, tmp_path: Path
) -> None:
    """reports/JOB.json has throughput, memory, success rate, failures and masked settings."""
    await seed(db, 20)
    await db.conversation_set.insert_one({"messages": ""})
    settings = make_settings(llm_api_key="sk-report-Secret-000111")
    await run_job(settings)

    reports = list((tmp_path / "batch_files" / "reports").glob("*.json"))
    assert len(reports) == 1
    report = json.loads(reports[0].read_text())
    assert report["summary"]["processed"] == 21 and report["success_rate"] == round(20 / 21, 4)
    assert report["summary"]["failed_by_category"] == {"DATA": 1}
    assert report["summary"]["docs_per_second"] > 0 and report["summary"]["peak_rss_mb"] > 0
    assert report["settings"]["llm_api_key"] == "**********"
    assert "sk-report-Secret" not in reports[0].read_text()
