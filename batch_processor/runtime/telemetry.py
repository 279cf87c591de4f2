"""Telemetry: the process's Prometheus metrics and its progress heartbeat.

One :class:`Telemetry` lives as long as the process. Jobs report to it (their statistics, each
classifier call's latency, each stored batch); it adds finished jobs to the running one so that
counters only grow across the jobs of continuous and scheduled mode. Metrics are read at scrape
time from the statistics, the classifier's summary (tokens, cost, governor window) and the files
(queue and dead-letter sizes): nothing is counted twice, and ``/metrics`` agrees with the run
summary. The heartbeat says whether the main loop is making progress (for ``/healthz`` and the
systemd watchdog).
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from batch_processor.pipeline.memory import rss_mb
from batch_processor.pipeline.stats import RunStats

log = structlog.get_logger("batch_processor.runtime.telemetry")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


@dataclass(slots=True)
class LeaseCounters:
    """What the lease keeper did (see ``runtime.fleet``), for ``/metrics`` and the heartbeat."""

    held: int = 0
    renewed: int = 0
    taken_over: int = 0


class Telemetry:
    """Metrics and heartbeat of one process (see the module docstring)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        # Cumulative-free bucket counts (the last bucket is +Inf); prometheus-client is loaded
        # only when /metrics is served (see metrics.py), so a batch run never pays its import.
        self.latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self._clock = clock
        self._finished: Counter[str] = Counter()
        self._failed: Counter[str] = Counter()
        self._current: RunStats | None = None
        self._classifier_summary: Callable[[], dict[str, Any]] = dict
        self._queue_sizes: Callable[[], dict[str, int]] | None = None
        self.last_success: float | None = None  # wall-clock time of the last stored batch
        self.last_beat = clock()
        self.ready = False
        self.loop_lag = 0.0  # the event loop's largest delay in the last sampling window (s)
        self.loop_lag_max = 0.0
        self.leases = LeaseCounters()
        self._route_summary: Callable[[], dict[str, Any]] | None = None

    # -- what jobs report -----------------------------------------------------------------

    def job_started(
        self,
        stats: RunStats,
        *,
        classifier_summary: Callable[[], dict[str, Any]],
        queue_sizes: Callable[[], dict[str, int]],
    ) -> None:
        """A job begins; its statistics are read live until it ends."""
        self._current = stats
        self._classifier_summary = classifier_summary
        self._queue_sizes = queue_sizes
        self.beat()

    def route_started(self, summary: Callable[[], dict[str, Any]]) -> None:
        """The Batch API route runs in this process; ``summary`` reads its counters live."""
        self._route_summary = summary

    def job_ended(self, stats: RunStats) -> None:
        """A job ended: add its counts to the process totals."""
        self._finished["processed"] += stats.processed
        self._finished["succeeded"] += stats.succeeded
        self._finished["lost_lease"] += stats.lost_lease
        self._finished["invalid_priority"] += stats.invalid_priority
        self._failed.update(stats.failed)
        self._current = None
        self.beat()

    def classified(self, seconds: float) -> None:
        """One classification took ``seconds``."""
        self.latency_counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds

    def batch_stored(self) -> None:
        """A batch ended with stored results."""
        self.last_success = time.time()
        self.beat()

    def beat(self) -> None:
        """The main loop made progress (a document ended, a page came, an idle poll ran)."""
        self.last_beat = self._clock()

    def loop_lagged(self, lag: float) -> None:
        """The event loop answered ``lag`` seconds late in the last sampling window."""
        self.loop_lag = lag
        self.loop_lag_max = max(self.loop_lag_max, lag)

    def progressing(self, within: float) -> bool:
        """Whether the loop made progress in the last ``within`` seconds."""
        return self._clock() - self.last_beat <= within

    # -- what the collector reads -----------------------------------------------------------

    def classifier_summary(self) -> dict[str, Any]:
        """The current job's classifier summary (tokens, cost, governor), or ``{}``."""
        return self._classifier_summary()

    def route_summary(self) -> dict[str, Any]:
        """The Batch API route's counters (see batch_processor.route), or ``{}``."""
        return self._route_summary() if self._route_summary is not None else {}

    def queue_sizes(self) -> dict[str, int] | None:
        """The retry-queue and dead-letter sizes (from memory), or None before the first job."""
        return self._queue_sizes() if self._queue_sizes is not None else None

    def sample_rss(self) -> float:
        """The resident memory now (MiB), for ``/metrics`` and the heartbeat."""
        return rss_mb()

    def totals(self) -> tuple[dict[str, int], dict[str, int]]:
        """Processed/succeeded and failed-by-category counts of the process so far."""
        done = Counter(self._finished)
        failed = Counter(self._failed)
        if self._current is not None:
            done["processed"] += self._current.processed
            done["succeeded"] += self._current.succeeded
            done["lost_lease"] += self._current.lost_lease
            done["invalid_priority"] += self._current.invalid_priority
            failed.update(self._current.failed)
        return dict(done), dict(failed)


async def watch_loop_lag(
    telemetry: Telemetry,
    *,
    interval: float = 0.25,
    warn_after: float = 0.1,
    warn_every: float = 30.0,
) -> None:
    """Measure how late the event loop wakes from a timer, forever; warn when it passes 100 ms.

    A blocked loop delays every request, heartbeat and health check: this makes it visible
    (``event_loop_lag_seconds``) and logs a warning at most every ``warn_every`` seconds.
    """
    loop = asyncio.get_running_loop()
    last_warning = -warn_every
    while True:
        started = loop.time()
        await asyncio.sleep(interval)
        lag = max(0.0, loop.time() - started - interval)
        telemetry.loop_lagged(lag)
        if lag > warn_after and loop.time() - last_warning >= warn_every:
            last_warning = loop.time()
            log.warning("event loop blocked", lag_seconds=round(lag, 3))
