"""The offline classifier: deterministic, valid, and sensible on typical support texts."""

from __future__ import annotations

import pytest

from batch_processor.classifiers import OfflineClassifier, load_taxonomy
from batch_processor.models import Category, SentimentLabel, Urgency


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
