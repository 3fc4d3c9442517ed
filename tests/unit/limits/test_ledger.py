"""The grant of a request counted against several budgets (limits/ledger.py `decide`): the least that fits every
counter in messages, tokens and money, and why a request does not fit."""

from __future__ import annotations

from gatehouse.limits.ledger import Counter, Limits, decide, money_target, worst_cost
from gatehouse.limits.prices.table import Price, cost_nanos

PRICE = Price(input_micros=1_000_000_000, output_micros=2_000_000_000, cached_input_micros=500_000_000)  # 1000, 2000


def counter(
    name: str = "c",
    *,
    messages: int = 0,
    tokens: int = 0,
    cost: int = 0,
    held_tokens: int = 0,
    held_cost: int = 0,
    limits: Limits | None = None,
) -> Counter:
    return Counter(name, "day", messages, tokens, cost, held_tokens, held_cost, limits or Limits(None, None, None))


def test_without_limits_nothing_is_granted_or_capped() -> None:
    outcome = decide([counter()], messages=1, need=11, want=110, prompt_bound=10, price=PRICE)
    assert outcome.refusal is None and (outcome.grant, outcome.cost) == (0, 0)


def test_the_tightest_token_remainder_wins() -> None:
    counters = [counter(limits=Limits(None, 1000, None)), counter(tokens=950, limits=Limits(None, 1000, None))]
    outcome = decide(counters, messages=1, need=11, want=110, prompt_bound=10, price=None)
    assert outcome.refusal is None and outcome.grant == 50


def test_money_bounds_the_grant_by_its_worst_cost() -> None:
    # 1 currency unit left: 10 prompt tokens at 1000 per million cost 0.01; each completion token 0.002.
    limit = 1_000_000_000
    outcome = decide(
        [counter(limits=Limits(None, None, limit))], messages=1, need=11, want=10_000, prompt_bound=10, price=PRICE
    )
    assert outcome.refusal is None
    assert outcome.grant == 10 + 495 and outcome.cost <= limit
    assert worst_cost(PRICE, 10, outcome.grant + 1) > limit
    assert money_target(PRICE, 10, 0) == -1  # not even the prompt fits
    assert money_target(None, 10, 0) is None  # unpriced: money does not bound it


def test_the_worst_cost_never_underestimates_what_is_charged() -> None:
    dear_cache = Price(1_000_000, 2_000_000, 3_000_000)  # a cache read dearer than the input
    for prompt, cached, completion in ((10, 0, 5), (10, 10, 5), (10, 3, 0)):
        assert cost_nanos(dear_cache, prompt, cached, completion) <= worst_cost(dear_cache, 10, 10 + 5)


def test_used_up_and_held_by_others_are_told_apart() -> None:
    limits = Limits(5, 1000, None)
    used_up = decide([counter(messages=5, limits=limits)], messages=1, need=11, want=50, prompt_bound=10, price=None)
    assert used_up.refusal is not None and used_up.refusal.exceeded and used_up.refusal.measure == "messages"
    too_few = decide([counter(tokens=995, limits=limits)], messages=1, need=11, want=50, prompt_bound=10, price=None)
    assert too_few.refusal is not None and too_few.refusal.exceeded and too_few.refusal.measure == "tokens"
    held = decide(
        [counter(tokens=900, held_tokens=80, limits=limits)], messages=1, need=11, want=50, prompt_bound=10, price=None
    )
    assert held.refusal is not None and not held.refusal.exceeded and held.refusal.need == 50


def test_spend_held_by_others_makes_it_wait() -> None:
    limit = 100_000_000  # 0.1
    outcome = decide(
        [counter(held_cost=95_000_000, limits=Limits(None, None, limit))],
        messages=1,
        need=11,
        want=20,
        prompt_bound=10,
        price=PRICE,
    )
    assert outcome.refusal is not None and not outcome.refusal.exceeded and outcome.refusal.measure == "spend"
