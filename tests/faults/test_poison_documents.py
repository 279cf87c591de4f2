"""Poison documents: whatever a source document holds, only that document fails."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any
from urllib.parse import urlsplit

from bson import Binary, Decimal128, ObjectId, Regex

from batch_processor.service.runner import run_job

from ..conftest import conversation
from .tools import INVALID_UTF8, LONE_SURROGATE, CorruptingProxy

GOOD = 30


def good_docs(count: int) -> list[dict[str, Any]]:
    """Ordinary conversations."""
    return [conversation(f"My invoice {i} charged me twice, please refund.") for i in range(count)]


async def test_invalid_utf8_fails_only_its_document_naming_the_field(
    db: Any, mongo_uri: str, make_settings: Any
) -> None:
    """Invalid UTF-8 in the text fails its document (not the page); in metadata it is flagged."""
    poison = {
        "text": conversation(f"broken {INVALID_UTF8.decode()} bytes"),
        "surrogate": conversation(f"lone {LONE_SURROGATE.decode()} surrogate"),
        "metadata": {**conversation("a fine text"), "subject": INVALID_UTF8.decode()},
    }
    docs = good_docs(GOOD)
    for offset, (name, doc) in enumerate(poison.items()):
        docs.insert(7 + 9 * offset, {**doc, "kind": name})  # interleaved with good ones
    await db.conversation_set.insert_many(docs)
    port = urlsplit(mongo_uri).port

    async with CorruptingProxy(port or 27017) as proxy:
        stats = await run_job(make_settings(mongodb_uri=proxy.uri, batch_size=10))

    assert stats.succeeded == GOOD + 1 and stats.failed == {"DATA": 2}
    failed = {
        doc["kind"]: doc["processing"]
        async for doc in db.conversation_set.find({"processing.status": "failed"})
    }
    assert set(failed) == {"text", "surrogate"}
    assert all(mark["category"] == "DATA" for mark in failed.values())
    assert re.search(r"UTF-8.*'messages\.0\.content'", failed["text"]["error"])
    assert re.search(r"UTF-8.*'messages\.0\.content'", failed["surrogate"]["error"])
    flagged = await db.conversation_set.find_one({"kind": "metadata"})
    result = await db.sentimental_analysis.find_one({"_id": flagged["_id"]})
    assert result["text"]["invalid_utf8_replaced"] == ["subject"]  # classified, and flagged
    assert await db.sentimental_analysis.count_documents({}) == GOOD + 1


ODD_VALUES: dict[str, Any] = {
    "int": 7,
    "float": 1.5,
    "nan": float("nan"),
    "bool": True,
    "null": None,
    "object": {"a": 1},
    "objectid": ObjectId(),
    "date": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    "binary": Binary(b"\x00\x01"),
    "decimal": Decimal128("1.5"),
    "regex": Regex("^a"),
    "list_of_ints": [1, 2, 3],
    "list_of_nulls": [None],
    "empty_list": [],
    "whitespace": "   \n\t ",
    "nested_lists": [[["deep"]]],
}


async def test_every_wrong_type_fails_with_a_data_reason(db: Any, make_settings: Any) -> None:
    """Text fields of every BSON type that is not text end failed DATA; the rest are stored."""
    odd = [{"messages": value, "kind": name} for name, value in ODD_VALUES.items()]
    odd.append({"kind": "missing"})
    odd.append({"messages": "ok", "subject": ObjectId(), "priority": float("inf"), "kind": "meta"})
    await db.conversation_set.insert_many(good_docs(GOOD) + odd)

    stats = await run_job(make_settings(batch_size=8))

    assert stats.succeeded == GOOD + 1  # odd metadata is carried, not fatal
    failed = [doc async for doc in db.conversation_set.find({"processing.status": "failed"})]
    assert len(failed) == len(odd) - 1
    assert all(doc["processing"]["category"] == "DATA" for doc in failed)
    assert all("messages" in doc["processing"]["error"] for doc in failed)
    assert await db.conversation_set.count_documents({"processing.status": None}) == 0


async def test_huge_texts_and_message_lists_are_truncated_and_classified(
    db: Any, make_settings: Any
) -> None:
    """A multi-megabyte text and a 100,000-message list are classified from their first part."""
    huge_text = "The app crashes when I open it. " * 100_000  # 3.2 MB
    many = [{"role": "customer", "content": f"message {i}"} for i in range(100_000)]
    await db.conversation_set.insert_many(
        [*good_docs(5), {"messages": huge_text}, {"messages": many}]
    )

    stats = await run_job(make_settings(batch_size=4, max_text_chars=20_000))

    assert stats.succeeded == 7 and stats.failed_total == 0
    cut = db.sentimental_analysis.find({"text.truncated": True})
    chars = sorted([doc["text"]["chars"] async for doc in cut])
    assert len(chars) == 2 and chars[0] > 20_000
