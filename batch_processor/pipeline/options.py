"""The pipeline's knobs as plain values (settings enter once, at the edge)."""

from __future__ import annotations

from dataclasses import dataclass

from batch_processor.conversation import DEFAULT_AGENT_ROLES, DEFAULT_CUSTOMER_ROLES, Roles


@dataclass(frozen=True, slots=True)
class PipelineOptions:
    """The pipeline's knobs, as plain values (see Settings for their meaning)."""

    batch_size: int = 100
    concurrent: int = 8
    text_field: str = "messages"
    max_text_chars: int = 20_000
    customer_roles: tuple[str, ...] = DEFAULT_CUSTOMER_ROLES
    agent_roles: tuple[str, ...] = DEFAULT_AGENT_ROLES
    checkpoint_interval: int = 50
    flush_size: int = 100
    flush_interval: float = 5.0
    queue_max_attempts: int = 3
    queue_drain_interval: float = 60.0
    priority_field: str = "priority"
    priority_fairness: int = 10
    max_rss_mb: float | None = None
    shutdown_grace: float = 30.0
    max_in_flight: int | None = None  # None: two pages plus the concurrency
    limit: int | None = None  # documents a job claims at most (None: all pending)

    @property
    def roles(self) -> Roles:
        """Whose each turn is (see :mod:`batch_processor.conversation`)."""
        return Roles.of(self.customer_roles, self.agent_roles)

    @property
    def in_flight_limit(self) -> int:
        """Documents claimed and not yet ended, at most."""
        if self.max_in_flight is not None:
            return self.max_in_flight
        return 2 * self.batch_size + self.concurrent
