"""The spend ledger counts money in integers: a released reservation leaves exactly nothing."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from batch_processor.llm.cost import SpendLedger
from batch_processor.models import ModelPrice, TokenUsage

PRICE = ModelPrice(input=0.15, output=0.60, cached_input=0.075)


def usage(tokens: int) -> TokenUsage:
    """A request's worst case: ``tokens`` of prompt and a 400-token reply."""
    return TokenUsage(input_tokens=tokens, output_tokens=400)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 9_000), st.booleans(), st.integers(0, 400)),
        min_size=1,
        max_size=60,
    ),
    st.floats(0.0005, 0.05),
)
def test_random_interleavings_return_the_ledger_to_exactly_zero(
    requests: list[tuple[int, bool, int]], budget: float
) -> None:
    """Any order of reserve, settle, release: nothing left reserved, no wait with none in flight."""
    ledger = SpendLedger(price=PRICE, budget_usd=budget)
    held: list[tuple[int, bool, int]] = []
    for prompt, settle_first, reply in requests:
        cost = ledger.worst_case(usage(prompt))
        fits = ledger.reserve(cost)
        if fits is False:
            assert held, "told to wait with nothing in flight"
            # Settle the oldest request in flight, then ask again: it fits or is refused.
            old_cost, old_settle, old_reply = held.pop(0)
            if old_settle:
                ledger.record(TokenUsage(input_tokens=prompt, output_tokens=old_reply))
            ledger.release(old_cost)
            fits = ledger.reserve(cost)
        if fits:
            held.append((cost, settle_first, reply))
    for cost, settle, reply in held:
        if settle:
            ledger.record(TokenUsage(input_tokens=100, output_tokens=reply))
        ledger.release(cost)
    assert ledger.summary()["reserved_usd"] == 0
    assert ledger.reserve(1) is not False  # nothing in flight: it fits, or it never will


def test_float_dust_cannot_hold_a_reservation() -> None:
    """Costs that do not add up exactly in binary are given back exactly: the budget reopens."""
    ledger = SpendLedger(price=PRICE, budget_usd=0.1)
    costs = [ledger.worst_case(usage(tokens)) for tokens in (1, 7, 13, 101, 997)]
    for cost in costs:
        assert ledger.reserve(cost) is True
    for cost in reversed(costs):
        ledger.release(cost)
    assert ledger.reserved == 0
    assert ledger.reserve(costs[0]) is True


def test_the_budget_is_never_passed_by_reservations() -> None:
    """Reservations and recorded costs together never pass the budget."""
    ledger = SpendLedger(price=PRICE, budget_usd=0.001)
    taken = 0
    while (fits := ledger.reserve(ledger.worst_case(usage(1_000)))) is True:
        taken += 1
    assert fits is False and taken == 2  # 0.00039 USD each: two fit in 0.001
    assert ledger.summary()["reserved_usd"] <= 0.001
