"""Retry policy: exponential backoff with full jitter, only for errors that can succeed.

Deciding is kept apart from acting (as in tenacity): :func:`should_retry` and :func:`backoff`
are pure and unit-tested; :class:`RetryPolicy.call` runs the attempts through tenacity with an
injectable ``sleep`` so tests never really wait. A ``retry_after`` carried by the error (a 429's
``Retry-After``) is honoured when it is longer than the computed backoff.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from .errors import BatchProcessorError, describe, is_retryable

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]
OnRetry = Callable[[BaseException, int, float], None]

log = structlog.get_logger("batch_processor.retry")


def announce_retries(event: str, count: Callable[[], None], **context: Any) -> OnRetry:
    """An ``on_retry`` hook that counts each retry and logs it with its delay and cause."""

    def on_retry(error: BaseException, attempt: int, delay: float) -> None:
        count()
        log.info(event, attempt=attempt, delay=round(delay, 2), error=describe(error), **context)

    return on_retry


def should_retry(error: BaseException, attempt: int, max_attempts: int) -> bool:
    """Whether attempt number ``attempt`` (1-based) that raised ``error`` is followed by another."""
    return attempt < max_attempts and is_retryable(error)


def backoff(
    attempt: int, *, base: float, cap: float, rand: Callable[[], float] = random.random
) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**(attempt-1))]."""
    return rand() * min(cap, base * 2.0 ** (attempt - 1))


def wait_for(error: BaseException | None, attempt: int, *, base: float, cap: float) -> float:
    """The delay before the next attempt: the backoff, or longer if the server asked for it."""
    delay = backoff(attempt, base=base, cap=cap)
    if isinstance(error, BatchProcessorError) and error.retry_after is not None:
        delay = max(delay, error.retry_after)
    return delay


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently one kind of operation is retried."""

    max_attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 30.0
    sleep: Sleep = field(default=asyncio.sleep, compare=False)

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

        def _before_sleep(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            delay = state.next_action.sleep if state.next_action else 0.0
            if on_retry is not None and error is not None:
                on_retry(error, state.attempt_number, delay)

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=_wait,
            retry=retry_if_exception(is_retryable),
            sleep=self.sleep,
            before_sleep=_before_sleep,
            reraise=True,
        )

        async def attempt() -> T:
            # tenacity awaits only coroutine *functions*; ``operation`` may be a lambda.
            return await operation()

        result: T = await retrying(attempt)
        return result, int(retrying.statistics.get("attempt_number", 1))
