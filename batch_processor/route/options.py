"""The route's options (from the ``batch_route_*`` settings) and its counters."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from batch_processor.settings import Route, Settings


@dataclass(frozen=True, slots=True)
class RouteOptions:
    """The route's settings (see the ``batch_route_*`` settings)."""

    route: Route
    min_docs: int
    max_requests: int
    max_bytes: int
    window: str
    poll_seconds: float
    poll_max_seconds: float
    doc_lease: timedelta  # a document sent to the provider: past the window
    lease: timedelta  # a slice's owner: as long as a document's in the online route
    concurrent: int
    online_high_priority: bool

    @classmethod
    def of(cls, settings: Settings) -> RouteOptions:
        """The options the settings describe."""
        return cls(
            route=settings.llm_route,
            min_docs=settings.batch_route_min_docs,
            max_requests=settings.batch_route_max_requests,
            max_bytes=int(settings.batch_route_max_mb * 1024 * 1024),
            window=settings.batch_route_window,
            poll_seconds=settings.batch_route_poll_seconds,
            poll_max_seconds=max(settings.batch_route_poll_seconds,
                                 settings.batch_route_poll_max_seconds),
            doc_lease=timedelta(seconds=settings.batch_route_lease_seconds),
            lease=timedelta(seconds=settings.lease_seconds),
            concurrent=settings.concurrent,
            online_high_priority=settings.llm_route is Route.AUTO,
        )  # fmt: skip


@dataclass(slots=True)
class RouteStats:
    """What the route did in this process: slices, lines, outcomes, spend."""

    slices_submitted: int = 0
    slices_finished: int = 0
    slices_in_flight: int = 0
    slices_taken_over: int = 0
    orphans_cleaned: int = 0
    requests: int = 0
    stored_from_batch: int = 0
    stored_online: int = 0
    deduped: int = 0
    failed: Counter[str] = field(default_factory=Counter)  # by error category
    lost_lease: int = 0
    lines_retried_online: Counter[str] = field(default_factory=Counter)
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def stored(self) -> int:
        """Results stored by the route: from batches, online fallbacks and the cache."""
        return self.stored_from_batch + self.stored_online + self.deduped

    @property
    def ended(self) -> int:
        """Documents the route ended: stored or failed."""
        return self.stored + self.failed.total()

    def summary(self) -> dict[str, Any]:
        """For the run summary."""
        return {
            "slices_submitted": self.slices_submitted,
            "slices_finished": self.slices_finished,
            "slices_in_flight": self.slices_in_flight,
            "slices_taken_over": self.slices_taken_over,
            "orphans_cleaned": self.orphans_cleaned,
            "requests": self.requests,
            "stored_from_batch": self.stored_from_batch,
            "stored_online": self.stored_online,
            "deduped": self.deduped,
            "failed": dict(self.failed),
            "lost_lease": self.lost_lease,
            "lines_retried_online": dict(self.lines_retried_online),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
        }
