"""The offline classifier: deterministic, no network, no key; the default.

Sentiment comes from VADER (a validated lexicon for short social and support text), language
from py3langid (a pre-trained n-gram model), and category and urgency from the weighted cue
phrases of the support taxonomy (:mod:`.cues`). It is meant as a sound baseline and for running the
product with no LLM at all; the LLM classifier refines the same schema.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from batch_processor.classifiers.cues import CATEGORY_CUES, URGENCY_CUES
from batch_processor.classifiers.language import load_identifier
from batch_processor.classifiers.taxonomy import Taxonomy, load_taxonomy
from batch_processor.errors import ConfigurationError
from batch_processor.models import (
    Category,
    Classification,
    ClassifierOutput,
    Sentiment,
    SentimentLabel,
    Urgency,
)

#: Texts up to this length are classified in the event loop (1.5 ms at most); longer
#: ones in a worker thread.
INLINE_CHARS = 500
#: VADER scores texts up to this length whole; longer ones by chunks (see ``_compound``).
VADER_CHUNK = 500
#: Shorter texts are too short to tell their language: they get ``und`` (undetermined).
MIN_WORDS_FOR_LANGUAGE = 3


def _compile(phrases: Mapping[str, float] | tuple[str, ...]) -> list[tuple[re.Pattern[str], str]]:
    return [(re.compile(rf"\b{re.escape(p)}\b", re.IGNORECASE), p) for p in phrases]


class OfflineClassifier:
    """Deterministic classification with VADER, py3langid and the support taxonomy's cues."""

    name = "offline"
    version = "1.0"

    def __init__(self, taxonomy: Taxonomy | None = None) -> None:
        self.taxonomy = taxonomy or load_taxonomy()
        if set(self.taxonomy.categories) != {c.value for c in Category} or set(
            self.taxonomy.urgency
        ) != {u.value for u in Urgency}:
            raise ConfigurationError(
                "invalid setting taxonomy_file: the offline classifier knows only the labels of "
                "the default taxonomy; use the llm classifier for a custom taxonomy"
            )
        self._vader = SentimentIntensityAnalyzer()
        # Loaded now, not on the first document (see language.py for the cache that makes
        # this fast).
        self._language_model = load_identifier()
        # Long texts are classified in a thread, so the event loop never waits for them.
        self._pool = ThreadPoolExecutor(
            max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="offline-classifier"
        )
        self._category_cues = {
            category: [(pattern, phrase, cues[phrase]) for pattern, phrase in _compile(cues)]
            for category, cues in CATEGORY_CUES.items()
        }
        self._urgency_cues = {urgency: _compile(cues) for urgency, cues in URGENCY_CUES.items()}

    async def classify(self, text: str, metadata: Mapping[str, Any]) -> ClassifierOutput:
        """Classify one conversation; the same text always gets the same result.

        A typical message takes well under a millisecond and is classified in place; a long
        one (over ``INLINE_CHARS``) in a worker thread, so the event loop never blocks on it.
        """
        if len(text) <= INLINE_CHARS:
            return self.classify_now(text, metadata)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.classify_now, text, metadata)

    def classify_now(self, text: str, metadata: Mapping[str, Any]) -> ClassifierOutput:
        """Classify in the calling thread (see :meth:`classify`)."""
        sentiment = self._sentiment(text)
        category, confidence, themes = self._category(text, sentiment)
        classification = Classification(
            sentiment=sentiment,
            category=category.value,
            urgency=self._urgency(text, sentiment, metadata).value,
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

    def _compound(self, text: str) -> float:
        """VADER's compound score; long texts scored by chunks (VADER is superlinear in length).

        Chunks of about ``VADER_CHUNK`` characters, cut at sentence ends, are averaged by
        length: the time stays linear, and a 20,000-character text takes milliseconds.
        """
        if len(text) <= VADER_CHUNK:
            return float(self._vader.polarity_scores(text)["compound"])
        total, weight = 0.0, 0
        for chunk in _chunks(text, VADER_CHUNK):
            total += float(self._vader.polarity_scores(chunk)["compound"]) * len(chunk)
            weight += len(chunk)
        return total / weight if weight else 0.0

    def _sentiment(self, text: str) -> Sentiment:
        compound = self._compound(text)
        if compound >= 0.05:
            label = SentimentLabel.POSITIVE
        elif compound <= -0.05:
            label = SentimentLabel.NEGATIVE
        else:
            label = SentimentLabel.NEUTRAL
        return Sentiment(label=label, score=round(compound, 4))

    def _category(self, text: str, sentiment: Sentiment) -> tuple[Category, float, list[str]]:
        scores: dict[Category, float] = {}
        themes: list[str] = []
        for category, cues in self._category_cues.items():
            for pattern, phrase, weight in cues:
                if pattern.search(text):
                    scores[category] = scores.get(category, 0.0) + weight
                    themes.append(phrase)
        if sentiment.score <= -0.6:
            scores[Category.COMPLAINT] = scores.get(Category.COMPLAINT, 0.0) + 1.0
        if not scores:
            return Category.GENERAL_INQUIRY, 0.3, []
        # Ties go to the taxonomy's order, so the result never depends on dict iteration.
        order = list(Category)
        best = max(scores, key=lambda c: (scores[c], -order.index(c)))
        # Confidence grows with the winner's share of all cue weight and with its own strength.
        share = scores[best] / sum(scores.values())
        strength = min(1.0, scores[best] / 4)
        confidence = round(min(0.95, 0.4 + 0.6 * share * strength), 3)
        return best, confidence, sorted(set(themes))[:10]

    def _urgency(self, text: str, sentiment: Sentiment, metadata: Mapping[str, Any]) -> Urgency:
        for urgency in (Urgency.CRITICAL, Urgency.HIGH):
            if any(pattern.search(text) for pattern, _ in self._urgency_cues[urgency]):
                return urgency
        if str(metadata.get("priority", "")).lower() in {"high", "urgent"}:
            return Urgency.HIGH
        if sentiment.score <= -0.5 or text.count("!") >= 3:
            return Urgency.MEDIUM
        return Urgency.LOW if sentiment.label is not SentimentLabel.NEGATIVE else Urgency.MEDIUM

    def _language(self, text: str) -> str:
        if len(text.split()) < MIN_WORDS_FOR_LANGUAGE:
            return "und"
        code, _ = self._language_model.classify(text)
        return str(code) if re.fullmatch(r"[a-z]{2}", str(code)) else "und"


def _chunks(text: str, size: int) -> list[str]:
    """``text`` in pieces of about ``size`` characters, cut after a sentence end if possible."""
    pieces: list[str] = []
    start = 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            cut = max(text.rfind(mark, start + size // 2, end) for mark in (". ", "! ", "? ", "\n"))
            end = cut + 1 if cut > start else end
        piece = text[start:end].strip()
        if piece:
            pieces.append(piece)
        start = end
    return pieces
