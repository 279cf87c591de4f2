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
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from batch_processor.pipeline.stats import RunStats

PREFIX = "batch_processor"
log = structlog.get_logger("batch_processor.service.telemetry")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Telemetry:
    """Metrics and heartbeat of one process (see the module docstring)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            f"{PREFIX}_classifier_latency_seconds",
            "Time of one classifier call, retries included.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
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
        self.registry.register(_Collector(self))

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

    def job_ended(self, stats: RunStats) -> None:
        """A job ended: add its counts to the process totals."""
        self._finished["processed"] += stats.processed
        self._finished["succeeded"] += stats.succeeded
        self._failed.update(stats.failed)
        self._current = None
        self.beat()

    def classified(self, seconds: float) -> None:
        """One classification took ``seconds``."""
        self.latency.observe(seconds)

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

    def totals(self) -> tuple[dict[str, int], dict[str, int]]:
        """Processed/succeeded and failed-by-category counts of the process so far."""
        done = Counter(self._finished)
        failed = Counter(self._failed)
        if self._current is not None:
            done["processed"] += self._current.processed
            done["succeeded"] += self._current.succeeded
            failed.update(self._current.failed)
        return dict(done), dict(failed)


class _Collector(Collector):
    """Reads :class:`Telemetry` at scrape time."""

    def __init__(self, telemetry: Telemetry) -> None:
        self._t = telemetry

    def collect(self) -> Iterator[Metric]:
        """The metric families of one scrape."""
        done, failed = self._t.totals()
        yield _counter("documents_processed", "Documents ended (stored or failed).", done)
        yield _counter("documents_succeeded", "Documents whose result was stored.", done)
        failures = CounterMetricFamily(
            f"{PREFIX}_documents_failed", "Documents marked failed.", labels=["category"]
        )
        for category, count in sorted(failed.items()):
            failures.add_metric([category], count)
        yield failures
        yield from self._classifier_metrics()
        yield from self._queue_metrics()
        yield _gauge(
            "event_loop_lag_seconds",
            "How late the event loop ran a timer in the last sampling window.",
            self._t.loop_lag,
        )
        yield _gauge(
            "event_loop_lag_max_seconds", "The largest event-loop lag seen.", self._t.loop_lag_max
        )
        last = GaugeMetricFamily(
            f"{PREFIX}_last_success_timestamp_seconds",
            "Unix time of the last batch with stored results (0: none yet).",
        )
        last.add_metric([], self._t.last_success or 0.0)
        yield last

    def _classifier_metrics(self) -> Iterator[Metric]:
        summary = self._t._classifier_summary()
        governor = summary.get("governor") or {}
        yield _gauge("inflight_requests", "LLM requests in flight.", governor.get("in_flight", 0))
        yield _gauge(
            "governor_window", "Requests the governor admits at once.", governor.get("window", 0)
        )
        tokens = CounterMetricFamily(
            f"{PREFIX}_llm_tokens", "LLM tokens used by this process.", labels=["kind"]
        )
        for kind in ("input_tokens", "output_tokens", "retry_tokens"):
            tokens.add_metric([kind.removesuffix("_tokens")], summary.get(kind, 0) or 0)
        yield tokens
        repaired = CounterMetricFamily(
            f"{PREFIX}_llm_replies_repaired",
            "LLM replies repaired before validation instead of asked again.",
        )
        repaired.add_metric([], summary.get("replies_repaired", 0) or 0)
        yield repaired
        cost = CounterMetricFamily(f"{PREFIX}_llm_cost_usd", "USD spent by this process.")
        cost.add_metric([], summary.get("cost_usd") or 0.0)
        yield cost

    def _queue_metrics(self) -> Iterator[Metric]:
        sizes = GaugeMetricFamily(
            f"{PREFIX}_retry_queue_size", "Items waiting in a retry queue.", labels=["queue"]
        )
        dead = GaugeMetricFamily(f"{PREFIX}_dead_letter_size", "Entries in the dead letter.")
        if self._t._queue_sizes is not None:
            counts = self._t._queue_sizes()  # from memory: a scrape never reads the disk
            sizes.add_metric(["classify"], counts["classify"])
            sizes.add_metric(["store"], counts["store"])
            dead.add_metric([], counts["dead"])
        yield sizes
        yield dead


def _counter(name: str, help_text: str, values: dict[str, int]) -> CounterMetricFamily:
    key = name.removeprefix("documents_")
    return CounterMetricFamily(f"{PREFIX}_{name}", help_text, value=values.get(key, 0))


def _gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", help_text, value=value)


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
