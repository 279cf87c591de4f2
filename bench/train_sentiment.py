"""Train the offline sentiment model (``batch_processor/classifiers/sentiment_model.npz``).

    python -m bench.train_sentiment --goemotions DIR --tweeteval DIR [--out PATH]

``--goemotions`` is the sentiment-grouped GoEmotions release (``train.tsv``, ``dev.tsv``),
``--tweeteval`` TweetEval's ``datasets/sentiment`` directory; ``bench/data/DATA.md`` says where
each comes from and under which licence. The held-out data the project is judged on (the Twitter
US Airline Sentiment corpus, the UCI sentiment-labelled sentences) is never read here.

A multinomial logistic regression, trained with full-batch Adam in numpy: deterministic (fixed
order, no sampling), about ten minutes on two cores. TweetEval's ``test`` split is used for
training except a fixed 15 % kept for choosing the regularisation; its ``val`` split and
GoEmotions' ``test`` split are never trained on: they are the development set
(``bench/quality.py``).
"""

from __future__ import annotations

import argparse
import sys
import time
import zlib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from batch_processor.classifiers.cues import load_cues
from batch_processor.classifiers.sentiment_model import (
    DIMENSION,
    HASH_SIZE,
    LABELS,
    MODEL_FILE,
    SentimentModel,
    dense_features,
    tokens,
    word_features,
)
from batch_processor.classifiers.signals import Signals
from batch_processor.classifiers.taxonomy import load_taxonomy
from bench.sentiment_data import DATA_DIR, Example, read_goemotions, read_tsv, read_tweeteval

MODEL_PATH = Path(__file__).parents[1] / "batch_processor" / "classifiers" / MODEL_FILE
#: The share of the training weight of the project's own support messages: enough for the
#: domain's words to count, little enough that 300 messages cannot be learnt by heart.
SUPPORT_SHARE = 0.15


class Matrix:
    """Examples as a sparse hashed-word part (CSR) and a dense part, with their labels."""

    def __init__(self, examples: Sequence[Example], signals: Signals) -> None:
        starts = [0]
        columns: list[int] = []
        dense: list[list[float]] = []
        for example in examples:
            words = tokens(example.text)
            columns.extend(sorted(word_features(words)))
            starts.append(len(columns))
            dense.append(dense_features(signals(example.text), words))
        self.starts = np.asarray(starts, dtype=np.int64)
        self.columns = np.asarray(columns, dtype=np.int64)
        self.rows = np.repeat(np.arange(len(examples)), np.diff(self.starts))
        self.dense = np.asarray(dense, dtype=np.float64)
        self.labels = np.asarray([LABELS.index(e.sentiment) for e in examples])
        self.sources = [e.source for e in examples]

    def __len__(self) -> int:
        return len(self.labels)

    def logits(self, weights: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Class scores for every example (without the softmax)."""
        # Every row has at least its end-of-text bigram, so no reduceat segment is empty.
        hashed = np.add.reduceat(weights[self.columns], self.starts[:-1], axis=0)
        return hashed + self.dense @ weights[HASH_SIZE:]

    def gradient(self, error: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """X^T error: the gradient of the loss for per-example errors (n x classes)."""
        grad = np.zeros((DIMENSION, len(LABELS)))
        for k in range(len(LABELS)):
            grad[:HASH_SIZE, k] = np.bincount(
                self.columns, weights=error[self.rows, k], minlength=HASH_SIZE
            )
        grad[HASH_SIZE:] = self.dense.T @ error
        return grad


def softmax(logits: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Row-wise softmax."""
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    result: npt.NDArray[np.float64] = exp / exp.sum(axis=1, keepdims=True)
    return result


def example_weights(
    matrix: Matrix, shares: dict[str, float] | None = None
) -> npt.NDArray[np.float64]:
    """Each source counts its share, and within a source each class counts the same.

    ``shares`` gives some sources' shares of the total weight; the others split the rest.
    """
    weights = np.zeros(len(matrix))
    sources = np.asarray(matrix.sources)
    names = sorted(set(matrix.sources))
    given = {name: share for name, share in (shares or {}).items() if name in names}
    rest = (1.0 - sum(given.values())) / max(1, len(names) - len(given))
    for name in names:
        in_source = sources == name
        share = given.get(name, rest)
        for k in range(len(LABELS)):
            chosen = in_source & (matrix.labels == k)
            if chosen.any():
                weights[chosen] = len(matrix) * share / (len(LABELS) * chosen.sum())
    return weights


def train(
    matrix: Matrix,
    *,
    l2: float,
    steps: int,
    rate: float = 0.05,
    shares: dict[str, float] | None = None,
) -> npt.NDArray[np.float64]:
    """Weighted softmax regression with an L2 penalty on the word weights, by Adam."""
    weights = np.zeros((DIMENSION, len(LABELS)))
    first = np.zeros_like(weights)
    second = np.zeros_like(weights)
    target = np.eye(len(LABELS))[matrix.labels]
    sample = example_weights(matrix, shares)[:, None] / len(matrix)
    penalty = np.ones((DIMENSION, 1))
    penalty[HASH_SIZE] = 0.0  # the bias is not shrunk
    for step in range(1, steps + 1):
        error = (softmax(matrix.logits(weights)) - target) * sample
        grad = matrix.gradient(error) + l2 * penalty * weights
        first = 0.9 * first + 0.1 * grad
        second = 0.999 * second + 0.001 * grad**2
        corrected = first / (1 - 0.9**step)
        scale = np.sqrt(second / (1 - 0.999**step)) + 1e-8
        weights -= rate * corrected / scale
    return weights


def macro_f1(gold: npt.NDArray[np.int64], predicted: npt.NDArray[np.int64]) -> float:
    """Unweighted mean of the per-class F1 scores."""
    scores = []
    for k in range(len(LABELS)):
        tp = float(np.sum((predicted == k) & (gold == k)))
        fp = float(np.sum((predicted == k) & (gold != k)))
        fn = float(np.sum((predicted != k) & (gold == k)))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def held_back(example: Example) -> bool:
    """A fixed 15 % of TweetEval's test split, kept for choosing the regularisation."""
    return zlib.crc32(example.text.encode("utf-8")) % 100 < 15


def main(argv: Sequence[str] | None = None) -> int:
    """Train, report the tuning figures, and write the model."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--goemotions", type=Path, required=True)
    parser.add_argument("--tweeteval", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=MODEL_PATH)
    parser.add_argument("--l2", type=float, nargs="+", default=[1e-4, 3e-4])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument(
        "--support",
        type=Path,
        default=DATA_DIR / "support_train.tsv",
        help="in-domain support messages (default: the project's own support_train.tsv)",
    )
    parser.add_argument(
        "--support-share",
        type=float,
        default=SUPPORT_SHARE,
        help=f"the share of the training weight the support messages get (default {SUPPORT_SHARE})",
    )
    args = parser.parse_args(argv)
    shares = {"support_train": args.support_share}

    taxonomy = load_taxonomy()
    signals = Signals(load_cues(None, categories=taxonomy.categories, urgency=taxonomy.urgency))
    tweets = read_tweeteval(args.tweeteval, "test")
    support = [replace(e, source="support_train") for e in read_tsv(args.support)]
    training = (
        read_goemotions(args.goemotions / "train.tsv")
        + [t for t in tweets if not held_back(t)]
        + support
    )
    tuning = read_goemotions(args.goemotions / "dev.tsv") + [t for t in tweets if held_back(t)]
    started = time.perf_counter()
    train_matrix, tune_matrix = Matrix(training, signals), Matrix(tuning, signals)
    print(
        f"features: {len(training)} training, {len(tuning)} tuning examples "
        f"in {time.perf_counter() - started:.0f} s"
    )

    best: tuple[float, float] | None = None
    for l2 in args.l2:
        weights = train(train_matrix, l2=l2, steps=args.steps, shares=shares)
        predicted = np.argmax(tune_matrix.logits(weights), axis=1)
        per_source = {
            name: macro_f1(tune_matrix.labels[mask], predicted[mask])
            for name in sorted(set(tune_matrix.sources))
            for mask in [np.asarray(tune_matrix.sources) == name]
        }
        mean = float(np.mean(list(per_source.values())))
        shown = "  ".join(f"{name} {score:.3f}" for name, score in per_source.items())
        print(f"l2 {l2:g}: tuning macro-F1 {mean:.3f}  ({shown})")
        if best is None or mean > best[0]:
            best = (mean, l2)
    assert best is not None
    print(f"training the final model with l2 {best[1]:g} on training + tuning data")
    final = Matrix(training + tuning, signals)
    weights = train(final, l2=best[1], steps=args.steps, shares=shares)
    model = SentimentModel(
        weights[:DIMENSION].astype(np.float32), np.zeros(len(LABELS), dtype=np.float32)
    )
    model.save(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
