"""The simulator's answers: deterministic schema-shaped classifications, and near misses."""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from typing import Any

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
    body: dict[str, Any], *, out_of_enum: bool, stats: Counter[str]
) -> dict[str, Any]:
    """A deterministic, schema-shaped classification of the request's conversation."""
    users = [m for m in body.get("messages", []) if m.get("role") == "user"]
    raw = str(users[0].get("content", "")) if users else ""
    try:
        text = str(json.loads(raw).get("conversation", raw))
    except (ValueError, AttributeError):
        text = raw
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
    score = round(((digest >> 16) % 2001) / 1000 - 1, 3)
    label = "positive" if score > 0.2 else "negative" if score < -0.2 else "neutral"
    return {
        "category": category,
        "sentiment": {"label": label, "score": score},
        "urgency": pick(labels["urgency"], 24),
        "emotion": pick(labels["emotion"], 32),
        "language": "en",
        "themes": [w for w in re.findall(r"[a-z]{5,}", text.lower())[:3]],
        "summary": text[:80].replace("\n", " "),
        "confidence": round(0.5 + ((digest >> 40) % 50) / 100, 2),
    }


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
