"""The Prometheus view of :class:`~batch_processor.runtime.telemetry.Telemetry`.

Imported only when ``/metrics`` is served: prometheus-client costs a sixth of a second to
import, which a batch run without the HTTP endpoint does not pay. Every family is built at
scrape time from the telemetry, so ``/metrics`` agrees with the run summary.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from batch_processor.runtime.telemetry import LATENCY_BUCKETS, Telemetry

PREFIX = "batch_processor"


def registry_for(telemetry: Telemetry) -> CollectorRegistry:
    """A registry whose one collector reads ``telemetry`` at each scrape."""
    registry = CollectorRegistry()
    registry.register(_Collector(telemetry))
    return registry


class _Collector(Collector):
    """Reads :class:`Telemetry` at scrape time."""

    def __init__(self, telemetry: Telemetry) -> None:
        self._t = telemetry

    def collect(self) -> Iterator[Metric]:
        """The metric families of one scrape."""
        yield self._latency()
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
        yield from self._fleet_metrics(done)
        yield from self._route_metrics()
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
        summary = self._t.classifier_summary()
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
        routes = summary.get("cascade_routes")
        if routes is not None:  # --classifier cascade
            cascade = CounterMetricFamily(
                f"{PREFIX}_cascade_documents",
                "Documents by the cascade's route: offline, llm (escalated) or audit.",
                labels=["route"],
            )
            for route, count in sorted(routes.items()):
                cascade.add_metric([route], count)
            yield cascade
            yield _gauge(
                "cascade_threshold",
                "Calibrated offline confidence below which documents go to the LLM.",
                summary.get("cascade_threshold") or 0.0,
            )

    def _fleet_metrics(self, done: dict[str, int]) -> Iterator[Metric]:
        leases = self._t.leases
        yield _gauge("leases_held", "Documents this worker holds leases on.", leases.held)
        yield _plain_counter("leases_renewed", "Leases renewed (one per document).", leases.renewed)
        yield _plain_counter(
            "leases_taken_over", "Expired leases of other workers taken over.", leases.taken_over
        )
        yield _plain_counter(
            "leases_lost",
            "Results and marks dropped because another worker took the document over.",
            done.get("lost_lease", 0),
        )
        yield _plain_counter(
            "invalid_priority",
            "Documents whose priority value was invalid (taken as normal).",
            done.get("invalid_priority", 0),
        )
        yield _gauge(
            "resident_memory_mib",
            "Resident memory of the process, sampled at the scrape.",
            self._t.sample_rss(),
        )

    def _route_metrics(self) -> Iterator[Metric]:
        summary = self._t.route_summary()
        documents = CounterMetricFamily(
            f"{PREFIX}_batch_route_documents",
            "Documents the Batch API route ended, by how: stored from a batch, classified "
            "online after a failed or expired line, answered from the dedupe cache, failed.",
            labels=["outcome"],
        )
        for outcome, key in (
            ("batch", "stored_from_batch"),
            ("online", "stored_online"),
            ("deduped", "deduped"),
        ):
            documents.add_metric([outcome], summary.get(key, 0))
        documents.add_metric(["failed"], sum((summary.get("failed") or {}).values()))
        yield documents
        yield _plain_counter(
            "batch_route_requests", "Request lines submitted to the Batch API.",
            summary.get("requests", 0),
        )  # fmt: skip
        yield _gauge(
            "provider_batches_in_flight",
            "Provider batches this process is taking to their end (polling, storing).",
            summary.get("slices_in_flight", 0),
        )

    def _queue_metrics(self) -> Iterator[Metric]:
        sizes = GaugeMetricFamily(
            f"{PREFIX}_retry_queue_size", "Items waiting in a retry queue.", labels=["queue"]
        )
        dead = GaugeMetricFamily(f"{PREFIX}_dead_letter_size", "Entries in the dead letter.")
        counts = self._t.queue_sizes()  # from memory: a scrape never reads the disk
        if counts is not None:
            sizes.add_metric(["classify"], counts["classify"])
            sizes.add_metric(["store"], counts["store"])
            dead.add_metric([], counts["dead"])
        yield sizes
        yield dead

    def _latency(self) -> HistogramMetricFamily:
        buckets, total = [], 0
        for bound, count in zip(
            [*map(str, LATENCY_BUCKETS), "+Inf"], self._t.latency_counts, strict=True
        ):
            total += count
            buckets.append((bound, float(total)))
        return HistogramMetricFamily(
            f"{PREFIX}_classifier_latency_seconds",
            "Time of one classifier call, retries included.",
            buckets=buckets,
            sum_value=self._t.latency_sum,
        )


def _counter(name: str, help_text: str, values: dict[str, int]) -> CounterMetricFamily:
    key = name.removeprefix("documents_")
    return CounterMetricFamily(f"{PREFIX}_{name}", help_text, value=values.get(key, 0))


def _plain_counter(name: str, help_text: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"{PREFIX}_{name}", help_text, value=value)


def _gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", help_text, value=value)
