"""Every meter aggregation, every cap mode, every way of charging, through the real service.

Aggregations: count, sum, max, unique_count, and a tokens-priced sum meter. Caps: ``hard``
(429 ``cap_exceeded`` past the limit) and ``allowance`` (past the limit the plan allowance stops
paying, purchases still do). Paths: direct usage, hold + settle by quantity, hold + settle by
amount (counted with the hold's estimated quantity).

For each cell the test feeds a sequence of events that reaches the cap's limit exactly, then one
more, and checks against an aggregate it computes itself (count/sum: the sum; max: the period's
max, not a sum; unique_count: distinct values; tokens: input + output tokens):

* the stored counter (``usage_counters``: value and allowance_used) after every event;
* each event's recorded quantity;
* hard: every event up to the limit is admitted, the next is refused, and nothing is counted;
  allowance: the allowance pays for every event up to the limit, a purchase pays the next.

Below the matrix, a property drives the pure cap rules the service calls
(``rules.check_caps``, ``rules.counter_updates``) with random events, open-hold reservations and
limits, against a model of a few lines.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from itertools import count
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tollkeep.catalog import Cap, parse_catalog
from tollkeep.kit.clock import FrozenClock, SubscriptionPeriods, period_bounds
from tollkeep.kit.db import Tx
from tollkeep.kit.errors import CapExceeded
from tollkeep.kit.executor import Command
from tollkeep.ledger import lock_wallet_of_customer
from tollkeep.ledger import repository as repo
from tollkeep.ledger.rules import NO_ALLOWANCE, check_caps, counter_updates
from tollkeep.ledger.service import UsageRequest
from tollkeep.plans.repository import set_usage_periods
from tollkeep.runtime import Tollkeep

_n = count()

CATALOG = """
[meters.m_count]
aggregation = "count"
[meters.m_count.price]
model = "flat"
amount = 1
[meters.m_sum]
aggregation = "sum"
[meters.m_sum.price]
model = "flat"
amount = 1
[meters.m_max]
aggregation = "max"
[meters.m_max.price]
model = "flat"
amount = 1
[meters.m_uniq]
aggregation = "unique_count"
property = "p"
[meters.m_uniq.price]
model = "flat"
amount = 1
[meters.m_tok]
aggregation = "sum"
[meters.m_tok.price]
model = "tokens"
per = 1000
[meters.m_tok.price.models."m"]
input = 1
output = 1
"""
LIMITS = {"m_count": 3, "m_sum": 10, "m_max": 10, "m_uniq": 3, "m_tok": 3000}
for _mode in ("hard", "allowance"):
    CATALOG += f'[plans.{_mode}]\nname = "{_mode}"\n'
    if _mode == "allowance":
        CATALOG += '[plans.allowance.allowance]\namount = 1000\nperiod = "month"\n'
    for _meter, _limit in LIMITS.items():
        CATALOG += f'[[plans.{_mode}.caps]]\nmeter = "{_meter}"\nlimit = {_limit}\n'
        CATALOG += f'period = "month"\nmode = "{_mode}"\n'

# (events that reach the limit exactly, the event beyond it). An event is a quantity, a
# unique_count property value, or (input_tokens, output_tokens).
SEQUENCES: dict[str, tuple[list[Any], Any]] = {
    "m_count": ([1, 1, 1], 1),
    "m_sum": ([4, 6], 1),
    "m_max": ([5, 5, 10], 11),  # the period's max reaches 10: every reading up to 10 is within the cap
    "m_uniq": (["a", "b", "a", "c"], "d"),  # "a" again is no new value
    "m_tok": ([(1000, 500), (1000, 500)], (1, 0)),
}
AGGREGATION = {
    "m_count": "count",
    "m_sum": "sum",
    "m_max": "max",
    "m_uniq": "unique_count",
    "m_tok": "tokens",
}


def aggregate(meter: str, events: list[Any]) -> Decimal:
    """The period aggregate, computed here from the events (not by the service)."""
    if meter == "m_max":
        return Decimal(max(events, default=0))
    if meter == "m_uniq":
        return Decimal(len(set(events)))
    if meter == "m_tok":
        return Decimal(sum(i + o for i, o in events))
    return Decimal(sum(events))


def recorded(meter: str, event: Any) -> str:
    """The quantity an event must be recorded with."""
    if meter == "m_uniq":
        return "1"
    if meter == "m_tok":
        return str(event[0] + event[1])
    return str(event)


def request(meter: str, event: Any) -> tuple[Decimal | None, dict[str, Any] | None]:
    """(quantity, properties) of an event, as a client sends it. A tokens event sends only the
    token counts (the quantity is theirs to derive); unique_count sends its property."""
    if meter == "m_uniq":
        return None, {"p": event}
    if meter == "m_tok":
        return None, {"model": "m", "input_tokens": event[0], "output_tokens": event[1]}
    return Decimal(event), None


def charge(tk: Tollkeep, cid: str, path: str, meter: str, event: Any) -> dict[str, Any]:
    qty, props = request(meter, event)
    key = f"e{next(_n)}"
    if path == "usage":
        return tk.ledger.record_usage(UsageRequest(cid, meter, qty, key, props))
    hold = tk.ledger.create_hold(cid, idempotency_key=key, meter=meter, quantity=qty, properties=props)
    if path == "settle_quantity":
        settle_qty = Decimal(recorded(meter, event))
        return tk.ledger.resolve_hold(cid, hold["id"], action="settle", quantity=settle_qty, properties=props)
    return tk.ledger.resolve_hold(cid, hold["id"], action="settle", amount=hold["amount"])


def counter(tk: Tollkeep, cid: str, meter: str) -> tuple[Decimal, Decimal]:
    _, _, key = period_bounds("month", tk.clock.now())
    with tk.db.scope(write=False) as s:
        wid = repo.wallet_id_for_customer(s, cid)
        assert wid is not None
        return repo.get_counters(s, wid, meter, [key]).get(key, (Decimal(0), Decimal(0)))


def by_source(tk: Tollkeep, cid: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for g in tk.balance(cid)["grants"]:
        out[g["source"]] = out.get(g["source"], 0) + g["remaining"]
    return out


def listed_quantity(tk: Tollkeep, cid: str, res: dict[str, Any]) -> str:
    eid = res.get("event_id") or res["operation_id"]
    return next(e["quantity"] for e in tk.usage(cid, limit=500)["data"] if e["event_id"] == eid)


CELLS = [
    pytest.param(meter, path, id=f"{AGGREGATION[meter]}-{path}")
    for meter in LIMITS
    for path in ("usage", "settle_quantity", "settle_amount")
]


@pytest.fixture
def cat(tk: Tollkeep) -> Tollkeep:
    tk.catalogs.set(parse_catalog(CATALOG))
    return tk


@pytest.mark.parametrize(("meter", "path"), CELLS)
def test_hard_cap_admits_exactly_its_limit(cat: Tollkeep, meter: str, path: str) -> None:
    cid = str(cat.customers.create(f"hard-{next(_n)}", plan="hard")["id"])
    cat.ledger.grant(cid, 1000, idempotency_key="buy")
    admitted, beyond = SEQUENCES[meter]
    seen: list[Any] = []
    for event in admitted:
        res = charge(cat, cid, path, meter, event)
        seen.append(event)
        assert counter(cat, cid, meter)[0] == aggregate(meter, seen), f"counter after {seen}"
        assert listed_quantity(cat, cid, res) == recorded(meter, event)
    assert aggregate(meter, seen) == LIMITS[meter]
    balance = cat.balance(cid)["balance"]
    with pytest.raises(CapExceeded) as e:
        charge(cat, cid, path, meter, beyond)
    assert e.value.status == 429 and e.value.details["limit"] == str(LIMITS[meter])
    assert Decimal(e.value.details["used"]) == aggregate(meter, seen)
    assert counter(cat, cid, meter)[0] == aggregate(meter, seen), "a refused event was counted"
    assert cat.balance(cid)["balance"] == balance and cat.balance(cid)["held"] == 0


@pytest.mark.parametrize(("meter", "path"), CELLS)
def test_allowance_cap_pays_exactly_up_to_its_limit(cat: Tollkeep, meter: str, path: str) -> None:
    cid = str(cat.customers.create(f"allow-{next(_n)}", plan="allowance")["id"])
    cat.ledger.grant(cid, 1000, idempotency_key="buy")
    admitted, beyond = SEQUENCES[meter]
    seen: list[Any] = []
    for event in admitted:
        before = by_source(cat, cid)
        res = charge(cat, cid, path, meter, event)
        seen.append(event)
        after = by_source(cat, cid)
        assert after["purchase"] == before["purchase"], f"{event}: within the cap, the allowance pays"
        assert before["plan_allowance"] - after["plan_allowance"] == res["charged"]
        value, allowance_used = counter(cat, cid, meter)
        assert value == aggregate(meter, seen)
        assert allowance_used == aggregate(meter, seen), "allowance_used counts what the allowance paid"
        assert listed_quantity(cat, cid, res) == recorded(meter, event)
    before = by_source(cat, cid)
    res = charge(cat, cid, path, meter, beyond)
    after = by_source(cat, cid)
    assert res["charged"] > 0
    assert after["plan_allowance"] == before["plan_allowance"], "past the cap the allowance stops paying"
    assert before["purchase"] - after["purchase"] == res["charged"]
    value, allowance_used = counter(cat, cid, meter)
    assert value == aggregate(meter, [*seen, beyond])
    assert allowance_used == aggregate(meter, seen), "usage paid by a purchase is not allowance used"


def test_allowance_counter_skips_usage_paid_by_purchases(cat: Tollkeep) -> None:
    """A purchase spent before the allowance (priority 1) pays the first events: they do not
    use up the allowance's cap, so the allowance still pays for the next 10 units."""
    cid = str(cat.customers.create(f"allow-{next(_n)}", plan="allowance")["id"])
    cat.ledger.grant(cid, 2, idempotency_key="first", priority=1)
    for q in (4, 4):
        cat.ledger.record_usage(UsageRequest(cid, "m_sum", Decimal(q), f"p{q}-{next(_n)}"))
    assert counter(cat, cid, "m_sum") == (Decimal(8), Decimal(0))
    allowance = by_source(cat, cid)["plan_allowance"]
    for q in (4, 6):
        cat.ledger.record_usage(UsageRequest(cid, "m_sum", Decimal(q), f"a{q}-{next(_n)}"))
    assert by_source(cat, cid)["plan_allowance"] == allowance - 2
    assert counter(cat, cid, "m_sum") == (Decimal(18), Decimal(10))


def test_open_holds_reserve_the_hard_cap(cat: Tollkeep) -> None:
    """What an open hold reserved counts: a second hold past the cap is refused."""
    cid = str(cat.customers.create(f"hard-{next(_n)}", plan="hard")["id"])
    cat.ledger.grant(cid, 1000, idempotency_key="buy")
    cat.ledger.create_hold(cid, idempotency_key="h1", meter="m_count", quantity=2)
    with pytest.raises(CapExceeded):
        cat.ledger.create_hold(cid, idempotency_key="h2", meter="m_count", quantity=2)


# ------------------------------------------------------------------------------ the pure rules, by property
def model_aggregate(aggregation: str, values: list[int]) -> int:
    return max(values, default=0) if aggregation == "max" else sum(values)


@settings(deadline=None, max_examples=300)
@given(
    aggregation=st.sampled_from(["count", "sum", "max"]),
    mode=st.sampled_from(["hard", "allowance"]),
    limit=st.integers(0, 15),
    # (the event's quantity, what open holds reserve, whether the allowance is there to pay)
    events=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6), st.booleans()), max_size=20),
)
def test_cap_rules_follow_a_model(
    aggregation: str, mode: str, limit: int, events: list[tuple[int, int, bool]]
) -> None:
    """A hard cap admits an event while used + reserved + it stays within the limit (a max
    meter: the largest of them) and counts nothing it refuses; an allowance cap excludes the
    plan allowance once what the allowance paid for would pass the limit. The counters hold the
    period's aggregate of the admitted events, and of those the allowance paid for."""
    now = datetime(2026, 5, 10, 12, tzinfo=UTC)
    cap = Cap("m", Decimal(limit), "month", mode)
    key = period_bounds("month", now)[2]
    is_max = aggregation == "max"
    counters: dict[str, tuple[Decimal, Decimal]] = {}
    admitted: list[int] = []
    paid_by_allowance: list[int] = []
    for quantity, reserved, allowance_there in events:
        step = 1 if aggregation == "count" else quantity  # a max meter's step is its reading
        if is_max:
            refused = mode == "hard" and max(model_aggregate("max", admitted), reserved, step) > limit
        else:
            refused = mode == "hard" and sum(admitted) + reserved + step > limit
        excluded = mode == "allowance" and model_aggregate(aggregation, [*paid_by_allowance, step]) > limit
        try:
            exclude = check_caps(
                (cap,),
                counters,
                now,
                meter="m",
                plan="p",
                is_max=is_max,
                step=Decimal(step),
                reserved=Decimal(reserved),
            )
        except CapExceeded as exc:
            assert refused, f"refused {step} after {admitted} (reserved {reserved}, limit {limit})"
            assert Decimal(exc.details["used"]) == model_aggregate(aggregation, admitted)
            continue
        assert not refused, f"admitted {step} after {admitted} (reserved {reserved}, limit {limit})"
        assert exclude == (NO_ALLOWANCE if excluded else frozenset())
        used_allowance = allowance_there and not exclude  # the draw took from the allowance
        for period, value, allowance_used, existed in counter_updates(
            counters,
            [key],
            is_max=is_max,
            quantity=Decimal(quantity),
            step=Decimal(step),
            used_allowance=used_allowance,
        ):
            assert existed == (period in counters)
            counters[period] = (value, allowance_used)
        admitted.append(step)
        if used_allowance:
            paid_by_allowance.append(step)
        assert counters[key] == (
            model_aggregate(aggregation, admitted),
            model_aggregate(aggregation, paid_by_allowance),
        )
    # a settle (enforce_hard False) is never refused by a hard cap: its capacity was reserved
    assert (
        check_caps(
            (Cap("m", Decimal(0), "month", "hard"),),
            counters,
            now,
            meter="m",
            plan="p",
            is_max=is_max,
            step=Decimal(5),
            enforce_hard=False,
        )
        == frozenset()
    )


# ------------------------------------------------------------------------------ a subscription's periods
@pytest.mark.parametrize("path", ["usage", "settle_quantity"])
def test_caps_count_the_wallets_subscription_periods(cat: Tollkeep, clock: FrozenClock, path: str) -> None:
    """A wallet carrying a subscription's periods (written through the plans domain's own writer,
    as a subscription's moves do) counts its caps in them, with the raw statements and without:
    anchored on Jan 31 17:00 of a leap year, the cap resets on Feb 29 17:00, not on Feb 1; from
    ``until`` on (a lapsed, stale period) calendar months again."""
    cid = str(cat.customers.create(f"sub-{next(_n)}", plan="hard")["id"])
    cat.ledger.grant(cid, 1000, idempotency_key="buy")
    anchor = datetime(2028, 1, 31, 17, tzinfo=UTC)
    until = datetime(2028, 3, 31, 17, tzinfo=UTC)
    clock.set(anchor)

    def carry(s: Tx) -> None:
        w = lock_wallet_of_customer(s, cid)
        set_usage_periods(s, w, anchor, SubscriptionPeriods(anchor, anchor, until))

    cat.executor.call(Command(carry, cid))
    limit = LIMITS["m_count"]

    def admitted(n: int) -> tuple[int, str | None]:
        ok, resets = 0, None
        for _ in range(n):
            try:
                charge(cat, cid, path, "m_count", 1)
                ok += 1
            except CapExceeded as exc:
                resets = exc.details["resets_at"]
        return ok, resets

    assert admitted(limit + 1) == (limit, "2028-02-29T17:00:00Z")
    clock.set(datetime(2028, 2, 1, tzinfo=UTC))
    assert admitted(1) == (0, "2028-02-29T17:00:00Z")
    clock.set(datetime(2028, 2, 29, 17, tzinfo=UTC))
    assert admitted(limit + 1) == (limit, "2028-03-31T17:00:00Z")
    with cat.db.scope(write=False) as s:
        wid = repo.wallet_id_for_customer(s, cid)
        assert wid is not None
        keys = ["sm:2028-01-31T17:00:00.000000Z", "sm:2028-02-29T17:00:00.000000Z", "m:2028-02"]
        got = repo.get_counters(s, wid, "m_count", keys)
    assert {k: v for k, (v, _) in got.items()} == {keys[0]: limit, keys[1]: limit}
    clock.set(until)  # stale: calendar months, a fresh March counter
    assert admitted(limit + 1) == (limit, "2028-04-01T00:00:00Z")
