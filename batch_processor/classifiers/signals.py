"""What the sentiment model reads besides words: VADER's scores and the support cue counts.

Shared by the offline classifier and the training script (``bench/train_sentiment.py``), so a
model is always applied to the same inputs it was trained on.
"""

from __future__ import annotations

import re

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from batch_processor.classifiers.cues import Cues, PhraseMatcher
from batch_processor.classifiers.sentiment_model import DenseInputs

#: VADER scores texts up to this length whole; longer ones by chunks (see ``vader_scores``).
VADER_CHUNK = 500
#: The domain prior counts at most this many complaint cues.
MAX_PRIOR_CUES = 3
_QUESTION_START = re.compile(
    r"^\W*(?:@\w+\s+)*(?:can|could|how|what|when|where|which|who|why|is|are|do|does|did|will|"
    r"would|should|any|anyone|may)\b",
    re.IGNORECASE,
)


class Signals:
    """Computes :class:`DenseInputs` for a text, and the support domain's prior over labels.

    One instance is shared by the classifier's threads: VADER's analyzer only reads its lexicon
    after construction, and the cue matchers are compiled regular expressions.
    """

    def __init__(self, cues: Cues) -> None:
        self._vader = SentimentIntensityAnalyzer()
        self._cues = cues
        self._topics = PhraseMatcher(
            phrase
            for category, phrases in cues.categories.items()
            if category != cues.complaint_category
            for phrase, weight in phrases.items()
            if weight > 0
        )

    def __call__(self, text: str) -> DenseInputs:
        """VADER's scores and the cue counts of one text."""
        compound, positive, negative = self.vader_scores(text)
        sarcastic = self._cues.sarcastic_thanks.count(text)
        return DenseInputs(
            vader_compound=compound,
            vader_positive=positive,
            vader_negative=negative,
            complaint_cues=self._cues.complaint.count(text) + sarcastic,
            praise_cues=self._cues.praise.count_unnegated(text),
            thanks=not sarcastic and self._cues.thanks.search(text),
            question="?" in text or _QUESTION_START.match(text) is not None,
            topic_cues=self._topics.count(text),
            request=self._cues.request.search(text),
            sarcastic=sarcastic > 0,
        )

    def prior(self, inputs: DenseInputs) -> tuple[float, float, float]:
        """What to add to the (negative, neutral, positive) logits for the support domain.

        The training text (forum comments, general tweets) rarely speaks the way support
        messages do, and the weights of the cue file's sentiment section say how:

        * ``complaint_weight`` per complaint cue (``MAX_PRIOR_CUES`` at most): complaints often
          carry no sentiment word ("still waiting", "on hold 45 minutes"); half as much in a
          question with a single cue ("is my flight delayed?" asks, it does not complain);
        * ``statement_weight``: a statement about a support topic that neither asks, requests,
          thanks nor praises ("the modem you replaced already dies every night") reports a
          problem;
        * ``sarcasm_weight``, moved from positive to negative: praise beside a complaint cue
          ("great, another delay") or sarcastic thanks ("thanks for nothing");
        * ``praise_weight`` to positive: praise with no complaint ("smooth check-in, on time");
        * ``request_weight`` from positive: politeness in a request ("I'd like to cancel,
          please") is not a sentiment;
        * ``neutral_weight``: the domain's label mix differs from the training text's.
        """
        weights = self._cues.sentiment_weights
        cues = min(inputs.complaint_cues, MAX_PRIOR_CUES)
        negative = weights.get("complaint_weight", 0.0) * cues
        if inputs.question and cues == 1:
            negative /= 2
        asks = inputs.question or inputs.request or inputs.thanks
        if inputs.topic_cues and not asks and not inputs.praise_cues:
            negative += weights.get("statement_weight", 0.0)
        positive = 0.0
        if inputs.sarcastic or (cues and inputs.praise_cues and not inputs.thanks):
            # Per praise word (two at most): "great ... love it" is twice as sarcastic.
            sarcasm = weights.get("sarcasm_weight", 0.0) * max(1, min(inputs.praise_cues, 2))
            negative += sarcasm
            positive -= sarcasm
        elif inputs.praise_cues and not inputs.question:
            positive += weights.get("praise_weight", 0.0)
        if inputs.request and not inputs.thanks and not inputs.praise_cues:
            positive -= weights.get("request_weight", 0.0)
        return negative, weights.get("neutral_weight", 0.0), positive

    def vader_scores(self, text: str) -> tuple[float, float, float]:
        """VADER's compound, positive and negative scores; long texts scored by chunks.

        VADER is superlinear in length: chunks of about ``VADER_CHUNK`` characters, cut at
        sentence ends, are averaged by length, so a 20,000-character text takes milliseconds.
        """
        pieces = [text] if len(text) <= VADER_CHUNK else _chunks(text, VADER_CHUNK)
        totals = [0.0, 0.0, 0.0]
        weight = 0
        for piece in pieces:
            scores = self._vader.polarity_scores(piece)
            for i, key in enumerate(("compound", "pos", "neg")):
                totals[i] += float(scores[key]) * len(piece)
            weight += len(piece)
        if not weight:
            return 0.0, 0.0, 0.0
        compound, positive, negative = (total / weight for total in totals)
        return compound, positive, negative


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
