"""The governor: how many LLM requests may be in flight, and when the next one may start.

One component decides admission for every request of a run, so that throughput stays at the
provider's limit instead of oscillating through 429 storms:

* a congestion **window** (AIMD): it starts at ``--concurrent``, halves when the provider says
  it is overloaded (429, 503) and grows back by one per window's worth of successes. Like TCP,
  it halves at most once per window: only a request sent *after* the last decrease can cause
  the next one, so a burst of 429s from one window counts once.
* **budgets**: requests and tokens per minute, as token buckets: ``--rpm``/``--tpm`` when told,
  else learned from the provider's ``x-ratelimit-limit-*`` headers (OpenAI and Azure send them
  with every reply), whichever is lower. Token use is estimated when a request starts and
  corrected by the reply's real ``usage``. A reply's ``x-ratelimit-remaining-*`` caps the
  bucket, counting the requests still in flight that the provider has not seen, so that
  several workers sharing one key slow down together instead of drawing 429s.
* a global **pause** while a ``Retry-After`` is in force: nobody starts before it ends.

A request the provider never served (connection failed, 5xx other than overload) is given
back to the RPM budget, so that server errors do not slow the pace of the requests that work.

Waiting requests are admitted in arrival order (one waiter decides at a time). The governor does
no I/O; ``clock`` and ``sleep`` are injected, so tests move time instead of waiting for it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import Enum

import structlog

log = structlog.get_logger("batch_processor.llm.governor")


class Outcome(Enum):
    """What became of an admitted request, as far as congestion control cares."""

    SUCCESS = "success"  # the provider answered: grow the window
    OVERLOADED = "overloaded"  # 429 or 503: halve the window (once per window)
    NEUTRAL = "neutral"  # any other failure: says nothing about the provider's capacity


@dataclass(frozen=True, slots=True)
class Permit:
    """An admitted request: its sequence number and the tokens debited for it."""

    seq: int
    tokens: int


@dataclass(frozen=True, slots=True)
class ProviderLimits:
    """What a reply's rate-limit headers say (None: not sent)."""

    requests: int | None = None  # per minute
    tokens: int | None = None  # per minute
    remaining_requests: int | None = None
    remaining_tokens: int | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> ProviderLimits:
        """Read OpenAI's ``x-ratelimit-{limit,remaining}-{requests,tokens}`` headers."""

        def number(name: str) -> int | None:
            value = headers.get(f"x-ratelimit-{name}")
            try:
                return int(float(value)) if value is not None else None
            except ValueError:
                return None

        return cls(
            requests=number("limit-requests"),
            tokens=number("limit-tokens"),
            remaining_requests=number("remaining-requests"),
            remaining_tokens=number("remaining-tokens"),
        )


class TokenBucket:
    """A token bucket that may run into debt (a large request is admitted, later ones wait)."""

    __slots__ = ("capacity", "level", "per_minute", "rate", "updated")

    def __init__(
        self, *, per_minute: float, burst_seconds: float, now: float, level: float | None = None
    ) -> None:
        self.per_minute = per_minute
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_seconds)
        self.level = self.capacity if level is None else min(level, self.capacity)
        self.updated = now

    def wait(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` may be taken (0.0: now)."""
        self._refill(now)
        need = min(amount, self.capacity)
        # The tolerance absorbs float rounding: after sleeping exactly the computed time the
        # level may be a hair short, and a wait too small to move the clock would never end.
        return 0.0 if self.level >= need - 1e-9 else (need - self.level) / self.rate

    def take(self, amount: float, now: float) -> None:
        """Debit ``amount`` (the level may go below zero)."""
        self._refill(now)
        self.level -= amount

    def credit(self, amount: float) -> None:
        """Give back (or, negative, take more of) an earlier estimate."""
        self.level = min(self.capacity, self.level + amount)

    def cap(self, level: float, now: float) -> None:
        """Hold no more than ``level`` (what the provider says is left)."""
        self._refill(now)
        self.level = min(self.level, level)

    def _refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now


class Governor:
    """Admission control for LLM requests: AIMD window, RPM/TPM budgets, Retry-After pauses.

    Args:
        concurrency: the largest (and first) window: ``--concurrent``.
        minimum: the window never shrinks below this.
        rpm: requests per minute the provider allows, if known.
        tpm: tokens per minute the provider allows, if known.
        burst_seconds: how many seconds' worth of the budgets the provider lets go out at
            once. Providers enforce per-minute limits over shorter windows (OpenAI: "60,000
            requests/minute may be enforced as 1,000 requests/second"), so the default is one
            second: the allowance saved while the run starts is spent, and no window ever sees
            more than its share.
        reserve: the share of that burst never spent. Our bucket and the provider's refill at
            the same rate, but requests reach the provider later than we count them, and not
            evenly: a bucket as deep as the provider's leaves its bucket empty, and any two
            requests that arrive closer together than they left draw a 429. Keeping a fifth
            of the burst back absorbs that jitter; it costs a fifth of one second's requests,
            once, at the start.

    """

    def __init__(
        self,
        *,
        concurrency: int,
        minimum: int = 1,
        rpm: int | None = None,
        tpm: int | None = None,
        burst_seconds: float = 1.0,
        reserve: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.limit = concurrency
        self.minimum = max(1, min(minimum, concurrency))
        self.window = concurrency
        self.in_flight = 0
        self.paused_until = 0.0
        self.decreases = 0
        self._clock = clock
        self._sleep = sleep
        now = clock()
        self._depth = burst_seconds * (1.0 - reserve)
        self._told = (rpm, tpm)
        self._requests = (
            TokenBucket(per_minute=rpm, burst_seconds=self._depth, now=now) if rpm else None
        )
        self._tokens = (
            TokenBucket(per_minute=tpm, burst_seconds=self._depth, now=now) if tpm else None
        )
        self._turn = asyncio.Lock()  # FIFO: waiters are admitted in arrival order
        self._freed = asyncio.Event()
        self._seq = 0
        self._successes = 0  # since the window last changed
        self._decreased_at = 0  # sequence number of the last request issued before a decrease

    async def acquire(self, tokens: int = 0) -> Permit:
        """Wait until a request estimated at ``tokens`` tokens may start; return its permit."""
        async with self._turn:
            while (delay := self.delay(tokens)) != 0.0:
                if delay is None:
                    self._freed.clear()
                    await self._freed.wait()
                else:
                    await self._sleep(delay)
            now = self._clock()
            if self._requests is not None:
                self._requests.take(1, now)
            if self._tokens is not None:
                self._tokens.take(tokens, now)
            self.in_flight += 1
            self._seq += 1
            return Permit(seq=self._seq, tokens=tokens)

    def delay(self, tokens: int = 0) -> float | None:
        """How long a request must wait now: ``None`` until a slot frees, else seconds (or 0.0)."""
        if self.in_flight >= self.window:
            return None
        now = self._clock()
        waits = [self.paused_until - now]
        if self._requests is not None:
            waits.append(self._requests.wait(1, now))
        if self._tokens is not None:
            waits.append(self._tokens.wait(tokens, now))
        return max(0.0, *waits)

    def release(
        self,
        permit: Permit,
        outcome: Outcome,
        *,
        used_tokens: int | None = None,
        retry_after: float | None = None,
        unserved: bool = False,
        limits: ProviderLimits | None = None,
    ) -> None:
        """Give ``permit`` back with what happened; adjust the window, budgets and pause."""
        self.in_flight -= 1
        if limits is not None:
            self._learn(permit, limits)
        if unserved and self._requests is not None:
            self._requests.credit(1)
        if self._tokens is not None and used_tokens is not None:
            self._tokens.credit(permit.tokens - used_tokens)
        if outcome is Outcome.SUCCESS:
            self._grow()
        elif outcome is Outcome.OVERLOADED:
            self._decrease(permit)
        if retry_after is not None and retry_after > 0:
            self.pause(retry_after)
        self._freed.set()

    def pause(self, seconds: float) -> None:
        """Start no request for ``seconds`` (a Retry-After); a longer pause in force is kept."""
        until = self._clock() + seconds
        if until > self.paused_until:
            self.paused_until = until
            log.info("requests paused as the provider asked", seconds=round(seconds, 3))

    def snapshot(self) -> dict[str, float | int]:
        """The current state, for logs and metrics."""
        return {
            "window": self.window,
            "window_limit": self.limit,
            "in_flight": self.in_flight,
            "paused_for": round(max(0.0, self.paused_until - self._clock()), 3),
            "window_decreases": self.decreases,
        }

    def _learn(self, permit: Permit, limits: ProviderLimits) -> None:
        """Adopt the provider's limits and sync the buckets with what it says is left."""
        now = self._clock()
        # Requests admitted after this one: the provider may not have counted them yet.
        unseen = min(self._seq - permit.seq, self.in_flight)
        self._requests = self._adopt(
            self._requests, self._told[0], limits.requests, limits.remaining_requests, unseen, now
        )
        self._tokens = self._adopt(
            self._tokens,
            self._told[1],
            limits.tokens,
            limits.remaining_tokens,
            unseen * permit.tokens,
            now,
        )

    def _adopt(
        self,
        bucket: TokenBucket | None,
        told: int | None,
        limit: int | None,
        remaining: int | None,
        unseen: float,
        now: float,
    ) -> TokenBucket | None:
        if limit is not None and limit > 0:
            wanted = min(limit, told or math.inf)
            if bucket is None or bucket.per_minute != wanted:
                log.info(
                    "provider rate limit adopted", per_minute=wanted, told=told, provider=limit
                )
                level = max(0.0, remaining - unseen) if remaining is not None else 0.0
                bucket = TokenBucket(
                    per_minute=wanted, burst_seconds=self._depth, now=now, level=level
                )
        if bucket is not None and remaining is not None:
            bucket.cap(max(0.0, remaining - unseen), now)
        return bucket

    def _grow(self) -> None:
        """Additive increase: one more slot per window's worth of successes."""
        if self.window >= self.limit:
            return
        self._successes += 1
        if self._successes >= self.window:
            self.window += 1
            self._successes = 0

    def _decrease(self, permit: Permit) -> None:
        """Multiplicative decrease, once per window (see the module docstring)."""
        if permit.seq <= self._decreased_at:
            return  # sent before the last decrease: that decrease already answered it
        self._decreased_at = self._seq
        self.window = max(self.minimum, self.window // 2)
        self._successes = 0
        self.decreases += 1
        log.info("request window halved", window=self.window, in_flight=self.in_flight)
