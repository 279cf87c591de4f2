"""The runner: settings in, a connected store and a classifier, then the mode's loop of jobs.

It starts the embedded server when no MongoDB URI is configured, builds the :class:`Service`
complete, and hands it to :mod:`.modes` (once, after each wake-up, or at each cron firing).
Around the jobs it runs the process's services: the stop switch on signals, the health and
metrics endpoint, and the systemd notify protocol with its watchdog.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import os
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

import structlog

from batch_processor.classifiers import Classifier
from batch_processor.clock import Clock, SystemClock
from batch_processor.errors import BatchProcessorError, describe, first_error
from batch_processor.files.atomic import exclusive_lock, writable_dir
from batch_processor.files.layout import Layout
from batch_processor.mongo.store import CommandListener, MongoStore
from batch_processor.pipeline.stats import RunStats
from batch_processor.runtime.embedded import EmbeddedServer
from batch_processor.runtime.fleet import LeaseKeeper
from batch_processor.runtime.notify import ProgressLine, SystemdNotifier, report_progress
from batch_processor.runtime.schedule import CronSchedule
from batch_processor.runtime.shutdown import Stopper
from batch_processor.runtime.telemetry import Telemetry, watch_loop_lag
from batch_processor.service.classifier_setup import as_cascade, build_classifier
from batch_processor.service.jobs import (
    ProgressSink,
    Service,
    job_outcomes,
    outage_policy,
    pipeline_options,
)
from batch_processor.service.modes import drive
from batch_processor.service.preflight import SourceCheck, check_endpoint
from batch_processor.settings import Mode, Settings

if TYPE_CHECKING:
    from batch_processor.service.model_keeper import ModelKeeper

log = structlog.get_logger("batch_processor.service.runner")


@contextlib.asynccontextmanager
async def open_store(
    settings: Settings, *, listeners: Sequence[CommandListener] = ()
) -> AsyncIterator[MongoStore]:
    """A connected, indexed store; the embedded server runs for as long as it is open.

    ``listeners`` are pymongo command listeners (the benchmarks count commands with one).
    """
    embedded: EmbeddedServer | None = None
    if settings.mongodb_uri is None:
        embedded = EmbeddedServer(Layout(settings.batch_dir).embedded, port=settings.embedded_port)
        log.info(
            "no MongoDB URI configured: using the embedded SecantusDB server",
            data_dir=str(embedded.data_dir),
        )
        uri = await embedded.start()
        log.info("embedded server ready", address=f"127.0.0.1:{embedded.port}")
    else:
        uri = settings.mongodb_uri.get_secret_value()  # its secrets: see load_settings
    try:
        store = MongoStore(
            uri=uri,
            database=settings.database,
            source_collection=settings.source_collection,
            target_collection=settings.target_collection,
            projection=[settings.text_field, *settings.metadata_fields],
            text_field=settings.text_field,
            server_selection_timeout=settings.server_selection_timeout,
            socket_timeout=settings.db_socket_timeout,
            listeners=listeners,
            cache_collection=settings.cache_collection,
            workers_collection=settings.workers_collection,
            slices_collection=settings.provider_batches_collection,
            models_collection=settings.cascade_models_collection,
            priority_field=settings.priority_field,
            lease_seconds=settings.lease_seconds,
            source_filter=settings.source_filter,
            history_collection=settings.history_collection,
        )
        try:
            # A service waits for its database to come up (systemd may start it first); a
            # batch run that cannot reach it within the server selection timeout is more
            # likely misconfigured: it fails at once, with the host and the cause.
            if settings.mode is Mode.BATCH:
                await store.ping()
            else:
                await outage_policy(settings).call(store.ping)
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
    telemetry: Telemetry | None = None,
    clock: Clock | None = None,
) -> RunStats:
    """Run in the configured mode until done (batch) or stopped (the others); return the stats.

    Batch mode runs one job to the end. Continuous mode runs a job, waits for new documents
    (a change stream wakes it at once; it polls every ``interval`` seconds as well), and runs
    the next; scheduled mode runs one job per cron firing. Both run until SIGTERM/SIGINT or
    ``stopper`` stops them and return the last job's statistics. ``classifier`` replaces the one
    named in the settings (for library use and tests); ``store`` is an already open store (from
    :func:`open_store`), else one is opened. ``clock`` replaces the wall clock and sleeping of
    the cron and idle loops (tests).
    """
    schedule = (
        CronSchedule.parse(settings.cron, settings.timezone)
        if settings.mode is Mode.SCHEDULED
        else None
    )
    # Build the classifier first: a misconfiguration is reported before any connection. It
    # is cheap: the LLM classifier loads the openai SDK later, in its warm-up.
    classifier = classifier or build_classifier(settings)
    if settings.claim_ttl is not None:
        log.warning(
            "claim_ttl is deprecated and will be removed in the next release: "
            "use lease_seconds (BATCH_PROCESSOR_LEASE_SECONDS, --lease-seconds)",
            lease_seconds=settings.lease_seconds,
        )
    stopper = stopper or Stopper()
    telemetry = telemetry or Telemetry()
    try:
        with (
            exclusive_lock(Layout(writable_dir(settings.batch_dir, "batch_dir")).lock),
            stopper.on_signals(settings.shutdown_grace),
        ):
            async with contextlib.AsyncExitStack() as stack:
                if store is None:
                    store = await stack.enter_async_context(
                        open_store(settings, listeners=listeners)
                    )
                service = Service(
                    settings=settings,
                    classifier=classifier,
                    store=store,
                    stopper=stopper,
                    telemetry=telemetry,
                    progress=progress,
                    fleet=LeaseKeeper(
                        store,
                        interval=min(settings.lease_seconds / 3, settings.interval),
                        mode=settings.mode.value,
                        telemetry=telemetry,
                    ),
                    source_check=SourceCheck(store),
                    clock=clock or SystemClock(),
                )
                await check_endpoint(classifier, settings)
                await stack.enter_async_context(_process_services(service))
                return await drive(service, schedule)
    finally:
        await classifier.aclose()


@contextlib.asynccontextmanager
async def _process_services(service: Service) -> AsyncIterator[None]:
    """The health endpoint, the loop-lag monitor and the systemd protocol, while jobs run.

    The monitors run in a task group: if one of them dies, the jobs are cancelled and the
    error ends the process rather than the monitor going quiet unseen.
    """
    settings, telemetry = service.settings, service.telemetry
    notifier = SystemdNotifier()
    async with contextlib.AsyncExitStack() as stack:
        serve_http = settings.http if settings.http is not None else settings.mode is not Mode.BATCH
        if serve_http:
            from batch_processor.runtime.health import HealthServer  # loads prometheus-client

            server = HealthServer(
                telemetry,
                functools.partial(_readiness, service),
                stall_after=settings.stall_seconds,
            )
            await stack.enter_async_context(server.serving(settings.http_host, settings.http_port))
        telemetry.ready = True
        notifier.ready(f"{settings.mode.value} mode, classifier {service.classifier.name}")
        service.stopper.on_stop(notifier.stopping)
        try:
            async with asyncio.TaskGroup() as monitors:
                tasks = [monitors.create_task(watch_loop_lag(telemetry), name="loop-lag")]
                keeper = service.fleet.run()
                tasks.append(monitors.create_task(keeper, name="lease-keeper"))
                # The classifier loads its libraries while the first page is claimed; a
                # failure to load ends the run like any monitor's.
                warm_up = service.classifier.warm_up()
                tasks.append(monitors.create_task(warm_up, name="classifier-warm-up"))
                if notifier.enabled:
                    progress = _progress_line(service)
                    mode = settings.mode.value
                    status = report_progress(notifier, lambda: progress.line(mode))
                    tasks.append(monitors.create_task(status, name="systemd-status"))
                models = _model_keeper(service)
                if models is not None:
                    await models.follow_or_warn()  # the first page uses the active version
                    tasks.append(monitors.create_task(models.run(), name="model-keeper"))
                if notifier.watchdog_interval is not None:
                    watchdog = _watchdog(notifier, telemetry, settings.stall_seconds)
                    tasks.append(monitors.create_task(watchdog, name="systemd-watchdog"))
                try:
                    yield
                finally:
                    telemetry.ready = False
                    if not service.stopper.stopped:  # a stop already said so when it came
                        notifier.stopping()
                    await _cancel_monitors(tasks)
        except BaseExceptionGroup as group:
            # The jobs' own error (or a monitor's) as itself, for the exit code.
            raise first_error(group) from None


#: A monitor still running this long after it was cancelled is reported with its stack.
MONITOR_STOP_SECONDS = 10.0


async def _cancel_monitors(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel the monitors and wait for them; name any that does not stop, with where it is.

    A monitor that ignores its cancellation would hold the process's exit without a word (a
    test once waited 60 s here): after ``MONITOR_STOP_SECONDS`` the stuck ones are logged
    with their stacks, and waited for still (the task group would wait for them anyway).
    """
    for task in tasks:
        task.cancel()
    _, pending = await asyncio.wait(tasks, timeout=MONITOR_STOP_SECONDS)
    for task in pending:
        stack = io.StringIO()
        task.print_stack(file=stack)
        log.error(
            "a monitor did not stop when cancelled", task=task.get_name(), stack=stack.getvalue()
        )


def _model_keeper(service: Service) -> ModelKeeper | None:
    """The cascade's model keeper, for a cascade worker."""
    cascade = as_cascade(service.classifier)
    if cascade is None:
        return None
    from batch_processor.service.model_keeper import ModelKeeper  # numpy: when chosen

    settings = service.settings
    return ModelKeeper(
        cascade,
        service.store.models,
        outcomes=job_outcomes(pipeline_options(settings), "model-keeper", cascade),
        learn_every=settings.cascade_learn_every,
        audit_share=settings.cascade_audit_share,
        sleep=service.clock.sleep,
    )


def _progress_line(service: Service) -> ProgressLine:
    """The ``STATUS=`` line's sources: the process's totals and the pending count."""

    def totals() -> tuple[int, int]:
        done, failed = service.telemetry.totals()
        return done.get("processed", 0), sum(failed.values())

    return ProgressLine(totals, service.store.source.count_pending)


async def _watchdog(notifier: SystemdNotifier, telemetry: Telemetry, stall_after: float) -> None:
    """WATCHDOG=1 every half watchdog period, but only while the main loop progresses."""
    interval = notifier.watchdog_interval or 1.0
    while True:
        if telemetry.progressing(stall_after):
            notifier.watchdog()
        else:
            log.error("no progress: withholding the systemd watchdog", stalled_for=stall_after)
        await asyncio.sleep(interval)


async def _readiness(service: Service) -> list[str]:
    """What keeps the worker from being ready (empty: ready)."""
    problems = []
    if not service.mongodb.available:
        problems.append(f"MongoDB unavailable: {service.mongodb.last_error}")
    try:
        await service.store.ping(within=5)
    except BatchProcessorError as exc:
        problems.append(f"MongoDB unreachable: {describe(exc)}")
    if not os.access(service.settings.batch_dir, os.W_OK):
        problems.append(f"batch directory not writable: {service.settings.batch_dir}")
    if not service.telemetry.ready:
        problems.append("not started yet, or stopping")
    return problems
