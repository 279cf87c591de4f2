"""Which route a run's LLM requests take: composing the Batch API route, and running it.

``llm_route = online`` (the default) changes nothing. With ``batch`` or ``auto`` the runner
builds a :class:`~batch_processor.route.BatchRoute` (:func:`build_route`) and drives it
around the online jobs (:func:`beside_jobs`):

- in batch mode (and at each firing of scheduled mode) the route first takes on the slices a
  previous process (or a dead worker) left, then claims the backlog it is given, and only then
  does the online job start: it takes what the route left (high-priority documents under
  ``auto``, documents that arrive meanwhile, a crashed job's batch files, the retry queues)
  while the route's batches are polled and stored. The job's summary (``run finished``, the
  job's report file) waits for the route and counts its documents, requests and spend;
- in continuous mode (``auto`` only) the route does the same at start and then checks the
  backlog, other workers' abandoned slices and orphans again every five minutes
  (``RECHECK_SECONDS``), alongside the online jobs, for as long as the service runs.

The route runs in the runner's task group: if it fails, the run fails with its error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

import structlog

from batch_processor.errors import ConfigurationError
from batch_processor.files.atomic import ensure_dir
from batch_processor.files.identity import worker_identity
from batch_processor.files.provider_batches import SliceFiles
from batch_processor.llm.batch_api import ProviderBatches
from batch_processor.llm.client import LLMClassifier
from batch_processor.pipeline.stats import RunStats
from batch_processor.route import AnswerReader, BatchRoute, RouteOptions, RouteStats, SliceBuilder
from batch_processor.service.classifier_setup import as_cascade
from batch_processor.service.jobs import (
    RouteRun,
    Service,
    database_calls,
    job_outcomes,
    new_job_id,
    pipeline_options,
    retry_policy,
)
from batch_processor.service.jobs import with_dedupe as dedupe_for
from batch_processor.settings import Mode, Route
from batch_processor.slice_record import SliceRecord

log = structlog.get_logger("batch_processor.service.routing")

#: Seconds between a service's checks of the backlog for the Batch API.
RECHECK_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class _StopAwareClock:
    """The service's clock, whose sleeps end at a stop."""

    service: Service

    def now(self) -> datetime:
        return self.service.clock.now()

    async def sleep(self, seconds: float) -> None:
        await self.service.stopper.race(self.service.clock.sleep(seconds))


def build_route(service: Service) -> BatchRoute | None:
    """The Batch API route the settings ask for, or None for the online route alone."""
    settings = service.settings
    if settings.llm_route is Route.ONLINE:
        return None
    # With the cascade, only what it is unsure of goes to the Batch API; it keeps the rest.
    triage = as_cascade(service.classifier)
    classifier = triage.llm if triage is not None else service.classifier
    if not isinstance(classifier, LLMClassifier):
        raise ConfigurationError(
            f"invalid setting llm_route (--llm-route / BATCH_PROCESSOR_LLM_ROUTE): "
            f"{settings.llm_route} needs an LLM (--classifier llm or cascade)"
        )
    batch_dir = ensure_dir(settings.batch_dir)
    options = RouteOptions.of(settings)
    job_id = new_job_id()
    worker_id = f"{worker_identity(batch_dir)}/batch-route"
    store, stopper = service.store, service.stopper
    cache = dedupe_for(settings, classifier, store)
    db = database_calls(service)
    outcomes = job_outcomes(pipeline_options(settings), job_id, triage or classifier)
    stats = RouteStats()
    route = BatchRoute(
        options=options,
        source=store.source,
        slices=store.slices,
        provider=ProviderBatches(classifier, window=options.window),
        files=SliceFiles(batch_dir),
        builder=SliceBuilder(
            options=options, source=store.source, llm=classifier, cache=cache,
            outcomes=outcomes, db=db, worker_id=worker_id, triage=triage,
        ),
        answers=AnswerReader(
            source=store.source, sink=store.sink, llm=classifier, cache=cache,
            outcomes=outcomes, db=db, concurrent=settings.concurrent, stats=stats,
            classify_policy=retry_policy(settings, rate_limits_apart=True), triage=triage,
        ),
        stats=stats,
        worker_id=worker_id,
        job_id=job_id,
        db=db,
        clock=_StopAwareClock(service),
        stopped=lambda: stopper.stopped,
    )  # fmt: skip
    service.telemetry.route_started(stats.summary)
    return route


async def routed(
    service: Service, jobs: Callable[[RouteRun | None], Awaitable[RunStats]]
) -> RunStats:
    """Run ``jobs`` with the route the settings ask for: the one place that decides it.

    With the online route alone, ``jobs`` runs by itself; otherwise beside the Batch API route
    (:func:`beside_jobs`).
    """
    route = build_route(service)
    if route is None:
        return await jobs(None)
    return await beside_jobs(service, route, jobs)


async def beside_jobs(
    service: Service,
    route: BatchRoute,
    jobs: Callable[[RouteRun | None], Awaitable[RunStats]],
) -> RunStats:
    """Run the route's batches beside the online ``jobs`` (see the module docstring).

    ``jobs`` gets the route's run to wait for and count in its summary, except in continuous
    mode, where the route never ends.
    """
    forever = service.settings.mode is Mode.CONTINUOUS
    async with asyncio.TaskGroup() as group:
        keeper = group.create_task(route.keep_leases(), name="batch-route-leases")
        slices = await route.resume()
        if await route.backlog_wanted():
            slices += await route.submit_backlog()
        work = group.create_task(_keep_going(service, route, slices, forever),
                                 name="batch-route")  # fmt: skip
        work.add_done_callback(lambda _: keeper.cancel())
        stats = await jobs(None if forever else RouteRun(work, route.stats))
    log.info("batch route finished", **route.stats.summary())
    return stats


async def _keep_going(
    service: Service, route: BatchRoute, slices: list[SliceRecord], forever: bool
) -> None:
    """Finish ``slices`` (and other workers' abandoned ones); in a service, check again."""
    await route.finish(slices)
    await route.finish(await route.watched())
    await route.clean_orphans()
    stopper = service.stopper
    while forever and not stopper.stopped:
        if not await stopper.race(service.clock.sleep(RECHECK_SECONDS)):
            return
        taken = await route.resume()
        if await route.backlog_wanted():
            taken += await route.submit_backlog()
        await route.finish(taken)
