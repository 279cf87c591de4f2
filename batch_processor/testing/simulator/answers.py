"""A simulated strong model: a labelled set's known labels, right at a chosen accuracy.

To measure a classifier against "the LLM" without paying one, the simulator can answer the
texts of a labelled file with their labels (``answers_file``), right for ``answers_accuracy``
of the texts and wrong for the rest, as a strong model is right only most of the time. Which
texts are answered wrong is decided by the text and the seed, so a repeated text gets the same
answer (a model at temperature 0) and a run repeats. A wrong sentiment is one of the two other
labels; a wrong category another label of the request's enum. Texts the file does not know get
the simulator's ordinary reading (:func:`.replies.classification_reply`).

A conversation is looked up by its customer's turns, joined; then turn by turn (a labelled
message placed in a conversation with a follow-up is still known). Texts are compared with
their whitespace collapsed and case folded.

The file is the project's labelled format: tab-separated ``text``, ``sentiment``, optional
``category`` with a header (``bench/data/*.tsv``), or JSON Lines with the same keys.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

SENTIMENTS = ("negative", "neutral", "positive")


@dataclass(frozen=True, slots=True)
class Known:
    """The labels the simulator answers for one text (already right or wrong)."""

    sentiment: str
    category: str | None
    right: bool


def normalized(text: str) -> str:
    """The lookup key of a text: whitespace collapsed, case folded."""
    return " ".join(text.split()).casefold()


class KnownAnswers:
    """The labels of a labelled set, answered right for ``accuracy`` of its texts."""

    def __init__(
        self, labels: Mapping[str, tuple[str, str | None]], *, accuracy: float, seed: int = 0
    ) -> None:
        if not 0.0 <= accuracy <= 1.0:
            raise ValueError(f"answers_accuracy must be within 0 and 1, not {accuracy}")
        self._labels = {normalized(text): value for text, value in labels.items()}
        self._accuracy = accuracy
        self._seed = seed

    def __len__(self) -> int:
        return len(self._labels)

    @classmethod
    def load(cls, path: Path, *, accuracy: float, seed: int = 0) -> KnownAnswers:
        """Read a labelled file (see the module docstring)."""
        rows: list[Mapping[str, str]]
        with path.open(encoding="utf-8", newline="") as handle:
            if path.suffix == ".jsonl":
                rows = [json.loads(line) for line in handle if line.strip()]
            else:
                rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
        labels: dict[str, tuple[str, str | None]] = {}
        for number, row in enumerate(rows, start=1):
            text, sentiment = row.get("text"), row.get("sentiment")
            if not text or sentiment not in SENTIMENTS:
                raise ValueError(f"{path}: entry {number} needs a text and a sentiment label")
            labels[text] = (sentiment, row.get("category") or None)
        return cls(labels, accuracy=accuracy, seed=seed)

    def answer(self, turns: Sequence[str], categories: Sequence[str]) -> Known | None:
        """The answer for a conversation's customer turns, or None when the text is unknown.

        ``categories`` are the request's category labels: a known category outside them is
        not answered (the simulator's own choice stands), a wrong one is another of them.
        """
        key = normalized("\n".join(turns))
        found = self._labels.get(key)
        if found is None:
            key, found = next(
                ((k, self._labels[k]) for k in map(normalized, turns) if k in self._labels),
                (key, None),
            )
        if found is None:
            return None
        sentiment, category = found
        if category not in categories:
            category = None
        digest = int.from_bytes(hashlib.sha256(f"{self._seed}|{key}".encode()).digest()[:8])
        right = (digest % 1_000_000) < self._accuracy * 1_000_000
        if not right:
            others = [label for label in SENTIMENTS if label != sentiment]
            sentiment = others[(digest >> 20) % len(others)]
            if category is not None and len(categories) > 1:
                wrong = [label for label in categories if label != category]
                category = wrong[(digest >> 40) % len(wrong)]
        return Known(sentiment=sentiment, category=category, right=right)
