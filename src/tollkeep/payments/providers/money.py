"""Money as providers write it (``"10.50"`` USD, ``"0.00012345"`` BTC) and as tollkeep keeps it
(integer minor units: cents, satoshis), converted exactly with :class:`~decimal.Decimal`.

A currency's exponent is its number of decimal places (ISO 4217 for fiat: USD 2, JPY 0, KWD 3;
BTC 8, so a BTC amount in minor units is satoshis; ``SATS``, which BTCPay accepts as a currency,
has exponent 0: the amount already is satoshis). An amount that does not fit its currency's
exponent exactly (``"10.005"`` USD) is refused, never rounded: a payment is never worth a
different number of cents than the provider says.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

__all__ = ["currency_exponent", "from_minor_units", "to_minor_units"]

# ISO 4217 currencies whose exponent is not 2, and the bitcoin units
_EXPONENTS: dict[str, int] = {
    **dict.fromkeys(
        (
            "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI",
            "VND", "VUV", "XAF", "XOF", "XPF",
        ),
        0,
    ),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
    **dict.fromkeys(("CLF", "UYW"), 4),
    "BTC": 8,
    "SATS": 0,
    "SAT": 0,
    "MSAT": 0,
}  # fmt: skip


def currency_exponent(currency: str) -> int:
    """Decimal places of ``currency`` (case-insensitive); 2 for every currency not listed."""
    return _EXPONENTS.get(currency.upper(), 2)


def to_minor_units(amount: str | int | Decimal, currency: str) -> int:
    """``"10.50"`` USD → 1050; ``"0.00012345"`` BTC → 12345. Raises :class:`ValueError` when the
    amount is not a finite number or is not a whole number of minor units."""
    if isinstance(amount, float):  # never: binary floats are not money
        raise ValueError(f"amount {amount!r} is a float: give a decimal string")
    try:
        value = Decimal(amount.strip()) if isinstance(amount, str) else Decimal(amount)
    except (InvalidOperation, ValueError):
        raise ValueError(f"{amount!r} is not a decimal amount") from None
    if not value.is_finite():
        raise ValueError(f"{amount!r} is not a finite amount")
    minor = value.scaleb(currency_exponent(currency))
    if minor != minor.to_integral_value():
        raise ValueError(
            f"{amount!r} {currency.upper()} is not a whole number of minor units "
            f"({currency_exponent(currency)} decimal places)"
        )
    return int(minor)


def from_minor_units(units: int, currency: str) -> str:
    """1050 USD → ``"10.50"``; 12345 BTC → ``"0.00012345"``; 500 JPY → ``"500"`` (exact, with
    exactly the currency's decimal places)."""
    exp = currency_exponent(currency)
    value = Decimal(int(units)).scaleb(-exp)
    return format(value.quantize(Decimal(1).scaleb(-exp)), "f")
