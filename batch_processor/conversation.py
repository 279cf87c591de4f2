"""A conversation as the classifiers read it: turns, each spoken by the customer or an agent.

Every label the daemon stores describes **the customer**: agent turns are context, never
evidence of the customer's mood (an apology or "thanks for your patience" says nothing about
how the customer feels). So the text field is not flattened into one string; each turn keeps
who said it, decided by :class:`Roles`:

* a role listed among the customer roles (``user``, ``customer``, ...) is the customer's, one
  listed among the agent roles (``agent``, ``assistant``, ``bot``, ...) an agent's. A role is
  compared by its words, case-insensitively, so ``Support Agent`` and ``end-user`` are known;
* a plain string, and a message without a role, is the customer's;
* **an unknown role** (``"Alice"``, ``"admin"``) is the customer's when the conversation has no
  known customer turn (a customer under their own name beside a known agent), and context
  otherwise. Unknown roles are counted in the run summary, so a user can add them to a list.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

#: Roles read as the customer's by default (the ``customer_roles`` setting).
DEFAULT_CUSTOMER_ROLES = ("user", "customer", "client", "end_user", "visitor", "requester")
#: Roles read as an agent's by default (the ``agent_roles`` setting).
DEFAULT_AGENT_ROLES = ("agent", "assistant", "support", "bot", "operator", "staff", "system")
_WORD = re.compile(r"[a-z0-9]+")


class Speaker(StrEnum):
    """Who said a turn, as far as the labels are concerned."""

    CUSTOMER = "customer"
    AGENT = "agent"


@dataclass(frozen=True, slots=True)
class Turn:
    """One message of a conversation: who said it, and its text."""

    speaker: Speaker
    text: str
    #: The role as the document gave it (None: no role), for display and the LLM.
    role: str | None = None


@dataclass(frozen=True, slots=True)
class Conversation:
    """The turns of one conversation, in order (see the module docstring for whose they are)."""

    turns: tuple[Turn, ...]
    #: The roles, one per turn, found in neither list (their speaker follows the rule above).
    unknown_roles: tuple[str, ...] = ()

    @classmethod
    def of(cls, value: Conversation | str) -> Conversation:
        """``value`` itself, or a plain text as one customer turn (for library callers)."""
        if isinstance(value, Conversation):
            return value
        return cls((Turn(Speaker.CUSTOMER, value),))

    @property
    def customer(self) -> tuple[Turn, ...]:
        """The customer's turns, in order."""
        return tuple(turn for turn in self.turns if turn.speaker is Speaker.CUSTOMER)

    @property
    def customer_text(self) -> str:
        """The customer's words, one turn a line, with no role prefix."""
        return "\n".join(turn.text for turn in self.customer)

    @property
    def chars(self) -> int:
        """Characters of text in every turn."""
        return sum(len(turn.text) for turn in self.turns)

    def turn_counts(self) -> dict[str, int]:
        """Turns by speaker (``customer``, ``agent``), and ``unknown_role`` when there are any."""
        counts = {
            speaker.value: sum(turn.speaker is speaker for turn in self.turns)
            for speaker in Speaker
        }
        if self.unknown_roles:
            counts["unknown_role"] = len(self.unknown_roles)
        return counts

    def transcript(self) -> str:
        """The turns as a person reads them, one a line: ``customer: ...`` / ``agent: ...``."""
        return "\n".join(f"{turn.speaker.value}: {turn.text}" for turn in self.turns)

    def truncated(self, max_chars: int) -> Conversation:
        """The conversation cut to ``max_chars`` characters of text, keeping the first turns."""
        kept: list[Turn] = []
        room = max_chars
        for turn in self.turns:
            if room <= 0:
                break
            text = turn.text[:room]
            kept.append(Turn(turn.speaker, text, turn.role))
            room -= len(text)
        return Conversation(tuple(kept), self.unknown_roles)


@dataclass(frozen=True, slots=True)
class Roles:
    """Which document roles are the customer's and which an agent's (see the module docstring)."""

    customer: frozenset[str] = frozenset(DEFAULT_CUSTOMER_ROLES)
    agent: frozenset[str] = frozenset(DEFAULT_AGENT_ROLES)

    @classmethod
    def of(cls, customer: Iterable[str], agent: Iterable[str]) -> Roles:
        """Roles from the settings' lists, compared case-insensitively."""
        return cls(frozenset(_normal(r) for r in customer), frozenset(_normal(r) for r in agent))

    def speaker(self, role: str | None) -> Speaker | None:
        """The speaker of ``role``: None when the role is unknown (no role: the customer)."""
        if role is None or not role.strip():
            return Speaker.CUSTOMER
        normal = _normal(role)
        if normal in self.customer:
            return Speaker.CUSTOMER
        if normal in self.agent:
            return Speaker.AGENT
        # "Support Agent", "end-user", "Acme Support": a role word inside a longer name.
        words = set(_WORD.findall(normal.replace("_", " ")))
        if words & self.agent:
            return Speaker.AGENT
        if words & self.customer or normal.replace("_", "") in _joined(self.customer):
            return Speaker.CUSTOMER
        return None

    def conversation(self, messages: Iterable[tuple[str | None, str]]) -> Conversation:
        """The conversation of ``(role, text)`` pairs, with unknown roles resolved by the rule."""
        pairs = list(messages)
        speakers = [self.speaker(role) for role, _ in pairs]
        unknown = tuple(
            role or ""
            for (role, _), speaker in zip(pairs, speakers, strict=True)
            if speaker is None
        )
        has_customer = Speaker.CUSTOMER in speakers
        # An unknown role is context beside a known customer; otherwise it is the customer.
        fallback = Speaker.AGENT if has_customer else Speaker.CUSTOMER
        turns = tuple(
            Turn(speaker or fallback, text, role)
            for (role, text), speaker in zip(pairs, speakers, strict=True)
        )
        return Conversation(turns, unknown)


def _joined(roles: frozenset[str]) -> set[str]:
    """The roles written as one word: ``enduser`` for ``end_user``."""
    return {role.replace("_", "") for role in roles}


def _normal(role: str) -> str:
    """A role compared by its words: ``End-User`` and ``end user`` are ``end_user``."""
    return "_".join(_WORD.findall(role.lower()))
