"""Rating: turn one usage event into an integer charge. Pure (no I/O, no database).

A meter's *period aggregate* is what the meter has measured for one wallet in the
current period (count/sum: running total; max: the largest quantity seen;
unique_count: number of distinct property values). The caller passes the aggregate
before the event (``period_before``); the charge for the event is::

    charge = round(max(0, P(after) - P(before)))

where ``P`` is :func:`cumulative_price` and ``after = before + quantity`` (count, sum,
unique_count) or ``max(before, quantity)`` (max). ``flat`` and ``tokens`` prices are
per event instead. All arithmetic is :class:`~decimal.Decimal`; the only rounding is
the final one, by the catalog's rule (:func:`round_amount`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import (
    ROUND_CEILING,
    ROUND_FLOOR,
    ROUND_HALF_EVEN,
    ROUND_HALF_UP,
    Decimal,
    InvalidOperation,
    localcontext,
)
from typing import Any

from tollkeep.catalog import Catalog, InvalidQuantity, Meter, Price, Tier, TokenPrice, UnknownModel
from tollkeep.kit.errors import InvalidInput

__all__ = ["ROUNDING", "Rating", "cumulative_price", "needs_aggregate", "rate", "round_amount"]

#: Catalog rounding rule -> decimal rounding mode. ``up`` is the default.
ROUNDING: Mapping[str, str] = {
    "up": ROUND_CEILING,
    "half_up": ROUND_HALF_UP,
    "half_even": ROUND_HALF_EVEN,
    "down": ROUND_FLOOR,
}

_PRECISION = 60  # digits; far beyond any realistic price * quantity
_ZERO = Decimal(0)
_ONE = Decimal(1)
_INPUT_KEYS = ("input_tokens", "prompt_tokens")
_OUTPUT_KEYS = ("output_tokens", "completion_tokens")


@dataclass(frozen=True)
class Rating:
    """The result of rating one event.

    ``amount`` is the integer charge in the catalog's credit unit, ``exact`` the
    unrounded (clamped, non-negative) charge it was rounded from.
    """

    amount: int
    exact: Decimal
    meter: str
    catalog_version: str
    quantity: Decimal
    detail: dict[str, Any] = field(default_factory=dict, hash=False)


def needs_aggregate(meter: Meter) -> bool:
    """Whether rating ``meter`` depends on ``period_before``.

    False for linear prices on count/sum meters (flat, per_unit, tokens): the caller
    may skip loading the period aggregate and pass the default ``0``.
    """
    if meter.aggregation in ("max", "unique_count"):
        return True
    return meter.price is not None and meter.price.model in ("graduated", "volume", "package")


def round_amount(value: Decimal, rule: str) -> int:
    """Round an exact amount to an integer by a catalog rounding rule.

    ``up`` (ceiling: any non-zero usage costs at least one unit), ``half_up``,
    ``half_even`` (banker's) or ``down`` (floor).
    """
    try:
        mode = ROUNDING[rule]
    except KeyError:
        raise InvalidInput(
            f"unknown rounding rule {rule!r} (expected one of: {', '.join(ROUNDING)})",
            code="invalid_rounding",
        ) from None
    if not isinstance(value, Decimal) or not value.is_finite():
        raise InvalidQuantity(f"cannot round {value!r}: expected a finite Decimal")
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        return int(value.to_integral_value(rounding=mode))


def cumulative_price(price: Price, aggregate: Decimal) -> Decimal:
    """Exact (unrounded) total price of a period aggregate under ``price``.

    ``flat`` is treated as ``amount * aggregate`` (the count-meter reading). ``tokens``
    prices depend on the input/output split and have no cumulative form.
    """
    if aggregate <= 0:
        return _ZERO
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        model = price.model
        if model == "flat":
            return _req(price.amount) * aggregate
        if model == "per_unit":
            return aggregate * _req(price.unit_price) / price.per
        if model == "graduated":
            total = _ZERO
            for lower, tier in _bounds(price.tiers):
                if aggregate <= lower:
                    break
                upper = aggregate if tier.up_to is None else min(aggregate, tier.up_to)
                total += (upper - lower) * tier.unit_price / price.per + tier.flat
            return total
        if model == "volume":
            tier = _volume_tier(price.tiers, aggregate)[1]
            return aggregate * tier.unit_price / price.per + tier.flat
        if model == "package":
            packages = (aggregate / _req(price.package_size)).to_integral_value(rounding=ROUND_CEILING)
            return packages * _req(price.package_price)
    raise InvalidInput(f"price model {price.model!r} has no cumulative price", code="unsupported_price_model")


def rate(
    catalog: Catalog,
    meter: str,
    quantity: Decimal,
    *,
    properties: Mapping[str, Any] | None = None,
    period_before: Decimal = _ZERO,
) -> Rating:
    """Rate one event of ``meter``.

    ``quantity``: count → units counted (usually 1); sum → amount added; max → the
    value observed; unique_count → 1 if the property value is new this period else 0;
    tokens meters ignore it and use ``input_tokens + output_tokens`` from ``properties``.
    ``period_before``: the meter's aggregate for this wallet in this period before
    the event. Raises ``UnknownMeter``, ``UnknownModel`` or ``InvalidQuantity``.
    """
    m = catalog.meter(meter)
    props: Mapping[str, Any] = properties or {}
    qty = _quantity(quantity, "quantity")
    before = _quantity(period_before, "period_before")
    if m.aggregation in ("count", "unique_count"):
        for name, value in (("quantity", qty), ("period_before", before)):
            if value != value.to_integral_value():
                raise InvalidQuantity(
                    f"{name} must be a whole number for {m.aggregation} meter {m.key!r}, got {value}",
                    details={"meter": m.key, name: str(value)},
                )
    rule = catalog.credits.rounding
    price = m.price

    with localcontext() as ctx:
        ctx.prec = _PRECISION
        if price is not None and price.model == "tokens":
            exact, detail, qty = _rate_tokens(m, price, props)
            after = before + qty
        else:
            after = max(before, qty) if m.aggregation == "max" else before + qty
            if price is None:
                exact, detail = _ZERO, {}
            elif price.model == "flat":
                exact, detail = _rate_flat(m, price, qty)
            else:
                exact, detail = _rate_delta(price, before, after)
        raw = exact
        exact = max(exact, _ZERO)

    amount = round_amount(exact, rule)
    full_detail: dict[str, Any] = {
        "price_model": None if price is None else price.model,
        "aggregation": m.aggregation,
        "quantity": str(qty),
        "period_before": str(before),
        "period_after": str(after),
        **detail,
        "exact": str(exact),
        "rounding": rule,
        "amount": amount,
        "unit": catalog.credits.ledger_name,
    }
    if raw < 0:
        full_detail["clamped_from"] = str(raw)
    return Rating(
        amount=amount,
        exact=exact,
        meter=m.key,
        catalog_version=catalog.version,
        quantity=qty,
        detail=full_detail,
    )


# --- price models -----------------------------------------------------------------


def _rate_flat(m: Meter, price: Price, qty: Decimal) -> tuple[Decimal, dict[str, Any]]:
    amount = _req(price.amount)
    # count meters: amount per counted unit; others: per event with a positive quantity
    exact = amount * qty if m.aggregation == "count" else (amount if qty > 0 else _ZERO)
    return exact, {"flat_amount": str(amount)}


def _rate_delta(price: Price, before: Decimal, after: Decimal) -> tuple[Decimal, dict[str, Any]]:
    exact = cumulative_price(price, after) - cumulative_price(price, before)
    detail: dict[str, Any] = {}
    if price.model == "per_unit":
        detail = {"unit_price": str(_req(price.unit_price)), "per": str(price.per)}
    elif price.model == "graduated":
        touched = []
        for index, (lower, tier) in enumerate(_bounds(price.tiers)):
            upper = after if tier.up_to is None else min(after, tier.up_to)
            units = upper - max(lower, before)
            entered = before <= lower < after
            if units > 0 or (entered and tier.flat):
                touched.append(
                    {
                        "tier": index,
                        "up_to": "inf" if tier.up_to is None else str(tier.up_to),
                        "units": str(max(units, _ZERO)),
                        "unit_price": str(tier.unit_price),
                        "flat": str(tier.flat if entered else _ZERO),
                    }
                )
        detail = {"per": str(price.per), "tiers": touched}
        if len(touched) == 1:
            detail.update(tier=touched[0]["tier"], unit_price=touched[0]["unit_price"])
    elif price.model == "volume":
        index, tier = _volume_tier(price.tiers, after)
        detail = {
            "tier": index,
            "unit_price": str(tier.unit_price),
            "tier_flat": str(tier.flat),
            "per": str(price.per),
        }
    elif price.model == "package":
        size = _req(price.package_size)
        detail = {
            "package_size": str(size),
            "package_price": str(_req(price.package_price)),
            "packages_before": str((before / size).to_integral_value(rounding=ROUND_CEILING)),
            "packages_after": str((after / size).to_integral_value(rounding=ROUND_CEILING)),
        }
    return exact, detail


def _rate_tokens(m: Meter, price: Price, props: Mapping[str, Any]) -> tuple[Decimal, dict[str, Any], Decimal]:
    model = props.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidInput(
            f"property 'model' must be a string, got {type(model).__name__}",
            code="invalid_properties",
            details={"meter": m.key},
        )
    token_price: TokenPrice | None = price.models.get(model) if model is not None else None
    priced_as = model
    if token_price is None:
        if price.default is None:
            known = ", ".join(sorted(price.models)) or "none"
            raise UnknownModel(
                f"no price for model {model!r} on meter {m.key!r} and no default (known models: {known})",
                details={"meter": m.key, "model": model},
            )
        token_price, priced_as = price.default, "default"
    input_tokens = _token_count(m, props, _INPUT_KEYS)
    output_tokens = _token_count(m, props, _OUTPUT_KEYS)
    if input_tokens is None and output_tokens is None:
        raise InvalidInput(
            f"tokens meter {m.key!r} needs properties input_tokens and/or output_tokens "
            "(or prompt_tokens/completion_tokens)",
            code="invalid_properties",
            details={"meter": m.key},
        )
    tin = input_tokens or 0
    tout = output_tokens or 0
    exact = (Decimal(tin) * token_price.input + Decimal(tout) * token_price.output) / price.per
    detail = {
        "model": model,
        "priced_as": priced_as,
        "input_tokens": tin,
        "output_tokens": tout,
        "input_price": str(token_price.input),
        "output_price": str(token_price.output),
        "per": str(price.per),
    }
    return exact, detail, Decimal(tin + tout)


# --- helpers ----------------------------------------------------------------------


def _bounds(tiers: tuple[Tier, ...]) -> list[tuple[Decimal, Tier]]:
    """Pair each tier with its exclusive lower bound (previous tier's up_to)."""
    out = []
    lower = _ZERO
    for tier in tiers:
        out.append((lower, tier))
        if tier.up_to is not None:
            lower = tier.up_to
    return out


def _volume_tier(tiers: tuple[Tier, ...], aggregate: Decimal) -> tuple[int, Tier]:
    for index, tier in enumerate(tiers):
        if tier.up_to is None or aggregate <= tier.up_to:
            return index, tier
    return len(tiers) - 1, tiers[-1]  # unreachable for a validated catalog (last tier is open)


def _req(value: Decimal | None) -> Decimal:
    if value is None:  # a validated catalog never gets here
        raise InvalidInput("price is missing a required field", code="invalid_catalog")
    return value


def _quantity(value: Any, name: str) -> Decimal:
    if isinstance(value, bool):
        raise InvalidQuantity(f"{name} must be a number, got a boolean")
    try:
        if isinstance(value, Decimal):
            dec = value
        elif isinstance(value, int):
            dec = Decimal(value)
        elif isinstance(value, float):
            dec = Decimal(repr(value))  # shortest round-trip text, never the binary expansion
        elif isinstance(value, str):
            dec = Decimal(value.strip())
        else:
            raise InvalidQuantity(f"{name} must be a number, got {type(value).__name__}")
    except InvalidOperation:
        raise InvalidQuantity(f"{name} must be a number, got {value!r}") from None
    if not dec.is_finite() or dec < 0:
        raise InvalidQuantity(f"{name} must be a finite number >= 0, got {value!r}", details={name: str(dec)})
    return dec


def _token_count(m: Meter, props: Mapping[str, Any], keys: tuple[str, ...]) -> int | None:
    for key in keys:
        if key not in props or props[key] is None:
            continue
        value = props[key]
        count: int | None = None
        if isinstance(value, bool):
            count = None
        elif isinstance(value, int):
            count = value
        elif (isinstance(value, float) and value.is_integer()) or (
            isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value()
        ):
            count = int(value)
        elif isinstance(value, str) and value.strip().isdigit():
            count = int(value.strip())
        if count is None or count < 0:
            raise InvalidQuantity(
                f"property {key!r} must be a whole number >= 0, got {value!r}",
                details={"meter": m.key, "property": key},
            )
        return count
    return None
