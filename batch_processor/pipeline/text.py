"""Reading the text to classify out of a source document, or saying precisely why not.

The text field (a dotted path) may hold a string, or a list of messages whose contents are
joined: strings, or objects with ``content``/``text``/``message`` and an optional ``role``.
Anything else is a :class:`~batch_processor.errors.DataError` with a reason a person can act on.
Text longer than the limit is truncated, and the result records that it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from batch_processor.errors import DataError
from batch_processor.models import SourceDocument

CONTENT_KEYS = ("content", "text", "message", "body")


@dataclass(frozen=True, slots=True)
class ExtractedText:
    """The text to classify, its length before truncation, and whether it was cut."""

    text: str
    original_chars: int
    truncated: bool


def field_value(fields: dict[str, Any], path: str) -> tuple[bool, Any]:
    """Follow a dotted ``path`` through nested dicts; return (found, value)."""
    value: Any = fields
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return False, None
        value = value[part]
    return True, value


def extract_text(doc: SourceDocument, text_field: str, max_chars: int) -> ExtractedText:
    """Return the document's text, truncated to ``max_chars``; raise DataError if unusable."""
    found, value = field_value(doc.fields, text_field)
    if not found or value is None:
        raise DataError(f"text field '{text_field}' is missing")
    text = _join(value, text_field)
    text = text.strip()
    if not text:
        raise DataError(f"text field '{text_field}' is empty")
    if len(text) > max_chars:
        return ExtractedText(text[:max_chars], len(text), truncated=True)
    return ExtractedText(text, len(text), truncated=False)


def _join(value: Any, text_field: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = [_message_text(item, text_field, index) for index, item in enumerate(value)]
        return "\n".join(part for part in parts if part.strip())
    raise DataError(
        f"text field '{text_field}' is {_a_kind(value)}, expected a string or a list of messages"
    )


def _message_text(item: Any, text_field: str, index: int) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        for key in CONTENT_KEYS:
            content = item.get(key)
            if isinstance(content, str):
                role = item.get("role") or item.get("sender") or item.get("author")
                return f"{role}: {content}" if isinstance(role, str) and role else content
    raise DataError(
        f"message {index} of '{text_field}' has no text ({_a_kind(item)} without "
        f"a string {'/'.join(CONTENT_KEYS)})"
    )


def _a_kind(value: Any) -> str:
    kind = _kind(value)
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _kind(value: Any) -> str:
    names = {dict: "object", list: "list", bool: "boolean", int: "number", float: "number"}
    return names.get(type(value), type(value).__name__)
