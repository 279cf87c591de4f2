"""Reading the text out of a source document, and the DATA errors for unusable input."""

from __future__ import annotations

from typing import Any

import pytest

from batch_processor.conversation import Conversation, Roles, Speaker
from batch_processor.documents.text import extract_text
from batch_processor.errors import DataError
from batch_processor.models import SourceDocument


def text_of(fields: dict[str, Any], field: str = "messages", limit: int = 1000) -> str:
    """The extracted conversation of a document with these fields, as a transcript."""
    return extract_text(SourceDocument(id="1", fields=fields), field, limit).text


def conversation_of(messages: Any, roles: Roles | None = None) -> Conversation:
    """The conversation read from a ``messages`` field."""
    doc = SourceDocument(id="1", fields={"messages": messages})
    return extract_text(doc, "messages", 10_000, roles).conversation


def test_string_field_is_one_customer_turn() -> None:
    """A plain string is the customer's one turn, stripped, with no role prefix in its text."""
    conversation = conversation_of("  hello there  ")
    assert conversation.customer_text == "hello there"
    assert [turn.speaker for turn in conversation.turns] == [Speaker.CUSTOMER]


def test_messages_keep_who_said_them() -> None:
    """Each message is a turn with its speaker; the customer's text carries no role prefix."""
    fields = {
        "messages": [
            {"role": "customer", "content": "Hi"},
            {"sender": "agent", "text": "Hello"},
            "plain",
        ]
    }
    assert text_of(fields) == "customer: Hi\nagent: Hello\ncustomer: plain"
    assert conversation_of(fields["messages"]).customer_text == "Hi\nplain"


@pytest.mark.parametrize(
    ("role", "speaker"),
    [
        ("user", Speaker.CUSTOMER),
        ("Customer", Speaker.CUSTOMER),
        ("end-user", Speaker.CUSTOMER),
        ("EndUser", Speaker.CUSTOMER),
        ("requester", Speaker.CUSTOMER),
        ("assistant", Speaker.AGENT),
        ("Support Agent", Speaker.AGENT),
        ("Acme Support", Speaker.AGENT),
        ("bot", Speaker.AGENT),
        ("system", Speaker.AGENT),
    ],
)
def test_common_export_roles_are_known(role: str, speaker: Speaker) -> None:
    """The roles of common exports are known by their words, whatever their case."""
    assert Roles().speaker(role) is speaker


def test_an_unknown_role_is_context_beside_a_known_customer() -> None:
    """An unknown role is not the customer when a known customer speaks; it is counted."""
    conversation = conversation_of(
        [
            {"role": "user", "content": "My card was charged twice"},
            {"role": "admin", "content": "ok"},
        ]
    )
    assert conversation.customer_text == "My card was charged twice"
    assert conversation.unknown_roles == ("admin",)


def test_an_unknown_role_is_the_customer_beside_only_agents() -> None:
    """A customer under their own name beside a known agent is the customer."""
    conversation = conversation_of(
        [{"author": "Maria", "body": "Where is my parcel?"}, {"author": "agent", "body": "Hi!"}]
    )
    assert conversation.customer_text == "Where is my parcel?"
    assert conversation.unknown_roles == ("Maria",)


def test_roles_come_from_the_settings_lists() -> None:
    """Custom role lists replace the defaults."""
    roles = Roles.of(customer=["guest"], agent=["concierge"])
    conversation = conversation_of(
        [
            {"role": "concierge", "content": "Welcome!"},
            {"role": "guest", "content": "Room is cold"},
        ],
        roles,
    )
    assert conversation.customer_text == "Room is cold"
    assert conversation.unknown_roles == ()


def test_dotted_path_reaches_nested_fields() -> None:
    """A dotted text field follows nested objects."""
    assert text_of({"ticket": {"body": "nested"}}, field="ticket.body") == "customer: nested"


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
    assert (extracted.conversation.chars, extracted.original_chars, extracted.truncated) == (
        100,
        250,
        True,
    )
