"""The settings of batch_processor by concern, composed into :class:`.model.Settings`.

Each group declares its settings once: type, default, bounds and the description shown by
``--help`` and in the README's table. The Settings class inherits them all.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, SecretStr, field_validator

from batch_processor.conversation import DEFAULT_AGENT_ROLES, DEFAULT_CUSTOMER_ROLES, Roles

#: Operators a source filter may not use: server-side JavaScript, or writes to other places.
_FORBIDDEN_OPERATORS = frozenset({"$where", "$function", "$accumulator", "$out", "$merge"})
#: The processing state belongs to the daemon: a filter on it would fight the pending condition.
STATE_FIELD = "processing"


#: A filter nested deeper than this is refused (the server's own limit is 100 levels).
MAX_FILTER_DEPTH = 100


def check_filter(query: Any) -> None:
    """Reject a source filter that runs JavaScript or selects on the daemon's own state.

    The state is refused as a field (``processing.status``) and as a field path inside an
    expression (``{"$expr": {"$eq": ["$processing.status", "done"]}}``). Walked without
    recursion, so a filter nested thousands of levels deep is one error line, not a
    RecursionError.
    """
    stack: list[tuple[Any, int]] = [(query, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_FILTER_DEPTH:
            raise ValueError(f"the filter is nested more than {MAX_FILTER_DEPTH} levels deep")
        if isinstance(node, dict):
            for key, value in node.items():
                if key in _FORBIDDEN_OPERATORS:
                    raise ValueError(f"the operator {key} is not allowed in a filter")
                if isinstance(key, str) and _names_state(key):
                    raise _state_error(key)
                stack.append((value, depth + 1))
        elif isinstance(node, list):
            stack.extend((item, depth + 1) for item in node)
        elif isinstance(node, str) and node.startswith("$") and _names_state(node[1:]):
            raise _state_error(node)


def _names_state(path: str) -> bool:
    return path == STATE_FIELD or path.startswith(STATE_FIELD + ".")


def _state_error(name: str) -> ValueError:
    return ValueError(
        f"{name!r} is the daemon's processing state: to select done or failed documents "
        "again, use the reclassify command"
    )


class Mode(StrEnum):
    """How the daemon is driven: once, forever, or on a cron schedule."""

    BATCH = "batch"
    CONTINUOUS = "continuous"
    SCHEDULED = "scheduled"


class ClassifierName(StrEnum):
    """Which classifier labels the documents."""

    OFFLINE = "offline"
    LLM = "llm"
    CASCADE = "cascade"


class LogFormat(StrEnum):
    """Log rendering: JSON lines, a readable console, or chosen by whether stderr is a TTY."""

    AUTO = "auto"
    JSON = "json"
    CONSOLE = "console"


class MongoSettings(BaseModel):
    """Where the data is: the MongoDB server, its collections, how long to wait for it."""

    mongodb_uri: SecretStr | None = Field(
        default=None,
        description="MongoDB connection string; unset starts the embedded SecantusDB server.",
    )
    database: str = Field(default="batch_processor", min_length=1, description="Database name.")
    source_collection: str = Field(
        default="conversation_set", min_length=1, description="Collection to classify."
    )
    target_collection: str = Field(
        default="sentimental_analysis", min_length=1, description="Collection for results."
    )
    history_collection: str | None = Field(
        default=None,
        min_length=1,
        description="Collection of replaced results, kept by reclassify (unset: the target "
        "collection's name with _history).",
    )
    server_selection_timeout: float = Field(
        default=10.0, gt=0, le=300, description="Seconds to wait for a reachable MongoDB server."
    )
    db_outage_grace: float = Field(
        default=300.0,
        ge=0,
        description="Batch mode: seconds a MongoDB outage is waited out before the run stops "
        "(the service modes wait for any length).",
    )
    db_socket_timeout: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="Seconds one MongoDB operation may take before it fails and is retried.",
    )
    embedded_port: int = Field(
        default=0, ge=0, le=65535, description="Port of the embedded server (0: a free port)."
    )


class InputSettings(BaseModel):
    """What is read from each source document, and which documents."""

    text_field: str = Field(
        default="messages",
        min_length=1,
        description="Field (dotted path) holding the text: a string or a list of messages.",
    )
    customer_roles: tuple[str, ...] = Field(
        default=DEFAULT_CUSTOMER_ROLES,
        description="Message roles (role/sender/author) that are the customer's: the labels "
        "describe these turns. A message without a role is the customer's.",
    )
    agent_roles: tuple[str, ...] = Field(
        default=DEFAULT_AGENT_ROLES,
        description="Message roles that are an agent's: context, never evidence of the "
        "customer's mood. Other roles: the customer's if no known customer role is in the "
        "conversation, else context (counted in the run summary).",
    )
    metadata_fields: list[str] = Field(
        default_factory=lambda: ["subject", "channel", "customer_id", "priority"],
        description="Fields passed to the classifier as metadata and kept in the batch file.",
    )
    max_text_chars: int = Field(
        default=20_000, ge=100, description="Longer texts are truncated and the result says so."
    )
    source_filter: dict[str, Any] | None = Field(
        default=None,
        description="Only source documents matching this MongoDB query (JSON), e.g. "
        '\'{"channel": "email"}\'; combined with the pending condition.',
        json_schema_extra={"flags": ["--filter"]},
    )
    limit: int | None = Field(
        default=None,
        ge=1,
        description="Take at most this many documents per job (batch and scheduled mode).",
    )

    @property
    def roles(self) -> Roles:
        """Whose each message is, from ``customer_roles`` and ``agent_roles``."""
        return Roles.of(self.customer_roles, self.agent_roles)

    @field_validator("source_filter", mode="before")
    @classmethod
    def _parse_filter(cls, value: Any) -> Any:
        """A filter given as JSON text (flag, environment) is parsed and checked."""
        if isinstance(value, str):
            try:
                value = json.loads(value) if value.strip() else None
            except ValueError as exc:
                raise ValueError(f"not JSON: {exc}") from None
            except RecursionError:
                raise ValueError(
                    f"the filter is nested more than {MAX_FILTER_DEPTH} levels deep"
                ) from None
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ValueError('must be a JSON object, such as {"channel": "email"}')
        check_filter(value)
        return value


class ServiceSettings(BaseModel):
    """How the daemon is driven (once, continuously, on a schedule) and watched."""

    mode: Mode = Field(default=Mode.BATCH, description="batch, continuous or scheduled.")
    interval: float = Field(default=60.0, gt=0, description="Poll interval of continuous mode (s).")
    change_streams: bool = Field(
        default=True,
        description="Continuous mode: wake at once on inserts (polling remains the safety net).",
    )
    cron: str | None = Field(
        default=None,
        description="Scheduled mode: when to run, five fields (minute hour day-of-month month "
        "day-of-week), e.g. '*/15 * * * *', or @hourly/@daily; six-field forms are refused.",
    )
    timezone: str = Field(default="UTC", min_length=1, description="Time zone of the cron.")
    misfire_grace: float = Field(
        default=60.0, ge=0, description="A firing woken later than this (s) is skipped."
    )
    run_now: bool = Field(default=False, description="Scheduled mode: also run once at start.")
    http: bool | None = Field(
        default=None,
        description="Serve /healthz, /readyz, /metrics (unset: on except in batch mode).",
    )
    http_host: str = Field(default="127.0.0.1", min_length=1, description="Address to bind.")
    http_port: int = Field(default=9464, ge=0, le=65535, description="Port (0: a free one).")
    stall_seconds: float = Field(
        default=300.0,
        gt=0,
        description="No progress for this long: /healthz fails, the watchdog is withheld.",
    )
    shutdown_grace: float = Field(
        default=30.0,
        ge=0,
        le=3600,
        description="Seconds in-flight documents get after SIGTERM (keep below TimeoutStopSec).",
    )


class ProcessingSettings(BaseModel):
    """Pages, concurrency, retries, writes, leases and priorities."""

    batch_size: int = Field(default=100, ge=1, le=10_000, description="Documents per page/batch.")
    concurrent: int = Field(default=8, ge=1, le=1024, description="Classifications in flight.")
    classifier: ClassifierName = Field(
        default=ClassifierName.OFFLINE,
        description="Which classifier labels the documents (cascade: offline first, the LLM where "
        "it is unsure).",
    )
    retries: int = Field(default=3, ge=1, le=20, description="Attempts per classifier/DB call.")
    retry_base_delay: float = Field(
        default=0.5, ge=0, le=60, description="First backoff delay (s); doubles per attempt."
    )
    retry_max_delay: float = Field(default=30.0, ge=0, le=3600, description="Backoff cap (s).")
    flush_size: int = Field(
        default=100, ge=1, le=10_000, description="Results written to MongoDB per bulk write."
    )
    flush_interval: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description="Longest a result waits before it is written (s); with flush_size, this "
        "sets how many MongoDB round trips a slow run makes.",
    )
    max_in_flight: int | None = Field(
        default=None,
        ge=1,
        description="Documents claimed and not yet stored, at most (unset: two pages plus "
        "--concurrent).",
    )
    lease_seconds: float = Field(
        default=60.0,
        ge=2,
        le=86_400,
        description="A claim's lease (s): renewed every third of it while the document is "
        "held; any worker takes over a lease expired this long.",
    )
    claim_ttl: float | None = Field(
        default=None,
        ge=2,
        description="Deprecated (removed in the next release): the old name of lease_seconds, "
        "used for it with a warning.",
    )
    priority_field: str = Field(
        default="priority",
        min_length=1,
        description="Source field with the priority: 9/5/1 or high/normal/low (else normal).",
    )
    priority_fairness: int = Field(
        default=10,
        ge=0,
        description="Every Nth page comes from the lower priority levels, so they get at "
        "least 1/N of the pages while higher ones never run out (0: strict priority).",
    )
    workers_collection: str = Field(
        default="batch_workers",
        min_length=1,
        description="Collection of the workers' heartbeats (for status).",
    )
    max_rss_mb: float | None = Field(
        default=None,
        gt=0,
        description="Above this resident memory (MiB), claim smaller pages until it falls "
        "(unset: no limit).",
    )


class FileSettings(BaseModel):
    """The batch directory (batch files, checkpoints, retry queues) and recovery."""

    batch_dir: Path = Field(default=Path("batch_files"), description="Batch files, checkpoints.")
    checkpoint_interval: int = Field(
        default=50, ge=1, description="Documents finished between checkpoints."
    )
    recover: bool = Field(default=False, description="Resume an unfinished job first.")
    dry_run: bool = Field(
        default=False,
        description="Count, estimate tokens and cost, show a few texts; write nothing.",
    )
    queue_max_attempts: int = Field(
        default=3, ge=1, le=100, description="Drains of a retry-queue item before dead letter."
    )
    queue_drain_interval: float = Field(
        default=60.0, gt=0, description="Seconds between retry-queue drains during a run."
    )


class LogSettings(BaseModel):
    """Log level and format; the progress bar."""

    log_level: str = Field(
        default="INFO",
        pattern=r"(?i)^(DEBUG|INFO|WARNING|ERROR)$",
        description="DEBUG, INFO, WARNING or ERROR.",
    )
    log_format: LogFormat = Field(default=LogFormat.AUTO, description="auto, json or console.")
    progress: bool = Field(default=True, description="Show a progress bar when on a TTY.")
