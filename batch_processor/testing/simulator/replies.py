"""The simulator's answers: deterministic schema-shaped classifications, and near misses."""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from batch_processor.testing.simulator.answers import KnownAnswers

INJECTION = re.compile(r"answer\s+(?:with\s+)?[\"']?([A-Za-z][A-Za-z_ -]{0,40}?)[\"'.!]", re.I)
DEFAULT_ENUMS = {"category": ["general_inquiry"], "urgency": ["low"], "emotion": ["neutral"]}


def prompt_tokens(body: dict[str, Any]) -> int:
    """A rough token count of the request's messages (4 characters a token)."""
    messages = body.get("messages") or []
    return sum(len(str(m.get("content", ""))) // 4 + 8 for m in messages if isinstance(m, dict))


def enums(body: dict[str, Any]) -> dict[str, list[str]]:
    """The label enums of the requested schema: from response_format, else the instructions."""
    schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("schema")
    if schema is None:
        system = next(
            (m["content"] for m in body.get("messages", []) if m.get("role") == "system"), ""
        )
        start = system.find("{")
        try:
            schema = json.loads(system[start:]) if start >= 0 else None
        except ValueError:
            schema = None
    props = (schema or {}).get("properties", {})
    return {
        name: list(props.get(name, {}).get("enum") or default)
        for name, default in DEFAULT_ENUMS.items()
    }


def classification_reply(
    body: dict[str, Any],
    *,
    out_of_enum: bool,
    stats: Counter[str],
    wrong_rate: float = 0.0,
    known: KnownAnswers | None = None,
) -> dict[str, Any]:
    """A deterministic, schema-shaped classification of the request's conversation's customer.

    Like a model told that the labels describe the customer, it reads the customer's turns
    only: the sentiment from a small word list (right on plain cases, blind to sarcasm), the
    start and end from the first and last customer turns, ``resolved`` from the last one.
    ``wrong_rate`` of the conversations (chosen by their text, so a repeat gets the same
    answer) get a wrong sentiment, as a real model's are right only most of the time. Texts
    ``known`` knows get its labels instead (see :mod:`.answers`).
    """
    users = [m for m in body.get("messages", []) if m.get("role") == "user"]
    raw = str(users[0].get("content", "")) if users else ""
    turns = customer_turns(raw)
    text = "\n".join(turns)
    labels = enums(body)
    digest = int.from_bytes(hashlib.sha256(" ".join(text.split()).casefold().encode()).digest()[:8])

    def pick(labels: list[str], salt: int) -> str:
        return labels[(digest >> salt) % len(labels)]

    category = next(
        (label for label in labels["category"] if label.replace("_", " ") in text.lower()),
        pick(labels["category"], 0),
    )
    injected = INJECTION.search(text)
    if injected and len(users) == 1:  # an obedient model, on the first ask only
        stats["obeyed_injection"] += 1
        category = injected.group(1).strip()
    elif out_of_enum:
        stats["out_of_enum"] += 1
        category = "something_else"
    scores = [tone(turn) for turn in turns] or [0.0]
    # A complaint is not undone by a closing courtesy: the most negative turn counts double.
    score = round(max(-1.0, min(1.0, (sum(scores) + min(scores)) / (len(scores) + 1))), 3)
    label = _label(score)
    answer = known.answer(turns, labels["category"]) if known is not None else None
    if answer is not None:
        stats["known_answered"] += 1
        stats["known_wrong"] += not answer.right
        label, score = answer.sentiment, KNOWN_SCORES[answer.sentiment]
        category = answer.category if answer.category is not None and not out_of_enum else category
        if len(scores) == 1:
            scores = [score]
    elif (digest >> 48) % 1000 < wrong_rate * 1000:
        stats["wrong_label"] += 1
        label = SENTIMENTS[(SENTIMENTS.index(label) + 1 + (digest >> 8) % 2) % 3]
    end = _label(scores[-1])
    return {
        "category": category,
        "sentiment": {"label": label, "score": score},
        "urgency": pick(labels["urgency"], 24),
        "emotion": pick(labels["emotion"], 32),
        "language": "en",
        "themes": [w for w in re.findall(r"[a-z]{5,}", text.lower())[:3]],
        "summary": text[:80].replace("\n", " "),
        "confidence": round(0.5 + ((digest >> 40) % 50) / 100, 2),
        "sentiment_start": _label(scores[0]),
        "sentiment_end": end,
        "resolved": "yes" if end == "positive" else "no" if end == "negative" else "unclear",
    }


def customer_turns(content: str) -> list[str]:
    """The customer's turns of a request's user message (a JSON object, or plain text)."""
    try:
        conversation = json.loads(content).get("conversation", content)
    except (ValueError, AttributeError):
        return [content]
    if isinstance(conversation, str):
        return [conversation]
    if not isinstance(conversation, list):
        return [str(conversation)]
    return [
        str(turn.get("text", ""))
        for turn in conversation
        if isinstance(turn, dict) and turn.get("role") == "customer"
    ]


def tone(text: str) -> float:
    """-1 .. 1 from the words of a small list: the simulator's reading of a sentiment."""
    words = re.findall(r"[a-z']+|!{2,}", text.lower())
    negative = sum(word in NEGATIVE_WORDS or word.startswith("!!") for word in words)
    positive = sum(word in POSITIVE_WORDS for word in words)
    if negative == positive:
        return 0.0
    return float(positive - negative) / float(positive + negative)


def _label(score: float) -> str:
    return "positive" if score > 0.2 else "negative" if score < -0.2 else "neutral"


SENTIMENTS = ("negative", "neutral", "positive")
#: The score given with a known answer's label.
KNOWN_SCORES = {"negative": -0.8, "neutral": 0.0, "positive": 0.8}
NEGATIVE_WORDS = frozenset(
    [
        "unacceptable",
        "terrible",
        "awful",
        "worst",
        "rude",
        "angry",
        "furious",
        "disappointed",
        "disappointing",
        "useless",
        "horrible",
        "ridiculous",
        "broken",
        "never",
        "still",
        "again",
        "waiting",
        "hate",
        "scam",
        "cancelled",
        "delayed",
        "lost",
        "wrong",
        "failed",
        "failing",
        "crashes",
        "crash",
        "damaged",
        "refund",
        "complaint",
        "manager",
        "nobody",
        "stuck",
        "frustrated",
        "frustrating",
        "annoyed",
        "poor",
        "bad",
        "not",
    ]
)
POSITIVE_WORDS = frozenset(
    [
        "thanks",
        "thank",
        "great",
        "perfect",
        "excellent",
        "awesome",
        "love",
        "amazing",
        "wonderful",
        "helpful",
        "appreciate",
        "fixed",
        "solved",
        "works",
        "working",
        "resolved",
        "happy",
        "glad",
        "fantastic",
        "good",
        "nice",
        "quick",
    ]
)


#: What real models get nearly right: names for codes, case, regional tags, too many themes,
#: too long a summary, numbers out of range.
NEAR_MISSES: tuple[tuple[str, Any], ...] = (
    ("language", "English"),
    ("language", "EN"),
    ("language", "en-US"),
    ("language", "eng"),
    ("themes", [f"theme number {i}" for i in range(8)]),
    ("summary", "A very long summary that goes on. " * 12),
    ("score", 1.5),
    ("score", -1.3),
    ("confidence", 85),
    ("category", "upper"),
    ("urgency", "title"),
)


def near_miss(reply: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """``reply`` with one or two near misses a real model makes."""
    reply = {**reply, "sentiment": dict(reply["sentiment"])}
    for name, value in rng.sample(NEAR_MISSES, k=rng.choice((1, 2))):
        if name == "score":
            reply["sentiment"]["score"] = value
        elif value == "upper":
            reply[name] = str(reply[name]).replace("_", " ").upper()
        elif value == "title":
            reply[name] = str(reply[name]).title()
        else:
            reply[name] = value
    return reply


def cached_prefix(body: dict[str, Any], seen: set[int], minimum: int) -> int:
    """Prompt tokens served from the provider's prompt cache, as OpenAI counts them.

    A prefix of at least ``minimum`` tokens seen before (``seen``, which this adds to) is
    cached in steps of 128 tokens; here the prefix is the system message (the instructions
    and taxonomy), which every request of one taxonomy shares.
    """
    messages = body.get("messages") or []
    system = next((m for m in messages if isinstance(m, dict) and m.get("role") == "system"), None)
    if system is None:
        return 0
    tokens = prompt_tokens({"messages": [system]})
    key = hash(str(system.get("content")))
    known = key in seen
    seen.add(key)
    if not known or minimum <= 0 or tokens < minimum:
        return 0
    return tokens - tokens % 128
