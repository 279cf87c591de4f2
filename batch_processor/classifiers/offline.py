"""The offline classifier: deterministic, no network, no key; the default.

Sentiment comes from a small trained linear model (:mod:`.sentiment_model`) that reads words,
VADER's scores and support cues together; language from py3langid (a pre-trained n-gram model);
category and urgency from the weighted cue phrases beside the taxonomy (:mod:`.cues`). It is a
sound baseline and the way to run the product with no LLM at all; the LLM classifier refines
the same schema. ``python -m bench.quality`` measures both on the same labelled set.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from batch_processor.classifiers.cues import Cues, PhraseMatcher, load_cues
from batch_processor.classifiers.language import load_identifier
from batch_processor.classifiers.sentiment_model import SentimentModel
from batch_processor.classifiers.signals import Signals
from batch_processor.classifiers.taxonomy import Taxonomy, load_taxonomy
from batch_processor.errors import ConfigurationError
from batch_processor.models import (
    Classification,
    ClassifierOutput,
    Sentiment,
    SentimentLabel,
)

#: Texts up to this length are classified in the event loop (under 2 ms); longer ones
#: in a worker thread.
INLINE_CHARS = 200
#: Shorter texts are too short to tell their language: they get ``und`` (undetermined).
MIN_WORDS_FOR_LANGUAGE = 3
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_NOT_LANGUAGE = re.compile(r"https?://\S+|www\.\S+|[@#]\w+|\S*\d\S*")
_LANGUAGE_WORD = re.compile(r"[^\W\d_]{2,}|[^\W\d_\u0000-\u024f]")
#: A cue score at least this high names a specific topic, which beats the complaint category.
TOPIC_SCORE = 1.5
#: Above this probability of negative, a message without a topic is a complaint.
COMPLAINT_PROBABILITY = 0.45


class OfflineClassifier:
    """Deterministic classification with a trained sentiment model, py3langid and cues."""

    name = "offline"
    version = "2.0"

    def __init__(self, taxonomy: Taxonomy | None = None, cues: Cues | None = None) -> None:
        self.taxonomy = taxonomy or load_taxonomy()
        if cues is None:
            default = load_taxonomy()
            if (set(self.taxonomy.categories), set(self.taxonomy.urgency)) != (
                set(default.categories),
                set(default.urgency),
            ):
                raise ConfigurationError(
                    "invalid setting taxonomy_file: the offline classifier needs cues for a "
                    "custom taxonomy: write NAME.cues.toml beside NAME.toml (copy "
                    "customer_support.cues.toml and edit it), or use the llm classifier"
                )
            cues = load_cues(
                None, categories=self.taxonomy.categories, urgency=self.taxonomy.urgency
            )
        self.cues = cues
        self._signals = Signals(cues)
        self._model = SentimentModel.load()
        # Loaded now, not on the first document (see language.py for the cache that makes
        # this fast).
        self._language_model = load_identifier()
        # Long texts are classified in a thread, so the event loop never waits for them.
        self._pool = ThreadPoolExecutor(
            max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="offline-classifier"
        )
        self._category_matcher, self._category_owners = cues.category_matcher()
        # Urgency levels from the most urgent down (the taxonomy lists them least urgent first).
        self._levels = list(self.taxonomy.urgency)
        self._urgency_cues = [
            (level, matcher)
            for level in reversed(self._levels)
            for matcher in [_matcher(cues.urgency.get(level, ()))]
            if matcher is not None
        ]

    async def classify(self, text: str, metadata: Mapping[str, Any]) -> ClassifierOutput:
        """Classify one conversation; the same text always gets the same result.

        A typical message takes under a millisecond and is classified in place; a long
        one (over ``INLINE_CHARS``) in a worker thread, so the event loop never blocks on it.
        """
        if len(text) <= INLINE_CHARS:
            return self.classify_now(text, metadata)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.classify_now, text, metadata)

    def classify_now(self, text: str, metadata: Mapping[str, Any]) -> ClassifierOutput:
        """Classify in the calling thread (see :meth:`classify`)."""
        if _SURROGATE.search(text):
            # A lone surrogate cannot be encoded (hashing, language identification): the
            # pipeline never passes one (its codec replaces them), a library caller might.
            text = text.encode("utf-8", "replace").decode("utf-8")
        prediction = self._model.predict(text, self._signals, self._signals.prior)
        sentiment = Sentiment(label=SentimentLabel(prediction.label), score=prediction.score)
        negative = prediction.probabilities[0]
        category, confidence, themes = self._category(text, negative)
        classification = Classification(
            sentiment=sentiment,
            category=category,
            urgency=self._urgency(text, sentiment, metadata),
            language=self._language(text),
            confidence=confidence,
            themes=themes,
        )
        return ClassifierOutput(
            classification=classification, taxonomy_version=self.taxonomy.version
        )

    def summary(self) -> dict[str, Any]:
        """Nothing to add to the run summary."""
        return {}

    async def aclose(self) -> None:
        """Stop the worker threads."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _category(self, text: str, negative: float) -> tuple[str, float, list[str]]:
        """The best-scoring category by cue weight; a complaint only without a specific topic.

        The complaint category means dissatisfaction *without a more specific topic*: a late
        refund is ``refund_return`` however angry. So it wins only when no other category
        scores ``TOPIC_SCORE``; a clearly negative message with no topic at all is a complaint.
        """
        scores: dict[str, float] = {}
        themes: list[str] = []
        for phrase in self._category_matcher.find(text):
            for category, weight in self._category_owners[phrase]:
                if weight > 0:
                    scores[category] = scores.get(category, 0.0) + weight
                    themes.append(phrase)
        complaint = self.cues.complaint_category
        if complaint is not None:
            topics = {c: s for c, s in scores.items() if c != complaint}
            if topics and max(topics.values()) >= TOPIC_SCORE:
                scores = topics
            elif negative >= COMPLAINT_PROBABILITY:
                scores[complaint] = scores.get(complaint, 0.0) + 2.0 * negative
        if not scores:
            return self.cues.fallback_category, 0.3, []
        # Ties go to the taxonomy's order, so the result never depends on dict iteration.
        order = list(self.taxonomy.categories)
        best = max(scores, key=lambda c: (scores[c], -order.index(c)))
        # Confidence grows with the winner's share of all cue weight and with its own strength.
        share = scores[best] / sum(scores.values())
        strength = min(1.0, scores[best] / 4)
        confidence = round(min(0.95, 0.4 + 0.6 * share * strength), 3)
        return best, confidence, sorted(set(themes))[: self.taxonomy.max_themes]

    def _urgency(self, text: str, sentiment: Sentiment, metadata: Mapping[str, Any]) -> str:
        """Cue levels first (most urgent wins); then priority metadata; then the tone.

        The taxonomy lists levels least urgent first: a high-priority ticket gets the
        second-most urgent level, a negative or shouting one the second level, others the
        first.
        """
        for level, matcher in self._urgency_cues:
            if matcher.search(text):
                return level
        if str(metadata.get("priority", "")).lower() in {"high", "urgent"}:
            return self._levels[-2]
        if sentiment.label is SentimentLabel.NEGATIVE or text.count("!") >= 3:
            return self._levels[1]
        return self._levels[0]

    def _language(self, text: str) -> str:
        # Mentions, links and numbers say nothing of the language ("@a @b @c" is not German).
        cleaned = _NOT_LANGUAGE.sub(" ", text)
        if len(_LANGUAGE_WORD.findall(cleaned)) < MIN_WORDS_FOR_LANGUAGE:
            return "und"
        code, _ = self._language_model.classify(cleaned)
        return str(code) if re.fullmatch(r"[a-z]{2}", str(code)) else "und"


def _matcher(phrases: tuple[str, ...]) -> PhraseMatcher | None:
    """A :class:`PhraseMatcher` of the phrases, or None when there are none."""
    return PhraseMatcher(phrases) if phrases else None
