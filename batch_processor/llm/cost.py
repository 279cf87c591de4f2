"""Token spend and its price: what each reply cost, the run's total, and the budget stop.

The budget holds with requests in flight: each request reserves its worst-case cost (its
estimated prompt and the full reply limit) before it is sent and gives the reservation back
when its reply is counted. A request that does not fit beside the reservations in flight waits
for them to settle; one that does not fit at all ends the spending. The run's cost thus passes
the budget only by what the prompt estimates missed, not by a request per concurrent slot.

Prices are USD per million input and output tokens, per model; a few public list prices ship as
defaults and the ``llm_prices`` setting adds or overrides them (prices change; check yours).
Tokens of replies that were thrown away (invalid replies that were asked again) are counted
apart as tokens spent on retries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import structlog

from batch_processor.models import ModelPrice, TokenUsage

log = structlog.get_logger("batch_processor.llm.cost")

#: List prices (USD per 1M tokens) of a few common models; override with ``llm_prices``.
#: Cached input is billed at a half (4o family) or a quarter (4.1 family) of the input price;
#: the Batch API at half of everything.
DEFAULT_PRICES: dict[str, ModelPrice] = {
    "gpt-4o-mini": ModelPrice(input=0.15, output=0.60, cached_input=0.075),
    "gpt-4o": ModelPrice(input=2.50, output=10.00, cached_input=1.25),
    "gpt-4.1": ModelPrice(input=2.00, output=8.00, cached_input=0.50),
    "gpt-4.1-mini": ModelPrice(input=0.40, output=1.60, cached_input=0.10),
    "gpt-4.1-nano": ModelPrice(input=0.10, output=0.40, cached_input=0.025),
}


#: Tokens of a typical reply: every field and a one-sentence summary, about 450 characters of
#: JSON at 4 characters a token. Previews show the reply limit as the upper bound.
TYPICAL_REPLY_TOKENS = 110


def price_for(model: str, overrides: dict[str, ModelPrice]) -> ModelPrice | None:
    """The price of ``model``: from the settings first, then the defaults; None if unknown."""
    return overrides.get(model) or DEFAULT_PRICES.get(model)


#: Money is counted in integer nano-dollars: a reservation given back returns the ledger to
#: exactly zero (floats kept dust of about 1e-18 USD, and a run at its budget then waited for a
#: settlement that could never come).
NANOS_PER_USD = 1_000_000_000


def to_nanos(usd: float) -> int:
    """``usd`` in whole nano-dollars, rounded up (a reservation never falls short)."""
    return math.ceil(round(usd * NANOS_PER_USD, 3))


def to_usd(nanos: int) -> float:
    """Nano-dollars as USD."""
    return nanos / NANOS_PER_USD


@dataclass(slots=True)
class SpendLedger:
    """Tokens and money spent by one run, and whether its budget is used up.

    Amounts are integer nano-dollars inside (see :data:`NANOS_PER_USD`); USD floats only at
    the edges (the budget setting, the summary, each result's ``cost_usd``).
    """

    price: ModelPrice | None = None
    budget_usd: float | None = None
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    retry_tokens: int = 0
    cached_tokens: int = 0
    spent: int = 0  # nano-dollars counted
    reserved: int = 0  # nano-dollars held by the requests in flight (their worst case)
    _budget: int | None = field(default=None, init=False, repr=False)
    _refused: bool = field(default=False, repr=False)
    _announced: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        if self.budget_usd is not None:
            self._budget = math.floor(round(self.budget_usd * NANOS_PER_USD, 3))

    @property
    def cost_usd(self) -> float:
        """USD counted so far."""
        return to_usd(self.spent)

    @property
    def reserved_usd(self) -> float:
        """USD held by the requests in flight."""
        return to_usd(self.reserved)

    def worst_case(self, usage: TokenUsage, *, batch: bool = False) -> int:
        """The price of ``usage`` in nano-dollars (0 without a price); ``batch``: the Batch API."""
        return to_nanos(self.price.cost(usage, batch=batch)) if self.price is not None else 0

    def reserve(self, cost: int) -> bool | None:
        """Reserve ``cost`` nano-dollars for one request.

        True: reserved. False: it fits once requests in flight settle (wait). None: it can
        never fit, the budget is spent. False is only answered while something is reserved,
        so a waiter always has a settlement to wait for.
        """
        if self._budget is None or self.price is None:
            return True
        if self._refused:
            return None
        if self.spent + self.reserved + cost <= self._budget:
            self.reserved += cost
            return True
        if self.reserved > 0:
            return False
        self._refused = True
        return None

    def release(self, cost: int) -> None:
        """Give back a reservation (its request's reply is counted, or it was never sent)."""
        if self._budget is None or self.price is None:
            return  # nothing was reserved: reserve() holds nothing without a budget and a price
        if cost > self.reserved:  # a bookkeeping bug: say so, never go below zero
            log.warning("a reservation was given back twice", nanos=cost, reserved=self.reserved)
            cost = self.reserved
        self.reserved -= cost

    def record(
        self, usage: TokenUsage | None, *, wasted: bool = False, batch: bool = False
    ) -> float:
        """Count one reply's usage and return its cost in USD.

        ``wasted`` when the reply was thrown away; ``batch`` when the Batch API answered it
        (priced at the batch share).
        """
        self.calls += 1
        if usage is None:
            return 0.0
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.output_tokens
        self.cached_tokens += usage.cached_tokens
        if wasted:
            self.retry_tokens += usage.total
        cost = self.price.cost(usage, batch=batch) if self.price is not None else 0.0
        self.spent += to_nanos(cost)
        return cost

    @property
    def exhausted(self) -> bool:
        """Whether the spend has reached the budget (no budget: never)."""
        return self._refused or (self._budget is not None and self.spent >= self._budget)

    def first_exhaustion(self) -> bool:
        """True once, the first time the budget is found used up (to log it once)."""
        if self.exhausted and not self._announced:
            self._announced = True
            return True
        return False

    def summary(self) -> dict[str, Any]:
        """Tokens, cost and budget, for the run summary."""
        return {
            "llm_calls": self.calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "retry_tokens": self.retry_tokens,
            "cached_tokens": self.cached_tokens,
            "cost_usd": round(self.cost_usd, 6) if self.price is not None else None,
            "budget_usd": self.budget_usd,
            "reserved_usd": round(self.reserved_usd, 9) if self.budget_usd is not None else None,
            "budget_reached": self.exhausted,
        }
