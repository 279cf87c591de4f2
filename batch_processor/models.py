"""The data that moves through the pipeline, as validated pydantic models.

A source document is carried as a :class:`SourceDocument` whose ``id`` is the MongoDB ``_id``
in canonical extended JSON (so it survives a trip through a batch file unchanged) and whose
``fields`` hold the text field and the metadata, already made JSON-safe by the MongoDB module.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from batch_processor.errors import ErrorCategory


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


def claim_token(job_id: str, label: str | int, now: datetime | None = None) -> str:
    """A unique claim token that sorts by claim time: the fence of every write under the claim.

    It starts with the claim's time in milliseconds (13 digits), so of two claims on one
    document the later one (a takeover, after the first lease expired) compares greater.
    """
    millis = int((now or utcnow()).timestamp() * 1000)
    return f"{millis:013d}-{job_id}-{label}"


class SentimentLabel(StrEnum):
    """Overall sentiment of a conversation."""

    POSITIVE = "positive"
    NEUTRAL = "neutral"
    NEGATIVE = "negative"


class Trend(StrEnum):
    """How the customer's sentiment moved from their first turn to their last."""

    IMPROVING = "improving"
    WORSENING = "worsening"
    STEADY = "steady"


class Resolved(StrEnum):
    """Whether the customer's issue looks resolved by the end of the conversation (LLM only)."""

    YES = "yes"
    NO = "no"
    UNCLEAR = "unclear"


#: Version of the stored result's shape: 2 added the customer's course (sentiment_start,
#: sentiment_end, trend, resolved) and the turn counts; results without it are version 1.
RESULT_SCHEMA_VERSION = 2


class Urgency(StrEnum):
    """How soon the customer needs an answer."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class Category(StrEnum):
    """The customer-support taxonomy shared by every classifier."""

    BILLING = "billing"
    TECHNICAL_ISSUE = "technical_issue"
    ACCOUNT_ACCESS = "account_access"
    SHIPPING_DELIVERY = "shipping_delivery"
    REFUND_RETURN = "refund_return"
    CANCELLATION = "cancellation"
    PRODUCT_INQUIRY = "product_inquiry"
    COMPLAINT = "complaint"
    FEATURE_REQUEST = "feature_request"
    GENERAL_INQUIRY = "general_inquiry"


class OutputMode(StrEnum):
    """How structured output is requested from the endpoint."""

    AUTO = "auto"  # json_schema, stepping down when the endpoint rejects it
    JSON_SCHEMA = "json_schema"  # strict JSON schema (OpenAI, vLLM, Ollama, llama.cpp)
    JSON_OBJECT = "json_object"  # JSON mode; the schema is in the instructions
    PROMPT = "prompt"  # no response_format at all; the schema is in the instructions


class Sentiment(BaseModel):
    """A sentiment label with a signed score in [-1, 1]."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    label: SentimentLabel
    score: float = Field(ge=-1.0, le=1.0)


class Classification(BaseModel):
    """What a classifier says about one conversation's customer; validated before it is stored.

    Every label describes the customer (agent turns are context). ``sentiment`` is the
    customer's over the whole conversation; ``sentiment_start``, ``sentiment_end`` and
    ``trend`` are set only when the customer spoke more than once; ``resolved`` only by the LLM.

    Labels are plain strings here because the taxonomy is a file (see
    :mod:`batch_processor.classifiers.taxonomy`): each classifier validates its labels against
    the taxonomy it was built for before returning, so nothing unvalidated reaches MongoDB.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    sentiment: Sentiment
    category: str = Field(min_length=1, max_length=64)
    urgency: str = Field(min_length=1, max_length=64)
    language: str = Field(pattern=r"^([a-z]{2}|und)$", description="ISO 639-1, or 'und'.")
    confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    themes: list[str] = Field(default_factory=list, max_length=10)
    emotion: str | None = None
    summary: str | None = Field(default=None, max_length=500)
    sentiment_start: SentimentLabel | None = None
    sentiment_end: SentimentLabel | None = None
    trend: Trend | None = None
    resolved: Resolved | None = None


#: A change of score smaller than this (on the -1..1 scale) is no trend, whatever the labels.
TREND_MARGIN = 0.4


def trend_of(start: SentimentLabel, end: SentimentLabel, change: float | None = None) -> Trend:
    """The trend from the customer's first sentiment to their last (by label: neg < neu < pos).

    ``change`` is the score's change, where the classifier has scores: a label that moved by
    less than ``TREND_MARGIN`` (neutral that leans one way, then the other) is steady.
    """
    order = (SentimentLabel.NEGATIVE, SentimentLabel.NEUTRAL, SentimentLabel.POSITIVE)
    step = order.index(end) - order.index(start)
    if step == 0 or (change is not None and abs(change) < TREND_MARGIN):
        return Trend.STEADY
    return Trend.IMPROVING if step > 0 else Trend.WORSENING


class TokenUsage(BaseModel):
    """Tokens one LLM reply used, as the provider reported them."""

    model_config = ConfigDict(frozen=True)

    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)
    cached_tokens: int = Field(
        default=0, ge=0, description="Input tokens served from the provider's prompt cache."
    )

    @property
    def total(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens


class ModelPrice(BaseModel):
    """USD per million tokens for one model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: float = Field(ge=0, description="USD per 1M input (prompt) tokens.")
    output: float = Field(ge=0, description="USD per 1M output (completion) tokens.")
    cached_input: float | None = Field(
        default=None,
        ge=0,
        description="USD per 1M input tokens served from the prompt cache (unset: half of input).",
    )
    batch_discount: float = Field(
        default=0.5, gt=0, le=1, description="Share of the price paid on the Batch API route."
    )

    def cost(self, usage: TokenUsage, *, batch: bool = False) -> float:
        """The price of ``usage`` in USD (cached input at its price; the batch route's share)."""
        cached = min(usage.cached_tokens, usage.input_tokens)
        cached_price = self.cached_input if self.cached_input is not None else self.input / 2
        online = (
            (usage.input_tokens - cached) * self.input
            + cached * cached_price
            + usage.output_tokens * self.output
        ) / 1e6
        return online * self.batch_discount if batch else online


class Verdict(BaseModel):
    """One tier's answer inside a cascade record: its sentiment, category and confidence."""

    sentiment: SentimentLabel
    category: str
    confidence: float | None = Field(default=None, ge=0.0, le=1.0)


class CascadeRecord(BaseModel):
    """How the confidence cascade answered one document (see :mod:`batch_processor.cascade`).

    ``route``: ``offline`` (sure enough), ``llm`` (escalated: the LLM's answer is the result) or
    ``audit`` (sure, sampled for the LLM to measure agreement: the offline answer is kept).
    """

    model_config = ConfigDict(frozen=True)

    route: Literal["offline", "llm", "audit"]
    model: str
    confidence: float = Field(ge=0.0, le=1.0, description="Offline, calibrated.")
    threshold: float = Field(ge=0.0, le=1.0, description="Escalated below this confidence.")
    offline: Verdict
    llm: Verdict | None = None
    second: Verdict | None = Field(default=None, description="The escalation model's answer.")


class ClassifierOutput(BaseModel):
    """A classifier's answer for one text: the classification and what it cost to get it."""

    model_config = ConfigDict(frozen=True)

    classification: Classification
    usage: TokenUsage | None = Field(default=None, description="None: no LLM call was made.")
    cost_usd: float = Field(default=0.0, ge=0.0)
    cached: bool = Field(default=False, description="Came from the dedupe cache.")
    truncated: bool = Field(default=False, description="The classifier shortened the text.")
    model: str | None = None
    taxonomy_version: str | None = None
    repairs: tuple[str, ...] = Field(
        default=(), description="Reply fields repaired before validation (LLM near misses)."
    )
    cascade: CascadeRecord | None = None


class SourceDocument(BaseModel):
    """One source document as fetched: its encoded ``_id`` and the fields we read."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="The MongoDB _id in canonical extended JSON.")
    fields: dict[str, Any] = Field(default_factory=dict)
    problem: str | None = Field(
        default=None,
        description="Why the document cannot be classified as read (a DATA failure), if so.",
    )
    claim: str | None = Field(
        default=None,
        description="The claim token this worker holds the document under (its write fence).",
    )
    replaced: tuple[str, ...] = Field(
        default=(), description="Fields besides the text whose invalid UTF-8 was replaced."
    )


class ClassifiedDocument(BaseModel):
    """A validated classification of one source document, ready to be stored."""

    model_config = ConfigDict(frozen=True)

    doc_id: str
    classification: Classification
    classifier: str
    classifier_version: str
    attempts: int = Field(ge=1)
    text_chars: int = Field(ge=0)
    truncated: bool = False
    turns: dict[str, int] = Field(
        default_factory=dict,
        description="Turns by speaker (customer, agent) and turns of an unknown role.",
    )
    job_id: str
    classified_at: datetime = Field(default_factory=utcnow)
    model: str | None = None
    taxonomy_version: str | None = None
    usage: TokenUsage | None = None
    cost_usd: float = 0.0
    cached: bool = False
    repairs: tuple[str, ...] = ()
    claim: str | None = Field(default=None, description="The claim token: its write fence.")
    route: Literal["online", "batch"] | None = Field(
        default=None, description="How an LLM answered: one request, or the Batch API."
    )
    replaced: tuple[str, ...] = Field(
        default=(), description="Fields besides the text whose invalid UTF-8 was replaced."
    )
    cascade: CascadeRecord | None = None

    @classmethod
    def of(
        cls,
        output: ClassifierOutput,
        *,
        doc_id: str,
        classifier: tuple[str, str],
        attempts: int,
        text: tuple[int, bool],
        job_id: str,
        claim: str | None,
        route: Literal["online", "batch"] | None,
        turns: dict[str, int] | None = None,
    ) -> ClassifiedDocument:
        """The result of one classifier output for one document.

        ``classifier`` is (name, version); ``text`` is (length before truncation, truncated);
        ``turns`` the conversation's turns by speaker.
        """
        return cls(
            doc_id=doc_id,
            classification=output.classification,
            classifier=classifier[0],
            classifier_version=classifier[1],
            attempts=attempts,
            text_chars=text[0],
            truncated=text[1] or output.truncated,
            turns=turns or {},
            job_id=job_id,
            model=output.model,
            taxonomy_version=output.taxonomy_version,
            usage=output.usage,
            cost_usd=output.cost_usd,
            cached=output.cached,
            repairs=output.repairs,
            claim=claim,
            route=route,
            cascade=output.cascade,
        )


class FailedDocument(BaseModel):
    """A source document that ends failed, with the reason and its error category."""

    model_config = ConfigDict(frozen=True)

    doc_id: str
    error: str
    category: ErrorCategory
    attempts: int = Field(ge=0)
    job_id: str
    claim: str | None = Field(default=None, description="The claim token: its write fence.")


class ClassifyRetry(BaseModel):
    """A classify retry-queue item: the document, with how often and why it failed."""

    doc: SourceDocument
    attempts: int = Field(default=1, ge=1, description="Failed rounds (each of --retries calls).")
    error: str
    category: ErrorCategory
    queued_at: datetime = Field(default_factory=utcnow)


class StoreRetry(BaseModel):
    """A store retry-queue item: computed results and failure marks MongoDB did not take."""

    results: list[ClassifiedDocument] = Field(default_factory=list)
    failures: list[FailedDocument] = Field(default_factory=list)
    attempts: int = Field(default=1, ge=1)
    error: str
    category: ErrorCategory
    queued_at: datetime = Field(default_factory=utcnow)


class DeadLetter(BaseModel):
    """An item that failed past its retry limit: kept on disk, its document marked failed."""

    queue: Literal["classify", "store"]
    doc_ids: list[str]
    error: str
    category: ErrorCategory
    attempts: int
    item: dict[str, Any]
    dead_at: datetime = Field(default_factory=utcnow)


class JobStatus(StrEnum):
    """Whether the job a checkpoint describes ended, and how."""

    RUNNING = "running"  # still running, or killed: its batch files need --recover
    FINISHED = "finished"  # ended cleanly, nothing left in flight
    FAILED = "failed"  # stopped by an error (disk full, configuration...), see ``error``


class Checkpoint(BaseModel):
    """Where a job is: written atomically every ``--checkpoint-interval`` documents and at exit."""

    format: Literal[1] = 1
    job_id: str
    status: JobStatus = JobStatus.RUNNING
    error: str | None = Field(default=None, description="Why a failed job stopped.")
    worker_id: str | None = Field(default=None, description="The worker that ran the job.")
    started_at: datetime
    updated_at: datetime = Field(default_factory=utcnow)
    position: str | None = Field(default=None, description="Last _id paged (extended JSON).")
    counters: dict[str, int] = Field(default_factory=dict)
    in_flight: list[str] = Field(default_factory=list, description="Unfinished batch files.")
