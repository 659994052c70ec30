"""The raw-statement fast path (kit/rawsql.py) may change cost, never meaning.

One scenario (grants of every kind, usage on flat, tokens, capped and unique-count meters,
holds settled for less, for more, by quantity, released and expired, refunds back to live and
to expired grants, overdraft, replays, 402s, 409s) runs twice on one database: once with the
fast path on, once with it off (``Settings.raw_sql``: SQLAlchemy's plain ``execute``), each for
a customer of its own, from the same instant. Every answer and every row the two runs wrote
(operations, journal, grants, holds, counters, distinct values) must be the same, ids aside.
The parity modules of tests/ledger/conftest.py run whole test files both ways too.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tollkeep.catalog import parse_catalog
from tollkeep.kit import rawsql
from tollkeep.kit.clock import FrozenClock
from tollkeep.kit.errors import TollkeepError
from tollkeep.kit.models import table_of
from tollkeep.ledger import repository as repo
from tollkeep.ledger.models import Grant, Hold, JournalEntry, Operation, UniqueValue, UsageCounter
from tollkeep.ledger.service import UsageRequest
from tollkeep.runtime import Tollkeep

from ..conftest import make_settings

CATALOG = """
[meters.api_call]
[meters.api_call.price]
model = "flat"
amount = 2
[meters.search]
aggregation = "sum"
[meters.search.price]
model = "per_unit"
unit_price = 1
[meters.visitors]
aggregation = "unique_count"
property = "who"
[meters.visitors.price]
model = "flat"
amount = 1
[meters.tokens]
aggregation = "sum"
[meters.tokens.price]
model = "tokens"
per = 1000
[meters.tokens.price.models."m"]
input = 1
output = 2
[plans.capped]
name = "Capped"
[plans.capped.allowance]
amount = 30
period = "month"
[[plans.capped.caps]]
meter = "api_call"
limit = 6
period = "day"
mode = "hard"
[[plans.capped.caps]]
meter = "search"
limit = 5
period = "month"
mode = "allowance"
"""
START = datetime(2026, 3, 10, 12, tzinfo=UTC)
_ID = re.compile(r"\b[a-z]{2,4}_[0-9A-Z]{26}\b")


def masked(value: Any) -> Any:
    """Ids are random: each becomes ``<id>``; everything else stays as it is."""
    if isinstance(value, str):
        return _ID.sub("<id>", value)
    if isinstance(value, dict):
        return {k: masked(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [masked(v) for v in value]
    return value


def scenario(tk: Tollkeep, clock: FrozenClock, name: str) -> tuple[str, list[Any]]:
    """Run the scenario for a new customer: (its id, every answer or error, ids masked, in order).
    The clock moves a second a step, so no two grants tie in spend order but for their ids."""
    out: list[Any] = []
    done: dict[str, Any] = {}
    led = tk.ledger

    def step(label: str, fn: Callable[[], Any]) -> Any:
        clock.advance(timedelta(seconds=1))
        try:
            res = fn()
        except TollkeepError as exc:
            out.append((label, "error", exc.code, masked(exc.details)))
            return None
        out.append((label, masked(res)))
        done[label] = res
        return res

    cid = str(tk.customers.create(name, plan="capped")["id"])
    later = START + timedelta(days=2)

    def use(key: str, meter: str, qty: Any = None, **props: Any) -> Any:
        q = None if qty is None else Decimal(str(qty))
        return step(key, lambda: led.record_usage(UsageRequest(cid, meter, q, key, props or None)))

    step("buy", lambda: led.grant(cid, 50, idempotency_key="buy"))
    promo = {"source": "promo", "expires_at": later, "priority": 5}
    step("promo", lambda: led.grant(cid, 8, idempotency_key="promo", **promo))
    step("scoped", lambda: led.grant(cid, 5, idempotency_key="scoped", meter="tokens", priority=1))
    step("buy again", lambda: led.grant(cid, 50, idempotency_key="buy"))  # a replay
    step("buy other", lambda: led.grant(cid, 51, idempotency_key="buy"))  # 409
    step("overdraft", lambda: led.set_overdraft(cid, 10))
    for i in range(4):
        use(f"a{i}", "api_call")  # the promo pays (priority 5)
    use("a0", "api_call")  # a replay
    use("a0", "api_call", 3)  # 409
    use("s1", "search", 4)  # the allowance pays
    use("s2", "search", 3)  # past the allowance cap: a purchase pays
    use("v1", "visitors", who="ann")
    use("v2", "visitors", who="ann")
    use("v3", "visitors", who="bob")
    use("t1", "tokens", model="m", input_tokens=1500, output_tokens=700)
    use("t2", "tokens", 9, model="m", input_tokens=1, output_tokens=1)  # quantity_mismatch
    h1 = step("h1", lambda: led.create_hold(cid, idempotency_key="h1", amount=20))
    h2 = step("h2", lambda: led.create_hold(cid, idempotency_key="h2", meter="api_call", quantity=1))
    step("h2 again", lambda: led.create_hold(cid, idempotency_key="h2", meter="api_call", quantity=1))
    est = {"model": "m", "input_tokens": 1000}
    h3 = step("h3", lambda: led.create_hold(cid, idempotency_key="h3", meter="tokens", properties=est))
    h4 = step("h4", lambda: led.create_hold(cid, idempotency_key="h4", amount=5, ttl_seconds=60))
    use("a9", "api_call")  # the hard cap counts what h2 reserved
    use("a10", "api_call")  # the cap is reached: 429
    s1 = step("settle h1", lambda: led.resolve_hold(cid, h1["id"], action="settle", amount=12))
    step("settle h1 again", lambda: led.resolve_hold(cid, h1["id"], action="settle", amount=12))
    step("release h1", lambda: led.resolve_hold(cid, h1["id"], action="release"))  # 409
    s2 = step("settle h2", lambda: led.resolve_hold(None, h2["id"], action="settle", quantity=1))
    actual = {"model": "m", "input_tokens": 3000, "output_tokens": 4000}
    s3 = step("settle h3", lambda: led.resolve_hold(cid, h3["id"], action="settle", properties=actual))
    step("r1", lambda: led.refund(s1["operation_id"], idempotency_key="r1", amount=5, reason="sorry"))
    step("r1 again", lambda: led.refund(s1["operation_id"], idempotency_key="r1", amount=5, reason="sorry"))
    step("r2", lambda: led.refund(s1["operation_id"], idempotency_key="r2"))
    step("r3", lambda: led.refund(s1["operation_id"], idempotency_key="r3", amount=1))  # 409
    step("r4", lambda: led.refund(s2["operation_id"], idempotency_key="r4"))
    step("r5", lambda: led.refund(s3["operation_id"], idempotency_key="r5", amount=2))
    step("big", lambda: led.create_hold(cid, idempotency_key="big", amount=10_000))  # 402
    clock.advance(timedelta(minutes=5))
    step("settle h4", lambda: led.resolve_hold(cid, h4["id"], action="settle", amount=1))  # 409
    clock.set(later + timedelta(hours=1))  # the promo has expired, and h4 with it
    step("sweep", led.sweep)
    # a1 drew on the promo, which has ended: its refund becomes a new grant
    step("r6", lambda: led.refund(done["a1"]["event_id"], idempotency_key="r6"))
    use("b1", "api_call")  # another day: the hard cap has reset
    step("r7", lambda: led.refund(done["b1"]["event_id"], idempotency_key="r7", amount=1))
    bal = tk.balance(cid)
    out.append(("balance", masked({**bal, "grants": sorted(map(repr, bal["grants"]))})))
    return cid, out


def snapshot(tk: Tollkeep, cid: str) -> dict[str, list[str]]:
    """Every row the ledger holds for the customer's wallet, ids masked, in a stable order."""
    out: dict[str, list[str]] = {}
    with tk.db.scope(write=False) as s:
        wid = repo.wallet_id_for_customer(s, cid)
        for name, model in (
            ("operations", Operation),
            ("journal", JournalEntry),
            ("grants", Grant),
            ("holds", Hold),
            ("counters", UsageCounter),
            ("unique", UniqueValue),
        ):
            t = table_of(model)
            rows = s.execute(select(t).where(t.c.wallet_id == wid)).mappings().all()
            skip = {"wallet_id", "customer_id"} | ({"id"} if name == "journal" else set())
            out[name] = sorted(
                repr(masked({k: v for k, v in r.items() if k not in skip} | _ids(r))) for r in rows
            )
    return out


def _ids(row: Any) -> dict[str, Any]:
    """A refund's request hash covers the charge's id, which differs from run to run."""
    return {"request_hash": "<hash of ids>"} if row.get("kind") == "refund" and "request_hash" in row else {}


def test_fast_path_changes_cost_never_meaning(db_url: str) -> None:
    runs: dict[bool, tuple[list[Any], dict[str, list[str]]]] = {}
    for raw in (True, False):
        clock = FrozenClock(START)
        tk = Tollkeep(make_settings(db_url, raw_sql=raw), clock=clock)
        try:
            tk.catalogs.set(parse_catalog(CATALOG))
            cid, answers = scenario(tk, clock, f"parity-{raw}")
            runs[raw] = (answers, snapshot(tk, cid))
            report = tk.verify()
            assert report.ok, report.problems
        finally:
            tk.close()
    raw_answers, raw_rows = runs[True]
    plain_answers, plain_rows = runs[False]
    for a, b in zip(raw_answers, plain_answers, strict=True):
        assert a == b
    assert raw_rows == plain_rows
    # the scenario reaches what it means to: replays, 402, 409s, 429, a refund as a new grant
    codes = {a[2] for a in raw_answers if len(a) > 2 and a[1] == "error"}
    assert {"idempotency_conflict", "insufficient_credits", "cap_exceeded", "hold_expired"} <= codes
    assert {"hold_resolved", "refund_exceeds_charge", "quantity_mismatch"} <= codes
    r6 = next(a[1] for a in raw_answers if a[0] == "r6")
    assert r6["new_grant_id"] == "<id>" and r6["to_original_grants"] == 0
    assert len(raw_rows["journal"]) > 30


@pytest.mark.parametrize("raw", [True, False])
def test_the_switch_takes_the_path_it_says(
    raw: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain_calls = []
    original = rawsql.RawStatement._plain

    def spy(self: rawsql.RawStatement, s: Any, params: Any) -> Any:
        plain_calls.append(self)
        return original(self, s, params)

    monkeypatch.setattr(rawsql.RawStatement, "_plain", spy)
    with Tollkeep(make_settings(f"sqlite:///{tmp_path / 't.db'}", raw_sql=raw)) as tk:
        cid = str(tk.customers.create("a")["id"])
        tk.ledger.grant(cid, 5, idempotency_key="g")
        tk.ledger.set_overdraft(cid, 0)
        tk.ledger.record_usage(UsageRequest(cid, "api_call", None, "k"))
    assert bool(plain_calls) is not raw
