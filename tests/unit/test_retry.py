"""The retry policy: what is retried, how long it waits, and that it never really sleeps here."""

from __future__ import annotations

import pytest

from batch_processor.errors import (
    ConfigurationError,
    DataError,
    PermanentError,
    RateLimitError,
    ResourceError,
    TransientError,
    categorize,
    is_retryable,
)
from batch_processor.retry import RetryPolicy, announce_retries
from batch_processor.testing.fakes import InstantSleep


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (TransientError("t"), True),
        (RateLimitError("r"), True),
        (ResourceError("disk"), True),
        (TimeoutError(), True),
        (ConfigurationError("c"), False),
        (DataError("d"), False),
        (PermanentError("p"), False),
        (ValueError("bug"), False),
    ],
)
def test_only_errors_that_can_heal_are_retried(error: BaseException, retryable: bool) -> None:
    """The error's type alone decides; unknown exceptions are PERMANENT, not retried."""
    assert is_retryable(error) is retryable


def test_unknown_exceptions_are_permanent() -> None:
    """A bug in a classifier is categorised PERMANENT, so the document fails, the run goes on."""
    assert categorize(KeyError("x")) == "PERMANENT"


async def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    """Each delay lies under a ceiling that doubles per attempt up to the cap."""
    sleep = InstantSleep()
    policy = RetryPolicy(max_attempts=7, base_delay=0.5, max_delay=3.0, sleep=sleep)

    async def failing() -> None:
        raise TransientError("down")

    with pytest.raises(TransientError):
        await policy.call(failing)
    ceilings = [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
    assert len(sleep.delays) == len(ceilings)
    assert all(0 <= delay <= ceiling for delay, ceiling in zip(sleep.delays, ceilings, strict=True))


async def test_transient_failures_are_retried_until_success() -> None:
    """Two transient failures then success: three attempts, two recorded sleeps."""
    sleep, calls = InstantSleep(), []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise TransientError("timeout")
        return "ok"

    result, attempts = await RetryPolicy(max_attempts=5, base_delay=1.0, sleep=sleep).call(flaky)
    assert (result, attempts, len(sleep.delays)) == ("ok", 3, 2)


async def test_attempts_are_bounded_and_the_last_error_raised() -> None:
    """A persistent transient error is raised after exactly max_attempts calls."""
    sleep, calls = InstantSleep(), []

    async def down() -> None:
        calls.append(1)
        raise TransientError("down")

    with pytest.raises(TransientError):
        await RetryPolicy(max_attempts=3, sleep=sleep).call(down)
    assert len(calls) == 3


async def test_permanent_errors_are_not_retried() -> None:
    """A DATA error is raised at once, without sleeping."""
    sleep = InstantSleep()

    async def bad() -> None:
        raise DataError("no text")

    with pytest.raises(DataError):
        await RetryPolicy(max_attempts=5, sleep=sleep).call(bad)
    assert sleep.delays == []


async def test_retry_after_is_honoured_when_longer_than_backoff() -> None:
    """A 429 that says wait 90 s is waited 90 s (beyond the SDK's 60 s limit), not less."""
    sleep, calls = InstantSleep(), []

    async def limited() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise RateLimitError("429", retry_after=90.0)
        return "ok"

    await RetryPolicy(max_attempts=3, base_delay=0.5, max_delay=5.0, sleep=sleep).call(limited)
    assert sleep.delays == [90.0]


async def test_announced_retries_are_counted_once_each() -> None:
    """The shared on_retry hook counts every retry (and only retries, not the first call)."""
    counted: list[int] = []
    calls: list[int] = []

    async def twice_down() -> str:
        calls.append(1)
        if len(calls) <= 2:
            raise TransientError("reset by peer")
        return "ok"

    hook = announce_retries("retrying test call", lambda error: counted.append(1), doc_id="x")
    await RetryPolicy(max_attempts=4, sleep=InstantSleep()).call(twice_down, on_retry=hook)
    assert (len(calls), len(counted)) == (3, 2)
