"""Retry policy: exponential backoff with full jitter, only for errors that can succeed.

This is the one retry helper of the package: every retried operation (classifier calls,
MongoDB reads, claims, paging and writes through :mod:`batch_processor.outage`) goes through
:meth:`RetryPolicy.call`, which runs tenacity's ``AsyncRetrying`` with its
``wait_random_exponential`` and an injectable ``sleep`` and clock, so tests never really wait.
The error's type decides whether it is retried (:func:`batch_processor.errors.is_retryable_now`);
a ``retry_after`` carried by the error (a 429's ``Retry-After``) is honoured when it is longer
than the backoff.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_random_exponential

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


def _is_rate_limit(error: BaseException | None) -> bool:
    return isinstance(error, BatchProcessorError) and error.category is ErrorCategory.RATE_LIMIT


def _server_asked(error: BaseException | None) -> float:
    """The wait the server asked for (a 429's ``Retry-After``), or 0."""
    if isinstance(error, BatchProcessorError) and error.retry_after is not None:
        return error.retry_after
    return 0.0


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
        # Full jitter: uniform in [0, min(max_delay, base_delay * 2 ** (attempt - 1))].
        jitter = wait_random_exponential(multiplier=self.base_delay, max=self.max_delay)

        def _wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            return max(jitter(state), _server_asked(error))

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
