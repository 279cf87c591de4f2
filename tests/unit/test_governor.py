"""The governor: AIMD window, RPM/TPM budgets and Retry-After pauses, on a fake clock."""

from __future__ import annotations

import asyncio

import pytest

from batch_processor.llm.governor import Governor, Outcome, ProviderLimits


class FakeClock:
    """A clock that only moves when someone sleeps on it (tests never really wait)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def time(self) -> float:
        """The current fake time."""
        return self.now

    async def sleep(self, seconds: float) -> None:
        """Advance the clock instead of waiting."""
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def governor(clock: FakeClock, **kwargs: int) -> Governor:
    """A governor on the fake clock."""
    return Governor(clock=clock.time, sleep=clock.sleep, **kwargs)


async def test_window_halves_once_per_window_of_429s() -> None:
    """Eight 429s from requests sent before the decrease count as one decrease."""
    clock = FakeClock()
    gov = governor(clock, concurrency=16)
    permits = [await gov.acquire() for _ in range(8)]
    for permit in permits:
        gov.release(permit, Outcome.OVERLOADED)
    assert gov.snapshot()["window"] == 8 and gov.decreases == 1

    later = await gov.acquire()
    gov.release(later, Outcome.OVERLOADED)
    assert gov.snapshot()["window"] == 4 and gov.decreases == 2


async def test_window_grows_back_by_one_per_window_of_successes() -> None:
    """After halving to 4, four successes grow the window to 5, never past the limit."""
    clock = FakeClock()
    gov = governor(clock, concurrency=8)
    gov.release(await gov.acquire(), Outcome.OVERLOADED)
    assert gov.window == 4
    for _ in range(4):
        gov.release(await gov.acquire(), Outcome.SUCCESS)
    assert gov.window == 5
    for _ in range(200):
        gov.release(await gov.acquire(), Outcome.SUCCESS)
    assert gov.window == 8


async def test_no_more_requests_in_flight_than_the_window() -> None:
    """A request beyond the window waits until one is released."""
    clock = FakeClock()
    gov = governor(clock, concurrency=2)
    first, _second = await gov.acquire(), await gov.acquire()
    third = asyncio.create_task(gov.acquire())
    await asyncio.sleep(0)
    assert not third.done() and gov.in_flight == 2
    gov.release(first, Outcome.SUCCESS)
    await asyncio.wait_for(third, 1)
    assert gov.in_flight == 2


async def test_rpm_budget_paces_requests() -> None:
    """At 600 RPM with a 1 s burst, 50 requests take 4.2 s of (fake) time: 8 at once, 42 paced.

    A fifth of the burst stays in reserve for the jitter between our count and the provider's.
    """
    clock = FakeClock()
    gov = governor(clock, concurrency=100, rpm=600)
    start = clock.now
    for _ in range(50):
        gov.release(await gov.acquire(), Outcome.SUCCESS)
    assert clock.now - start == pytest.approx(4.2)


async def test_tpm_budget_is_corrected_by_real_usage() -> None:
    """Overestimated tokens are given back, so the next request does not wait for them."""
    clock = FakeClock()
    gov = governor(clock, concurrency=10, tpm=6000)  # 100 tokens/s, 80 in the bucket
    permit = await gov.acquire(tokens=100)
    gov.release(permit, Outcome.SUCCESS, used_tokens=20)
    before = clock.now
    gov.release(await gov.acquire(tokens=50), Outcome.SUCCESS, used_tokens=50)
    assert clock.now == before  # 80 tokens were credited back: no wait

    gov.release(await gov.acquire(tokens=100), Outcome.SUCCESS, used_tokens=100)
    assert clock.now > before


async def test_retry_after_pauses_every_request() -> None:
    """A 429 asking for 90 s holds back all requests for 90 s, beyond any backoff cap."""
    clock = FakeClock()
    gov = governor(clock, concurrency=4)
    permit = await gov.acquire()
    gov.release(permit, Outcome.OVERLOADED, retry_after=90.0)
    start = clock.now
    await gov.acquire()
    assert clock.now - start == pytest.approx(90.0)
    assert gov.snapshot()["paused_for"] == 0


async def test_unserved_requests_are_given_back_to_the_rpm_budget() -> None:
    """A 500 or a failed connection does not use up the requests-per-minute budget."""
    clock = FakeClock()
    gov = governor(clock, concurrency=10, rpm=60)  # one a second, a burst of one
    gov.release(await gov.acquire(), Outcome.NEUTRAL, unserved=True)
    gov.release(await gov.acquire(), Outcome.SUCCESS)
    assert clock.now == 1000.0  # the first request's token came back: no wait
    gov.release(await gov.acquire(), Outcome.SUCCESS)
    assert clock.now == pytest.approx(1001.0)


async def test_the_providers_limit_is_adopted_from_its_headers() -> None:
    """Not told --rpm, a governor paces at the limit a reply's x-ratelimit headers announce."""
    clock = FakeClock()
    gov = governor(clock, concurrency=100)
    limits = ProviderLimits.from_headers(
        {"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "0"}
    )
    gov.release(await gov.acquire(), Outcome.SUCCESS, limits=limits)
    start = clock.now
    for _ in range(20):
        gov.release(await gov.acquire(), Outcome.SUCCESS)
    assert clock.now - start == pytest.approx(2.0)  # 10 a second, from an empty bucket


async def test_a_lower_told_rpm_wins_over_the_providers_limit() -> None:
    """--rpm below the provider's limit stays the pace (a team may share the key)."""
    clock = FakeClock()
    gov = governor(clock, concurrency=100, rpm=60)
    limits = ProviderLimits(requests=6000, remaining_requests=100)
    gov.release(await gov.acquire(), Outcome.SUCCESS, limits=limits)
    start = clock.now
    for _ in range(3):
        gov.release(await gov.acquire(), Outcome.SUCCESS)
    assert clock.now - start == pytest.approx(3.0)


async def test_what_the_provider_says_is_left_caps_the_bucket() -> None:
    """Another worker on the same key spent the allowance: this one waits for the refill."""
    clock = FakeClock()
    gov = governor(clock, concurrency=100, rpm=600)  # 8 in the bucket
    first = await gov.acquire()
    gov.release(first, Outcome.SUCCESS, limits=ProviderLimits(remaining_requests=0))
    start = clock.now
    gov.release(await gov.acquire(), Outcome.SUCCESS)
    assert clock.now - start == pytest.approx(0.1)  # one request's refill at 10 a second
