"""The three modes' loops: one job (batch), jobs and idle waits (continuous), cron firings.

:func:`drive` runs the configured mode's loop with the Batch API route beside the jobs when
the settings ask for it (:mod:`.routing` decides). A continuous service waits for work with
change streams and a polling safety net, wakes when the lease keeper takes a dead worker's
documents over, and idles (alive) at its budget; a scheduled one runs a job per cron firing
and never overlaps two.
"""

from __future__ import annotations

import contextlib
import functools

import structlog

from batch_processor.errors import BatchProcessorError, Interrupted, describe
from batch_processor.outage import first_of
from batch_processor.pipeline.stats import RunStats
from batch_processor.runtime.schedule import CronSchedule
from batch_processor.service.jobs import RouteRun, Service, database_calls, run_one_job
from batch_processor.service.routing import routed
from batch_processor.settings import Mode

log = structlog.get_logger("batch_processor.service.modes")


async def drive(service: Service, schedule: CronSchedule | None) -> RunStats:
    """Run the mode's loop; a stop while waiting for MongoDB ends it cleanly."""
    try:
        return await _drive_mode(service, schedule)
    except Interrupted as exc:
        log.warning("stopped while MongoDB was unavailable", error=exc.message)
        return RunStats()


async def _drive_mode(service: Service, schedule: CronSchedule | None) -> RunStats:
    """The mode's jobs, with the Batch API route beside them when it is configured."""
    if schedule is not None:  # the route runs beside each firing's job (_run_on_schedule)
        return await _run_on_schedule(service, schedule)
    return await routed(service, functools.partial(_drive_jobs, service))


async def _drive_jobs(service: Service, along: RouteRun | None = None) -> RunStats:
    """One job in batch mode; jobs and idle waits in turn in continuous mode."""
    stats = await _job(service, recover=service.settings.recover, along=along)
    while service.settings.mode is Mode.CONTINUOUS and not service.stopper.stopped:
        if stats.classifier.get("budget_reached"):
            await _idle_at_budget(service, stats)
            break
        if not await _wait_for_work(service):
            break
        # Later jobs never recover: the first one finished whatever was left.
        stats = await _job(service, recover=False)
    return stats


async def _idle_at_budget(service: Service, stats: RunStats) -> None:
    """A service at its budget: say so once, then idle (alive and beating) until stopped.

    Starting jobs would only claim pages to give them back; the documents stay pending for a
    restart with a higher ``--budget-usd``.
    """
    log.warning(
        "budget reached: the service takes no more documents until it is restarted with a "
        "higher --budget-usd; the rest stay pending",
        budget_usd=stats.classifier.get("budget_usd"),
        cost_usd=stats.classifier.get("cost_usd"),
    )
    while not service.stopper.stopped:
        service.telemetry.beat()  # idle is not stalled
        await service.stopper.race(service.clock.sleep(service.settings.interval))


async def _job(service: Service, along: RouteRun | None = None, *, recover: bool) -> RunStats:
    """One job, once the source collection exists (until then: a warning and no job)."""
    check = service.source_check
    if not await database_calls(service).wait(check.ready):
        if along is not None:
            await along.ended()
        return RunStats()
    return await run_one_job(service, recover=recover, along=along)


async def _run_on_schedule(service: Service, schedule: CronSchedule) -> RunStats:
    """One job per firing of the cron schedule; runs never overlap (missed firings are logged)."""
    settings, stopper, clock = service.settings, service.stopper, service.clock
    stats = RunStats()
    recover = settings.recover
    if settings.run_now:  # a firing now, as any other
        stats = await routed(service, functools.partial(_job, service, recover=recover))
        recover = False
    while not stopper.stopped:
        fire = schedule.next_after(clock.now())
        log.info(
            "next scheduled run",
            at=fire.isoformat(),
            cron=schedule.expression,
            fields=schedule.meaning,
            timezone=settings.timezone,
        )
        service.telemetry.beat()
        if not await stopper.race(clock.sleep(max(0.0, (fire - clock.now()).total_seconds()))):
            break
        late = (clock.now() - fire).total_seconds()
        if late > settings.misfire_grace:
            log.warning("scheduled run skipped: woke too late", at=fire.isoformat(), late=late)
            continue
        stats = await routed(service, functools.partial(_job, service, recover=recover))
        recover = False
        skipped = schedule.firings_between(fire, clock.now())
        if skipped:
            log.warning("firings skipped: the previous run was still going", skipped=skipped)
    return stats


async def _wait_for_work(service: Service) -> bool:
    """Wait until a source document is pending; False if stopped first.

    An idle worker sends one indexed query per ``interval`` (the safety net) and, with change
    streams, one ``getMore`` that the server holds until an insert or the interval's end. The
    lease keeper wakes it when it takes over a dead worker's documents.
    """
    settings, store, stopper = service.settings, service.store, service.stopper
    log.info(
        "waiting for new documents",
        interval=settings.interval,
        change_streams=settings.change_streams,
    )
    db = database_calls(service)
    async with contextlib.AsyncExitStack() as stack:
        waiter = None
        if settings.change_streams:
            try:
                waiter = await stack.enter_async_context(
                    store.source.insert_events(settings.interval)
                )
            except BatchProcessorError as exc:
                log.info("change streams unavailable: polling only", error=describe(exc))
        check = service.source_check
        while not stopper.stopped:
            service.telemetry.beat()  # idle is not stalled
            try:
                if not check.passed:
                    # Until the source collection exists, no job runs; once it does, one
                    # starts (its lease keeper then watches other workers' claims too).
                    pending = await db.wait(check.ready)
                else:
                    pending = await db.wait(store.source.has_pending)  # outages waited out
            except Interrupted:
                return False
            if pending:
                return True
            try:
                idle = (
                    waiter.wait() if waiter is not None else service.clock.sleep(settings.interval)
                )
                # A takeover of a dead worker's leases (the lease keeper) wakes us too.
                released = service.fleet.released
                if not await stopper.race(first_of(idle, released.wait())):
                    return False
                if released.is_set():
                    released.clear()
                    return True
            except BatchProcessorError as exc:
                log.warning("change stream lost: polling only", error=describe(exc))
                waiter = None
    return False
