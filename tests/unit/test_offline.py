"""The offline classifier: deterministic, valid, and sensible on typical support texts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from batch_processor.classifiers import OfflineClassifier, load_taxonomy
from batch_processor.classifiers.cues import PhraseMatcher
from batch_processor.conversation import Conversation, Roles
from batch_processor.errors import ConfigurationError
from batch_processor.models import Category, SentimentLabel, Trend, Urgency
from batch_processor.service.classifier_setup import build_classifier
from batch_processor.settings import Settings, load_settings


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("I was charged twice this month, please check my invoice.", Category.BILLING),
        ("The app crashes with an error every time I open it.", Category.TECHNICAL_ISSUE),
        ("I'm locked out of my account and the password reset fails.", Category.ACCOUNT_ACCESS),
        ("My package never arrived and the tracking is stuck.", Category.SHIPPING_DELIVERY),
        ("The item is defective, I want a refund.", Category.REFUND_RETURN),
        ("Please cancel my subscription.", Category.CANCELLATION),
        ("It would be great if you could add dark mode.", Category.FEATURE_REQUEST),
        ("What are your opening hours?", Category.GENERAL_INQUIRY),
    ],
)
async def test_categories_of_typical_requests(text: str, category: Category) -> None:
    """Typical requests land in their taxonomy category."""
    result = (await OfflineClassifier().classify(text, {})).classification
    assert result.category == category


async def test_sentiment_urgency_and_language() -> None:
    """Angry urgent English is negative and high urgency; Spanish is detected as es."""
    classifier = OfflineClassifier()
    angry = (
        await classifier.classify("This is terrible, I need this fixed immediately!", {})
    ).classification
    assert angry.sentiment.label is SentimentLabel.NEGATIVE and angry.sentiment.score < 0
    assert angry.urgency == Urgency.HIGH and angry.language == "en"
    happy = (
        await classifier.classify("Thanks a lot, everything works great now!", {})
    ).classification
    assert happy.sentiment.label is SentimentLabel.POSITIVE and happy.urgency == Urgency.LOW
    spanish = await classifier.classify("Hola, me cobraron dos veces este mes y necesito ayuda", {})
    assert spanish.classification.language == "es"
    fraud = await classifier.classify("My account was hacked and there are fraud charges", {})
    assert fraud.classification.urgency == Urgency.CRITICAL


async def test_same_text_same_result() -> None:
    """Two classifier instances give identical results for the same text."""
    text = "My router keeps dropping the connection, third time I write!"
    first = await OfflineClassifier().classify(text, {"priority": "normal"})
    second = await OfflineClassifier().classify(text, {"priority": "normal"})
    assert first == second


async def test_metadata_priority_raises_urgency() -> None:
    """A high-priority ticket is at least high urgency."""
    result = await OfflineClassifier().classify("Question about my plan", {"priority": "high"})
    assert result.classification.urgency == Urgency.HIGH


def test_offline_labels_are_the_default_taxonomy() -> None:
    """The offline classifier speaks the default taxonomy and stamps its version."""
    taxonomy = load_taxonomy()
    assert set(taxonomy.categories) == {c.value for c in Category}
    assert set(taxonomy.urgency) == {u.value for u in Urgency}
    assert OfflineClassifier().taxonomy.version == taxonomy.version


CUSTOM_TAXONOMY = """
name = "travel_desk"
version = "1"
[categories]
lost_luggage = "Bags that did not arrive."
schedule = "Delays and cancellations."
other = "Anything else."
[urgency]
normal = "No rush."
soon = "Today."
now = "At once."
"""

CUSTOM_CUES = """
fallback_category = "other"
[categories.lost_luggage]
"bag*" = 3
"suitcase" = 3
[categories.schedule]
"delay*" = 3
"cancel*" = 3
[urgency]
now = ["stranded"]
[sentiment]
complaint = ["delay*", "lost"]
complaint_weight = 1.5
"""


def _settings(tmp_path: Path, **values: Any) -> Settings:
    return load_settings({"batch_dir": tmp_path / "batches", **values}, environ={})


async def test_a_custom_taxonomy_runs_offline_with_its_cues_beside_it(tmp_path: Path) -> None:
    """NAME.cues.toml beside NAME.toml gives the offline classifier that taxonomy's labels."""
    taxonomy = tmp_path / "travel_desk.toml"
    taxonomy.write_text(CUSTOM_TAXONOMY)
    (tmp_path / "travel_desk.cues.toml").write_text(CUSTOM_CUES)
    classifier = build_classifier(_settings(tmp_path, taxonomy_file=taxonomy))
    try:
        bag = (await classifier.classify("my bag was lost, I am stranded", {})).classification
        other = (await classifier.classify("what a lovely morning", {})).classification
    finally:
        await classifier.aclose()
    assert (bag.category, bag.urgency, bag.sentiment.label.value) == (
        "lost_luggage",
        "now",
        "negative",
    )
    assert (other.category, other.urgency) == ("other", "normal")


def test_a_custom_taxonomy_without_cues_is_refused_with_the_fix(tmp_path: Path) -> None:
    """Without a cue file the start stops and says which file to write."""
    taxonomy = tmp_path / "travel_desk.toml"
    taxonomy.write_text(CUSTOM_TAXONOMY)
    with pytest.raises(ConfigurationError, match=r"taxonomy_file.*NAME\.cues\.toml beside"):
        build_classifier(_settings(tmp_path, taxonomy_file=taxonomy))


def test_cues_for_a_label_the_taxonomy_lacks_are_refused(tmp_path: Path) -> None:
    """The taxonomy is the one source of labels: a cue file naming another label stops the start."""
    taxonomy = tmp_path / "travel_desk.toml"
    taxonomy.write_text(CUSTOM_TAXONOMY)
    (tmp_path / "travel_desk.cues.toml").write_text(
        CUSTOM_CUES + '\n[categories.billing]\n"invoice" = 2\n'
    )
    with pytest.raises(ConfigurationError, match=r"travel_desk\.cues\.toml.*\['billing'\]"):
        build_classifier(_settings(tmp_path, taxonomy_file=taxonomy))


def test_cue_phrases_match_words_wildcards_and_numbers() -> None:
    """Cues match on word boundaries, `*` any ending, `#` a number; the longest cue wins."""
    matcher = PhraseMatcher(["cancel*", "on hold", "# hours", "return", "return flight", "app"])
    text = "Cancelled again, on hold for 3 hours; my return flight, the apple app"
    assert matcher.find(text) == ["cancel*", "on hold", "# hours", "return flight", "app"]


def _conversation(*turns: tuple[str, str]) -> Conversation:
    """A conversation of (role, text) turns, read with the default roles."""
    return Roles().conversation(turns)


async def test_a_closing_courtesy_does_not_outweigh_the_complaint() -> None:
    """A closing "ok thanks" leaves a complaining customer negative; the agent never counts."""
    conversation = _conversation(
        ("customer", "Third time I call about this bill, nobody can explain the charge."),
        ("agent", "Thank you so much for your patience, we truly appreciate you!"),
        ("customer", "ok thanks"),
    )
    result = (await OfflineClassifier().classify(conversation, {})).classification
    assert result.sentiment.label is SentimentLabel.NEGATIVE
    assert result.category == Category.BILLING


async def test_the_course_of_a_conversation_the_agent_turned_around() -> None:
    """Negative at the start, positive at the end: improving; one customer turn has no course."""
    classifier = OfflineClassifier()
    turned = _conversation(
        ("customer", "My package never arrived and nobody answers my emails, this is awful."),
        ("agent", "So sorry! A replacement is on its way by express."),
        ("customer", "It arrived this morning, perfect. Thank you so much, great help!"),
    )
    result = (await classifier.classify(turned, {})).classification
    assert (result.sentiment_start, result.sentiment_end, result.trend) == (
        SentimentLabel.NEGATIVE,
        SentimentLabel.POSITIVE,
        Trend.IMPROVING,
    )
    alone = (await classifier.classify("My package never arrived.", {})).classification
    assert (alone.sentiment_start, alone.sentiment_end, alone.trend) == (None, None, None)


async def test_two_neutral_turns_are_a_steady_conversation() -> None:
    """A question and an order number lean differently but neither is a verdict: steady."""
    conversation = _conversation(
        ("customer", "Does the large size come in blue?"),
        ("agent", "Let me check that for you."),
        ("customer", "Sure, the order number is 55231."),
    )
    result = (await OfflineClassifier().classify(conversation, {})).classification
    assert result.trend is Trend.STEADY


async def test_a_conversation_without_a_customer_turn_is_neutral() -> None:
    """Only agents spoke: no customer mood to read; the topic still comes from their words."""
    conversation = _conversation(
        ("agent", "Your refund for the returned jacket has been processed, we are thrilled!"),
    )
    result = (await OfflineClassifier().classify(conversation, {})).classification
    assert result.sentiment.label is SentimentLabel.NEUTRAL
    assert result.category == Category.REFUND_RETURN


async def test_a_long_chat_export_keeps_its_order_when_its_turns_are_joined() -> None:
    """Thousands of customer lines are scored in runs, in order: the course still reads."""
    angry = [("customer", "this is awful, still broken, I am furious")] * 600
    happy = [("customer", "works perfectly now, thank you so much, great help")] * 600
    result = (await OfflineClassifier().classify(_conversation(*angry, *happy), {})).classification
    assert result.trend is Trend.IMPROVING
    assert (result.sentiment_start, result.sentiment_end) == (
        SentimentLabel.NEGATIVE,
        SentimentLabel.POSITIVE,
    )
