"""Exchange rates for invoices in another currency than the listed price: a pluggable
:class:`RateSource`, and :class:`FixedRates` (from settings: tests, offline use)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Protocol

__all__ = ["FixedRates", "Rate", "RateSource", "RateUnavailable", "parse_rates"]


class RateUnavailable(Exception):
    """No rate for that pair now (the renewal backs off and tries again)."""


@dataclass(frozen=True)
class Rate:
    value: Decimal  # ``quote`` major units per one ``base`` major unit
    source: str
    at: datetime


class RateSource(Protocol):
    name: str

    def rate(self, base: str, quote: str, now: datetime) -> Rate: ...


def parse_rates(raw: Mapping[str, str]) -> dict[tuple[str, str], Decimal]:
    """``{"USD/BTC": "0.0000105"}`` → {("USD", "BTC"): Decimal}. Rates are decimal strings."""
    out: dict[tuple[str, str], Decimal] = {}
    for pair, value in raw.items():
        base, sep, quote = pair.partition("/")
        if not sep or not base.strip() or not quote.strip():
            raise ValueError(f"rate pair {pair!r}: expected BASE/QUOTE, e.g. USD/BTC")
        if isinstance(value, float):
            raise ValueError(f"rate {pair}: give a decimal string, not a float")
        try:
            rate = Decimal(str(value).strip())
        except InvalidOperation:
            raise ValueError(f"rate {pair}: {value!r} is not a decimal") from None
        if not rate.is_finite() or rate <= 0:
            raise ValueError(f"rate {pair}: must be a positive number")
        out[(base.strip().upper(), quote.strip().upper())] = rate
    return out


class FixedRates:
    """Rates that do not move (``TOLLKEEP_SUBSCRIPTIONS_FIXED_RATES``); a currency to itself is 1."""

    name = "fixed"
    offline = True  # no outside call: the renewal worker may ask inside a transaction

    def __init__(self, rates: Mapping[str, str] | None = None) -> None:
        self.rates = parse_rates(rates or {})

    def rate(self, base: str, quote: str, now: datetime) -> Rate:
        base, quote = base.upper(), quote.upper()
        if base == quote:
            return Rate(Decimal(1), "identity", now)
        value = self.rates.get((base, quote))
        if value is None:
            raise RateUnavailable(f"no {base}/{quote} rate configured")
        return Rate(value, self.name, now)
