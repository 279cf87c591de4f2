"""The runner: turns settings into a connected store, a classifier and a pipeline, and runs a job.

It starts the embedded server when no MongoDB URI is configured, checks for an unfinished job
(refusing to start over it without ``--recover``), runs the pipeline, and logs the summary.
Batch mode is implemented here; continuous and scheduled modes drive the same pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Protocol
from urllib.parse import urlsplit

import structlog

from .atomic import ensure_dir, exclusive_lock, sweep_temp_files, worker_identity
from .batch_files import BatchFiles
from .checkpoints import CheckpointStore
from .classifier_setup import build_classifier
from .classifiers import Classifier
from .dedupe import CachedClassifier
from .embedded import EmbeddedServer
from .errors import BatchProcessorError, UnfinishedJobError, describe
from .logs import register_secret
from .models import JobStatus, utcnow
from .pipeline import Pipeline, PipelineOptions
from .retry import RetryPolicy
from .retry_queues import RetryQueues
from .schedule import CronSchedule
from .settings import Mode, Settings
from .shutdown import Stopper
from .stats import RunStats
from .store import CommandListener, MongoResultCache, MongoStore

log = structlog.get_logger("batch_processor.runner")


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


def _register_uri_secrets(uri: str) -> None:
    register_secret(uri)
    with contextlib.suppress(ValueError):
        register_secret(urlsplit(uri).password)


@contextlib.asynccontextmanager
async def open_store(
    settings: Settings, *, listeners: Sequence[CommandListener] = ()
) -> AsyncIterator[MongoStore]:
    """A connected, indexed store; the embedded server runs for as long as it is open.

    ``listeners`` are pymongo command listeners (the benchmarks count commands with one).
    """
    embedded: EmbeddedServer | None = None
    if settings.mongodb_uri is None:
        embedded = EmbeddedServer(settings.batch_dir / "embedded", port=settings.embedded_port)
        log.info(
            "no MongoDB URI configured: using the embedded SecantusDB server",
            data_dir=str(embedded.data_dir),
        )
        uri = await embedded.start()
        log.info("embedded server ready", address=f"127.0.0.1:{embedded.port}")
    else:
        uri = settings.mongodb_uri.get_secret_value()
        _register_uri_secrets(uri)
    try:
        store = MongoStore(
            uri=uri,
            database=settings.database,
            source_collection=settings.source_collection,
            target_collection=settings.target_collection,
            projection=[settings.text_field, *settings.metadata_fields],
            server_selection_timeout=settings.server_selection_timeout,
            listeners=listeners,
            cache_collection=settings.cache_collection,
        )
        try:
            policy = retry_policy(settings)
            await policy.call(store.ping)
            await policy.call(store.ensure_indexes)
            yield store
        finally:
            await store.close()
    finally:
        if embedded is not None:
            await embedded.stop()


async def run_job(
    settings: Settings,
    *,
    progress: ProgressSink | None = None,
    classifier: Classifier | None = None,
    listeners: Sequence[CommandListener] = (),
    store: MongoStore | None = None,
    stopper: Stopper | None = None,
) -> RunStats:
    """Run in the configured mode until done (batch) or stopped (continuous); return the stats.

    Batch mode runs one job to the end. Continuous mode runs a job, waits for new documents
    (a change stream wakes it at once; it polls every ``interval`` seconds as well), and runs
    the next, until SIGTERM/SIGINT or ``stopper`` stops it; it returns the last job's stats.
    ``classifier`` replaces the one named in the settings (for library use and tests);
    ``store`` is an already open store (from :func:`open_store`), else one is opened.
    """
    schedule = (
        CronSchedule.parse(settings.cron, settings.timezone)
        if settings.mode is Mode.SCHEDULED
        else None
    )
    # Build the classifier first: a misnamed classifier is a configuration error to report
    # before any connection is attempted.
    classifier = classifier or build_classifier(settings)
    stopper = stopper or Stopper()
    try:
        with exclusive_lock(ensure_dir(settings.batch_dir) / ".lock"), stopper.on_signals():
            if store is not None:
                return await _drive(settings, classifier, progress, store, stopper, schedule)
            async with open_store(settings, listeners=listeners) as opened:
                return await _drive(settings, classifier, progress, opened, stopper, schedule)
    finally:
        await classifier.aclose()


async def _drive(
    settings: Settings,
    classifier: Classifier,
    progress: ProgressSink | None,
    store: MongoStore,
    stopper: Stopper,
    schedule: CronSchedule | None,
) -> RunStats:
    """One job in batch mode; jobs and idle waits in turn in continuous mode."""
    if schedule is not None:
        return await _run_on_schedule(settings, classifier, store, stopper, schedule)
    stats = await _run_with(settings, classifier, progress, store, stopper)
    while settings.mode is Mode.CONTINUOUS and not stopper.stopped:
        if not await _wait_for_work(store, settings, stopper):
            break
        # Later jobs never recover: the first one finished whatever was left.
        stats = await _run_with(
            settings.model_copy(update={"recover": False}), classifier, None, store, stopper
        )
    return stats


async def _run_on_schedule(
    settings: Settings,
    classifier: Classifier,
    store: MongoStore,
    stopper: Stopper,
    schedule: CronSchedule,
) -> RunStats:
    """One job per firing of the cron schedule; runs never overlap (missed firings are logged)."""
    stats = RunStats()
    recover = settings.recover
    if settings.run_now:
        stats = await _run_with(settings, classifier, None, store, stopper)
        recover = False
    while not stopper.stopped:
        fire = schedule.next_after(utcnow())
        log.info("next scheduled run", at=fire.isoformat(), cron=schedule.expression)
        if not await stopper.race(asyncio.sleep(max(0.0, (fire - utcnow()).total_seconds()))):
            break
        late = (utcnow() - fire).total_seconds()
        if late > settings.misfire_grace:
            log.warning("scheduled run skipped: woke too late", at=fire.isoformat(), late=late)
            continue
        job_settings = settings.model_copy(update={"recover": recover})
        stats = await _run_with(job_settings, classifier, None, store, stopper)
        recover = False
        skipped = schedule.firings_between(fire, utcnow())
        if skipped:
            log.warning("firings skipped: the previous run was still going", skipped=skipped)
    return stats


async def _wait_for_work(store: MongoStore, settings: Settings, stopper: Stopper) -> bool:
    """Wait until a source document is pending; False if stopped first.

    An idle worker sends one indexed query per ``interval`` (the safety net) and, with change
    streams, one ``getMore`` that the server holds until an insert or the interval's end.
    """
    log.info(
        "waiting for new documents",
        interval=settings.interval,
        change_streams=settings.change_streams,
    )
    async with contextlib.AsyncExitStack() as stack:
        waiter = None
        if settings.change_streams:
            try:
                waiter = await stack.enter_async_context(store.insert_events(settings.interval))
            except BatchProcessorError as exc:
                log.info("change streams unavailable: polling only", error=describe(exc))
        while not stopper.stopped:
            pending, _ = await retry_policy(settings).call(store.has_pending)
            if pending:
                return True
            try:
                idle = waiter.wait() if waiter is not None else asyncio.sleep(settings.interval)
                if not await stopper.race(idle):
                    return False
            except BatchProcessorError as exc:
                log.warning("change stream lost: polling only", error=describe(exc))
                waiter = None
    return False


async def _run_with(
    settings: Settings,
    classifier: Classifier,
    progress: ProgressSink | None,
    store: MongoStore,
    stopper: Stopper,
) -> RunStats:
    batch_dir = ensure_dir(settings.batch_dir)
    swept = sweep_temp_files(batch_dir)
    files = BatchFiles(batch_dir / "batches")
    checkpoints = CheckpointStore(batch_dir)
    queues = RetryQueues(batch_dir)
    if swept:
        log.info("removed temp files left by a crash", count=len(swept))
    _check_previous_job(checkpoints, files, recover=settings.recover)
    worker_id = worker_identity(batch_dir)
    job_id = new_job_id()
    pending, _ = await retry_policy(settings).call(store.count_pending)
    log.info(
        "job started",
        job_id=job_id,
        worker_id=worker_id,
        pending=pending,
        recover=settings.recover,
        classifier=classifier.name,
        batch_size=settings.batch_size,
        concurrent=settings.concurrent,
        queued_classify=len(queues.classify),
        queued_store=len(queues.store),
    )
    if progress is not None:
        progress.start(pending + sum(len(files.load(n).docs) for n in files.names()))
    cached = _with_dedupe(settings, classifier, store)
    pipeline = Pipeline(
        store=store,
        classifier=cached or classifier,
        batch_files=files,
        checkpoints=checkpoints,
        queues=queues,
        job_id=job_id,
        worker_id=worker_id,
        options=pipeline_options(settings),
        classify_policy=retry_policy(settings, rate_limits_apart=True),
        db_policy=retry_policy(settings),
        on_progress=progress.update if progress is not None else None,
    )
    stopper.attach(pipeline)
    try:
        stats = await pipeline.run(recover=settings.recover)
    finally:
        stopper.attach(None)
        if cached is not None:
            await cached.flush()
        pipeline.stats.classifier = (cached or classifier).summary()
        if progress is not None:
            progress.close()
    log.info("run finished", job_id=job_id, **stats.summary())
    return stats


def _with_dedupe(
    settings: Settings, classifier: Classifier, store: MongoStore
) -> CachedClassifier | None:
    """The classifier behind the dedupe cache, when dedupe is on and the classifier has a scope."""
    scope = getattr(classifier, "cache_scope", None)
    if not settings.dedupe or not isinstance(scope, str):
        return None  # the offline classifier is cheaper than a cache lookup
    return CachedClassifier(classifier, MongoResultCache(store), scope=scope)


def pipeline_options(settings: Settings) -> PipelineOptions:
    """The pipeline's options from the settings."""
    return PipelineOptions(
        batch_size=settings.batch_size,
        concurrent=settings.concurrent,
        text_field=settings.text_field,
        max_text_chars=settings.max_text_chars,
        checkpoint_interval=settings.checkpoint_interval,
        flush_size=settings.flush_size,
        flush_interval=settings.flush_interval,
        queue_max_attempts=settings.queue_max_attempts,
        queue_drain_interval=settings.queue_drain_interval,
        claim_ttl=settings.claim_ttl,
        shutdown_grace=settings.shutdown_grace,
    )


def _check_previous_job(checkpoints: CheckpointStore, files: BatchFiles, *, recover: bool) -> None:
    """Report the previous job's state; refuse to start over unfinished work without recover."""
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
        )
