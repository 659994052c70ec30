"""Property tests: successive charges telescope to the cumulative price."""

from __future__ import annotations

from decimal import Decimal as D

from hypothesis import given, settings
from hypothesis import strategies as st

from tollkeep.catalog import Catalog, CreditUnit, Meter, Price, Tier
from tollkeep.pricing import cumulative_price, rate, round_amount

# per-test settings (a loaded profile would leak into every other test module)
prop = settings(deadline=None, max_examples=150)

RULES = ("up", "half_up", "half_even", "down")

money = st.decimals(min_value=0, max_value=1000, places=4, allow_nan=False, allow_infinity=False)
quantities = st.decimals(min_value=0, max_value=5000, places=2, allow_nan=False, allow_infinity=False)
whole = st.integers(min_value=0, max_value=500).map(D)


@st.composite
def tiers(draw: st.DrawFn) -> tuple[Tier, ...]:
    bounds = sorted(set(draw(st.lists(st.integers(min_value=1, max_value=3000), min_size=0, max_size=4))))
    ups: list[D | None] = [D(b) for b in bounds]
    ups.append(None)
    return tuple(
        Tier(up_to=u, unit_price=draw(money), flat=draw(st.sampled_from([D(0), D(0), D(5)]))) for u in ups
    )


def catalog_for(meter: Meter, rule: str) -> Catalog:
    return Catalog(
        version="p",
        label=None,
        source=None,
        text="",
        credits=CreditUnit(rounding=rule),
        meters={meter.key: meter},
    )


def slack_ok(total: int, exact_total: D, events: int, rule: str) -> bool:
    diff = D(total) - exact_total
    if rule == "up":
        return D(0) <= diff < events or (events == 0 and diff == 0)
    if rule == "down":
        return -events < diff <= 0 or (events == 0 and diff == 0)
    return abs(diff) <= D(events) / 2


@prop
@given(tiers(), st.lists(quantities, max_size=20), st.sampled_from(RULES))
def test_graduated_successive_charges_match_cumulative(
    tier_list: tuple[Tier, ...], events: list[D], rule: str
) -> None:
    price = Price(model="graduated", tiers=tier_list)
    catalog = catalog_for(Meter("m", "sum", price=price), rule)
    before = D(0)
    total = 0
    for q in events:
        r = rate(catalog, "m", q, period_before=before)
        assert r.amount >= 0
        assert r.exact >= 0
        total += r.amount
        before += q
    assert slack_ok(total, cumulative_price(price, before), len(events), rule)


@prop
@given(tiers(), st.lists(quantities, max_size=20), st.sampled_from(RULES))
def test_max_meter_telescopes_to_price_of_peak(
    tier_list: tuple[Tier, ...], events: list[D], rule: str
) -> None:
    price = Price(model="graduated", tiers=tier_list)
    catalog = catalog_for(Meter("m", "max", price=price), rule)
    peak = D(0)
    total = 0
    for q in events:
        r = rate(catalog, "m", q, period_before=peak)
        assert r.amount >= 0
        total += r.amount
        peak = max(peak, q)
    assert slack_ok(total, cumulative_price(price, peak), len(events), rule)


@prop
@given(tiers(), quantities, quantities, st.sampled_from(RULES))
def test_volume_charge_never_negative(tier_list: tuple[Tier, ...], before: D, q: D, rule: str) -> None:
    catalog = catalog_for(Meter("m", "sum", price=Price(model="volume", tiers=tier_list)), rule)
    r = rate(catalog, "m", q, period_before=before)
    assert r.amount >= 0 and r.exact >= 0


@prop
@given(
    money,
    st.integers(min_value=1, max_value=10_000).map(D),
    quantities,
    quantities,
    quantities,
    st.sampled_from(RULES),
)
def test_per_unit_monotone_in_quantity(unit: D, per: D, before: D, q1: D, q2: D, rule: str) -> None:
    catalog = catalog_for(Meter("m", "sum", price=Price(model="per_unit", unit_price=unit, per=per)), rule)
    lo, hi = sorted((q1, q2))
    assert (
        rate(catalog, "m", lo, period_before=before).amount
        <= rate(catalog, "m", hi, period_before=before).amount
    )


@prop
@given(st.integers(min_value=1, max_value=1000).map(D), money, st.lists(whole, max_size=20))
def test_package_successive_charges_exact(size: D, pkg_price: D, events: list[D]) -> None:
    price = Price(model="package", package_size=size, package_price=pkg_price)
    catalog = catalog_for(Meter("m", "sum", price=price), "up")
    before = D(0)
    exact_total = D(0)
    for q in events:
        r = rate(catalog, "m", q, period_before=before)
        exact_total += r.exact
        before += q
    assert exact_total == cumulative_price(price, before)


@prop
@given(st.decimals(min_value=0, max_value=10**9, places=6, allow_nan=False, allow_infinity=False))
def test_round_amount_bounds(value: D) -> None:
    up, down = round_amount(value, "up"), round_amount(value, "down")
    assert down <= value <= up and up - down <= 1
    for rule in ("half_up", "half_even"):
        assert abs(D(round_amount(value, rule)) - value) <= D("0.5")
