"""The LLM classifier's settings and the Batch API route's, composed into ``Settings``."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr

from batch_processor.models import ModelPrice, OutputMode


class Route(StrEnum):
    """Where LLM requests go: one at a time, or as a provider batch (see llm_route)."""

    ONLINE = "online"
    BATCH = "batch"
    AUTO = "auto"


class LLMSettings(BaseModel):
    """The endpoint, the model, the reply, the provider's limits, the budget and dedupe."""

    llm_base_url: str | None = Field(
        default=None,
        description="OpenAI-compatible endpoint, e.g. http://localhost:11434/v1 (unset: OpenAI).",
    )
    llm_model: str = Field(default="gpt-4o-mini", min_length=1, description="Model name.")
    # No flag: a command line is visible to every user of the machine (ps, /proc).
    llm_api_key: SecretStr | None = Field(
        default=None,
        description="API key (also a secrets file named llm_api_key).",
        json_schema_extra={"cli": False},
    )
    llm_timeout: float = Field(default=60.0, gt=0, le=600, description="Per-request timeout (s).")
    llm_output: OutputMode = Field(
        default=OutputMode.AUTO, description="auto, json_schema, json_object or prompt."
    )
    llm_reasks: int = Field(
        default=1, ge=0, le=5, description="Re-asks of an invalid reply before it is queued."
    )
    llm_max_output_tokens: int = Field(default=400, ge=50, le=8192, description="Reply limit.")
    llm_temperature: float | None = Field(
        default=0.0, ge=0, le=2, description="Sampling temperature (unset: the server's)."
    )
    llm_prices: dict[str, ModelPrice] = Field(
        default_factory=dict,
        description="USD per 1M input/output tokens per model, added to the built-in list.",
        json_schema_extra={"cli": False},  # a table: set it in TOML or as JSON in the env
    )
    taxonomy_file: Path | None = Field(
        default=None,
        description="Taxonomy TOML file (unset: the customer-support default).",
        json_schema_extra={"flags": ["--taxonomy"]},
    )
    rpm: int | None = Field(default=None, ge=1, description="Provider's requests per minute.")
    tpm: int | None = Field(default=None, ge=1, description="Provider's tokens per minute.")
    rate_burst_seconds: float = Field(
        default=1.0,
        ge=0.01,
        le=60,
        description="Seconds' worth of the RPM/TPM budgets that may be sent at once.",
    )
    min_concurrent: int = Field(
        default=1, ge=1, le=1024, description="Smallest request window the governor shrinks to."
    )
    rate_limit_attempts: int = Field(
        default=10, ge=1, le=100, description="429 waits per document before it is queued."
    )
    budget_usd: float | None = Field(
        default=None, gt=0, description="Stop taking documents once the run has spent this."
    )
    dedupe: bool = Field(
        default=True,
        description="Classify identical texts once (llm classifier; cached in MongoDB).",
    )
    cache_collection: str = Field(
        default="classification_cache", min_length=1, description="Collection of the dedupe cache."
    )


class BatchRouteSettings(BaseModel):
    """When and how LLM requests go through the provider's Batch API."""

    llm_route: Route = Field(
        default=Route.ONLINE,
        description="online (chat completions), batch (the provider's Batch API, half price, "
        "answers within its window) or auto (batch for a backlog, online for the rest).",
    )
    batch_route_min_docs: int = Field(
        default=5000,
        ge=1,
        description="auto route: a pending backlog of at least this many goes to the Batch API.",
    )
    batch_route_max_requests: int = Field(
        default=50_000, ge=1, le=50_000, description="Requests per provider batch (its limit)."
    )
    batch_route_max_mb: float = Field(
        default=190.0, gt=0, le=200, description="Request file size per provider batch (MB)."
    )
    batch_route_window: str = Field(
        default="24h", pattern=r"^\d+h$", description="The Batch API's completion window."
    )
    batch_route_poll_seconds: float = Field(
        default=30.0, gt=0, le=3600, description="First wait between polls of a provider batch."
    )
    batch_route_poll_max_seconds: float = Field(
        default=600.0, gt=0, le=3600, description="Longest wait between polls (backoff cap)."
    )
    batch_route_lease_seconds: float = Field(
        default=90_000.0,
        ge=2,
        le=7 * 86_400,
        description="Lease of a document sent to the Batch API: past the window, renewed "
        "at each poll.",
    )
    provider_batches_collection: str = Field(
        default="provider_batches",
        min_length=1,
        description="Collection of the Batch API route's slices (any worker resumes them).",
    )
