"""Near-miss, malformed and out-of-enum replies: repaired where obvious, re-asked otherwise."""

from __future__ import annotations

import json
from typing import Any

import pytest

from batch_processor.classifiers import load_taxonomy
from batch_processor.llm.reply import read_reply
from batch_processor.service.runner import run_job
from batch_processor.testing.simulator import Simulator, SimulatorConfig

from ..conftest import conversation

TAXONOMY = load_taxonomy()
DOCS = 300


def texts(n: int) -> list[str]:
    """Distinct support texts (no dedupe hits)."""
    return [f"Order {i} arrived damaged, I want a refund (ticket {i * 13})." for i in range(n)]


async def run_against(db: Any, make_settings: Any, config: SimulatorConfig) -> tuple[Any, Any]:
    """Seed, classify through the simulator; return the stats and the simulator's counters."""
    await db.conversation_set.insert_many([conversation(t) for t in texts(DOCS)])
    async with Simulator(config) as sim:
        settings = make_settings(
            classifier="llm", llm_base_url=sim.base_url, concurrent=16, batch_size=50
        )
        stats = await run_job(settings)
        return stats, sim.stats


async def test_thirty_percent_near_misses_are_repaired_not_reasked(
    db: Any, make_settings: Any
) -> None:
    """30 % near misses ("English", 8 themes, score 1.5): ≤ 1.02 requests a result, none queued."""
    config = SimulatorConfig(latency=0.005, jitter=0.002, near_miss_rate=0.3, seed=7)
    stats, counters = await run_against(db, make_settings, config)

    assert stats.succeeded == DOCS and stats.queued_classify == 0
    assert counters["near_miss"] >= DOCS // 5
    assert counters["requests"] / DOCS <= 1.02
    repaired = await db.sentimental_analysis.count_documents({"repairs.0": {"$exists": True}})
    assert repaired == counters["near_miss"]
    async for result in db.sentimental_analysis.find({}):
        classification = result["classification"]
        assert len(classification["language"]) == 2 or classification["language"] == "und"
        assert len(classification["themes"]) <= TAXONOMY.max_themes
        assert -1 <= classification["sentiment"]["score"] <= 1
        assert classification["category"] in TAXONOMY.categories
    assert stats.classifier["replies_repaired"] == repaired


@pytest.mark.parametrize("kind", ["malformed", "out_of_enum"])
async def test_unrepairable_replies_are_reasked_and_never_stored_invalid(
    db: Any, make_settings: Any, kind: str
) -> None:
    """Not JSON, or a label outside the taxonomy: asked again; nothing invalid is stored."""
    config = SimulatorConfig(latency=0.005, jitter=0.002, seed=3)
    setattr(config, f"{kind}_rate", 0.3)
    stats, counters = await run_against(db, make_settings, config)

    queued = stats.queued_classify
    assert stats.succeeded + queued == DOCS
    assert counters["requests"] > DOCS  # the bad ones were asked again
    async for result in db.sentimental_analysis.find({}):
        assert result["classification"]["category"] in TAXONOMY.categories


def test_schema_sent_carries_every_bound_the_validator_enforces() -> None:
    """The strict schema states the language pattern and the numeric and list bounds."""
    schema = TAXONOMY.json_schema()["properties"]
    assert schema["language"]["pattern"] == "^([a-z]{2}|und)$"
    assert schema["themes"]["maxItems"] == TAXONOMY.max_themes
    assert (
        schema["sentiment"]["properties"]["score"]["minimum"],
        schema["sentiment"]["properties"]["score"]["maximum"],
    ) == (-1, 1)
    assert (schema["confidence"]["minimum"], schema["confidence"]["maximum"]) == (0, 1)


@pytest.mark.parametrize(
    ("field", "given", "expected"),
    [
        ("language", "English", "en"),
        ("language", "EN", "en"),
        ("language", "en-US", "en"),
        ("language", "pt_BR", "pt"),
        ("language", "Deutsch", "de"),
        ("language", "eng", "en"),
        ("language", "Klingon", "und"),
        ("category", "Technical Issue", "technical_issue"),
        ("urgency", "HIGH", "high"),
        ("confidence", 85, 0.85),
        ("confidence", 1.7, 1.0),
    ],
)
def test_near_misses_are_repaired_to_the_obvious_value(
    field: str, given: Any, expected: Any
) -> None:
    """Each near miss has one obvious reading; the reply keeps its other fields."""
    reply = {
        "category": "billing",
        "sentiment": {"label": "negative", "score": -0.5},
        "urgency": "low",
        "emotion": "anger",
        "language": "en",
        "themes": ["refund"],
        "summary": "Wants a refund.",
        "confidence": 0.9,
    }
    classification, repairs = read_reply(TAXONOMY, json.dumps({**reply, field: given}))
    assert getattr(classification, field) == expected
    assert repairs == ([field] if given != expected else [])
