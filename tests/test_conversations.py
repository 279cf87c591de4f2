"""Conversations, not messages: every stored label describes the customer, on every route."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from batch_processor.conversation import Conversation, Roles
from batch_processor.llm.messages import conversation_messages
from batch_processor.models import RESULT_SCHEMA_VERSION
from batch_processor.service.runner import run_job
from batch_processor.testing.simulator import Simulator, SimulatorConfig
from tests.test_operator import cli

ANGRY = "Absolutely unacceptable service. I want to speak to a manager right now!"
POLITE = "Thank you so much for your patience! We really appreciate you, have a wonderful day!"
#: An angry customer, a polite agent, and the customer's closing courtesy.
ANGRY_THREAD = [
    {"role": "user", "content": ANGRY},
    {"role": "assistant", "content": POLITE},
    {"role": "user", "content": "ok thanks"},
]
#: A customer whose problem the agent solved.
TURNED_AROUND = [
    {"role": "customer", "content": "My package never arrived and nobody answers, this is awful."},
    {
        "role": "agent",
        "content": "I'm so sorry! I've sent a replacement by express, here is the tracking.",
    },
    {
        "role": "customer",
        "content": "It arrived this morning, perfect, thank you so much! Great help.",
    },
]
#: The agent talks about refunds; the customer asks about opening hours.
AGENT_TOPIC = [
    {
        "role": "agent",
        "content": "Hello! If you want a refund for your return, I can process the refund now.",
    },
    {"role": "customer", "content": "No thanks, I only want to know your opening hours on Sunday."},
]


async def stored(db: Any) -> dict[str, dict[str, Any]]:
    """The stored results by the source document's subject."""
    subjects = {doc["_id"]: doc["subject"] async for doc in db.conversation_set.find({})}
    return {subjects[r["_id"]]: r async for r in db.sentimental_analysis.find({})}


async def seed(db: Any, **conversations: list[dict[str, str]]) -> None:
    """One source document per named conversation (its name is the subject)."""
    await db.conversation_set.insert_many(
        [{"subject": name, "messages": messages} for name, messages in conversations.items()]
    )


@pytest.mark.parametrize("route", ["offline", "llm online", "llm batch"])
async def test_an_angry_customer_keeps_their_label_beside_a_polite_agent(
    db: Any, make_settings: Any, route: str
) -> None:
    """The customer's anger is stored, not the agent's politeness, with every classifier."""
    await seed(
        db, angry=ANGRY_THREAD, turned=TURNED_AROUND, alone=[{"role": "user", "content": ANGRY}]
    )
    if route == "offline":
        stats = await run_job(make_settings())
    else:
        async with Simulator(SimulatorConfig(latency=0.0, jitter=0.0, batch_delay=0.2)) as sim:
            stats = await run_job(
                make_settings(
                    classifier="llm",
                    llm_base_url=sim.base_url,
                    llm_model="gpt-4o-mini",
                    llm_route="batch" if route == "llm batch" else "online",
                    batch_route_min_docs=1,
                    batch_route_poll_seconds=0.05,
                )
            )
    assert stats.succeeded == 3
    results = await stored(db)
    angry = results["angry"]["classification"]
    assert angry["sentiment"]["label"] == "negative"
    assert results["alone"]["classification"]["sentiment"]["label"] == "negative"
    # More than one customer turn: the course is stored.
    turned = results["turned"]["classification"]
    assert (turned["sentiment_start"], turned["sentiment_end"], turned["trend"]) == (
        "negative",
        "positive",
        "improving",
    )
    assert results["alone"]["classification"]["trend"] is None
    assert results["turned"]["text"]["turns"] == {"customer": 2, "agent": 1}
    assert results["angry"]["schema_version"] == RESULT_SCHEMA_VERSION
    if route == "offline":
        assert turned["resolved"] is None  # the offline classifier does not judge it
    else:
        assert turned["resolved"] == "yes"
        assert results["alone"]["classification"]["resolved"] is None  # no agent answered


async def test_the_category_and_urgency_come_from_the_customers_words(
    db: Any, make_settings: Any
) -> None:
    """An agent who mentions refunds does not make the customer's question a refund request."""
    await seed(db, hours=AGENT_TOPIC)
    await run_job(make_settings())
    result = (await stored(db))["hours"]["classification"]
    assert result["category"] == "general_inquiry"
    assert not any(theme.startswith("refund") for theme in result["themes"])


async def test_unknown_roles_follow_the_rule_and_are_counted(db: Any, make_settings: Any) -> None:
    """Unknown roles beside a known customer are context, counted by name in the summary."""
    await seed(
        db,
        named=[
            {"author": "Maria", "body": "I was charged twice for my subscription, fix it now!"},
            {"author": "agent", "body": "So sorry, thank you for your patience!"},
        ],
        admin=[
            {"role": "user", "content": "The app crashes on start, it is broken."},
            {"role": "admin", "content": "Wonderful, thanks, great!"},
        ],
    )
    stats = await run_job(make_settings())
    results = await stored(db)
    assert results["named"]["classification"]["sentiment"]["label"] == "negative"
    assert results["admin"]["classification"]["sentiment"]["label"] == "negative"
    assert results["admin"]["text"]["turns"] == {"customer": 1, "agent": 1, "unknown_role": 1}
    assert stats.summary()["unknown_roles"] == {"Maria": 1, "admin": 1}


async def test_custom_roles_from_the_settings(db: Any, make_settings: Any) -> None:
    """--customer-roles and --agent-roles decide whose turns are read."""
    await seed(
        db,
        hotel=[
            {"role": "concierge", "content": "Wonderful to have you! Enjoy your amazing stay!"},
            {"role": "guest", "content": "The room is dirty and the heating is broken, awful."},
        ],
    )
    stats = await run_job(make_settings(customer_roles=("guest",), agent_roles=("concierge",)))
    assert (await stored(db))["hotel"]["classification"]["sentiment"]["label"] == "negative"
    assert stats.summary()["unknown_roles"] == {}


def test_the_llm_gets_the_turns_with_their_roles_as_data() -> None:
    """The request's user message is a JSON list of turns, each customer or agent."""
    conversation = Roles().conversation((m["role"], m["content"]) for m in ANGRY_THREAD)
    (message,) = conversation_messages(conversation, {"channel": "chat"})
    payload = json.loads(message["content"])
    assert payload == {
        "conversation": [
            {"role": "customer", "text": ANGRY},
            {"role": "agent", "text": POLITE},
            {"role": "customer", "text": "ok thanks"},
        ],
        "metadata": {"channel": "chat"},
    }
    assert conversation_messages(Conversation.of("hi"), {})[0]["content"].startswith(
        '{"conversation": [{"role": "customer"'
    )


async def test_report_and_export_show_how_conversations_went(
    db: Any, make_settings: Any, mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    """Report counts improving/worsening by category; export has the course columns."""
    await seed(db, turned=TURNED_AROUND, angry=ANGRY_THREAD)
    await run_job(make_settings())
    where = ["--mongodb-uri", mongo_uri, "--database", db_name]
    report = cli("report", "--json", *where)
    assert report.returncode == 0, report.stderr
    courses = {row["category"]: row for row in json.loads(report.stdout)["courses"]}
    assert courses["shipping_delivery"]["improving"] == "100 %"
    assert json.loads(report.stdout)["labels"]["trend"]["improving"] == 1
    out = tmp_path / "results.csv"
    export = cli("export", "--format", "csv", "--output", str(out), *where)
    assert export.returncode == 0, export.stderr
    header, *rows = out.read_text().splitlines()
    columns = header.split(",")
    assert {"sentiment_start", "sentiment_end", "trend", "resolved", "customer_turns"} <= set(
        columns
    )
    assert any(row.split(",")[columns.index("trend")] == "improving" for row in rows)


async def test_results_stored_before_the_change_still_read_and_are_outdated(
    db: Any, make_settings: Any, mongo_uri: str, db_name: str
) -> None:
    """A schema-1 result: report and export read it; reclassify --outdated selects it."""
    source = await db.conversation_set.insert_one(
        {"messages": ANGRY_THREAD, "processing": {"status": "done"}}
    )
    await db.sentimental_analysis.insert_one(
        {
            "_id": source.inserted_id,
            "classification": {
                "sentiment": {"label": "positive", "score": 0.99},
                "category": "complaint",
                "urgency": "high",
                "language": "en",
            },
            "classifier": {"name": "offline", "version": "3.0", "model": None,
                           "taxonomy_version": "2026.12.1"},
            "text": {"chars": 100, "truncated": False},
            "job_id": "old",
        }
    )  # fmt: skip
    where = ["--mongodb-uri", mongo_uri, "--database", db_name]
    report = cli("report", "--json", *where)
    assert report.returncode == 0 and json.loads(report.stdout)["totals"]["results"] == 1
    export = cli("export", "--format", "jsonl", *where)
    assert json.loads(export.stdout.splitlines()[0])["schema_version"] == 1
    requeue = cli("reclassify", "--outdated", *where)
    assert requeue.returncode == 0, requeue.stderr
    await run_job(make_settings())
    result = await db.sentimental_analysis.find_one({"_id": source.inserted_id})
    assert result["schema_version"] == RESULT_SCHEMA_VERSION
    assert result["classification"]["sentiment"]["label"] == "negative"
