"""The pipeline's knobs as plain values (settings enter once, at the edge)."""

from __future__ import annotations

from dataclasses import dataclass

from batch_processor.conversation import Roles


@dataclass(frozen=True, slots=True)
class PipelineOptions:
    """The pipeline's knobs, as plain values (see Settings for their meaning and defaults)."""

    batch_size: int
    concurrent: int
    text_field: str
    max_text_chars: int
    customer_roles: tuple[str, ...]
    agent_roles: tuple[str, ...]
    checkpoint_interval: int
    flush_size: int
    flush_interval: float
    queue_max_attempts: int
    queue_drain_interval: float
    priority_field: str
    priority_fairness: int
    max_rss_mb: float | None
    shutdown_grace: float
    max_in_flight: int | None  # None: two pages plus the concurrency
    limit: int | None  # documents a job claims at most (None: all pending)

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
