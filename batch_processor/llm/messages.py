"""What is sent to the model and read back: messages, token estimates, usage, reply text."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from batch_processor.classifiers.taxonomy import Taxonomy
from batch_processor.conversation import Conversation
from batch_processor.models import TokenUsage


def estimate_tokens(messages: list[dict[str, str]]) -> int:
    """A cheap upper-ish estimate of prompt tokens: 4 characters a token, plus framing."""
    return sum(len(message["content"]) // 4 + 8 for message in messages)


def prompt_estimate(
    taxonomy: Taxonomy, conversation: Conversation, metadata: Mapping[str, Any]
) -> int:
    """Prompt tokens of one request (json_schema mode): instructions, schema and conversation."""
    system = {"role": "system", "content": taxonomy.instructions(include_schema=False)}
    schema = len(json.dumps(taxonomy.json_schema())) // 4
    return estimate_tokens([system, *conversation_messages(conversation, metadata)]) + schema


def conversation_messages(
    conversation: Conversation | str, metadata: Mapping[str, Any]
) -> list[dict[str, str]]:
    """The conversation as data: its turns with who said each, in a JSON object.

    JSON, so no text can close a delimiter; one user message, so no turn can pose as the
    instructions. Each turn's ``role`` is ``customer`` or ``agent`` (the labels describe the
    customer; see :mod:`batch_processor.conversation`), whatever the document called it.
    """
    context = {
        key: value
        for key, value in metadata.items()
        if isinstance(value, str | int | float | bool) and key != "_id"
    }
    turns = [
        {"role": turn.speaker.value, "text": turn.text}
        for turn in Conversation.of(conversation).turns
    ]
    payload = {"conversation": turns, "metadata": context}
    return [{"role": "user", "content": json.dumps(payload, ensure_ascii=False)}]


def feedback_messages(content: str, problem: str) -> list[dict[str, str]]:
    """The invalid reply and what is wrong with it, to ask again."""
    return [
        {"role": "assistant", "content": content[:2000]},
        {
            "role": "user",
            "content": (
                f"That reply is invalid: {problem[:500]}. Reply again with one JSON object "
                "that matches the schema, using only the allowed labels."
            ),
        },
    ]


def usage_of(response: Mapping[str, Any] | None) -> TokenUsage | None:
    """The token usage a response body reports, if it reports one (odd values count as 0)."""
    usage = response.get("usage") if response is not None else None
    if not isinstance(usage, Mapping):
        return None
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, Mapping) else None
    return TokenUsage(
        input_tokens=_count(usage.get("prompt_tokens")),
        output_tokens=_count(usage.get("completion_tokens")),
        cached_tokens=_count(cached),
    )


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def reply_text(response: Mapping[str, Any]) -> str:
    """The reply text ('' when there is none, which then fails validation and is re-asked)."""
    choices = response.get("choices")
    first = choices[0] if isinstance(choices, list) and choices else None
    message = first.get("message") if isinstance(first, Mapping) else None
    content = message.get("content") if isinstance(message, Mapping) else None
    return content if isinstance(content, str) else ""


def shorten(conversation: Conversation, limit: int | None, used: int | None) -> Conversation:
    """Cut ``conversation`` so that the request should fit ``limit`` tokens, with a margin.

    See :func:`shortened_length`; its first turns are kept.
    """
    return conversation.truncated(shortened_length(conversation.chars, limit, used))


def shortened_length(chars: int, limit: int | None, used: int | None) -> int:
    """Characters of text to keep so that the request should fit ``limit`` tokens; else half.

    The excess comes off the text alone: the instructions and the schema stay, so cutting the
    text by the ratio ``limit / used`` would leave a long prompt still too long (the text is
    estimated at 4 characters a token; 15 % more is cut for text that packs more tokens).
    """
    if limit and used and used > limit:
        text_tokens = max(1.0, chars / 4)
        share = min(limit / used, 1 - (used - limit) / text_tokens)
        keep = int(chars * share * 0.85)
    else:
        keep = chars // 2
    return max(keep, 100)
