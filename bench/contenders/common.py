"""What both contenders share: the prompt a user would write and the command line."""

from __future__ import annotations

import argparse
import json
from typing import Any

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "sentiment": {
            "type": "object",
            "properties": {
                "label": {"type": "string", "enum": ["positive", "negative", "neutral"]},
                "score": {"type": "number"},
            },
            "required": ["label", "score"],
        },
        "category": {
            "type": "string",
            "enum": ["billing", "technical_issue", "account", "shipping", "general_inquiry"],
        },
        "urgency": {"type": "string", "enum": ["low", "medium", "high", "critical"]},
        "emotion": {"type": "string", "enum": ["anger", "frustration", "neutral", "joy"]},
        "language": {"type": "string"},
        "summary": {"type": "string"},
    },
    "required": ["sentiment", "category", "urgency", "emotion", "language", "summary"],
}

SYSTEM = (
    "You classify customer-support conversations. Reply with one JSON object: sentiment, "
    "category, urgency, emotion, language (ISO 639-1) and a one-line summary."
)


def request(model: str, text: str) -> dict[str, Any]:
    """The chat-completions arguments for one conversation."""
    return {
        "model": model,
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": text},
        ],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "classification", "schema": SCHEMA},
        },
        "temperature": 0,
    }


def text_of(doc: dict[str, Any]) -> str:
    """The conversation's text: its messages joined (anything odd, as a string)."""
    messages = doc.get("messages")
    if not isinstance(messages, list):
        return str(messages)
    return "\n".join(str(m.get("content", "")) if isinstance(m, dict) else str(m) for m in messages)


def parse(content: str | None) -> dict[str, Any]:
    """The reply as a dict (raises ValueError when it is not one)."""
    value = json.loads(content or "")
    if not isinstance(value, dict):
        raise ValueError("reply is not an object")
    return value


def arguments(description: str) -> argparse.Namespace:
    """The command line both contenders take."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--mongodb-uri", required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--llm-base-url", required=True)
    parser.add_argument("--model", default="gpt-4o-mini")
    parser.add_argument("--concurrent", type=int, default=64)
    return parser.parse_args()
