"""Confidence that means something: the offline model's sureness mapped to how often it is right.

The sentiment model's largest probability ranks messages well but is not a frequency (a
linear model trained with a regulariser is under- or over-confident by region). An isotonic
fit (pool-adjacent-violators) on held-back labelled messages maps it to the share of messages
at that sureness that were labelled right, so that "0.8" is right about 80 % of the time.

The shipped fit (``calibration.json``) is made by ``python -m bench.calibrate`` on the
development sets of ``bench/data`` (never on what the model was trained on); a version the
cascade learns carries its own fit, made on its held-back slice of LLM answers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np

#: The shipped fit beside this module.
CALIBRATION_FILE = "calibration.json"
#: Reliability tables have this many equal-width confidence bins.
BINS = 10


#: A predicted label with fewer fitting messages than this uses the fit of all labels.
MIN_PER_LABEL = 30
POOLED = "*"


@dataclass(frozen=True)
class Calibration:
    """A monotone map, per predicted label, from raw sureness to the chance of being right.

    The model is not equally reliable for every label it predicts (a "negative" at 0.7 is
    right less often than a "positive" at 0.7), so each predicted label has its own fit:
    ``knots[label]`` is ``(raw, right)``, increasing; between knots the map is linear, beyond
    them flat; ``*`` is the fit of all labels together, for a label without its own.
    ``reference`` is the calibrated confidence of the fit's messages at each percent (101
    values): where escalation starts before it has seen any of the user's documents.
    """

    knots: dict[str, tuple[tuple[float, ...], tuple[float, ...]]]
    reference: tuple[float, ...]
    source: str

    def __call__(self, raw: float, label: str = POOLED) -> float:
        """The calibrated confidence of a raw sureness for a predicted label (4 places)."""
        xs, ys = self.knots.get(label) or self.knots[POOLED]
        return round(float(np.interp(raw, xs, ys)), 4)

    def as_dict(self) -> dict[str, Any]:
        """The fit as JSON-safe values (stored with a learnt model version)."""
        return {
            "knots": {label: [list(xs), list(ys)] for label, (xs, ys) in self.knots.items()},
            "reference": list(self.reference),
            "source": self.source,
        }

    @classmethod
    def of(cls, data: dict[str, Any]) -> Calibration:
        """The fit :meth:`as_dict` wrote."""
        return cls(
            knots={
                str(label): (tuple(map(float, xs)), tuple(map(float, ys)))
                for label, (xs, ys) in data["knots"].items()
            },
            reference=tuple(float(r) for r in data["reference"]),
            source=str(data.get("source", "")),
        )

    @classmethod
    def shipped(cls) -> Calibration:
        """The fit shipped with the package (see the module docstring)."""
        text = resources.files(__package__).joinpath(CALIBRATION_FILE).read_text("utf-8")
        return cls.of(json.loads(text))


def fit(
    sureness: Sequence[float],
    labels: Sequence[str],
    correct: Sequence[bool],
    source: str,
    weights: Sequence[float] | None = None,
) -> Calibration:
    """The isotonic fits of ``correct`` on ``sureness``: per predicted label, and pooled.

    ``weights`` (default 1 each) say how much each message counts: a small set of the
    domain's own messages can weigh as much as a large general one.
    """
    if not sureness:
        raise ValueError("cannot calibrate on no messages")
    weights = weights if weights is not None else [1.0] * len(sureness)
    knots = {POOLED: _isotonic(sureness, correct, weights)}
    for label in sorted(set(labels)):
        inside = [i for i, other in enumerate(labels) if other == label]
        if len(inside) >= MIN_PER_LABEL:
            knots[label] = _isotonic(
                [sureness[i] for i in inside],
                [correct[i] for i in inside],
                [weights[i] for i in inside],
            )
    calibration = Calibration(knots=knots, reference=(), source=source)
    calibrated = [calibration(r, label) for r, label in zip(sureness, labels, strict=True)]
    reference = np.quantile(np.asarray(calibrated), np.linspace(0.0, 1.0, 101))
    return Calibration(
        knots=knots, reference=tuple(round(float(r), 4) for r in reference), source=source
    )


def _isotonic(
    sureness: Sequence[float], correct: Sequence[bool], weights: Sequence[float]
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Pool-adjacent-violators: one knot per block of equal fitted value, at its mean sureness."""
    order = np.argsort(np.asarray(sureness, dtype=np.float64), kind="stable")
    xs = np.asarray(sureness, dtype=np.float64)[order]
    ys = np.asarray(correct, dtype=np.float64)[order]
    ws = np.asarray(weights, dtype=np.float64)[order]
    # Each block: [weighted sum of y, weight, weighted sum of x]; merged while a block is
    # above the next.
    blocks: list[list[float]] = []
    for x, y, w in zip(xs, ys, ws, strict=True):
        blocks.append([w * y, w, w * x])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] >= blocks[-1][0] / blocks[-1][1]:
            y_sum, count, x_sum = blocks.pop()
            blocks[-1][0] += y_sum
            blocks[-1][1] += count
            blocks[-1][2] += x_sum
    # np.interp needs strictly increasing knots: blocks at one rounded sureness are merged.
    merged: dict[float, list[float]] = {}
    for y_sum, count, x_sum in blocks:
        entry = merged.setdefault(round(x_sum / count, 4), [0.0, 0.0])
        entry[0] += y_sum
        entry[1] += count
    return tuple(merged), tuple(round(y / n, 4) for y, n in merged.values())


@dataclass(frozen=True)
class Bin:
    """One row of a reliability table: confidences in [low, high), how many, how often right."""

    low: float
    high: float
    count: int
    confidence: float
    accuracy: float


def reliability(
    confidence: Sequence[float], correct: Sequence[bool], bins: int = BINS
) -> tuple[list[Bin], float]:
    """The reliability table (equal-width bins) and the expected calibration error.

    The ECE is the mean gap between a bin's confidence and its accuracy, weighted by its size.
    """
    rows: list[Bin] = []
    total = len(confidence)
    error = 0.0
    for k in range(bins):
        low, high = k / bins, (k + 1) / bins
        inside = [
            (c, r)
            for c, r in zip(confidence, correct, strict=True)
            if low <= c < high or (k == bins - 1 and c == 1.0)
        ]
        if not inside:
            continue
        mean_confidence = sum(c for c, _ in inside) / len(inside)
        accuracy = sum(1 for _, r in inside if r) / len(inside)
        error += len(inside) / total * abs(mean_confidence - accuracy)
        rows.append(Bin(low, high, len(inside), round(mean_confidence, 4), round(accuracy, 4)))
    return rows, round(error, 4)


def reliability_text(rows: Sequence[Bin], ece: float) -> str:
    """The reliability table as text (80 columns)."""
    lines = ["confidence    messages  mean confidence  accuracy"]
    for row in rows:
        lines.append(
            f"{row.low:.1f}-{row.high:.1f}  {row.count:>12}  {row.confidence:>15.3f}"
            f"  {row.accuracy:>8.3f}"
        )
    lines.append(f"expected calibration error: {ece:.3f}")
    return "\n".join(lines)
