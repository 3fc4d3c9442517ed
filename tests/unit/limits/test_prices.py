"""The price table in memory: exact costs, the version in force at a time, patterns, removals, and exact amounts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from pydantic import TypeAdapter, ValidationError

from gatehouse.fields import PriceAmount
from gatehouse.limits.prices.money import decimal_of_micros, decimal_of_nanos, json_number, micros_of
from gatehouse.limits.prices.schemas import PriceUpdate
from gatehouse.limits.prices.table import Price, PriceTable, PriceVersion, cost_nanos, pattern_regex

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
GPT_4O = Price(input_micros=2_500_000, output_micros=10_000_000, cached_input_micros=1_250_000)


def version(
    id: int, model: str, when: datetime, price: Price | None, *, currency: str = "USD", source: str = "api"
) -> PriceVersion:
    return PriceVersion(
        id=id,
        model=model,
        currency=currency,
        price=price,
        effective_from=when,
        source=source,
        created_by=None,
        created_at=when,
    )


def table_of(*versions: PriceVersion) -> PriceTable:
    table = PriceTable(currency="USD")
    table.load(versions)
    return table


# --- cost_nanos ------------------------------------------------------------------------------------


def test_cost_is_exact_in_billionths() -> None:
    # 1000 prompt tokens at 2.5 per million = 0.0025; 500 completion tokens at 10 per million = 0.005.
    assert cost_nanos(GPT_4O, 1000, 0, 500) == 7_500_000
    assert decimal_of_nanos(7_500_000) == Decimal("0.0075")


def test_cached_tokens_are_part_of_the_prompt_and_cost_the_cached_price() -> None:
    # 1000 prompt tokens of which 600 cached: 400 x 2.5 + 600 x 1.25 per million, plus 10 x 10 per million.
    assert cost_nanos(GPT_4O, 1000, 600, 10) == 400 * 2500 + 600 * 1250 + 10 * 10_000
    # A cached count above the prompt (an upstream's mistake) is capped at the prompt; never negative.
    assert cost_nanos(GPT_4O, 100, 500, 0) == 100 * 1250
    assert cost_nanos(GPT_4O, 100, -5, 0) == 100 * 2500


def test_cost_rounds_up_to_the_next_billionth() -> None:
    tiny = Price(input_micros=1, output_micros=3, cached_input_micros=0)  # 0.000001 and 0.000003 per million
    assert cost_nanos(tiny, 1, 0, 0) == 1  # 0.001 nano: rounded up to 1
    assert cost_nanos(tiny, 1000, 0, 0) == 1  # exactly 1 nano
    assert cost_nanos(tiny, 1001, 0, 0) == 2  # 1.001 nanos
    assert cost_nanos(tiny, 0, 0, 333) == 1  # 0.999 nanos
    assert cost_nanos(tiny, 0, 0, 334) == 2  # 1.002 nanos
    assert cost_nanos(tiny, 0, 0, 0) == 0
    assert cost_nanos(tiny, 5000, 5000, 0) == 0  # all cached, at a cached price of 0


def test_cost_of_the_largest_request_fits_a_bigint() -> None:
    dearest = Price(input_micros=10**12, output_micros=10**12, cached_input_micros=10**12)  # 1,000,000 per million
    assert cost_nanos(dearest, 2**31 - 1, 0, 2**31 - 1) < 2**63


# --- exact amounts ---------------------------------------------------------------------------------


def test_amounts_convert_exactly() -> None:
    assert micros_of(Decimal("2.5")) == 2_500_000
    assert micros_of(Decimal("0.000001")) == 1
    assert micros_of(Decimal("1000000")) == 10**12
    assert decimal_of_micros(1_250_000) == Decimal("1.25")
    assert str(decimal_of_micros(10_000_000)) == "10"  # not 1E+1
    assert str(decimal_of_micros(0)) == "0"
    assert decimal_of_nanos(1) == Decimal("0.000000001") and f"{decimal_of_nanos(1500):f}" == "0.0000015"
    assert json_number(Decimal("10")) == 10 and isinstance(json_number(Decimal("10")), int)
    assert json_number(Decimal("0.0075")) == 0.0075


@pytest.mark.parametrize(
    ("given", "expected"),
    [(2.5, "2.5"), ("2.5", "2.5"), (0, "0"), ("0.000001", "0.000001"), (0.1, "0.1"), ("1.5000000", "1.5")],
)
def test_prices_are_read_through_their_text(given: object, expected: str) -> None:
    assert TypeAdapter(PriceAmount).validate_python(given) == Decimal(expected)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (-1, "must be >= 0"),
        ("0.1234567", "at most 6 decimal places"),
        (1e-7, "at most 6 decimal places"),
        ("abc", "must be a decimal number"),
        ("NaN", "finite"),
        (True, "a number or a decimal string"),
        ([1], "a number or a decimal string"),
        (1_000_001, "at most 1000000"),
    ],
)
def test_bad_prices_are_refused_saying_why(given: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        TypeAdapter(PriceAmount).validate_python(given)


def test_a_price_update_refuses_unknown_fields_and_naive_times() -> None:
    with pytest.raises(ValidationError, match="extra"):
        PriceUpdate.model_validate({"input": 1, "output": 2, "inptu": 3})
    with pytest.raises(ValidationError, match="timezone"):
        PriceUpdate.model_validate({"input": 1, "output": 2, "effective_from": "2030-01-01T00:00:00"})


# --- price_at --------------------------------------------------------------------------------------


def test_the_version_in_force_at_a_time_and_at_its_boundaries() -> None:
    cheaper = Price(1_000_000, 2_000_000, 500_000)
    table = table_of(version(1, "gpt-4o", T0, GPT_4O), version(2, "gpt-4o", T0 + timedelta(hours=6), cheaper))
    assert table.price_at("gpt-4o", T0 - timedelta(microseconds=1)) is None  # before the first version
    first = table.price_at("gpt-4o", T0)
    assert first is not None and first.id == 1  # from its effective_from on, included
    assert table.price_at("gpt-4o", T0 + timedelta(hours=6) - timedelta(seconds=0.001)).id == 1  # type: ignore[union-attr]
    assert table.price_at("gpt-4o", T0 + timedelta(hours=6)).id == 2  # type: ignore[union-attr]
    assert table.price_at("gpt-4o", (T0 + timedelta(days=400)).timestamp()).id == 2  # type: ignore[union-attr]
    assert table.price_at("gpt-4o-mini", T0 + timedelta(hours=1)) is None  # another model


def test_two_versions_taking_effect_at_once_the_later_made_wins() -> None:
    table = table_of(version(7, "m", T0, GPT_4O), version(3, "m", T0, Price(1, 1, 1)))
    assert table.price_at("m", T0).id == 7  # type: ignore[union-attr]


def test_a_removal_ends_the_price_and_a_later_version_brings_one_back() -> None:
    table = table_of(
        version(1, "m", T0, GPT_4O),
        version(2, "m", T0 + timedelta(hours=1), None),
        version(3, "m", T0 + timedelta(hours=2), GPT_4O),
    )
    assert table.price_at("m", T0 + timedelta(minutes=30)).id == 1  # type: ignore[union-attr]
    assert table.price_at("m", T0 + timedelta(minutes=90)) is None
    assert table.price_at("m", T0 + timedelta(hours=3)).id == 3  # type: ignore[union-attr]
    assert table.cost("m", (T0 + timedelta(minutes=90)).timestamp(), 10, 0, 10) is None
    assert table.cost("m", (T0 + timedelta(minutes=30)).timestamp(), 1000, 0, 500) == 7_500_000


def test_the_most_specific_name_wins_an_exact_one_over_the_longest_pattern() -> None:
    table = table_of(
        version(1, "*", T0, Price(1, 1, 1)),
        version(2, "llama*", T0, Price(2, 2, 2)),
        version(3, "llama3*", T0, Price(3, 3, 3)),
        version(4, "llama3.1:8b", T0, Price(4, 4, 4)),
    )
    at = T0 + timedelta(minutes=1)
    assert table.price_at("llama3.1:8b", at).id == 4  # type: ignore[union-attr]
    assert table.price_at("llama3.2:1b", at).id == 3  # type: ignore[union-attr]
    assert table.price_at("llama2", at).id == 2  # type: ignore[union-attr]
    assert table.price_at("mistral", at).id == 1  # type: ignore[union-attr]


def test_a_removed_exact_price_lets_the_patterns_apply_again() -> None:
    table = table_of(
        version(1, "gpt*", T0, Price(1, 1, 1)),
        version(2, "gpt-4o", T0, GPT_4O),
        version(3, "gpt-4o", T0 + timedelta(hours=1), None),
        version(4, "gpt*", T0 + timedelta(hours=2), None),
    )
    assert table.price_at("gpt-4o", T0 + timedelta(minutes=1)).id == 2  # type: ignore[union-attr]
    assert table.price_at("gpt-4o", T0 + timedelta(minutes=61)).id == 1  # type: ignore[union-attr]
    assert table.price_at("gpt-4o", T0 + timedelta(hours=3)) is None


def test_patterns_match_whole_names_and_only_star_is_special() -> None:
    assert pattern_regex("llama*").fullmatch("llama3") and not pattern_regex("llama*").fullmatch("my-llama3")
    assert pattern_regex("*-mini").fullmatch("gpt-4o-mini") and not pattern_regex("*-mini").fullmatch("mini-x")
    assert pattern_regex("a.b*").fullmatch("a.bc") and not pattern_regex("a.b*").fullmatch("axbc")
    assert pattern_regex("openai/*").fullmatch("openai/gpt-4o")
    assert pattern_regex("*").fullmatch("")


def test_a_reload_forgets_what_was_resolved() -> None:
    table = table_of(version(1, "llama*", T0, Price(1, 1, 1)))
    assert table.price_at("llama3", T0).id == 1  # type: ignore[union-attr]
    table.load([version(1, "llama*", T0, Price(1, 1, 1)), version(2, "llama3", T0, Price(2, 2, 2))])
    assert table.price_at("llama3", T0).id == 2  # type: ignore[union-attr]


def test_versions_in_another_currency_are_left_out() -> None:
    table = table_of(version(1, "m", T0, GPT_4O, currency="EUR"))
    assert table.price_at("m", T0) is None and table.versions == ()


def test_the_next_scheduled_version_of_a_name() -> None:
    table = table_of(version(1, "m", T0, GPT_4O), version(2, "m", T0 + timedelta(days=1), None))
    assert table.version_of("m", T0).id == 1  # type: ignore[union-attr]
    assert table.next_version_of("m", T0).id == 2  # type: ignore[union-attr]
    # A removal made later for the same time cancels a scheduled price: it is what will be in force.
    cancelled = table_of(
        version(1, "m", T0, GPT_4O),
        version(2, "m", T0 + timedelta(days=1), Price(1, 1, 1)),
        version(3, "m", T0 + timedelta(days=1), None),
    )
    assert cancelled.next_version_of("m", T0).id == 3  # type: ignore[union-attr]
    assert cancelled.price_at("m", T0 + timedelta(days=2)) is None
    assert table.next_version_of("m", T0 + timedelta(days=1)) is None
    assert table.version_of("other", T0) is None and table.next_version_of("other", T0) is None
