"""Priorities: high before normal before low, a late high-priority document overtakes a backlog."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from batch_processor.classifiers.base import Classifier
from batch_processor.conversation import Conversation
from batch_processor.models import ClassifierOutput
from batch_processor.service.runner import run_job
from batch_processor.testing.fakes import neutral_classification

from .conftest import conversation


class SlowClassifier(Classifier):
    """Takes ``seconds`` per call and records the texts in call order; may insert a document."""

    name = "slow"
    version = "1"

    def __init__(self, seconds: float, on_call: Any = None) -> None:
        self.seconds = seconds
        self.on_call = on_call
        self.calls: list[str] = []

    async def classify(
        self, conversation: Conversation | str, metadata: Mapping[str, Any]
    ) -> ClassifierOutput:
        """Record the call, run the hook, wait, answer neutral."""
        text = Conversation.of(conversation).customer_text
        self.calls.append(text)
        if self.on_call is not None:
            await self.on_call(len(self.calls))
        await asyncio.sleep(self.seconds)
        return ClassifierOutput(classification=neutral_classification())

    def summary(self) -> dict[str, Any]:
        """Nothing to add."""
        return {}

    async def aclose(self) -> None:
        """Nothing to release."""


async def test_high_priority_goes_first_and_bad_values_count_as_normal(
    db: Any, make_settings: Any
) -> None:
    """Levels are taken high, normal, low; invalid values are normal and counted, never errors."""
    values: dict[str, list[Any]] = {
        "high": [9, "high", "HIGH", 9.0],
        "normal": [5, "normal", None, "missing"],
        "invalid": ["urgent", 7, True, {"level": 1}, "hi gh"],
        "low": [1, "low", "Low"],
    }
    docs = []
    for kind, kind_values in values.items():
        for index, value in enumerate(kind_values):
            doc = conversation(f"{kind} {index}")
            if value != "missing":
                doc["priority"] = value
            docs.append(doc)
    await db.conversation_set.insert_many(list(reversed(docs)))  # insertion order is no hint
    classifier = SlowClassifier(0.0)
    settings = make_settings(batch_size=3, concurrent=1, priority_fairness=0)

    stats = await run_job(settings, classifier=classifier)

    assert stats.succeeded == len(docs) and stats.failed_total == 0
    assert stats.invalid_priority == len(values["invalid"])
    kinds = [text.split()[0] for text in classifier.calls]  # the customer's "high 0"
    high, low = len(values["high"]), len(values["low"])
    assert set(kinds[:high]) == {"high"}
    assert set(kinds[high:-low]) == {"normal", "invalid"}
    assert set(kinds[-low:]) == {"low"}


async def test_a_high_priority_insert_overtakes_a_low_priority_backlog(
    db: Any, make_settings: Any
) -> None:
    """Inserted while a backlog of 80 low documents is worked, it is classified within pages."""
    await db.conversation_set.insert_many(
        [{**conversation(f"low {i}"), "priority": "low"} for i in range(80)]
    )
    inserted_at: list[int] = []

    async def insert_urgent(call: int) -> None:
        if call == 10:
            urgent = {**conversation("urgent: my account was hacked"), "priority": 9}
            await db.conversation_set.insert_one(urgent)
            inserted_at.append(call)

    classifier = SlowClassifier(0.3, on_call=insert_urgent)
    settings = make_settings(batch_size=10, concurrent=4)

    stats = await run_job(settings, classifier=classifier)

    assert stats.succeeded == 81
    position = next(i for i, text in enumerate(classifier.calls, 1) if "hacked" in text)
    # The page in progress, the page read ahead, and a page per check (at most one a second):
    # far ahead of the 70 low documents still waiting when it arrived.
    assert inserted_at == [10] and position <= 10 + 4 * 10


async def test_the_priority_index_serves_the_high_and_low_pages(
    db: Any, make_settings: Any
) -> None:
    """explain(): the level pages and the overtake check use {status, priority, _id}."""
    await db.conversation_set.insert_many(
        [{**conversation(f"m {i}"), "priority": ["high", 5, "low"][i % 3]} for i in range(30)]
    )
    await run_job(make_settings(batch_size=1000), classifier=SlowClassifier(0.0))
    await db.conversation_set.update_many({}, {"$set": {"processing.status": None}})
    for level in ([9, "high", "High", "HIGH"], [1, "low", "Low", "LOW"]):
        query = {"processing.status": None, "priority": {"$in": level}}
        plan = await db.conversation_set.find(query).sort("_id", 1).explain()
        assert "bp_status_priority_id" in str(plan["queryPlanner"]["winningPlan"])
