"""Retry policy: exponential backoff with full jitter, only for errors that can succeed.

Deciding is kept apart from acting (as in tenacity): :func:`should_retry` and :func:`backoff`
are pure and unit-tested; :class:`RetryPolicy.call` runs the attempts through tenacity with an
injectable ``sleep`` so tests never really wait. A ``retry_after`` carried by the error (a 429's
``Retry-After``) is honoured when it is longer than the computed backoff.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from batch_processor.errors import BatchProcessorError, ErrorCategory, describe, is_retryable_now

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]
OnRetry = Callable[[BaseException, int, float], None]

log = structlog.get_logger("batch_processor.retry")


def announce_retries(event: str, count: Callable[[BaseException], None], **context: Any) -> OnRetry:
    """An ``on_retry`` hook that counts each retry (by its error) and logs delay and cause."""

    def on_retry(error: BaseException, attempt: int, delay: float) -> None:
        count(error)
        log.info(event, attempt=attempt, delay=round(delay, 2), error=describe(error), **context)

    return on_retry


def should_retry(error: BaseException, attempt: int, max_attempts: int) -> bool:
    """Whether attempt number ``attempt`` (1-based) that raised ``error`` is followed by another."""
    return attempt < max_attempts and is_retryable_now(error)


def backoff(
    attempt: int, *, base: float, cap: float, rand: Callable[[], float] = random.random
) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**(attempt-1))]."""
    return rand() * min(cap, base * 2.0 ** (attempt - 1))


def _is_rate_limit(error: BaseException | None) -> bool:
    return isinstance(error, BatchProcessorError) and error.category is ErrorCategory.RATE_LIMIT


def wait_for(error: BaseException | None, attempt: int, *, base: float, cap: float) -> float:
    """The delay before the next attempt: the backoff, or longer if the server asked for it."""
    delay = backoff(attempt, base=base, cap=cap)
    if isinstance(error, BatchProcessorError) and error.retry_after is not None:
        delay = max(delay, error.retry_after)
    return delay


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently one kind of operation is retried.

    ``max_attempts`` bounds the attempts (None: no bound); ``give_up_after`` bounds the time
    since the call began (None: no bound). Both None waits out an outage of any length, which is
    what a service does with MongoDB; a batch run gives up after its grace period.
    """

    max_attempts: int | None = 3
    base_delay: float = 0.5
    max_delay: float = 30.0
    #: If set, 429s are counted apart: the provider said "wait", which is not a failure, so
    #: they do not use up ``max_attempts`` but stop after this many of their own.
    rate_limit_attempts: int | None = None
    give_up_after: float | None = None
    #: Asked before each retry: True ends the retrying at once (a stop was requested).
    give_up: Callable[[], bool] = field(default=lambda: False, compare=False)
    sleep: Sleep = field(default=asyncio.sleep, compare=False)
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)

    async def call(
        self,
        operation: Callable[[], Awaitable[T]],
        *,
        on_retry: OnRetry | None = None,
    ) -> tuple[T, int]:
        """Run ``operation`` until it succeeds or must stop; return (result, attempts used).

        The last error is re-raised unchanged when attempts run out or it is not retryable.
        """

        def _wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            return wait_for(error, state.attempt_number, base=self.base_delay, cap=self.max_delay)

        rate_limited = 0
        began = self.clock()

        def _stop(state: RetryCallState) -> bool:
            nonlocal rate_limited
            error = state.outcome.exception() if state.outcome else None
            if self.give_up():
                return True
            if self.give_up_after is not None and self.clock() - began >= self.give_up_after:
                return True
            if self.rate_limit_attempts is not None and _is_rate_limit(error):
                rate_limited += 1
                return rate_limited >= self.rate_limit_attempts
            if self.max_attempts is None:
                return False
            return state.attempt_number - rate_limited >= self.max_attempts

        def _before_sleep(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            delay = state.next_action.sleep if state.next_action else 0.0
            if on_retry is not None and error is not None:
                on_retry(error, state.attempt_number, delay)

        retrying = AsyncRetrying(
            stop=_stop,
            wait=_wait,
            retry=retry_if_exception(is_retryable_now),
            sleep=self.sleep,
            before_sleep=_before_sleep,
            reraise=True,
        )

        async def attempt() -> T:
            # tenacity awaits only coroutine *functions*; ``operation`` may be a lambda.
            return await operation()

        result: T = await retrying(attempt)
        return result, int(retrying.statistics.get("attempt_number", 1))
