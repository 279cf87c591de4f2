"""Which route a run's LLM requests take, and the Batch API route beside the online jobs.

``llm_route = online`` (the default) changes nothing. With ``batch`` or ``auto`` the runner
builds a :class:`~batch_processor.service.batch_route.BatchRoute` and drives it around the
online jobs:

- in batch mode (and at each firing of scheduled mode) the route first finishes the slices a
  previous process left, then claims the backlog it is given, and only then does the online
  job start: it takes what the route left (high-priority documents under ``auto``, documents
  that arrive meanwhile, a crashed job's batch files, the retry queues) while the route's
  batches are polled and stored; the run ends when both have;
- in continuous mode (``auto`` only) the route does the same at start and then checks the
  backlog again every five minutes (``RECHECK_SECONDS``), alongside the online jobs, for as long
  as the service runs.

The route runs in the runner's task group: if it fails, the run fails with its error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from batch_processor.errors import ConfigurationError
from batch_processor.files.atomic import ensure_dir
from batch_processor.files.identity import worker_identity
from batch_processor.files.provider_batches import ProviderSlice, ProviderSlices
from batch_processor.llm.client import LLMClassifier
from batch_processor.pipeline.stats import RunStats
from batch_processor.service.batch_route import BatchRoute, RouteOptions
from batch_processor.service.jobs import Service, database_calls, new_job_id, retry_policy
from batch_processor.service.jobs import with_dedupe as dedupe_for
from batch_processor.settings import Mode, Route

log = structlog.get_logger("batch_processor.service.routing")

#: Seconds between a service's checks of the backlog for the Batch API.
RECHECK_SECONDS = 300.0


def build_route(service: Service) -> BatchRoute | None:
    """The Batch API route the settings ask for, or None for the online route alone."""
    settings = service.settings
    if settings.llm_route is Route.ONLINE:
        return None
    classifier = service.classifier
    if not isinstance(classifier, LLMClassifier):
        raise ConfigurationError(
            f"invalid setting llm_route (--llm-route / BATCH_LLM_ROUTE): {settings.llm_route} "
            "needs the llm classifier (--classifier llm)"
        )
    batch_dir = ensure_dir(settings.batch_dir)
    stopper = service.stopper

    async def sleep(seconds: float) -> None:
        await stopper.race(service.clock.sleep(seconds))

    route = BatchRoute(
        options=RouteOptions.of(settings),
        store=service.store,
        classifier=classifier,
        cache=dedupe_for(settings, classifier, service.store),
        slices=ProviderSlices(batch_dir),
        worker_id=worker_identity(batch_dir),
        job_id=new_job_id(),
        db=database_calls(service),
        classify_policy=retry_policy(settings, rate_limits_apart=True),
        stopped=lambda: stopper.stopped,
        sleep=sleep,
    )
    service.telemetry.route_summary = route.stats.summary
    return route


async def prepare(route: BatchRoute) -> list[ProviderSlice]:
    """Resume what a previous process left, then claim the backlog if the route takes it."""
    slices = await route.resume()
    if await route.backlog_wanted():
        slices += await route.submit_backlog()
    return slices


async def beside_jobs(
    service: Service,
    route: BatchRoute,
    jobs: Callable[[], Awaitable[RunStats]],
) -> RunStats:
    """Run the route's batches beside the online ``jobs`` (see the module docstring)."""
    slices = await prepare(route)
    forever = service.settings.mode is Mode.CONTINUOUS
    async with asyncio.TaskGroup() as group:
        group.create_task(_keep_going(service, route, slices, forever), name="batch-route")
        stats = await jobs()
    # The run's outcome counts the route's documents too (the job's report file, written
    # when the online job ended, has the online job's alone).
    stats.succeeded += route.stats.stored
    stats.failed.update(route.stats.failed)
    stats.lost_lease += route.stats.lost_lease
    stats.route = route.stats.summary()
    log.info("batch route finished", **stats.route)
    return stats


async def _keep_going(
    service: Service, route: BatchRoute, slices: list[ProviderSlice], forever: bool
) -> None:
    """Finish ``slices``; in a service, check the backlog again every few minutes."""
    await route.finish(slices)
    stopper = service.stopper
    while forever and not stopper.stopped:
        if not await stopper.race(service.clock.sleep(RECHECK_SECONDS)):
            return
        if await route.backlog_wanted():
            await route.finish(await route.submit_backlog())
