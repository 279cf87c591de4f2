"""One job: from settings and an open store to a finished pipeline run and its summary.

A job checks for an unfinished predecessor (refusing to start over it without ``--recover``),
builds the pipeline with the dedupe cache where it applies, attaches it to the stop switch and
the telemetry, runs it, and logs the summary. The runner's modes call it once (batch), after
each wake-up (continuous) or at each firing (scheduled).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import structlog

from batch_processor.classifiers import Classifier
from batch_processor.clock import Clock
from batch_processor.documents.outcomes import Outcomes
from batch_processor.errors import BatchProcessorError, UnfinishedJobError, describe
from batch_processor.files.atomic import atomic_write, ensure_dir, sweep_temp_files
from batch_processor.files.batch_files import BatchFiles
from batch_processor.files.checkpoints import CheckpointStore
from batch_processor.files.identity import worker_identity
from batch_processor.files.layout import Layout
from batch_processor.files.retry_queues import RetryQueues
from batch_processor.llm.dedupe import CachedClassifier

if TYPE_CHECKING:
    from batch_processor.cascade.classifier import CascadeClassifier
from batch_processor.models import JobStatus
from batch_processor.mongo.store import MongoStore
from batch_processor.outage import Availability, DatabaseCalls
from batch_processor.pipeline.core import Pipeline
from batch_processor.pipeline.options import PipelineOptions
from batch_processor.pipeline.stats import RunStats
from batch_processor.retry import RetryPolicy
from batch_processor.route.options import RouteStats
from batch_processor.runtime.fleet import LeaseKeeper
from batch_processor.runtime.shutdown import Stopper
from batch_processor.runtime.telemetry import Telemetry
from batch_processor.service.classifier_setup import as_cascade
from batch_processor.service.preflight import SourceCheck
from batch_processor.settings import Mode, Settings

log = structlog.get_logger("batch_processor.service.jobs")


class ProgressSink(Protocol):
    """Something that shows a run's progress (the rich bar on a TTY)."""

    def start(self, total: int) -> None:
        """The run begins with ``total`` documents pending."""

    def update(self, stats: RunStats) -> None:
        """Documents have ended."""

    def close(self) -> None:
        """The run is over."""


def new_job_id() -> str:
    """A sortable, unique job id: UTC time plus random hex."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def retry_policy(settings: Settings, *, rate_limits_apart: bool = False) -> RetryPolicy:
    """The backoff policy the settings describe (429s counted apart for the classifier)."""
    return RetryPolicy(
        max_attempts=settings.retries,
        base_delay=settings.retry_base_delay,
        max_delay=settings.retry_max_delay,
        rate_limit_attempts=settings.rate_limit_attempts if rate_limits_apart else None,
    )


def outage_policy(settings: Settings) -> RetryPolicy:
    """How long MongoDB reads and claims wait for the server: forever in the service modes.

    A batch run gives up after ``db_outage_grace`` seconds; continuous and scheduled mode wait
    out an outage of any length (with capped backoff), since a service must stay up.
    """
    grace = settings.db_outage_grace if settings.mode is Mode.BATCH else None
    return RetryPolicy(
        max_attempts=None,
        base_delay=settings.retry_base_delay,
        max_delay=min(settings.retry_max_delay, 10.0),
        give_up_after=grace,
    )


def database_calls(service: Service, stats: RunStats | None = None) -> DatabaseCalls:
    """MongoDB calls with the settings' retry policies; a stop ends a wait for MongoDB."""
    return DatabaseCalls(
        patient=outage_policy(service.settings),
        brief=retry_policy(service.settings),
        availability=service.mongodb,
        on_retry=stats.add_db_retry if stats is not None else lambda _error: None,
        stop=service.stopper.event,
    )


@dataclass(frozen=True, slots=True)
class Service:
    """What every job of one process shares (built complete by ``run_job``)."""

    settings: Settings
    classifier: Classifier
    store: MongoStore
    stopper: Stopper
    telemetry: Telemetry
    progress: ProgressSink | None
    fleet: LeaseKeeper  # renewals, takeovers and heartbeats beside the jobs
    source_check: SourceCheck  # jobs wait for the source collection
    clock: Clock
    mongodb: Availability = field(default_factory=lambda: Availability("MongoDB"))


@dataclass(frozen=True, slots=True)
class RouteRun:
    """The Batch API route's work beside a job: the job's summary waits for it and counts it."""

    task: asyncio.Task[None]
    stats: RouteStats

    async def ended(self) -> None:
        """Wait until the route's work ends (its error, if any, is the task group's to raise)."""
        await asyncio.wait({self.task})


async def run_one_job(
    service: Service, *, recover: bool, along: RouteRun | None = None
) -> RunStats:
    """Run one job to its end (or its stop) and return its statistics.

    With ``along``, the summary waits for the route's work and counts it. Raises the error
    that stopped the job, after its checkpoint and its report are written.
    """
    settings, classifier, store = service.settings, service.classifier, service.store
    progress, telemetry = service.progress, service.telemetry
    batch_dir = ensure_dir(settings.batch_dir)
    swept = sweep_temp_files(batch_dir)
    files = BatchFiles(Layout(batch_dir).batches)
    checkpoints = CheckpointStore(batch_dir)
    queues = RetryQueues(batch_dir)
    if swept:
        log.info("removed temp files left by a crash", count=len(swept))
    previous = _check_previous_job(checkpoints, files, recover=recover)
    worker_id = worker_identity(batch_dir, fallback=previous)
    job_id = new_job_id()
    stats = RunStats()
    db = database_calls(service, stats)
    # A full count costs a collection scan before the first claim: only a progress bar,
    # which needs its total, pays it.
    pending = await db.wait(store.source.count_pending) if progress is not None else None
    log.info(
        "job started",
        job_id=job_id,
        worker_id=worker_id,
        **({"pending": pending} if pending is not None else {}),
        recover=recover,
        classifier=classifier.name,
        batch_size=settings.batch_size,
        concurrent=settings.concurrent,
        queued_classify=len(queues.classify),
        queued_store=len(queues.store),
    )
    if progress is not None and pending is not None:
        todo = min(pending, settings.limit) if settings.limit is not None else pending
        _safely(progress.start, todo + files.count_documents())
    cached = cached_for_jobs(settings, classifier, store)
    options = pipeline_options(settings)
    pipeline = Pipeline(
        source=store.source,
        sink=store.sink,
        classifier=cached or classifier,
        batch_files=files,
        checkpoints=checkpoints,
        queues=queues,
        outcomes=job_outcomes(options, job_id, cached or classifier),
        worker_id=worker_id,
        options=options,
        classify_policy=retry_policy(settings, rate_limits_apart=True),
        db=db,
        stats=stats,
        on_progress=_progress_hook(progress, telemetry),
        telemetry=telemetry,
    )
    summary = (cached or classifier).summary
    telemetry.job_started(pipeline.stats, classifier_summary=summary, queue_sizes=queues.sizes)
    service.stopper.attach(pipeline)
    service.fleet.attach(pipeline, worker_id=worker_id, job_id=job_id)
    try:
        await pipeline.run(recover=recover)
        if not service.stopper.stopped:
            await service.fleet.job_ended()
    finally:
        service.stopper.attach(None)
        telemetry.job_ended(pipeline.stats)
        if cached is not None:
            await cached.flush()
        if along is not None:
            await along.ended()
            stats.add_route(along.stats.stored, along.stats.failed, along.stats.lost_lease,
                            along.stats.summary())  # fmt: skip
        stats.classifier = summary()
        stats.set_waiting(classify=len(queues.classify), store=queues.store_documents())
        if progress is not None:
            _safely(progress.close)
        error = pipeline.error
        outcome = {"job_id": job_id, **stats.summary()}
        if error is not None:
            log.error("run failed", error=describe(error), **outcome)
        else:
            log.info("run finished", **outcome)
        _write_report(Layout(batch_dir).report(job_id), job_id, stats, settings, error)
    return stats


def _safely(action: Callable[..., object], *args: object) -> None:
    """Run a display action; a display never fails a run."""
    try:
        action(*args)
    except Exception as exc:  # noqa: BLE001 - what only displays must not stop the work
        log.warning("progress display failed", error=describe(exc))


def _write_report(
    path: Path, job_id: str, stats: RunStats, settings: Settings, error: BaseException | None
) -> None:
    """The run's performance report: throughput, memory, outcomes, spend, and the settings."""
    summary = stats.summary()
    report = {
        "job_id": job_id,
        "status": "failed" if error is not None else "finished",
        "error": describe(error) if error is not None else None,
        "mode": settings.mode.value,
        "success_rate": round(stats.succeeded / stats.processed, 4) if stats.processed else None,
        "summary": summary,
        "settings": settings.masked(),  # secrets masked
    }
    try:
        atomic_write(ensure_dir(path.parent) / path.name, json.dumps(report, indent=2).encode())
    except BatchProcessorError as exc:
        log.warning("performance report not written", path=str(path), error=describe(exc))


def _progress_hook(
    progress: ProgressSink | None, telemetry: Telemetry
) -> Callable[[RunStats], None]:
    """Each ended document moves the progress bar and beats the heartbeat."""

    def on_progress(stats: RunStats) -> None:
        telemetry.beat()
        if progress is not None:
            progress.update(stats)

    return on_progress


def cached_for_jobs(
    settings: Settings, classifier: Classifier, store: MongoStore
) -> CachedClassifier | CascadeClassifier | None:
    """:func:`with_dedupe` for the online jobs, where the classifier may be a cascade.

    A cascade's answers depend on its threshold and model version, not only on the text: its
    LLM tier is what is cached.
    """
    cascade = as_cascade(classifier)
    if cascade is not None:
        llm = with_dedupe(settings, cascade.llm, store)
        return None if llm is None else cascade.with_llm(llm)
    return with_dedupe(settings, classifier, store)


def with_dedupe(
    settings: Settings, classifier: Classifier, store: MongoStore
) -> CachedClassifier | None:
    """The classifier behind the dedupe cache, when dedupe is on and the classifier has a scope."""
    scope = classifier.cache_scope
    if not settings.dedupe or scope is None:
        return None  # the offline classifier is cheaper than a cache lookup
    return CachedClassifier(classifier, store.cache, scope=scope)


def pipeline_options(settings: Settings) -> PipelineOptions:
    """The pipeline's options: the settings of the same names (a test keeps the names in step)."""
    return PipelineOptions(
        **{field.name: getattr(settings, field.name) for field in fields(PipelineOptions)}
    )


def job_outcomes(options: PipelineOptions, job_id: str, classifier: Classifier) -> Outcomes:
    """How one job reads its documents and records their ends: for both routes, built here."""
    return Outcomes(
        job_id=job_id,
        classifier=(classifier.name, classifier.version),
        text_field=options.text_field,
        max_text_chars=options.max_text_chars,
        roles=options.roles,
    )


def _check_previous_job(
    checkpoints: CheckpointStore, files: BatchFiles, *, recover: bool
) -> str | None:
    """Report the previous job's state; refuse to start over unfinished work without recover.

    Returns the worker id the previous checkpoint recorded, if any.
    """
    loaded = checkpoints.load()
    for problem in loaded.problems:
        using = f"the {loaded.source} checkpoint" if loaded.checkpoint else "the database state"
        log.error("checkpoint unusable", problem=problem, using=using)
    previous = loaded.checkpoint
    in_flight = files.names()
    unfinished = bool(in_flight) or (previous is not None and previous.status is JobStatus.RUNNING)
    if unfinished and not recover:
        job = previous.job_id if previous else "unknown"
        raise UnfinishedJobError(
            f"an unfinished job ({job}) was found in {checkpoints.directory}: "
            f"{len(in_flight)} batch file(s) in flight. Run again with --recover to finish it "
            "(nothing is lost or processed twice)."
        )
    if previous is not None:
        log.info(
            "previous job",
            job_id=previous.job_id,
            status=previous.status.value,
            checkpoint=loaded.source,
            updated_at=previous.updated_at.isoformat(),
            in_flight=len(in_flight),
            error=previous.error,
        )
    return previous.worker_id if previous is not None else None
