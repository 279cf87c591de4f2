"""Reading the text out of a source document, and the DATA errors for unusable input."""

from __future__ import annotations

from typing import Any

import pytest

from batch_processor.errors import DataError
from batch_processor.models import SourceDocument
from batch_processor.pipeline.text import extract_text


def text_of(fields: dict[str, Any], field: str = "messages", limit: int = 1000) -> str:
    """The extracted text of a document with these fields."""
    return extract_text(SourceDocument(id="1", fields=fields), field, limit).text


def test_string_field_is_used_as_is() -> None:
    """A plain string is the text, stripped."""
    assert text_of({"messages": "  hello there  "}) == "hello there"


def test_messages_are_joined_with_their_roles() -> None:
    """Message objects are joined line by line, each prefixed with its role."""
    fields = {
        "messages": [
            {"role": "customer", "content": "Hi"},
            {"sender": "agent", "text": "Hello"},
            "plain",
        ]
    }
    assert text_of(fields) == "customer: Hi\nagent: Hello\nplain"


def test_dotted_path_reaches_nested_fields() -> None:
    """A dotted text field follows nested objects."""
    assert text_of({"ticket": {"body": "nested"}}, field="ticket.body") == "nested"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({}, "is missing"),
        ({"messages": None}, "is missing"),
        ({"messages": "  "}, "is empty"),
        ({"messages": []}, "is empty"),
        ({"messages": 3.5}, "is a number"),
        ({"messages": {"a": 1}}, "is an object"),
        ({"messages": [{"role": "customer"}]}, "message 0 of 'messages' has no text"),
        ({"messages": ["ok", 5]}, "message 1 of 'messages' has no text"),
    ],
)
def test_unusable_input_is_a_data_error_with_a_reason(fields: dict[str, Any], reason: str) -> None:
    """Each kind of bad input raises DataError saying what is wrong."""
    with pytest.raises(DataError, match=reason):
        text_of(fields)


def test_long_text_is_truncated_and_marked() -> None:
    """Text over the limit is cut to the limit; the original length is kept."""
    extracted = extract_text(
        SourceDocument(id="1", fields={"messages": "x" * 250}), "messages", 100
    )
    assert (len(extracted.text), extracted.original_chars, extracted.truncated) == (100, 250, True)
