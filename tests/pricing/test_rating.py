"""Rating: every price model, aggregation deltas, rounding and errors."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from tollkeep.catalog import (
    Catalog,
    CreditUnit,
    InvalidQuantity,
    Meter,
    Price,
    Tier,
    TokenPrice,
    UnknownMeter,
    UnknownModel,
    default_catalog,
    parse_catalog,
)
from tollkeep.kit.errors import InvalidInput, TollkeepError
from tollkeep.pricing import cumulative_price, needs_aggregate, rate, round_amount


def make(meter: Meter, rounding: str = "up") -> Catalog:
    return Catalog(
        version="test+000000000000",
        label="test",
        source=None,
        text="",
        credits=CreditUnit(rounding=rounding),
        meters={meter.key: meter},
    )


GRAD = Price(
    model="graduated",
    tiers=(
        Tier(up_to=D(100), unit_price=D(0)),
        Tier(up_to=D(1000), unit_price=D("0.5")),
        Tier(up_to=None, unit_price=D("0.2"), flat=D(10)),
    ),
)
VOLUME = Price(
    model="volume",
    tiers=(Tier(up_to=D(10), unit_price=D(100)), Tier(up_to=None, unit_price=D(80))),
)


# --- default catalog -------------------------------------------------------------


def test_default_catalog_api_call_costs_exactly_one_credit() -> None:
    catalog = default_catalog()
    for before in (D(0), D(1), D(99), D(12345)):
        rating = rate(catalog, "api_call", D(1), period_before=before)
        assert rating.amount == 1
        assert rating.exact == D(1)
        assert rating.meter == "api_call"
        assert rating.catalog_version == catalog.version
    assert rate(catalog, "api_call", D(3)).amount == 3
    assert rate(catalog, "api_call", D(0)).amount == 0


def test_default_catalog_other_meters() -> None:
    catalog = default_catalog()
    assert rate(catalog, "search", D(1)).amount == 1  # 0.5 rounded up
    assert rate(catalog, "search", D(10)).amount == 5
    tokens = rate(
        catalog,
        "llm_tokens",
        D(0),
        properties={"model": "gpt-4o", "input_tokens": 1000, "output_tokens": 100},
    )
    # (1000 * 2500 + 100 * 10000) / 1e6 = 3.5 -> 4
    assert tokens.exact == D("3.5")
    assert tokens.amount == 4
    assert rate(catalog, "pages", D(100)).amount == 0
    assert rate(catalog, "active_projects", D(1), properties={"project": "a"}).amount == 20
    assert rate(catalog, "active_projects", D(0), period_before=D(1)).amount == 0


# --- flat ------------------------------------------------------------------------


def test_flat_count_is_per_unit_counted() -> None:
    catalog = make(Meter("m", "count", price=Price(model="flat", amount=D("2.5"))))
    assert rate(catalog, "m", D(1)).amount == 3
    assert rate(catalog, "m", D(2)).amount == 5
    assert rate(catalog, "m", D(0)).amount == 0


@pytest.mark.parametrize("aggregation", ["sum", "max"])
def test_flat_non_count_is_per_event(aggregation: str) -> None:
    catalog = make(Meter("m", aggregation, price=Price(model="flat", amount=D(7))))
    assert rate(catalog, "m", D(500)).amount == 7
    assert rate(catalog, "m", D("0.001"), period_before=D(900)).amount == 7
    assert rate(catalog, "m", D(0)).amount == 0


# --- per_unit --------------------------------------------------------------------


def test_per_unit_with_per() -> None:
    catalog = make(Meter("m", "sum", price=Price(model="per_unit", unit_price=D("0.5"), per=D(1000))))
    r = rate(catalog, "m", D(3000))
    assert r.exact == D("1.5") and r.amount == 2
    assert r.detail["unit_price"] == "0.5" and r.detail["per"] == "1000"
    assert rate(catalog, "m", D(1)).amount == 1
    assert cumulative_price(catalog.meters["m"].price, D(2000)) == D(1)  # type: ignore[arg-type]


# --- graduated -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("aggregate", "expected"),
    [
        (D(0), D(0)),
        (D(1), D(0)),
        (D(100), D(0)),
        (D(101), D("0.5")),
        (D(1000), D(450)),
        (D(1001), D("460.2")),  # 450 + entering tier 3 (flat 10) + 0.2
        (D(2000), D(450) + D(10) + D(200)),
    ],
)
def test_graduated_cumulative(aggregate: D, expected: D) -> None:
    assert cumulative_price(GRAD, aggregate) == expected


def test_graduated_boundaries_and_detail() -> None:
    catalog = make(Meter("m", "sum", price=GRAD))
    r = rate(catalog, "m", D(2), period_before=D(99))  # unit 100 free, unit 101 at 0.5
    assert r.exact == D("0.5") and r.amount == 1
    assert [t["tier"] for t in r.detail["tiers"]] == [0, 1]
    r = rate(catalog, "m", D(1), period_before=D(1000))  # enters the last tier
    assert r.exact == D("10.2") and r.amount == 11
    assert r.detail["tier"] == 2 and r.detail["tiers"][0]["flat"] == "10"
    r = rate(catalog, "m", D(1), period_before=D(1001))  # already in it: no flat again
    assert r.exact == D("0.2") and r.amount == 1


def test_graduated_flat_on_first_tier_charged_on_first_use() -> None:
    price = Price(model="graduated", tiers=(Tier(up_to=None, unit_price=D(1), flat=D(5)),))
    catalog = make(Meter("m", "sum", price=price))
    assert rate(catalog, "m", D(1)).amount == 6
    assert rate(catalog, "m", D(1), period_before=D(1)).amount == 1
    assert rate(catalog, "m", D(0)).amount == 0


# --- volume ----------------------------------------------------------------------


def test_volume_prices_all_units_by_reached_tier_and_clamps() -> None:
    assert cumulative_price(VOLUME, D(10)) == D(1000)
    assert cumulative_price(VOLUME, D(11)) == D(880)
    catalog = make(Meter("m", "sum", price=VOLUME))
    r = rate(catalog, "m", D(1), period_before=D(10))  # 880 - 1000 < 0 -> 0
    assert r.amount == 0 and r.exact == D(0)
    assert r.detail["clamped_from"] == "-120"
    assert r.detail["tier"] == 1
    assert rate(catalog, "m", D(1), period_before=D(11)).amount == 80
    assert rate(catalog, "m", D(10)).amount == 1000


# --- package ---------------------------------------------------------------------


def test_package_rounds_partial_packages_up() -> None:
    price = Price(model="package", package_size=D(1000), package_price=D(10))
    assert cumulative_price(price, D(1)) == D(10)
    assert cumulative_price(price, D(1000)) == D(10)
    assert cumulative_price(price, D(1001)) == D(20)
    catalog = make(Meter("m", "sum", price=price))
    assert rate(catalog, "m", D(1)).amount == 10
    assert rate(catalog, "m", D(998), period_before=D(1)).amount == 0
    r = rate(catalog, "m", D(2), period_before=D(999))
    assert r.amount == 10 and r.detail["packages_after"] == "2"


# --- max / unique_count ----------------------------------------------------------


def test_max_meter_charges_only_the_increase() -> None:
    catalog = make(Meter("gb", "max", price=Price(model="per_unit", unit_price=D(100))))
    assert rate(catalog, "gb", D(3)).amount == 300
    assert rate(catalog, "gb", D(2), period_before=D(3)).amount == 0
    r = rate(catalog, "gb", D(5), period_before=D(3))
    assert r.amount == 200 and r.detail["period_after"] == "5"


def test_unique_count_charges_new_values_only() -> None:
    catalog = make(
        Meter("p", "unique_count", property="project", price=Price(model="per_unit", unit_price=D(20)))
    )
    assert rate(catalog, "p", D(1), properties={"project": "x"}).amount == 20
    assert rate(catalog, "p", D(0), period_before=D(1), properties={"project": "x"}).amount == 0
    assert rate(catalog, "p", D(1), period_before=D(1)).amount == 20
    with pytest.raises(InvalidQuantity):
        rate(catalog, "p", D("0.5"))


def test_unique_count_graduated_first_free() -> None:
    price = Price(
        model="graduated", tiers=(Tier(up_to=D(2), unit_price=D(0)), Tier(up_to=None, unit_price=D(5)))
    )
    catalog = make(Meter("p", "unique_count", property="project", price=price))
    charges = [rate(catalog, "p", D(1), period_before=D(n)).amount for n in range(4)]
    assert charges == [0, 0, 5, 5]


# --- tokens ----------------------------------------------------------------------


TOKENS = Price(
    model="tokens",
    per=D(1_000_000),
    models={"gpt-4o": TokenPrice(input=D(2500), output=D(10000))},
)


def test_tokens_known_model_and_aliases() -> None:
    catalog = make(Meter("t", "sum", price=TOKENS))
    r = rate(
        catalog, "t", D(0), properties={"model": "gpt-4o", "prompt_tokens": 200, "completion_tokens": 50}
    )
    assert r.exact == D("1") and r.amount == 1
    assert r.quantity == D(250)
    assert (
        r.detail["model"] == "gpt-4o" and r.detail["input_tokens"] == 200 and r.detail["output_tokens"] == 50
    )
    r = rate(catalog, "t", D(0), properties={"model": "gpt-4o", "input_tokens": "1000000"})
    assert r.amount == 2500


def test_tokens_rounds_once_on_total() -> None:
    # input 0.4 + output 0.4 = 0.8 -> 1 with "up"; rounding each part would give 2
    price = Price(model="tokens", per=D(10), models={"m": TokenPrice(input=D(4), output=D(4))})
    catalog = make(Meter("t", "sum", price=price))
    assert (
        rate(catalog, "t", D(0), properties={"model": "m", "input_tokens": 1, "output_tokens": 1}).amount == 1
    )


def test_tokens_unknown_model_without_default() -> None:
    catalog = make(Meter("t", "sum", price=TOKENS))
    with pytest.raises(UnknownModel) as info:
        rate(catalog, "t", D(0), properties={"model": "llama", "input_tokens": 1})
    assert info.value.code == "unknown_model" and info.value.status == 422
    assert isinstance(info.value, TollkeepError)


def test_tokens_unknown_model_uses_default() -> None:
    price = Price(
        model="tokens", per=D(1000), models=TOKENS.models, default=TokenPrice(input=D(1), output=D(2))
    )
    catalog = make(Meter("t", "sum", price=price))
    r = rate(catalog, "t", D(0), properties={"model": "llama", "input_tokens": 1000, "output_tokens": 1000})
    assert r.amount == 3 and r.detail["priced_as"] == "default"
    r = rate(catalog, "t", D(0), properties={"input_tokens": 2000})
    assert r.amount == 2


@pytest.mark.parametrize(
    "props",
    [
        {"model": "gpt-4o"},
        {"model": "gpt-4o", "input_tokens": -1},
        {"model": "gpt-4o", "input_tokens": 1.5},
        {"model": "gpt-4o", "output_tokens": "ten"},
        {"model": "gpt-4o", "output_tokens": True},
        {"model": 4, "input_tokens": 1},
    ],
)
def test_tokens_bad_properties(props: dict[str, object]) -> None:
    catalog = make(Meter("t", "sum", price=TOKENS))
    with pytest.raises(InvalidInput):
        rate(catalog, "t", D(0), properties=props)


# --- errors and misc -------------------------------------------------------------


def test_unknown_meter() -> None:
    with pytest.raises(UnknownMeter) as info:
        rate(default_catalog(), "nope", D(1))
    assert info.value.code == "unknown_meter" and info.value.status == 422
    assert "api_call" in info.value.message


@pytest.mark.parametrize("quantity", [D(-1), D("NaN"), D("Infinity"), "abc", True, None])
def test_invalid_quantity(quantity: object) -> None:
    with pytest.raises(InvalidQuantity) as info:
        rate(default_catalog(), "search", quantity)  # type: ignore[arg-type]
    assert info.value.code == "invalid_quantity" and info.value.status == 422


def test_invalid_period_before() -> None:
    with pytest.raises(InvalidQuantity):
        rate(default_catalog(), "search", D(1), period_before=D(-1))


def test_int_and_str_quantities_accepted() -> None:
    catalog = default_catalog()
    assert rate(catalog, "search", 4).amount == 2  # type: ignore[arg-type]
    assert rate(catalog, "search", "4").amount == 2  # type: ignore[arg-type]


def test_unpriced_meter_is_free() -> None:
    catalog = make(Meter("m", "sum"))
    r = rate(catalog, "m", D(10))
    assert r.amount == 0 and r.detail["price_model"] is None


def test_cumulative_price_rejects_tokens() -> None:
    with pytest.raises(InvalidInput):
        cumulative_price(TOKENS, D(1))


# --- rounding --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "up", "half_up", "half_even", "down"),
    [
        (D("0"), 0, 0, 0, 0),
        (D("0.0001"), 1, 0, 0, 0),
        (D("0.5"), 1, 1, 0, 0),
        (D("1.5"), 2, 2, 2, 1),
        (D("2.5"), 3, 3, 2, 2),
        (D("2.4999"), 3, 2, 2, 2),
        (D("3"), 3, 3, 3, 3),
    ],
)
def test_round_amount(value: D, up: int, half_up: int, half_even: int, down: int) -> None:
    assert round_amount(value, "up") == up
    assert round_amount(value, "half_up") == half_up
    assert round_amount(value, "half_even") == half_even
    assert round_amount(value, "down") == down


def test_round_amount_rejects_unknown_rule_and_non_finite() -> None:
    with pytest.raises(InvalidInput):
        round_amount(D(1), "nearest")
    with pytest.raises(InvalidInput):
        round_amount(D("Infinity"), "up")


def test_catalog_rounding_rule_applies() -> None:
    text = """
[credits]
rounding = "down"
[meters.s]
aggregation = "sum"
[meters.s.price]
model = "per_unit"
unit_price = "0.0025"
"""
    catalog = parse_catalog(text)
    assert rate(catalog, "s", D(399)).amount == 0  # 0.9975 rounded down
    assert rate(catalog, "s", D(400)).amount == 1
    assert rate(catalog, "s", D(399)).exact == D("0.9975")


def test_rating_exact_is_decimal_never_float() -> None:
    r = rate(default_catalog(), "search", D(3))
    assert isinstance(r.exact, D) and isinstance(r.amount, int) and isinstance(r.quantity, D)
    assert r.detail["exact"] == "1.5"


def test_needs_aggregate() -> None:
    catalog = default_catalog()
    assert not needs_aggregate(catalog.meters["api_call"])
    assert not needs_aggregate(catalog.meters["search"])
    assert not needs_aggregate(catalog.meters["llm_tokens"])
    assert needs_aggregate(catalog.meters["pages"])
    assert needs_aggregate(catalog.meters["active_projects"])
    assert needs_aggregate(Meter("m", "max", price=Price(model="per_unit", unit_price=D(1))))


def test_rating_is_pure() -> None:
    import subprocess
    import sys

    code = (
        "import sys, tollkeep.pricing.rating, tollkeep.catalog; "
        "bad = [m for m in ('sqlalchemy', 'fastapi', 'httpx', 'pydantic') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
