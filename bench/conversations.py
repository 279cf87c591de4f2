"""Conversation-shaped development sets: labelled customer messages placed among agent turns.

Real support documents are conversations, not lone sentences: an agent greets first, answers
after, a customer follows up. The gold label of each conversation is the customer's message's
own label, so a classifier that reads the agent's politeness as the customer's mood loses here
what it keeps on the message alone. The patterns:

* ``alone``: the customer's message as the only turn (the figure the others are held to);
* ``greeting``: an agent's greeting, then the customer's message;
* ``reply``: the customer's message, then an agent's polite answer;
* ``thread``: a greeting, the message, an agent's answer, a short customer follow-up that
  carries no verdict of its own ("any update?", "ok thanks", an order number), an agent's
  closing line.

The agent lines and follow-ups are written by this project's developers (MIT, see
``bench/data/DATA.md``); each conversation's choices are seeded by its position, so a set is the
same on every run. Documents are built as the daemon reads them (``{"messages": [...]}`` with
``role``/``content``), and :func:`read_conversation` reads them through the pipeline's own
reader, so the roles and text go the same way as in a run.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from batch_processor.conversation import Conversation, Roles
from batch_processor.documents.text import extract_text
from batch_processor.models import SourceDocument

GREETINGS = (
    "Hi, thanks for contacting us! How can I help you today?",
    "Hello and welcome to customer support. My name is Sam, what can I do for you?",
    "Good morning! Thank you for reaching out, I'm happy to help.",
    "Hi there! Thanks for getting in touch with us today.",
)
REPLIES = (
    "Thank you for your patience. I'm sorry for the trouble, let me look into this for you.",
    "Thanks for reaching out! I completely understand, and I'm happy to help with this.",
    "I'm so sorry to hear that. Could you please send me your order number so I can check?",
    "Thanks for letting us know! I've passed this on to the right team, they will follow up.",
    "We really appreciate your message. I've escalated this and will update you shortly.",
    "Great question! Let me check that for you, it will only take a moment.",
)
FOLLOW_UPS = (
    "Any update on this?",
    "ok thanks",
    "My order number is 48213.",
    "Yes, the email on the account is the same.",
    "I'll wait for your answer.",
    "ok",
    "Sent you a DM with the details.",
    "It's booking ref QX7P2L.",
)
CLOSINGS = (
    "Thanks for your patience, have a great day!",
    "Is there anything else I can help you with today?",
    "Thank you for contacting us, take care!",
)

Messages = list[dict[str, str]]


def _alone(text: str, rng: random.Random) -> Messages:
    return [{"role": "customer", "content": text}]


def _greeting(text: str, rng: random.Random) -> Messages:
    return [
        {"role": "agent", "content": rng.choice(GREETINGS)},
        {"role": "customer", "content": text},
    ]


def _reply(text: str, rng: random.Random) -> Messages:
    return [
        {"role": "user", "content": text},
        {"role": "assistant", "content": rng.choice(REPLIES)},
    ]


def _thread(text: str, rng: random.Random) -> Messages:
    return [
        {"role": "agent", "content": rng.choice(GREETINGS)},
        {"role": "customer", "content": text},
        {"role": "agent", "content": rng.choice(REPLIES)},
        {"role": "customer", "content": rng.choice(FOLLOW_UPS)},
        {"role": "agent", "content": rng.choice(CLOSINGS)},
    ]


PATTERNS: dict[str, Callable[[str, random.Random], Messages]] = {
    "alone": _alone,
    "greeting": _greeting,
    "reply": _reply,
    "thread": _thread,
}


def conversation_document(text: str, pattern: str, index: int) -> dict[str, Any]:
    """The source document of the ``index``-th message of a set placed in ``pattern``."""
    rng = random.Random(f"{pattern}:{index}")
    return {"messages": PATTERNS[pattern](text, rng)}


def read_conversation(fields: dict[str, Any], roles: Roles | None = None) -> Conversation:
    """The conversation the pipeline reads out of ``fields`` (its own reader and roles)."""
    return extract_text(
        SourceDocument(id="x", fields=fields), "messages", 20_000, roles
    ).conversation


def conversations(texts: Sequence[str], pattern: str) -> list[Conversation]:
    """Each text placed in ``pattern``, read as the pipeline reads it."""
    return [read_conversation(conversation_document(t, pattern, i)) for i, t in enumerate(texts)]
