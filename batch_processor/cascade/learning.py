"""Learning from the LLM: a new offline model version trained on the LLM's answers.

The LLM's sentiment labels on the user's own documents are training data. A version is the
shipped model plus a change to its weights, fitted to those labels (multinomial logistic
loss, full-batch Adam, an L2 pull towards the shipped weights so that a few hundred noisy
labels cannot undo what the shipped training data taught). It is always trained from the
shipped model on every stored label, in the order of the documents' ids, with fixed steps: the
same labels give the same version on any worker.

A fixed fifth of the labelled documents (by a hash of the id) is never trained on: the
held-back slice on which the candidate and the version in use are both measured, each
document weighted by how many it stands for (see :class:`Labelled`). A candidate is promoted
only if it agrees with the LLM more often there (:func:`learn` says; the caller stores).
Learning is CPU work: callers run it in a thread, never on the event loop.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from batch_processor.cascade.calibration import Calibration, fit
from batch_processor.classifiers.offline import customer_verdict, turn_weights
from batch_processor.classifiers.sentiment_model import (
    HASH_SIZE,
    LABELS,
    SentimentModel,
    encode,
    verdict,
)
from batch_processor.classifiers.signals import Signals

#: One labelled document in this many is held back (never trained on).
HELD_BACK_ONE_IN = 5
#: Optimisation: steps of full-batch Adam, its step size, and the pull towards the shipped model.
STEPS = 300
STEP_SIZE = 0.1
L2 = 1e-3
#: At most this many labels are trained on (the latest by document id): training stays seconds.
MAX_LABELS = 20_000
#: A candidate needs at least this many held-back labels to be judged at all ...
MIN_HELD_BACK = 50
#: ... and its wins over the model in use must be this unlikely by chance (McNemar's exact test
#: on the held-back documents where the two disagree): a gain of noise is not promoted.
SIGNIFICANCE = 0.05


@dataclass(frozen=True)
class Labelled:
    """One document's customer turns and the LLM's sentiment label for it.

    ``weight`` is how many documents it stands for when agreement is measured: 1 for an
    escalated document, 1 / the audit share for an audited one (the audit samples the sure
    documents the LLM otherwise never sees), so that agreement on the held-back slice
    estimates agreement over every document, not only over the hard ones.
    """

    doc_id: str
    turns: tuple[str, ...]
    label: str
    weight: float = 1.0


def held_back(doc_id: str) -> bool:
    """Whether a labelled document belongs to the held-back slice (fixed by its id)."""
    digest = hashlib.sha256(f"held-back\x00{doc_id}".encode()).digest()
    return digest[0] % HELD_BACK_ONE_IN == 0


@dataclass(frozen=True)
class Change:
    """A version's change to the shipped weights: the rows touched and what is added."""

    rows: npt.NDArray[np.int64]
    values: npt.NDArray[np.float32]

    def apply(self, shipped: SentimentModel) -> SentimentModel:
        """The version's model."""
        return shipped.adjusted(self.rows, self.values)

    def to_bytes(self) -> bytes:
        """The change as a compressed ``.npz`` (stored in MongoDB)."""
        buffer = io.BytesIO()
        np.savez_compressed(buffer, rows=self.rows, values=self.values)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Change:
        """The change :meth:`to_bytes` wrote."""
        with np.load(io.BytesIO(data), allow_pickle=False) as loaded:
            return cls(rows=loaded["rows"].astype(np.int64), values=loaded["values"])


@dataclass(frozen=True)
class Outcome:
    """A training run: the candidate, how it and the model in use agree with the LLM."""

    change: Change
    calibration: Calibration
    trained_on: int
    held_back: int
    agreement: float
    current_agreement: float
    #: Held-back documents only the candidate agrees on, and only the model in use agrees on.
    wins: int
    losses: int

    @property
    def p_value(self) -> float:
        """The chance of at least ``wins`` of the discordant documents if neither were better."""
        n = self.wins + self.losses
        if n == 0:
            return 1.0
        return float(sum(math.comb(n, k) for k in range(self.wins, n + 1)) / 2**n)

    @property
    def better(self) -> bool:
        """Whether the candidate agrees with the LLM more often than the model in use, surely."""
        return (
            self.held_back >= MIN_HELD_BACK
            and self.agreement > self.current_agreement
            and self.p_value < SIGNIFICANCE
        )


def learn(
    shipped: SentimentModel,
    current: SentimentModel,
    signals: Signals,
    labelled: Sequence[Labelled],
) -> Outcome:
    """Train a candidate on ``labelled`` (not the held-back slice) and measure both models.

    Both are measured as the offline classifier reads a conversation (each customer turn
    scored, the turns weighed: :func:`~batch_processor.classifiers.offline.customer_verdict`).
    """
    ordered = sorted(labelled, key=lambda item: item.doc_id)[-MAX_LABELS:]
    training = [item for item in ordered if not held_back(item.doc_id)]
    held = [item for item in ordered if held_back(item.doc_id)]
    change = train(shipped, signals, training)
    candidate = change.apply(shipped)
    verdicts = [customer_verdict(candidate, signals, item.turns) for item in held]
    right = [v.label == item.label for v, item in zip(verdicts, held, strict=True)]
    current_right = [
        customer_verdict(current, signals, item.turns).label == item.label for item in held
    ]
    weights = [item.weight for item in held]
    calibration = (
        fit(
            [max(v.probabilities) for v in verdicts],
            [v.label for v in verdicts],
            right,
            source=f"held back: {len(held)} LLM labels",
            weights=weights,  # an audited document stands for the sure ones
        )
        if held
        else Calibration.shipped()
    )
    return Outcome(
        change=change,
        calibration=calibration,
        trained_on=len(training),
        held_back=len(held),
        agreement=_weighted(right, weights),
        current_agreement=_weighted(current_right, weights),
        wins=sum(1 for a, b in zip(right, current_right, strict=True) if a and not b),
        losses=sum(1 for a, b in zip(right, current_right, strict=True) if b and not a),
    )


def _weighted(right: Sequence[bool], weights: Sequence[float]) -> float:
    """The weighted share of ``right``; 0 for none."""
    total = sum(weights)
    if not total:
        return 0.0
    return round(sum(w for r, w in zip(right, weights, strict=True) if r) / total, 4)


def train(shipped: SentimentModel, signals: Signals, training: Sequence[Labelled]) -> Change:
    """The change to ``shipped`` that fits the conversations' labels (see the module docstring).

    A conversation's probabilities are its turns' mixed by their weights (as the classifier
    mixes them, the weights taken from the shipped model's reading), so each turn learns in
    proportion to how much it explains the label: a closing "ok thanks" in a complaint is not
    taught to be negative.
    """
    turns = [(k, text) for k, item in enumerate(training) for text in item.turns]
    if not turns:
        return Change(np.zeros(0, dtype=np.int64), np.zeros((0, len(LABELS)), dtype=np.float32))
    encoded = [encode(text, signals, signals.prior) for _, text in turns]
    base = np.stack([shipped.logits(e) for e in encoded]).astype(np.float64)
    group = np.asarray([k for k, _ in turns], dtype=np.int64)
    mix = np.zeros(len(turns))
    for k, item in enumerate(training):
        inside = np.flatnonzero(group == k) if len(item.turns) > 1 else None
        if inside is None:
            continue
        shares = turn_weights(list(item.turns), [verdict(base[i]) for i in inside])
        mix[inside] = np.asarray(shares) / sum(shares)
    mix[mix == 0] = 1.0  # a conversation of one turn
    # The rows any turn touches, numbered compactly: hashed words first, then dense ones.
    words = sorted({row for e in encoded for row in e.rows})
    dense_rows = np.arange(HASH_SIZE, HASH_SIZE + len(encoded[0].dense))
    rows = np.concatenate([np.asarray(words, dtype=np.int64), dense_rows])
    index = {row: k for k, row in enumerate(words)}
    starts = np.cumsum([0] + [len(e.rows) for e in encoded])
    columns = np.asarray([index[r] for e in encoded for r in e.rows], dtype=np.int64)
    owners = np.repeat(np.arange(len(encoded)), np.diff(starts))
    dense = np.stack([e.dense for e in encoded]).astype(np.float64)
    labels = np.asarray([LABELS.index(training[k].label) for k, _ in turns])
    target = np.zeros((len(turns), len(LABELS)))
    target[np.arange(len(turns)), labels] = 1.0
    change = np.zeros((len(rows), len(LABELS)))
    moment, second = np.zeros_like(change), np.zeros_like(change)
    for step in range(1, STEPS + 1):
        logits = base + np.add.reduceat(change[columns], starts[:-1], axis=0)
        logits += dense @ change[len(words) :]
        logits -= logits.max(axis=1, keepdims=True)
        probabilities = np.exp(logits)
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        # -log of the mixed probability of the label: each turn's error scaled by its share
        # of that probability (its responsibility).
        own = mix * probabilities[np.arange(len(turns)), labels]
        mixed = np.zeros(len(training))
        np.add.at(mixed, group, own)
        responsibility = own / mixed[group]
        error = responsibility[:, None] * (probabilities - target) / len(training)
        gradient = np.zeros_like(change)
        np.add.at(gradient, columns, error[owners])
        gradient[len(words) :] = dense.T @ error
        gradient += L2 * change
        moment = 0.9 * moment + 0.1 * gradient
        second = 0.999 * second + 0.001 * gradient**2
        corrected = moment / (1 - 0.9**step)
        change -= STEP_SIZE * corrected / (np.sqrt(second / (1 - 0.999**step)) + 1e-8)
    return Change(rows=rows, values=change.astype(np.float32))
