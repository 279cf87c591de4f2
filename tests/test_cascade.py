"""The confidence cascade end to end: offline first, the simulated LLM where unsure, learning."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from batch_processor.service.runner import open_store, run_job
from batch_processor.testing.simulator import Simulator, SimulatorConfig

from .conftest import conversation, worker_command

DATA = Path(__file__).parents[1] / "bench" / "data"


def labelled(name: str) -> list[tuple[str, str]]:
    """(text, sentiment) rows of one of the project's labelled dev files."""
    rows = []
    for line in (DATA / name).read_text(encoding="utf-8").splitlines()[1:]:
        text, sentiment, *_ = line.split("\t")
        rows.append((text, sentiment))
    return rows


#: Customers with words of their own, which no training text has: what learning is for.
JARGON = {"negative": ("blorky", "skrumbled", "grimbly", "fazzled"),
          "positive": ("zindy", "plooshy", "snorfy", "wibbly")}  # fmt: skip
PRODUCTS = ("router", "parcel", "invoice", "app", "booking", "card", "seat", "refund")


def jargon_rows(count: int) -> list[tuple[str, str]]:
    """``count`` messages in the customers' own words, with their sentiment."""
    rows = []
    for i in range(count):
        product = PRODUCTS[i % len(PRODUCTS)]
        kind = ("negative", "positive", "neutral")[i % 3]
        if kind == "neutral":
            rows.append((f"where can I see the {product} number {i}", kind))
        else:
            word = JARGON[kind][(i // 3) % 4]
            rows.append((f"the {product} is {word} again, ticket {i}", kind))
    return rows


@pytest.fixture
async def strong_model(tmp_path: Path) -> AsyncIterator[Simulator]:
    """The simulator answering the support sets' and the jargon's labels, right 90 %."""
    answers = tmp_path / "answers.jsonl"
    rows = labelled("support_dev.tsv") + labelled("support_train.tsv") + jargon_rows(600)
    answers.write_text(
        "".join(json.dumps({"text": t, "sentiment": s}) + "\n" for t, s in rows), "utf-8"
    )
    config = SimulatorConfig(
        latency=0.0, jitter=0.0, answers_file=str(answers), answers_accuracy=0.9
    )
    async with Simulator(config) as simulator:
        yield simulator


@pytest.fixture
def cascade_settings(make_settings: Any, strong_model: Simulator) -> Any:
    """Settings for the cascade against the strong model."""

    def build(**overrides: Any) -> Any:
        values = {
            "classifier": "cascade",
            "llm_base_url": strong_model.base_url,
            "llm_model": "gpt-4o-mini",
            "concurrent": 16,
            "batch_size": 100,
        }
        return make_settings(**{**values, **overrides})

    return build


async def seed(db: Any) -> int:
    """The support sets' messages as conversations; how many."""
    rows = labelled("support_dev.tsv") + labelled("support_train.tsv")
    await db.conversation_set.insert_many([conversation(text) for text, _ in rows])
    return len(rows)


async def test_the_cascade_asks_the_llm_for_its_share_and_records_both_answers(
    db: Any, cascade_settings: Any, strong_model: Simulator, mongo_uri: str, db_name: str
) -> None:
    """About the target share goes to the LLM; every result says its route and the answers."""
    count = await seed(db)
    await run_job(cascade_settings(cascade_llm_share=0.3))

    results = [doc async for doc in db.sentimental_analysis.find({})]
    assert len(results) == count
    routes = Counter(doc["cascade"]["route"] for doc in results)
    asked = routes["llm"] + routes["audit"]
    assert 0.2 * count <= asked <= 0.4 * count, routes
    assert strong_model.stats["requests"] == asked
    for doc in results:
        record = doc["cascade"]
        assert doc["classifier"]["name"] == "cascade"
        assert record["model"] == "shipped"
        assert 0.0 <= record["confidence"] <= 1.0
        if record["route"] == "offline":
            assert record["llm"] is None and doc["cost_usd"] == 0.0
            assert doc["classification"]["sentiment"]["label"] == record["offline"]["sentiment"]
        else:
            assert record["llm"]["sentiment"] in {"negative", "neutral", "positive"}
            assert doc["cost_usd"] > 0.0
        if record["route"] == "llm":
            assert doc["classification"]["sentiment"]["label"] == record["llm"]["sentiment"]
            assert record["confidence"] < record["threshold"] + 0.05

    shown = _cli("report", "--json", "--mongodb-uri", mongo_uri, "--database", db_name)
    assert shown.returncode == 0, shown.stderr
    (entry,) = json.loads(shown.stdout)["cascade"]
    assert entry["results"] == count and entry["llm_share"] == round(asked / count, 4)
    assert entry["agreement"]["escalated"]["documents"] == routes["llm"]
    assert entry["offline_models"] == ["shipped"]
    assert 0 < entry["usd_per_1000"] < entry["all_llm_usd_per_1000"]
    text = _cli("report", "--mongodb-uri", mongo_uri, "--database", db_name, columns=80)
    assert "offline vs LLM agreement by sentiment" in text.stdout
    assert max(len(line) for line in text.stdout.splitlines()) <= 80


async def test_learning_teaches_the_customers_words_and_results_name_the_version(
    db: Any, cascade_settings: Any, mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    """``model learn`` trains on the LLM's labels; the promoted version is used and named."""
    rows = jargon_rows(600)
    await db.conversation_set.insert_many([conversation(text) for text, _ in rows[:400]])
    await run_job(cascade_settings(cascade_llm_share=1.0))  # every document labelled
    flags = ["--mongodb-uri", mongo_uri, "--database", db_name]
    learnt = _cli("model", "learn", "--json", *flags)
    assert learnt.returncode == 0, learnt.stderr
    figures = json.loads(learnt.stdout)
    assert figures["version"] == "v1" and figures["promoted"] is True, figures
    assert figures["agreement"] > figures["active_agreement"]
    assert figures["trained_on"] + figures["held_back"] == 400
    assert (await db.classifier_models.find_one({"_id": "@active"}))["version"] == "v1"

    # New documents, classified offline alone: the learnt words are read right.
    await db.conversation_set.insert_many([conversation(text) for text, _ in rows[400:]])
    await run_job(cascade_settings(batch_dir=tmp_path / "second", cascade_llm_share=0.0))
    gold = dict(rows)
    new = [doc async for doc in db.sentimental_analysis.find({"cascade.route": "offline"})]
    assert len(new) == 200 and {doc["cascade"]["model"] for doc in new} == {"v1"}
    texts = {
        doc["_id"]: doc["messages"][0]["content"] async for doc in db.conversation_set.find({})
    }
    right = sum(
        doc["classification"]["sentiment"]["label"] == gold[texts[doc["_id"]]] for doc in new
    )
    assert right >= 180, right

    back = _cli("model", "rollback", "--json", *flags)
    assert back.returncode == 0 and json.loads(back.stdout) == {"active": "shipped"}
    listed = json.loads(_cli("model", "list", "--json", *flags).stdout)
    assert [row["version"] for row in listed] == ["shipped", "v1"]
    assert listed[0]["active"] == "yes"


async def test_a_kill_during_learning_leaves_the_active_version_and_no_partial_one(
    db: Any, cascade_settings: Any, mongo_uri: str, db_name: str
) -> None:
    """SIGKILL while ``model learn`` trains: the active version stays, nothing half-written."""
    await seed(db)
    await run_job(cascade_settings(cascade_llm_share=1.0))
    command = [*worker_command("model", "learn"), "--mongodb-uri", mongo_uri, "--database", db_name]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        assert process.stderr is not None
        said = await asyncio.wait_for(process.stderr.readline(), 20)  # says when it trains
        assert said.startswith(b"training on "), said
        process.send_signal(signal.SIGKILL)
    finally:
        await asyncio.wait_for(process.wait(), 10)
    assert process.returncode == -signal.SIGKILL
    assert await db.classifier_models.count_documents({"_id": {"$regex": "^v"}}) == 0
    assert await db.classifier_models.find_one({"_id": "@active"}) is None


def _cli(*args: str, columns: int | None = None) -> subprocess.CompletedProcess[str]:
    """Run the command line to its end (its tables ``columns`` wide, if given)."""
    env = {**os.environ, **({"COLUMNS": str(columns)} if columns else {})}
    return subprocess.run(
        worker_command(*args), capture_output=True, text=True, timeout=60, env=env
    )


async def test_a_cascade_backlog_sends_only_the_unsure_share_to_the_batch_api(
    db: Any, cascade_settings: Any, strong_model: Simulator
) -> None:
    """With ``--llm-route batch`` the sure documents are stored offline, the rest batched."""
    count = await seed(db)
    fast = {"batch_route_poll_seconds": 0.1, "batch_route_poll_max_seconds": 0.2}
    await run_job(cascade_settings(llm_route="batch", cascade_llm_share=0.3, **fast))

    results = [doc async for doc in db.sentimental_analysis.find({})]
    assert len(results) == count
    routes = Counter((doc["cascade"]["route"], doc.get("route")) for doc in results)
    batched = sum(n for (_, route), n in routes.items() if route == "batch")
    assert routes[("offline", None)] + batched == count, routes
    assert 0.15 * count <= batched <= 0.4 * count
    api = strong_model.batches.stats
    assert (api["uploads"], api["batches_created"]) == (1, 1)
    assert strong_model.stats["requests"] == 0  # nothing online: every answer from the batch
    for doc in results:
        if doc.get("route") == "batch":
            record = doc["cascade"]
            assert record["route"] in {"llm", "audit"} and record["llm"] is not None
            kept = record["llm"] if record["route"] == "llm" else record["offline"]
            assert doc["classification"]["sentiment"]["label"] == kept["sentiment"]


async def test_the_version_store_counts_leases_and_promotes_by_compare_and_set(
    db: Any, make_settings: Any
) -> None:
    """On a real server: labels add up across workers, one learner at a time, one promotion."""
    async with open_store(make_settings()) as store:
        models = store.models
        assert await models.active() == "shipped"
        assert (await models.add_labels(5), await models.add_labels(3)) == (5, 8)
        minute = timedelta(minutes=1)
        assert await models.claim_learning("a", minute, at_least=10) is None  # not enough yet
        await models.add_labels(2)
        assert await models.claim_learning("a", minute, at_least=10) == 10
        assert await models.claim_learning("b", minute, at_least=10) is None  # a holds it
        first = await models.add({"change": b"1", "calibration": {}, "agreement": 0.7})
        assert first == "v1" and await models.promote("v1", replacing="shipped")
        assert not await models.promote("v1", replacing="shipped")  # shipped is gone already
        await models.end_learning("a", counted=10)
        assert await models.add_labels(0) == 0
        second = await models.add({"change": b"2", "calibration": {}, "agreement": 0.8})
        assert second == "v2" and await models.promote("v2", replacing="v1")
        assert (await models.version("v2") or {})["change"] == b"2"
        assert [raw["_id"] for raw in await models.versions()] == ["v1", "v2"]
        assert await models.roll_back() == "v1" and await models.active() == "v1"
        assert await models.roll_back() == "shipped"
        assert await models.roll_back() is None  # nothing before the shipped model
        # A learner killed while holding the lease: it runs out, and another takes it.
        await models.add_labels(10)
        assert await models.claim_learning("dead", timedelta(seconds=-1), at_least=10) == 10
        assert await models.claim_learning("b", minute, at_least=10) == 10
