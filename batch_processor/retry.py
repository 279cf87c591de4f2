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
        The first attempt is a plain await: tenacity's bookkeeping, a tenth of a millisecond
        per call, is paid only by the calls that fail.
        """
        began = self.clock()
        try:
            return await operation(), 1
        except Exception as exc:
            if not is_retryable_now(exc):
                raise
            return await self._retry(operation, exc, began=began, on_retry=on_retry)

    async def _retry(
        self,
        operation: Callable[[], Awaitable[T]],
        failed: BaseException,
        *,
        began: float,
        on_retry: OnRetry | None,
    ) -> tuple[T, int]:
        """Retry ``operation``, whose first attempt (begun at ``began``) raised ``failed``."""
        first_error: BaseException | None = failed
        # Full jitter: uniform in [0, min(max_delay, base_delay * 2 ** (attempt - 1))].
        jitter = wait_random_exponential(multiplier=self.base_delay, max=self.max_delay)

        def _wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            return max(jitter(state), _server_asked(error))

        def _before_sleep(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            delay = state.next_action.sleep if state.next_action else 0.0
            if on_retry is not None and error is not None:
                on_retry(error, state.attempt_number, delay)

        retrying = AsyncRetrying(
            stop=_StopRule(self, began),
            wait=_wait,
            retry=retry_if_exception(is_retryable_now),
            sleep=self.sleep,
            before_sleep=_before_sleep,
            reraise=True,
        )

        last_error = failed

        async def attempt() -> T:
            # tenacity awaits only coroutine *functions*; ``operation`` may be a lambda. Its
            # first attempt is the one that already failed: stop, wait and the retry hook
            # see it as they see every other. A give-up that came during the backoff (a stop
            # cut the sleep short) ends it here, without one more attempt.
            nonlocal first_error, last_error
            if first_error is not None:
                error, first_error = first_error, None
                raise error
            if self.give_up():
                raise last_error
            try:
                return await operation()
            except BaseException as exc:
                last_error = exc
                raise

        result: T = await retrying(attempt)
        return result, int(retrying.statistics.get("attempt_number", 1))


class _StopRule:
    """When a :class:`RetryPolicy` stops retrying (tenacity's ``stop``)."""

    def __init__(self, policy: RetryPolicy, began: float) -> None:
        self.policy = policy
        self.began = began
        self.rate_limited = 0  # 429s so far, counted apart (see ``rate_limit_attempts``)

    def __call__(self, state: RetryCallState) -> bool:
        policy = self.policy
        error = state.outcome.exception() if state.outcome else None
        if policy.give_up():
            return True
        if policy.give_up_after is not None and policy.clock() - self.began >= policy.give_up_after:
            return True
        if policy.rate_limit_attempts is not None and _is_rate_limit(error):
            self.rate_limited += 1
            return self.rate_limited >= policy.rate_limit_attempts
        if policy.max_attempts is None:
            return False
        return state.attempt_number - self.rate_limited >= policy.max_attempts
