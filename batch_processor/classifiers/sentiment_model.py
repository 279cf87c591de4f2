"""The offline sentiment model: a small linear model over hashed words, VADER and support cues.

VADER alone reads a support message by its sentiment words, and support text often has none:
"flight delayed 3 hours and no one at the gate" is a complaint, "can I change my seat?" a
neutral question. This model is a multinomial logistic regression over

* hashed word unigrams and bigrams, with the words after a negation marked (``neg_good``),
  ``@mentions``, links and numbers normalised, emoji and emoticons kept as words;
* VADER's scores, so the lexicon's knowledge is one feature among the others;
* the support cues of :mod:`.cues` (complaint, thanks, question), which carry what the
  training text rarely says but support traffic always does.

It is trained by ``bench/train_sentiment.py`` on human-labelled public data whose licences
allow it (``bench/data/DATA.md`` lists them), and shipped as ``sentiment_model.npz``: 1.4 MB,
read once at start, deterministic (features are hashed with CRC-32, never Python's salted
``hash``), and about 0.3 ms per typical message with its inputs.

:func:`tokens`, :func:`word_features` and :func:`dense_features` are shared by training and
prediction, so the two can never disagree.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import numpy.typing as npt

#: Labels in the order of the model's columns.
LABELS = ("negative", "neutral", "positive")
#: Hashed word features; the dense features follow them.
HASH_BITS = 18
HASH_SIZE = 1 << HASH_BITS
MODEL_FILE = "sentiment_model.npz"
#: Bumped whenever :func:`features` changes: a model trained on other features is refused.
FEATURES_VERSION = 1

_URL = re.compile(r"https?://\S+|www\.\S+", re.IGNORECASE)
_MENTION = re.compile(r"@\w+")
_NUMBER = re.compile(r"\d+(?:[.,:]\d+)*")
_ELONGATED = re.compile(r"([a-z])\1{2,}", re.IGNORECASE)
_EMOTICON = r"[:;=8][\-o*']?[)\](\[dDpP/\\|]|[)\](\[dDpP/\\|][\-o*']?[:;=8]|<3"
_TOKEN = re.compile(
    rf"({_EMOTICON})|(@?[a-z0-9_]+(?:'[a-z]+)?)|([!?]+)|([^\s\w.,;:\"'()\[\]{{}}\-/\\*&%$#])",
    re.IGNORECASE,
)
_NEGATIONS = frozenset(
    [
        "not",
        "no",
        "never",
        "nothing",
        "nobody",
        "none",
        "nowhere",
        "neither",
        "nor",
        "cannot",
        "cant",
        "can't",
        "dont",
        "don't",
        "doesnt",
        "doesn't",
        "didnt",
        "didn't",
        "isnt",
        "isn't",
        "wasnt",
        "wasn't",
        "arent",
        "aren't",
        "werent",
        "weren't",
        "wont",
        "won't",
        "wouldnt",
        "wouldn't",
        "shouldnt",
        "shouldn't",
        "couldnt",
        "couldn't",
        "havent",
        "haven't",
        "hasnt",
        "hasn't",
        "hadnt",
        "hadn't",
        "aint",
        "ain't",
        "without",
    ]
)
#: A negation marks at most this many following words (up to a punctuation mark).
_NEGATION_SCOPE = 3
#: Longer words also count by their first this many letters (a crude stem).
_STEM = 6


@dataclass(frozen=True)
class DenseInputs:
    """The per-message numbers besides the words: VADER's scores and the support cue counts."""

    vader_compound: float
    vader_positive: float
    vader_negative: float
    complaint_cues: int
    praise_cues: int
    thanks: bool
    question: bool
    #: Category cue matches (a support topic is named); read by the domain prior only.
    topic_cues: int = 0
    #: The message asks for something ("please", "I'd like to"); read by the domain prior only.
    request: bool = False
    #: Thanks that mean the opposite ("thanks for nothing"); read by the domain prior only.
    sarcastic: bool = False


#: Names of the dense features, in column order after the hashed words.
DENSE_NAMES = (
    "bias",
    "vader_compound",
    "vader_positive",
    "vader_negative",
    "vader_says_positive",
    "vader_says_negative",
    "complaint_cues",
    "complaint_and_praise",
    "thanks",
    "question",
    "exclamations",
    "short",
)
DIMENSION = HASH_SIZE + len(DENSE_NAMES)


def tokens(text: str) -> list[str]:
    """Lower-cased words, emoji, emoticons and ``!``/``?`` runs; mentions, links, numbers folded."""
    text = _URL.sub(" url ", text)
    text = _MENTION.sub(" @user ", text)
    text = _NUMBER.sub(" 0 ", text)
    text = _ELONGATED.sub(r"\1\1", text)  # "sooooo" and "soooo" are one word: "soo"
    out: list[str] = []
    for emoticon, word, marks, symbol in _TOKEN.findall(text):
        if emoticon:
            out.append(emoticon.lower())
        elif word:
            out.append(word.lower())
        elif marks:
            out.append(marks[0] * min(len(marks), 2))
        elif symbol and not symbol.isspace():
            out.append(symbol)
    return out


def _hash(feature: str) -> int:
    return zlib.crc32(feature.encode("utf-8")) & (HASH_SIZE - 1)


def word_features(words: Sequence[str]) -> set[int]:
    """Hashed indices of the unigrams, stems, bigrams and negation-marked words of a message."""
    found: set[int] = set()
    negated = 0
    previous = "<s>"
    for word in words:
        alphabetic = word[0].isalnum() or word[0] == "@"
        if negated and alphabetic:
            found.add(_hash("neg_" + word))
            negated -= 1
        elif not alphabetic:
            negated = 0
        else:
            found.add(_hash(word))
            if len(word) > _STEM:
                # The word's start stands for its family: disappoint(ed|ing|ment).
                found.add(_hash("stem_" + word[:_STEM]))
        if word in _NEGATIONS:
            negated = _NEGATION_SCOPE
        found.add(_hash(previous + " " + word))
        previous = word
    found.add(_hash(previous + " </s>"))
    return found


def dense_features(inputs: DenseInputs, words: Sequence[str]) -> list[float]:
    """The dense feature values, in the order of :data:`DENSE_NAMES`."""
    compound = inputs.vader_compound
    complaints = min(inputs.complaint_cues, 3)
    exclamations = sum(1 for word in words if word.startswith("!"))
    return [
        1.0,
        compound,
        inputs.vader_positive,
        inputs.vader_negative,
        1.0 if compound >= 0.05 else 0.0,
        1.0 if compound <= -0.05 else 0.0,
        float(complaints),
        1.0 if complaints and (inputs.praise_cues or compound >= 0.3) else 0.0,
        1.0 if inputs.thanks else 0.0,
        1.0 if inputs.question else 0.0,
        float(min(exclamations, 3)),
        1.0 if len(words) <= 4 else 0.0,
    ]


@dataclass(frozen=True)
class Prediction:
    """The model's verdict on one message."""

    label: str
    #: P(positive) - P(negative): -1 very negative .. 1 very positive.
    score: float
    probabilities: tuple[float, float, float]


class SentimentModel:
    """The trained weights and how to apply them (see the module docstring)."""

    def __init__(self, weights: npt.NDArray[np.float32], bias: npt.NDArray[np.float32]) -> None:
        if weights.shape != (DIMENSION, len(LABELS)):
            raise ValueError(
                f"sentiment model has shape {weights.shape}, expected {(DIMENSION, len(LABELS))}"
            )
        self._weights = weights
        self._bias = bias

    @classmethod
    def load(cls, path: Path | None = None) -> SentimentModel:
        """The model shipped with the package, or one at ``path``."""
        source = path or resources.files(__package__).joinpath(MODEL_FILE)
        with source.open("rb") as handle, np.load(handle, allow_pickle=False) as data:
            version = int(data["features_version"])
            if version != FEATURES_VERSION:
                raise ValueError(
                    f"sentiment model was trained on features version {version}, "
                    f"this code computes version {FEATURES_VERSION}: train it again"
                )
            weights = np.zeros((DIMENSION, len(LABELS)), dtype=np.float32)
            weights[data["rows"]] = data["values"].astype(np.float32)
            return cls(weights, data["bias"].astype(np.float32))

    def save(self, path: Path) -> None:
        """Write the model: only the rows with a weight, as float16 (about 1 MB)."""
        rows = np.flatnonzero(np.abs(self._weights).max(axis=1) >= 1e-4).astype(np.int32)
        np.savez_compressed(
            path,
            features_version=np.int32(FEATURES_VERSION),
            rows=rows,
            values=self._weights[rows].astype(np.float16),
            bias=self._bias,
        )

    def predict(
        self,
        text: str,
        dense: Callable[[str], DenseInputs],
        prior: Callable[[DenseInputs], Sequence[float]] | None = None,
    ) -> Prediction:
        """Classify one message.

        ``dense`` computes its VADER scores and cue counts; ``prior``, if given, adds to each
        label's logit what the support domain knows and the training text did not say (see
        :meth:`batch_processor.classifiers.signals.Signals.prior`).
        """
        return verdict(self.logits(encode(text, dense, prior)))

    def logits(self, encoded: Encoded) -> npt.NDArray[np.float32]:
        """The label scores (before the softmax) of an :func:`encode`-d message."""
        logits = (
            self._weights[encoded.rows].sum(axis=0)
            + self._bias
            + encoded.dense @ self._weights[HASH_SIZE:]
        )
        result: npt.NDArray[np.float32] = logits + encoded.prior
        return result

    def adjusted(
        self, rows: npt.NDArray[np.int64], change: npt.NDArray[np.float32]
    ) -> SentimentModel:
        """A copy whose weights of ``rows`` (hashed words, then dense features) add ``change``.

        How a learnt version is built: the shipped model plus what the LLM's answers taught.
        """
        weights = self._weights.copy()
        weights[rows] += change.astype(np.float32)
        return SentimentModel(weights, self._bias)


@dataclass(frozen=True)
class Encoded:
    """A message as the model reads it: its hashed word rows, dense values and domain prior."""

    rows: list[int]
    dense: npt.NDArray[np.float32]
    prior: npt.NDArray[np.float32]


def encode(
    text: str,
    dense: Callable[[str], DenseInputs],
    prior: Callable[[DenseInputs], Sequence[float]] | None = None,
) -> Encoded:
    """``text``'s features, shared by prediction and the cascade's learning."""
    words = tokens(text)
    inputs = dense(text)
    return Encoded(
        rows=sorted(word_features(words)),
        dense=np.asarray(dense_features(inputs, words), dtype=np.float32),
        prior=np.asarray(prior(inputs) if prior is not None else (0.0,) * len(LABELS),
                         dtype=np.float32),
    )  # fmt: skip


def verdict(logits: npt.NDArray[np.float32]) -> Prediction:
    """The prediction of a message's label scores."""
    exp = np.exp(logits - logits.max())
    probabilities = exp / exp.sum()
    best = int(np.argmax(probabilities))
    negative, neutral, positive = (float(p) for p in probabilities)
    score = positive - negative
    return Prediction(
        label=LABELS[best],
        score=0.0 if math.isnan(score) else round(score, 4),
        probabilities=(round(negative, 4), round(neutral, 4), round(positive, 4)),
    )
