"""Outages: whether a dependency answers, logged once per change of state, and waited out.

A MongoDB restart, a failover or a network cut makes every operation fail for a while. Logging
each failed attempt (or each document) buries the one line an operator needs, so
:class:`Availability` logs a warning when the dependency is first found away and one when it
answers again, with how long it was away; retries in between log at debug level. ``/readyz``
reads it.

:class:`DatabaseCalls` is the one way the pipeline and the writer call MongoDB with retries:
``wait`` retries with capped backoff for as long as the outage policy allows (forever in the
service modes, ``db_outage_grace`` seconds in a batch run), ``brief`` a few attempts for writes
that have a fallback (the store retry queue). A stop request ends a ``wait`` that is waiting
out an outage: no further attempt, the backoff sleep cut short, and :class:`Interrupted`
raised, which the loops treat as a clean stop (a service stopped during an outage exits 0 at
once instead of being killed by its supervisor).

:func:`abandonable` keeps a cancelled MongoDB call from holding its caller: pymongo answers
a cancellation during server selection only once it gets its topology lock back, which
another task may hold for a whole connect timeout.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog

from batch_processor.errors import BatchProcessorError, Interrupted, TransientError, describe
from batch_processor.retry import RetryPolicy

T = TypeVar("T")
log = structlog.get_logger("batch_processor.outage")


class Availability:
    """Up or down, for one dependency; each change of state is logged once."""

    def __init__(self, name: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self._clock = clock
        self._down_since: float | None = None
        self._last_error = ""

    @property
    def available(self) -> bool:
        """False from the first failure until the next success."""
        return self._down_since is None

    @property
    def last_error(self) -> str:
        """The error that made it unavailable ('' while available)."""
        return self._last_error if self._down_since is not None else ""

    def failed(self, error: BaseException) -> None:
        """An operation failed for a reason that may heal; log if this starts an outage."""
        self._last_error = describe(error)
        if self._down_since is None:
            self._down_since = self._clock()
            log.warning(f"{self.name} unavailable: waiting for it", error=self._last_error)
        else:
            log.debug(f"{self.name} still unavailable", error=self._last_error)

    def succeeded(self) -> None:
        """An operation succeeded; log if this ends an outage."""
        if self._down_since is not None:
            away = self._clock() - self._down_since
            self._down_since = None
            log.warning(f"{self.name} available again", unavailable_seconds=round(away, 1))


#: Seconds a MongoDB call still running at a stop gets before it is abandoned.
STOP_PATIENCE = 1.0


class DatabaseCalls:
    """MongoDB operations with retries, reporting to one :class:`Availability`."""

    def __init__(
        self,
        *,
        patient: RetryPolicy,
        brief: RetryPolicy,
        availability: Availability,
        on_retry: Callable[[BaseException], None] = lambda _error: None,
        stop: asyncio.Event | None = None,
    ) -> None:
        self._stop = stop or asyncio.Event()
        self._sleep = patient.sleep  # injected: the backoff and the patience after a stop
        self.patient = dataclasses.replace(
            patient, give_up=self._stop.is_set, sleep=self._sleep_unless_stopped
        )
        # A brief call retries only until a stop: its caller's fallback takes over then.
        self.brief_policy = dataclasses.replace(brief, give_up=self._stop.is_set)
        self.availability = availability
        self._count = on_retry

    async def wait(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run ``operation``, waiting out an outage as long as the patient policy allows.

        Raises :class:`Interrupted` if a stop is requested while it waits, or at once if
        MongoDB is down and a stop was requested before (a stop does not wait for it).
        """
        if self._stop.is_set() and not self.availability.available:
            raise Interrupted(
                f"stopped while MongoDB is unavailable ({self.availability.last_error})"
            )
        try:
            return await self._call(self.patient, lambda: self._unless_stopped(operation))
        except BatchProcessorError as exc:
            if self._stop.is_set():
                raise Interrupted(f"stopped while waiting for MongoDB ({describe(exc)})") from exc
            raise

    async def _unless_stopped(self, operation: Callable[[], Awaitable[T]]) -> T:
        """``operation``, abandoned ``STOP_PATIENCE`` seconds after a stop if still running.

        The driver may wait inside one call for a whole server selection timeout (a server
        gone mid-call, closing its cursor); a stop must not. An abandoned claim that reached
        the server leaves its documents to their lease.
        """
        work = asyncio.ensure_future(operation())
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done():
                await first_of(asyncio.shield(work), self._sleep(STOP_PATIENCE))
        finally:
            stop.cancel()
            if not work.done():
                _abandon(work)
        if not work.done() or work.cancelled():
            raise TransientError("abandoned: a stop was asked for")
        return work.result()

    async def _sleep_unless_stopped(self, seconds: float) -> None:
        """The injected sleep, cut short by a stop."""
        await first_of(self._sleep(seconds), self._stop.wait())

    async def brief(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run ``operation`` with a few attempts (the caller has a fallback).

        Once a stop is asked for, it is not retried, and while MongoDB is down it is not even
        tried: the caller's fallback (the store queue on disk, a lease left to expire) takes
        it at once, so a stop during an outage ends within its grace. One already on the wire
        is let finish (a healthy but slow write is stored, not queued): it ends within the
        driver's timeouts, inside the grace.
        """
        if self._stop.is_set():
            if not self.availability.available:
                raise TransientError(f"not tried while stopping: {self.availability.last_error}")
            return await self._call(dataclasses.replace(self.brief_policy, max_attempts=1),
                                    operation)  # fmt: skip
        return await self._call(self.brief_policy, operation)

    async def _call(self, policy: RetryPolicy, operation: Callable[[], Awaitable[T]]) -> T:
        def on_retry(error: BaseException, _attempt: int, _delay: float) -> None:
            self._count(error)
            self.availability.failed(error)

        try:
            result, _ = await policy.call(operation, on_retry=on_retry)
        except TransientError as exc:  # the last attempt too: MongoDB is down, not just slow
            self.availability.failed(exc)
            raise
        self.availability.succeeded()
        return result


async def first_of(*awaitables: Awaitable[object]) -> None:
    """Wait until the first of ``awaitables`` completes (re-raising its error).

    The others are cancelled and awaited before it returns: nothing is left running.
    """
    tasks = [asyncio.ensure_future(awaitable) for awaitable in awaitables]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


#: Calls cancelled and not waited for (kept referenced until they end, so that their outcome
#: is retrieved; the process exits without waiting for them).
_abandoned: set[asyncio.Future[Any]] = set()


async def abandonable(operation: Awaitable[T]) -> T:
    """Await ``operation``; when cancelled, cancel it and go on without waiting for it.

    For a MongoDB call made outside :class:`DatabaseCalls` (the lease keeper's): cancelled at
    a stop, it may not end until the driver's topology lock is free again (seconds); the
    caller's cancellation goes on at once all the same.
    """
    work = asyncio.ensure_future(operation)
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        _abandon(work)
        raise


def _abandon(work: asyncio.Future[Any]) -> None:
    """Cancel ``work`` and leave it behind; its outcome is retrieved when it ends."""
    work.cancel()
    _abandoned.add(work)
    work.add_done_callback(_forget)


def _forget(work: asyncio.Future[Any]) -> None:
    _abandoned.discard(work)
    if not work.cancelled():
        work.exception()
