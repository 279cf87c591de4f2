"""The offline classifier's cues: weighted phrases per category, urgency and sentiment cues.

They live in a TOML file beside the taxonomy (``customer_support.cues.toml`` for the default
one), so the taxonomy stays the one source of labels and the cues can be edited without code.
Every cue group is compiled into one regular expression, longest phrase first, so a message is
scanned once per group however many cues there are.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batch_processor.classifiers.taxonomy import read_file_or_default
from batch_processor.errors import ConfigurationError

DEFAULT_FILE = "customer_support.cues.toml"
#: A negation one or two words before a position: "not happy", "not very helpful".
_NEGATED_BEFORE = re.compile(
    r"\b(?:not|no|never|hardly|barely|isn't|wasn't|aren't|weren't|don't|didn't|doesn't|won't)"
    r"\W+(?:\w+\W+)?$",
    re.IGNORECASE,
)
#: The weights of the sentiment section (see ``Signals.prior``).
WEIGHTS = (
    "complaint_weight",
    "statement_weight",
    "sarcasm_weight",
    "praise_weight",
    "request_weight",
    "neutral_weight",
)


class PhraseMatcher:
    """Finds cue phrases in a text on word boundaries, case-insensitive; longest match wins."""

    def __init__(self, phrases: Iterable[str]) -> None:
        ordered = sorted(set(phrases), key=lambda p: (-len(p), p))
        self.phrases = tuple(ordered)
        self._keys = {_normalise(p): p for p in ordered}
        self._wildcards = [
            (re.compile(f"^{''.join(_atoms(p))}$", re.IGNORECASE), p)
            for p in ordered
            if "*" in p or "#" in p
        ]
        # One alternation per group would be tried phrase by phrase at every position of the
        # text; as a trie of shared prefixes it is tried once (about seven times faster).
        trie: dict[str, Any] = {}
        for phrase in ordered:
            node = trie
            for atom in _atoms(phrase):
                node = node.setdefault(atom, {})
            node[""] = {}
        body = _trie_regex(trie) if ordered else r"(?!)"
        self._regex = re.compile(rf"(?<![\w'])(?:{body})(?![\w'])", re.IGNORECASE)

    def find(self, text: str) -> list[str]:
        """The cue phrases found, one entry per (non-overlapping) match."""
        return [self._phrase_of(match.group(0)) for match in self._regex.finditer(text)]

    def count(self, text: str) -> int:
        """How many cue matches the text has."""
        return sum(1 for _ in self._regex.finditer(text))

    def count_unnegated(self, text: str) -> int:
        """Matches not just after a negation ("not happy", "never helpful" do not count)."""
        return sum(
            1
            for match in self._regex.finditer(text)
            if not _NEGATED_BEFORE.search(text, max(0, match.start() - 24), match.start())
        )

    def search(self, text: str) -> bool:
        """Whether any cue occurs."""
        return self._regex.search(text) is not None

    def _phrase_of(self, matched: str) -> str:
        exact = self._keys.get(_normalise(matched))
        if exact is not None:
            return exact
        # A wildcard cue ("cancel*", "# hours"): the first (longest) pattern that matches.
        return next(p for regex, p in self._wildcards if regex.match(matched))


def _normalise(phrase: str) -> str:
    return " ".join(phrase.lower().split())


_NUMBER = r"\d+(?:[.,]\d+)?"
_WORD_END = r"[\w']*"


def _atoms(phrase: str) -> list[str]:
    """A cue phrase as regex atoms: one per letter, whitespace between words, the wildcards."""
    atoms: list[str] = []
    for i, word in enumerate(phrase.lower().split()):
        if i:
            atoms.append(r"\s+")
        if word == "#":
            atoms.append(_NUMBER)
            continue
        atoms.extend(re.escape(char) for char in word.rstrip("*"))
        if word.endswith("*"):
            atoms.append(_WORD_END)
    return atoms


def _trie_regex(node: dict[str, Any]) -> str:
    """The regex of a trie of atoms; "" marks a phrase's end, tried last (longest match wins)."""
    branches = [atom + _trie_regex(child) for atom, child in sorted(node.items()) if atom]
    if "" in node:
        branches.append("")
    if len(branches) == 1:
        return branches[0]
    return "(?:" + "|".join(branches) + ")"


@dataclass(frozen=True)
class Cues:
    """The cues of one taxonomy: category weights, urgency and sentiment cue phrases."""

    categories: Mapping[str, Mapping[str, float]]
    urgency: Mapping[str, tuple[str, ...]]
    #: The category of a message no cue matches.
    fallback_category: str
    #: The category of a negative message whose cues name no more specific topic, if any.
    complaint_category: str | None
    complaint: PhraseMatcher
    praise: PhraseMatcher
    thanks: PhraseMatcher
    #: Thanks that mean the opposite ("thanks for nothing"): a complaint, not thanks.
    sarcastic_thanks: PhraseMatcher
    #: Phrases that make a message a request ("please", "I'd like to").
    request: PhraseMatcher
    #: The ``WEIGHTS`` given in the sentiment section (logit units).
    sentiment_weights: Mapping[str, float]

    def category_matcher(self) -> tuple[PhraseMatcher, dict[str, list[tuple[str, float]]]]:
        """One matcher over every category cue, and for each phrase its (category, weight)s."""
        owners: dict[str, list[tuple[str, float]]] = {}
        for category, phrases in self.categories.items():
            for phrase, weight in phrases.items():
                owners.setdefault(phrase, []).append((category, weight))
        return PhraseMatcher(owners), owners


def cues_file_for(taxonomy_file: Path) -> Path:
    """Where the cues of a taxonomy file live: ``name.cues.toml`` beside ``name.toml``."""
    return taxonomy_file.with_name(f"{taxonomy_file.stem}.cues.toml")


def load_cues(path: Path | None, *, categories: Iterable[str], urgency: Iterable[str]) -> Cues:
    """Read a cue file, or the default one; its labels must be the taxonomy's."""
    where = str(path) if path is not None else f"the default cues ({DEFAULT_FILE})"
    try:
        data = tomllib.loads(read_file_or_default(path, DEFAULT_FILE))
        return _parse(data, set(categories), set(urgency))
    except OSError as exc:
        raise ConfigurationError(
            f"invalid setting taxonomy_file: cannot read its cues {where}: {exc}"
        ) from None
    except (tomllib.TOMLDecodeError, ValueError, TypeError, AttributeError, re.error) as exc:
        raise ConfigurationError(
            f"invalid setting taxonomy_file: its cues {where}: {exc}"
        ) from None


def _parse(data: Mapping[str, Any], categories: set[str], urgency: set[str]) -> Cues:
    category_cues = {
        str(label): {str(p): float(w) for p, w in phrases.items()}
        for label, phrases in data.get("categories", {}).items()
    }
    unknown = set(category_cues) - categories
    if unknown:
        raise ValueError(f"categories {sorted(unknown)} are not in the taxonomy")
    urgency_cues = {str(k): tuple(str(p) for p in v) for k, v in data.get("urgency", {}).items()}
    unknown = set(urgency_cues) - urgency
    if unknown:
        raise ValueError(f"urgency levels {sorted(unknown)} are not in the taxonomy")
    fallback = str(data.get("fallback_category", ""))
    complaint = data.get("complaint_category")
    for key, label in (("fallback_category", fallback), ("complaint_category", complaint)):
        if label is not None and label not in categories:
            raise ValueError(f"{key} {label!r} is not a category of the taxonomy")
    sentiment = data.get("sentiment", {})
    return Cues(
        categories=category_cues,
        urgency=urgency_cues,
        fallback_category=fallback,
        complaint_category=None if complaint is None else str(complaint),
        complaint=PhraseMatcher(str(p) for p in sentiment.get("complaint", ())),
        praise=PhraseMatcher(str(p) for p in sentiment.get("praise", ())),
        thanks=PhraseMatcher(str(p) for p in sentiment.get("thanks", ())),
        sarcastic_thanks=PhraseMatcher(str(p) for p in sentiment.get("sarcastic_thanks", ())),
        request=PhraseMatcher(str(p) for p in sentiment.get("request", ())),
        sentiment_weights={key: float(sentiment[key]) for key in WEIGHTS if key in sentiment},
    )
