"""Reading an LLM reply: parse it, repair near misses, validate it against the taxonomy."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import ValidationError

from batch_processor.classifiers.taxonomy import MAX_SUMMARY, Taxonomy
from batch_processor.llm.repair import ReplyLimits, parse_reply, repair_reply
from batch_processor.models import Classification, Sentiment, SentimentLabel, trend_of


def reply_limits(taxonomy: Taxonomy) -> ReplyLimits:
    """What a reply may hold under ``taxonomy``, for the repair of near misses."""
    return ReplyLimits(
        categories=frozenset(taxonomy.categories),
        urgency=frozenset(taxonomy.urgency),
        emotions=frozenset(taxonomy.emotions),
        sentiments=frozenset(label.value for label in SentimentLabel),
        max_themes=taxonomy.max_themes,
        max_summary=MAX_SUMMARY,
        fields=frozenset(taxonomy.reply_model.model_fields),
    )


def validate_reply(taxonomy: Taxonomy, content: str) -> Classification:
    """Parse, repair and validate one reply; raise ``ValueError`` saying what is wrong."""
    return read_reply(taxonomy, content)[0]


def read_reply(
    taxonomy: Taxonomy,
    content: str,
    limits: ReplyLimits | None = None,
    turns: Mapping[str, int] | None = None,
) -> tuple[Classification, list[str]]:
    """The classification in a reply and the fields repaired on the way (see ``repair``).

    ``limits`` are :func:`reply_limits` of ``taxonomy``, passed in by a caller that reads many
    replies so that they are not worked out again for each. ``turns`` (turns by speaker, as
    :meth:`~batch_processor.conversation.Conversation.turn_counts` gives them; default one
    customer turn) decides what of the customer's course is kept: the start, the
    end and the trend for more than one customer turn, ``resolved`` once an agent answered.

    Raises ``ValueError`` saying what is wrong when the reply cannot be used: not JSON, a
    label outside the taxonomy, a missing field.
    """
    try:
        parsed, repairs = parse_reply(content)
    except ValueError as exc:
        raise ValueError(f"reply: not JSON ({exc})") from None
    fixed, repaired = repair_reply(parsed, limits or reply_limits(taxonomy))
    try:
        reply = taxonomy.reply_model.model_validate(fixed)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'reply'}: {err['msg']}"
            for err in exc.errors(include_url=False, include_input=False)[:5]
        )
        raise ValueError(problems) from None
    data = reply.model_dump()
    turns = turns or {}
    start, end = data.get("sentiment_start"), data.get("sentiment_end")
    trend = None
    if turns.get("customer", 1) > 1 and start is not None and end is not None:
        trend = trend_of(SentimentLabel(start), SentimentLabel(end))
    course = trend is not None
    resolved = data.get("resolved") if turns.get("agent", 0) else None
    classification = Classification(
        sentiment=Sentiment(**data["sentiment"]),
        category=data["category"],
        urgency=data["urgency"],
        emotion=data["emotion"],
        language=data["language"],
        themes=[theme.strip()[:80] for theme in data["themes"] if theme.strip()],
        summary=data["summary"].strip()[:500] or None,
        confidence=data["confidence"],
        sentiment_start=start if course else None,
        sentiment_end=end if course else None,
        trend=trend,
        resolved=resolved,
    )
    return classification, repairs + repaired
