"""The offline classifier: deterministic, no network, no key; the default.

Sentiment comes from a small trained linear model (:mod:`.sentiment_model`) that reads words,
VADER's scores and support cues together; language from py3langid (a pre-trained n-gram model);
category and urgency from the weighted cue phrases beside the taxonomy (:mod:`.cues`). It is a
sound baseline and the way to run the product with no LLM at all; the LLM classifier refines
the same schema. ``python -m bench.quality`` measures both on the same labelled set.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from batch_processor.classifiers.base import Classifier
from batch_processor.classifiers.cues import Cues, PhraseMatcher, load_cues
from batch_processor.classifiers.language import load_identifier
from batch_processor.classifiers.sentiment_model import LABELS, Prediction, SentimentModel
from batch_processor.classifiers.signals import Signals
from batch_processor.classifiers.taxonomy import Taxonomy, load_taxonomy
from batch_processor.conversation import Conversation
from batch_processor.errors import ConfigurationError
from batch_processor.models import (
    Classification,
    ClassifierOutput,
    Sentiment,
    SentimentLabel,
    trend_of,
)

#: Conversations with up to this much customer text in up to ``INLINE_TURNS`` turns are
#: classified in the event loop (under 2 ms); larger ones in a worker thread.
INLINE_CHARS = 200
INLINE_TURNS = 4
#: At most this many customer turns are scored one by one; more are joined into this many
#: runs of consecutive turns (a chat export of a thousand one-word lines costs as much as 24).
MAX_SCORED_TURNS = 24
#: Shorter texts are too short to tell their language: they get ``und`` (undetermined).
MIN_WORDS_FOR_LANGUAGE = 3
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_NOT_LANGUAGE = re.compile(r"https?://\S+|www\.\S+|[@#]\w+|\S*\d\S*")
_LANGUAGE_WORD = re.compile(r"[^\W\d_]{2,}|[^\W\d_\u0000-\u024f]")
#: A cue score at least this high names a specific topic, which beats the complaint category.
TOPIC_SCORE = 1.5
#: Above this probability of negative, a message without a topic is a complaint.
COMPLAINT_PROBABILITY = 0.45
#: A customer turn counts by the square root of its words, up to this many.
MAX_TURN_WORDS = 60
#: A courtesy turn ("ok thanks", "hi there") has at most this many words ...
COURTESY_WORDS = 5
#: ... and counts this share of its weight beside other customer turns.
COURTESY_SHARE = 0.1
_COURTESY = re.compile(
    r"^\W*(?:ok(?:ay)?|k|thanks?|thank you|thx|ty|cheers|bye|goodbye|hi|hello|hey|sure|"
    r"alright|all right|fine|great|cool|perfect|got it|will do|understood|noted|good morning|"
    r"good afternoon|good evening|yes|yeah|yep|no|nope)\b",
    re.IGNORECASE,
)


class OfflineClassifier(Classifier):
    """Deterministic classification with a trained sentiment model, py3langid and cues."""

    name = "offline"
    version = "3.0"

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
        #: The sentiment model in use: the shipped one, or a version the cascade learnt and
        #: promoted (swapped whole, so a classification in a thread reads one or the other).
        self.sentiment_model = SentimentModel.load()
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

    async def classify(
        self, conversation: Conversation | str, metadata: Mapping[str, Any]
    ) -> ClassifierOutput:
        """Classify one conversation's customer; the same conversation always gets the same result.

        A typical conversation takes about a millisecond and is classified in place; a long
        one (over ``INLINE_CHARS`` of customer text, or over ``INLINE_TURNS`` customer turns) in
        a worker thread, so the event loop never blocks on it.
        """
        return (await self.weigh(conversation, metadata))[0]

    async def weigh(
        self, conversation: Conversation | str, metadata: Mapping[str, Any]
    ) -> tuple[ClassifierOutput, Prediction]:
        """:meth:`assess`, in place or in a worker thread as :meth:`classify` decides."""
        conversation = Conversation.of(conversation)
        customer = conversation.customer
        if len(customer) <= INLINE_TURNS and sum(len(t.text) for t in customer) <= INLINE_CHARS:
            return self.assess(conversation, metadata)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.assess, conversation, metadata)

    def classify_now(
        self, conversation: Conversation | str, metadata: Mapping[str, Any]
    ) -> ClassifierOutput:
        """Classify in the calling thread (see :meth:`classify`).

        Only the customer's turns are read: each is scored on its own, and the conversation's
        sentiment is their weighted mean (:func:`course`), so a closing "ok thanks" does not
        outweigh the complaint before it. Category, urgency and language come from the
        customer's words. A conversation with no customer turn has no customer sentiment to
        read: it is neutral, its topic read from the agents' words.
        """
        return self.assess(conversation, metadata)[0]

    def assess(
        self, conversation: Conversation | str, metadata: Mapping[str, Any]
    ) -> tuple[ClassifierOutput, Prediction]:
        """:meth:`classify_now` and the sentiment model's verdict behind it (its probabilities).

        The confidence cascade (:mod:`batch_processor.cascade`) reads how sure the verdict is.
        """
        conversation = Conversation.of(conversation)
        model = self.sentiment_model
        turns = _runs([_encodable(turn.text) for turn in conversation.customer])
        if turns:
            predictions = [model.predict(t, self._signals, self._signals.prior) for t in turns]
            weights = turn_weights(turns, predictions)
            overall, start, end = course(predictions, weights)
        else:
            overall, start, end = Prediction("neutral", 0.0, (0.0, 1.0, 0.0)), None, None
            turns = _runs([_encodable(turn.text) for turn in conversation.turns])
            weights = [1.0] * len(turns)
        text = "\n".join(turns)
        sentiment = Sentiment(label=SentimentLabel(overall.label), score=overall.score)
        heaviest = max(weights)
        category, confidence, themes = self._category(
            turns, [(w / heaviest) ** 2 for w in weights], overall.probabilities[0]
        )
        starts = ends = trend = None
        if start is not None and end is not None:
            starts, ends = SentimentLabel(start.label), SentimentLabel(end.label)
            trend = trend_of(starts, ends, end.score - start.score)
        classification = Classification(
            sentiment=sentiment,
            category=category,
            urgency=self._urgency(text if conversation.customer else "", sentiment, metadata),
            language=self._language(text),
            confidence=confidence,
            themes=themes,
            sentiment_start=starts,
            sentiment_end=ends,
            trend=trend,
        )
        output = ClassifierOutput(
            classification=classification, taxonomy_version=self.taxonomy.version
        )
        return output, overall

    @property
    def signals(self) -> Signals:
        """The VADER scores and cue counts the sentiment model reads (shared with learning)."""
        return self._signals

    def summary(self) -> dict[str, Any]:
        """Nothing to add to the run summary."""
        return {}

    async def aclose(self) -> None:
        """Stop the worker threads."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _category(
        self, turns: Sequence[str], shares: Sequence[float], negative: float
    ) -> tuple[str, float, list[str]]:
        """The best-scoring category by cue weight; a complaint only without a specific topic.

        Each turn's cues count by its ``share`` (1 for the turn that says the most): an order
        number given in a follow-up does not turn a billing question into a delivery one.

        The complaint category means dissatisfaction *without a more specific topic*: a late
        refund is ``refund_return`` however angry. So it wins only when no other category
        scores ``TOPIC_SCORE``; a clearly negative message with no topic at all is a complaint.
        """
        scores: dict[str, float] = {}
        themes: list[str] = []
        for text, share in zip(turns, shares, strict=True):
            for phrase in self._category_matcher.find(text):
                for category, weight in self._category_owners[phrase]:
                    if weight > 0:
                        scores[category] = scores.get(category, 0.0) + weight * share
                        themes.append(_theme(phrase, text))
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


def customer_verdict(model: SentimentModel, signals: Signals, turns: Sequence[str]) -> Prediction:
    """The conversation's sentiment by ``model`` from its customer turns, as :meth:`assess` reads.

    How the cascade's learning judges a model version on the same terms as the classifier.
    """
    texts = _runs([_encodable(turn) for turn in turns])
    if not texts:
        return Prediction("neutral", 0.0, (0.0, 1.0, 0.0))
    predictions = [model.predict(t, signals, signals.prior) for t in texts]
    return course(predictions, turn_weights(texts, predictions))[0]


def turn_weights(turns: Sequence[str], predictions: Sequence[Prediction]) -> list[float]:
    """How much each customer turn says about the customer.

    A turn counts by its length (the square root of its words, so one long turn does not drown
    the rest) and by how much it says (from 1 for a neutral turn to 2 for a certain verdict); a
    short courtesy ("ok thanks", "hi") beside other turns counts ``COURTESY_SHARE`` as much,
    since it is politeness, not a verdict. (Chosen on the conversation-shaped dev sets of
    ``bench.quality``.)
    """
    weights = []
    for text, prediction in zip(turns, predictions, strict=True):
        words = len(text.split())
        weight = math.sqrt(min(max(words, 1), MAX_TURN_WORDS)) * (2.0 - prediction.probabilities[1])
        if len(turns) > 1 and words <= COURTESY_WORDS and _COURTESY.match(text):
            weight *= COURTESY_SHARE
        weights.append(weight)
    return weights


def course(
    predictions: Sequence[Prediction], weights: Sequence[float]
) -> tuple[Prediction, Prediction | None, Prediction | None]:
    """The customer's sentiment over the conversation, at its start and at its end.

    The overall sentiment is the mean of the turns' probabilities by their
    :func:`turn_weights`, so a closing "ok thanks" does not outweigh the complaint before it.
    The start and the end weigh the same turns halving with each turn away from the first or
    the last. Start and end are None for a single customer turn.
    """
    overall = _mean(predictions, weights)
    if len(predictions) == 1:
        return overall, None, None
    last = len(predictions) - 1
    # A turn with no verdict ("ok, waiting for your answer") does not move the start or the end:
    # each turn counts there by how sure it is of a sentiment.
    verdicts = [w * (1.0 - p.probabilities[1]) for w, p in zip(weights, predictions, strict=True)]
    start = _mean(predictions, [w * 0.5**i for i, w in enumerate(verdicts)])
    end = _mean(predictions, [w * 0.5 ** (last - i) for i, w in enumerate(verdicts)])
    return overall, start, end


def _mean(predictions: Sequence[Prediction], weights: Sequence[float]) -> Prediction:
    """The prediction of the weighted mean of the turns' probabilities."""
    total = sum(weights) or 1.0
    negative, neutral, positive = (
        sum(w * p.probabilities[k] for w, p in zip(weights, predictions, strict=True)) / total
        for k in range(3)
    )
    probabilities = (negative, neutral, positive)
    label = LABELS[max(range(3), key=probabilities.__getitem__)]
    return Prediction(
        label=label,
        score=round(max(-1.0, min(1.0, positive - negative)), 4),
        probabilities=(round(negative, 4), round(neutral, 4), round(positive, 4)),
    )


def _runs(turns: list[str]) -> list[str]:
    """``turns``, or at most ``MAX_SCORED_TURNS`` runs of consecutive turns joined, in order."""
    if len(turns) <= MAX_SCORED_TURNS:
        return turns
    size = math.ceil(len(turns) / MAX_SCORED_TURNS)
    return ["\n".join(turns[i : i + size]) for i in range(0, len(turns), size)]


def _encodable(text: str) -> str:
    """``text`` without lone surrogates, which cannot be hashed or identified.

    The pipeline never passes one (its codec replaces them); a library caller might.
    """
    if _SURROGATE.search(text):
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def _theme(phrase: str, text: str) -> str:
    """A theme as the customer wrote it: a cue stem (``compensat*``) becomes the word found."""
    if not phrase.endswith("*"):
        return phrase
    stem = phrase[:-1]
    found = re.search(rf"\b{re.escape(stem)}\w*", text, re.IGNORECASE)
    return found.group(0).lower() if found else stem


def _matcher(phrases: tuple[str, ...]) -> PhraseMatcher | None:
    """A :class:`PhraseMatcher` of the phrases, or None when there are none."""
    return PhraseMatcher(phrases) if phrases else None
