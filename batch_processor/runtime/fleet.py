"""The worker in its fleet: leases renewed, dead workers' leases taken over, a heartbeat.

One :class:`LeaseKeeper` runs for the whole process, watched in the runner's monitor task group,
and ticks every third of the lease (or every poll interval, if shorter). Each tick:

1. renews the leases of every document this worker holds (in flight, and waiting in its
   classify queue): one ``update_many`` per few hundred documents;
2. takes over the expired leases of other workers: releases them to pending, logs how many it
   took from whom, and makes the running job read from the top again (or wakes an idle
   continuous worker), so they are classified within one lease plus one tick of the death;
3. writes this worker's heartbeat document (host, pid, job, in flight, done) for ``status``.

A tick that fails (MongoDB away) is logged and tried again at the next; a lease not renewed in
time only means another worker may take the document over, and the fence keeps that safe.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Protocol

import structlog

from batch_processor.errors import BatchProcessorError, describe
from batch_processor.models import utcnow
from batch_processor.mongo.store import MongoStore
from batch_processor.outage import abandonable
from batch_processor.runtime.telemetry import LeaseCounters, Telemetry

log = structlog.get_logger("batch_processor.runtime.fleet")


def cancel_requested() -> bool:
    """Whether the current task was asked to stop (even if a callee swallowed the request)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class HeldWork(Protocol):
    """The running job, as the lease keeper sees it (a :class:`~batch_processor.Pipeline`)."""

    def held_ids(self) -> list[str]:
        """The documents the job holds claims on."""
        ...

    def refresh(self) -> None:
        """Documents became pending behind the job's cursors: read from the top again."""
        ...


class LeaseKeeper:
    """Renews leases, takes over expired ones and beats (see the module docstring)."""

    def __init__(
        self,
        store: MongoStore,
        *,
        interval: float,
        mode: str,
        telemetry: Telemetry,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._store = store
        self._telemetry = telemetry
        self._interval = interval
        self._mode = mode
        self._sleep = sleep
        self._job: HeldWork | None = None
        self._worker_id: str | None = None
        self._job_id: str | None = None
        self.counters = telemetry.leases = LeaseCounters()
        self.released = asyncio.Event()  # set when a takeover made documents pending
        self._attached = asyncio.Event()
        self._started = utcnow()

    def attach(self, job: HeldWork, *, worker_id: str, job_id: str) -> None:
        """A job started: renew what it holds from now on (and beat as its worker)."""
        self._job, self._worker_id, self._job_id = job, worker_id, job_id
        self._attached.set()

    async def job_ended(self, within: float = 5.0) -> None:
        """A job ended by itself: beat once more, so ``status`` shows what it did.

        A batch run often ends before its first tick's beat would have counted anything (its
        worker showed ``done 0``). A batch worker's process ends with its job: the beat says
        so (``ended_at``), and ``status`` shows it ended, not alive for a lease more.
        Bounded and best effort: a failure is only logged.
        """
        if self._worker_id is None:
            return
        try:
            async with asyncio.timeout(within):
                await self._beat(self._worker_id, last=self._mode == "batch")
        except (BatchProcessorError, TimeoutError) as exc:
            log.warning("last heartbeat not written", error=describe(exc))

    async def run(self) -> None:
        """Tick from the first job's start on, forever (cancelled with the process's monitors).

        The first tick comes as the first job starts: a starting worker takes over what
        dead workers left before it reads its first page.
        """
        await self._attached.wait()
        while True:
            await self.tick()
            if cancel_requested():
                # The driver answered our cancellation with a connection error, or swallowed
                # it (pymongo closes a connection cancelled mid-operation): without this check
                # the keeper slept a whole interval more and held the process's exit.
                raise asyncio.CancelledError
            await self._sleep(self._interval)

    async def tick(self) -> None:
        """Renew, take over, beat; a MongoDB failure is logged and retried at the next tick."""
        if self._worker_id is None:
            return  # no job has started yet: nothing held, and no identity to beat as
        try:
            await self._renew(self._worker_id)
            await self._take_over(self._worker_id)
            await self._beat(self._worker_id)
        except BatchProcessorError as exc:
            if cancel_requested():
                raise asyncio.CancelledError from None  # a stop, not a MongoDB failure
            log.warning("lease keeping failed; retrying at the next tick", error=describe(exc))

    async def _renew(self, worker_id: str) -> None:
        held = self._job.held_ids() if self._job is not None else []
        self.counters.held = len(held)
        if not held:
            return
        # Fewer may match than are held: some were just marked done. One taken over meanwhile
        # is not renewed either; its writes are fenced off and counted as lost_lease.
        self.counters.renewed += await abandonable(self._store.source.renew(held, worker_id))

    async def _take_over(self, worker_id: str) -> None:
        taken: Counter[str] = await abandonable(self._store.source.take_over(worker_id))
        if not taken:
            return
        total = sum(taken.values())
        self.counters.taken_over += total
        log.warning("took over expired leases", documents=total, taken_from=dict(taken))
        if self._job is not None:
            self._job.refresh()
        self.released.set()

    async def _beat(self, worker_id: str, *, last: bool = False) -> None:
        totals, _ = self._telemetry.totals()
        now = utcnow()
        beat = self._store.fleet.beat(
            worker_id,
            {
                **({"ended_at": now} if last else {}),
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "job_id": self._job_id,
                "mode": self._mode,
                "started_at": self._started,
                "beat_at": now,
                "beat_interval": self._interval,
                "lease_seconds": self._store.source.lease.total_seconds(),
                "in_flight": self.counters.held,
                "done": totals.get("processed", 0),
                "taken_over": self.counters.taken_over,
                "lost_lease": totals.get("lost_lease", 0),
                "rss_mb": round(self._telemetry.sample_rss(), 1),
            },
        )
        await abandonable(beat)
