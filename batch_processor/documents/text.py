"""Reading the conversation to classify out of a source document, or saying precisely why not.

The text field (a dotted path) may hold a string (one customer turn), or a list of messages:
strings, or objects with ``content``/``text``/``message``/``body`` and an optional role
(``role``, ``sender`` or ``author``). Whose each turn is follows
:class:`~batch_processor.conversation.Roles`. Anything else is a
:class:`~batch_processor.errors.DataError` with a reason a person can act on. A conversation
longer than the limit is truncated (its first turns kept), and the result records that it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from batch_processor.conversation import Conversation, Roles
from batch_processor.errors import DataError
from batch_processor.models import SourceDocument

CONTENT_KEYS = ("content", "text", "message", "body")
ROLE_KEYS = ("role", "sender", "author")


@dataclass(frozen=True, slots=True)
class ExtractedText:
    """The conversation to classify, its length before truncation, and whether it was cut."""

    conversation: Conversation
    original_chars: int
    truncated: bool

    @property
    def turns(self) -> dict[str, int]:
        """The turns by speaker, and those of an unknown role (stored with the result)."""
        return self.conversation.turn_counts()

    @property
    def text(self) -> str:
        """The conversation as a person reads it (previews, logs)."""
        return self.conversation.transcript()


def field_value(fields: dict[str, Any], path: str) -> tuple[bool, Any]:
    """Follow a dotted ``path`` through nested dicts; return (found, value)."""
    value: Any = fields
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return False, None
        value = value[part]
    return True, value


def extract_text(
    doc: SourceDocument, text_field: str, max_chars: int, roles: Roles | None = None
) -> ExtractedText:
    """Return the document's conversation, truncated to ``max_chars`` characters of text.

    Raises DataError if it has no usable text.
    """
    found, value = field_value(doc.fields, text_field)
    if not found or value is None:
        raise DataError(f"text field '{text_field}' is missing")
    conversation = (roles or Roles()).conversation(_messages(value, text_field))
    chars = conversation.chars
    if not chars:
        raise DataError(f"text field '{text_field}' is empty")
    if chars > max_chars:
        return ExtractedText(conversation.truncated(max_chars), chars, truncated=True)
    return ExtractedText(conversation, chars, truncated=False)


def _messages(value: Any, text_field: str) -> list[tuple[str | None, str]]:
    """The (role, text) pairs of the field's value, blank messages left out."""
    pairs: list[tuple[str | None, str]]
    if isinstance(value, str):
        pairs = [(None, value)]
    elif isinstance(value, list):
        pairs = [_message(item, text_field, index) for index, item in enumerate(value)]
    else:
        raise DataError(
            f"text field '{text_field}' is {_a_kind(value)}, expected a string or a list of "
            "messages"
        )
    return [(role, text.strip()) for role, text in pairs if text.strip()]


def _message(item: Any, text_field: str, index: int) -> tuple[str | None, str]:
    if isinstance(item, str):
        return None, item
    if isinstance(item, dict):
        for key in CONTENT_KEYS:
            content = item.get(key)
            if isinstance(content, str):
                role = next((item[k] for k in ROLE_KEYS if isinstance(item.get(k), str)), None)
                return role or None, content
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
