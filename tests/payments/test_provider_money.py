"""Decimal amounts as providers write them <-> integer minor units, exactly (never rounded)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tollkeep.payments.providers.money import currency_exponent, from_minor_units, to_minor_units

CURRENCIES = ["USD", "eur", "JPY", "KWD", "BTC", "SATS", "CLF"]


@pytest.mark.parametrize(
    ("amount", "currency", "units"),
    [
        ("10.50", "USD", 1050),
        ("10.5", "usd", 1050),
        ("0.01", "USD", 1),
        ("1000", "JPY", 1000),
        ("1.234", "KWD", 1234),
        ("0.00012345", "BTC", 12345),
        ("21000000", "BTC", 2_100_000_000_000_000),
        ("1500", "SATS", 1500),
        ("10.500000", "USD", 1050),
        (" 3.00 ", "USD", 300),
        ("1E+2", "USD", 10000),
    ],
)
def test_known_amounts(amount: str, currency: str, units: int) -> None:
    assert to_minor_units(amount, currency) == units


@pytest.mark.parametrize(
    ("amount", "currency"),
    [
        ("10.005", "USD"),
        ("1.5", "JPY"),
        ("0.000000001", "BTC"),
        ("0.5", "SATS"),
        ("abc", "USD"),
        ("NaN", "USD"),
        ("Infinity", "USD"),
        ("", "USD"),
    ],
)
def test_inexact_or_non_numbers_are_refused(amount: str, currency: str) -> None:
    with pytest.raises(ValueError):
        to_minor_units(amount, currency)


def test_floats_are_refused() -> None:
    with pytest.raises(ValueError):
        to_minor_units(10.5, "USD")  # type: ignore[arg-type]


@given(st.integers(min_value=0, max_value=10**20), st.sampled_from(CURRENCIES))
def test_minor_units_round_trip(units: int, currency: str) -> None:
    text = from_minor_units(units, currency)
    exp = currency_exponent(currency)
    assert len(text.partition(".")[2]) == exp  # exactly the currency's decimal places
    assert to_minor_units(text, currency) == units


@given(
    st.decimals(min_value=0, max_value=10**12, allow_nan=False, allow_infinity=False, places=8),
    st.sampled_from(CURRENCIES),
)
def test_to_minor_units_is_exact_or_refuses(amount: Decimal, currency: str) -> None:
    exp = currency_exponent(currency)
    scaled = amount * (Decimal(10) ** exp)
    if scaled == scaled.to_integral_value():
        assert to_minor_units(str(amount), currency) == int(scaled)
        assert Decimal(from_minor_units(int(scaled), currency)) == amount
    else:
        with pytest.raises(ValueError):
            to_minor_units(str(amount), currency)


@given(st.integers(min_value=0, max_value=10**15), st.integers(min_value=0, max_value=6))
def test_trailing_zeros_do_not_change_the_amount(units: int, zeros: int) -> None:
    text = from_minor_units(units, "USD") + "0" * zeros
    assert to_minor_units(text, "USD") == units
