"""Readers for the labelled data the offline classifier is trained and measured on.

Every reader returns :class:`Example` rows with a three-class sentiment (negative, neutral,
positive) and, where the source has one, a category. Where each source comes from and under
which licence is in ``bench/data/DATA.md``.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

DATA_DIR = Path(__file__).parent / "data"
#: GoEmotions' sentiment groups (data/group/labels.txt of its sentiment-grouped release).
GOEMOTIONS_GROUPS = ("ambiguous", "negative", "neutral", "positive")
TWEETEVAL_LABELS = ("negative", "neutral", "positive")


@dataclass(frozen=True)
class Example:
    """One labelled message."""

    text: str
    sentiment: str
    source: str
    category: str | None = None


def goemotions_sentiment(groups: Iterable[str]) -> str | None:
    """One sentiment from GoEmotions' (possibly several) group labels; None if they conflict.

    ``ambiguous`` (surprise, curiosity, confusion, realization) reads as neutral: in support
    traffic these are questions and remarks. Negative and positive together is dropped.
    """
    found = set(groups)
    if {"negative", "positive"} <= found:
        return None
    if "positive" in found:
        return "positive"
    if "negative" in found:
        return "negative"
    return "neutral"


def read_goemotions(path: Path, source: str = "goemotions") -> list[Example]:
    """A split of GoEmotions' sentiment-grouped TSV (text, group ids, comment id)."""
    examples = []
    with path.open(encoding="utf-8", newline="") as handle:
        for row in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            if len(row) < 2:
                continue
            groups = [GOEMOTIONS_GROUPS[int(i)] for i in row[1].split(",")]
            sentiment = goemotions_sentiment(groups)
            if sentiment is not None:
                examples.append(Example(row[0], sentiment, source))
    return examples


def read_tweeteval(directory: Path, split: str, source: str = "tweeteval") -> list[Example]:
    """A split (``val``, ``test``, ``train``) of TweetEval's sentiment task directory."""
    texts = (directory / f"{split}_text.txt").read_text("utf-8").splitlines()
    labels = (directory / f"{split}_labels.txt").read_text("utf-8").split()
    if len(texts) != len(labels):
        raise ValueError(f"{directory}: {len(texts)} texts but {len(labels)} labels in {split}")
    return [
        Example(text.strip(), TWEETEVAL_LABELS[int(label)], source)
        for text, label in zip(texts, labels, strict=True)
    ]


def read_tsv(path: Path) -> list[Example]:
    """A development file of this repository: ``text<TAB>sentiment<TAB>category`` with a header.

    The source is the file's name without its extension; an empty category is None.
    """
    examples = []
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        for row in reader:
            category = (row.get("category") or "").strip() or None
            examples.append(Example(row["text"], row["sentiment"], path.stem, category))
    return examples


_ALIASES = {"pos": "positive", "neg": "negative", "neu": "neutral"}


def read_labelled(path: Path) -> list[Example]:
    """A user's labelled file: CSV or TSV, its header naming text, sentiment (or label), category.

    The category column is optional. Labels are negative, neutral or positive (``neg``,
    ``neu``, ``pos`` too), in any case; anything else raises ValueError naming file and line.
    """
    with path.open(encoding="utf-8", newline="") as handle:
        header = handle.readline()
        handle.seek(0)
        delimiter = "\t" if "\t" in header else ","
        reader = csv.DictReader(handle, delimiter=delimiter)
        fields = {name.strip().lower(): name for name in reader.fieldnames or ()}
        label_field = fields.get("sentiment") or fields.get("label")
        if "text" not in fields or label_field is None:
            raise ValueError(f"{path}: the header must name text and sentiment (or label)")
        examples = []
        for line, row in enumerate(reader, start=2):
            raw = (row.get(label_field) or "").strip().lower()
            sentiment = _ALIASES.get(raw, raw)
            if sentiment not in TWEETEVAL_LABELS:
                raise ValueError(
                    f"{path}:{line}: sentiment {raw!r} is not negative/neutral/positive"
                )
            category = (row.get(fields["category"]) or "").strip() if "category" in fields else ""
            examples.append(Example(row[fields["text"]], sentiment, path.stem, category or None))
    return examples


def write_tsv(path: Path, examples: Iterable[Example]) -> None:
    """Write examples in the format :func:`read_tsv` reads (tabs and newlines in text folded)."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write("text\tsentiment\tcategory\n")
        for example in examples:
            text = " ".join(example.text.replace("\t", " ").split())
            handle.write(f"{text}\t{example.sentiment}\t{example.category or ''}\n")
