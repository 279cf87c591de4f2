"""Run statistics: what a run did, for the per-batch lines, the checkpoint and the summary."""

from __future__ import annotations

import resource
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from batch_processor.errors import ErrorCategory, categorize

#: Unknown roles counted by name in the summary; the rest under "(others)".
MAX_ROLE_NAMES = 10


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


@dataclass(slots=True)
class RunStats:
    """Counters of one run; ``clock`` is injectable so rates are testable."""

    clock: Callable[[], float] = time.monotonic
    started: float = 0.0
    fetched: int = 0
    succeeded: int = 0
    already_stored: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    queued_classify: int = 0
    queued_store: int = 0
    dead_lettered: int = 0
    recovered_from_queues: int = 0
    classifier_retries: int = 0
    db_retries: int = 0
    batches: int = 0
    released: int = 0
    #: Results and marks dropped because another worker took the document over.
    lost_lease: int = 0
    #: Documents whose priority value was invalid (taken as normal).
    invalid_priority: int = 0
    retries_by_category: Counter[str] = field(default_factory=Counter)
    #: Turns whose role is neither a customer's nor an agent's, by role (a few names at most).
    unknown_roles: Counter[str] = field(default_factory=Counter)
    classifier: dict[str, Any] = field(default_factory=dict)
    #: What the Batch API route did beside this job (None: the online route only).
    route: dict[str, Any] | None = None
    ended: float | None = None
    #: Documents waiting in the retry queues on disk when the run ended (None: not counted).
    waiting: dict[str, int] | None = None

    def __post_init__(self) -> None:
        self.started = self.clock()

    @property
    def failed_total(self) -> int:
        """Documents marked failed in this run, all categories."""
        return sum(self.failed.values())

    @property
    def processed(self) -> int:
        """Documents that ended in this run: stored, already stored, or failed."""
        return self.succeeded + self.already_stored + self.failed_total

    def add_route(
        self, stored: int, failed: Counter[str], lost_lease: int, summary: dict[str, Any]
    ) -> None:
        """Count what the Batch API route ended beside this job (see ``route``)."""
        self.succeeded += stored
        self.failed.update(failed)
        self.lost_lease += lost_lease
        self.route = summary

    def add_db_retry(self, error: BaseException | None = None) -> None:
        """Count one retried MongoDB call (by the category of ``error``, if given)."""
        self.db_retries += 1
        if error is not None:
            self.retries_by_category[str(categorize(error))] += 1

    def add_classifier_retry(self, error: BaseException | None = None) -> None:
        """Count one retried classifier call (by the category of ``error``, if given)."""
        self.classifier_retries += 1
        if error is not None:
            self.retries_by_category[str(categorize(error))] += 1

    def count_invalid_priority(self, count: int) -> None:
        """Count documents whose priority value was invalid (they are taken as normal)."""
        self.invalid_priority += count

    def count_unknown_roles(self, roles: Iterable[str]) -> None:
        """Count turns of unknown roles; past ``MAX_ROLE_NAMES`` names, under ``(others)``."""
        for role in roles:
            name = role[:40]
            known = name in self.unknown_roles or len(self.unknown_roles) < MAX_ROLE_NAMES
            self.unknown_roles[name if known else "(others)"] += 1

    def record_failure(self, category: ErrorCategory) -> None:
        """Count one document marked failed."""
        self.failed[str(category)] += 1

    def set_waiting(self, *, classify: int, store: int) -> None:
        """Record what the retry queues on disk hold now (documents), for the summary."""
        self.waiting = {"classify": classify, "store": store}

    def finish(self) -> None:
        """Stop the run's clock, so the summary says the same whenever it is read."""
        self.ended = self.clock()

    def elapsed(self) -> float:
        """Seconds from the start of the run to its end (or to now, while it runs)."""
        end = self.clock() if self.ended is None else self.ended
        return max(end - self.started, 1e-9)

    def counters(self) -> dict[str, int]:
        """Flat integer counters, as kept in the checkpoint."""
        flat = {
            "fetched": self.fetched,
            "succeeded": self.succeeded,
            "already_stored": self.already_stored,
            "failed": self.failed_total,
            "queued_classify": self.queued_classify,
            "queued_store": self.queued_store,
            "dead_lettered": self.dead_lettered,
            "batches": self.batches,
            "lost_lease": self.lost_lease,
        }
        flat.update({f"failed_{name.lower()}": count for name, count in self.failed.items()})
        return flat

    def summary(self) -> dict[str, Any]:
        """The final summary of a run."""
        elapsed = self.elapsed()
        return {
            "processed": self.processed,
            "succeeded": self.succeeded,
            "already_stored": self.already_stored,
            "failed": self.failed_total,
            "failed_by_category": dict(sorted(self.failed.items())),
            "queued_classify": self.queued_classify,
            "queued_store": self.queued_store,
            "waiting_in_queues": self.waiting,
            "recovered_from_queues": self.recovered_from_queues,
            "dead_lettered": self.dead_lettered,
            "classifier_retries": self.classifier_retries,
            "db_retries": self.db_retries,
            "retries_by_category": dict(sorted(self.retries_by_category.items())),
            "released_unprocessed": self.released,
            "lost_lease": self.lost_lease,
            "invalid_priority": self.invalid_priority,
            "unknown_roles": dict(self.unknown_roles.most_common()),
            "batches": self.batches,
            "seconds": round(elapsed, 3),
            "docs_per_second": round(self.processed / elapsed, 1),
            "peak_rss_mb": round(peak_rss_mb(), 1),
            **self.classifier,
            **({"batch_route": self.route} if self.route is not None else {}),
        }


class RunMetrics(Protocol):
    """What the pipeline reports as it goes (``runtime.telemetry.Telemetry`` exports it)."""

    def classified(self, seconds: float) -> None:
        """One classification took ``seconds`` (retries included)."""
        ...

    def batch_stored(self) -> None:
        """A batch file ended with at least one stored result."""
        ...
