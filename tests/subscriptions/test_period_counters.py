"""Caps and tier counters follow the subscription's own periods (issue #10), through the real
runtime on SQLite and PostgreSQL, the renewals driven by the test clock (``POST
/admin/test-clock``, which runs the renewal worker) and the invoices settled over HTTP.

The customer subscribes on January 31st of a leap year at 17:00 UTC: the cycles are
[Jan 31, Feb 29), [Feb 29, Mar 31), ... (month ends clamped, counted from the anchor). A hard
cap of 5 calls a month and a graduated price (10 credits for each of the first 2 searches of
the month, then 1) must reset on the 29th of February at 17:00 and not on the 1st.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.conftest import bearer
from tests.factories import new_customer
from tests.subscriptions.helpers import advance, at
from tollkeep.kit.clock import FrozenClock
from tollkeep.kit.errors import CapExceeded
from tollkeep.ledger.models import Wallet
from tollkeep.ledger.service import UsageRequest
from tollkeep.runtime import Tollkeep

CATALOG = """
version = "period-test"
default_plan = "free"

[credits]
unit = "credit"
per_credit = 1

[anonymous]
allowance = 0

[meters.call]
aggregation = "count"

[meters.call.price]
model = "flat"
amount = 1

[meters.search]
aggregation = "count"

[meters.search.price]
model = "graduated"
tiers = [{ up_to = 2, unit_price = 10 }, { up_to = "inf", unit_price = 1 }]

[plans.free]
name = "Free"

[plans.free.allowance]
amount = 1000
period = "lifetime"

[[plans.free.caps]]
meter = "call"
limit = 5
period = "month"

[plans.pro]
name = "Pro"
period = "month"
grace_days = 3

[plans.pro.prices]
usd = 2900

[plans.pro.allowance]
amount = 100000
period = "month"

[[plans.pro.caps]]
meter = "call"
limit = 5
period = "month"

[plans.yearly]
name = "Yearly"
period = "year"
grace_days = 3

[plans.yearly.prices]
usd = 29000

[plans.yearly.allowance]
amount = 100000
period = "month"

[[plans.yearly.caps]]
meter = "call"
limit = 5
period = "month"
"""

START = datetime(2028, 1, 31, 17, 0, tzinfo=UTC)
_n = count()


@pytest.fixture
def catalog_file(tmp_path: Path) -> Path:
    path = tmp_path / "tollkeep.toml"
    path.write_text(CATALOG)
    return path


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(START)


@pytest.fixture
def buyer(sclient: TestClient) -> Iterator[tuple[str, dict[str, str]]]:
    cid, key = new_customer(sclient, "buyer")
    yield cid, bearer(key)


def use(c: TestClient, auth: dict[str, str], meter: str) -> Any:
    return c.post("/v1/usage", json={"meter": meter, "idempotency_key": f"u{next(_n)}"}, headers=auth)


def calls_admitted(c: TestClient, auth: dict[str, str], tries: int) -> tuple[int, str | None]:
    """Try ``tries`` calls: (how many passed, the refusal's resets_at)."""
    ok, resets = 0, None
    for _ in range(tries):
        r = use(c, auth, "call")
        if r.status_code == 200:
            ok += 1
        else:
            assert r.status_code == 429, r.text
            assert r.json()["error"]["code"] == "cap_exceeded"
            resets = r.json()["error"]["resets_at"]
    return ok, resets


def searches(c: TestClient, auth: dict[str, str], n: int) -> list[int]:
    out = []
    for _ in range(n):
        r = use(c, auth, "search")
        assert r.status_code == 200, r.text
        out.append(r.json()["charged"])
    return out


def period(c: TestClient, auth: dict[str, str]) -> dict[str, Any]:
    p: dict[str, Any] = c.get("/v1/balance", headers=auth).json()["usage_period"]
    return p


def subscribe(c: TestClient, cid: str, plan: str) -> dict[str, Any]:
    r = c.post("/admin/subscriptions", json={"customer_id": cid, "plan": plan, "provider": "manual"})
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


def settle_open_invoice(c: TestClient, sid: str) -> None:
    opened = [
        i for i in c.get(f"/admin/subscriptions/{sid}/invoices").json()["data"] if i["status"] == "open"
    ]
    assert len(opened) == 1, opened
    r = c.post(f"/admin/invoices/{opened[0]['id']}/settle")
    assert r.status_code == 200, r.text


def test_renewal_resets_caps_and_tiers_on_the_subscription_day(
    sclient: TestClient, buyer: tuple[str, dict[str, str]]
) -> None:
    c, (cid, auth) = sclient, buyer
    # not subscribed: calendar months
    assert period(c, auth) == {
        "start": "2028-01-01T00:00:00Z",
        "end": "2028-02-01T00:00:00Z",
        "source": "calendar",
    }
    assert calls_admitted(c, auth, 2) == (2, None)

    sub = subscribe(c, cid, "pro")
    sid = sub["id"]
    assert sub["current_period_end"] == "2028-02-29T17:00:00Z"  # Jan 31 + 1 month, clamped (leap year)
    assert period(c, auth) == {
        "start": "2028-01-31T17:00:00Z",
        "end": "2028-02-29T17:00:00Z",
        "source": "subscription",
    }
    # the subscription's cycle 1 counts from its start: 5 calls, the 6th refused until the renewal
    assert calls_admitted(c, auth, 7) == (5, "2028-02-29T17:00:00Z")
    assert searches(c, auth, 3) == [10, 10, 1]

    # the calendar month turns: nothing resets
    advance(c, datetime(2028, 2, 1, tzinfo=UTC))
    assert period(c, auth)["start"] == "2028-01-31T17:00:00Z"
    assert calls_admitted(c, auth, 1) == (0, "2028-02-29T17:00:00Z")
    assert searches(c, auth, 1) == [1]

    # the cycle ends: past_due, the renewal invoice open; what is used now is the next cycle's
    advance(c, at(sub["current_period_end"]))
    assert c.get(f"/admin/subscriptions/{sid}").json()["status"] == "past_due"
    assert period(c, auth) == {
        "start": "2028-02-29T17:00:00Z",
        "end": "2028-03-31T17:00:00Z",
        "source": "subscription",
    }
    assert calls_admitted(c, auth, 1) == (1, None)
    assert searches(c, auth, 1) == [10]  # the first tier again

    # paid: cycle 2, the same period; its counters go on from what the past-due days used
    settle_open_invoice(c, sid)
    sub = c.get(f"/admin/subscriptions/{sid}").json()
    assert (sub["status"], sub["cycle"], sub["current_period_start"], sub["current_period_end"]) == (
        "active",
        2,
        "2028-02-29T17:00:00Z",
        "2028-03-31T17:00:00Z",
    )
    assert period(c, auth)["start"] == "2028-02-29T17:00:00Z"
    assert calls_admitted(c, auth, 6) == (4, "2028-03-31T17:00:00Z")
    assert searches(c, auth, 2) == [10, 1]
    advance(c, datetime(2028, 3, 1, tzinfo=UTC))  # March 1st: still cycle 2
    assert calls_admitted(c, auth, 1) == (0, "2028-03-31T17:00:00Z")

    # unpaid past the end + grace: lapsed, back on the free plan and on calendar months (March's
    # calendar counter is fresh: the subscription counted its own)
    advance(c, datetime(2028, 4, 3, 17, 0, 1, tzinfo=UTC))
    assert c.get(f"/admin/subscriptions/{sid}").json()["status"] == "lapsed"
    assert c.get(f"/admin/customers/{cid}").json()["plan"] == "free"
    assert period(c, auth) == {
        "start": "2028-04-01T00:00:00Z",
        "end": "2028-05-01T00:00:00Z",
        "source": "calendar",
    }
    assert calls_admitted(c, auth, 6) == (5, "2028-05-01T00:00:00Z")
    assert c.get("/admin/ledger/verify").json()["ok"] is True


def test_yearly_plan_month_caps_follow_the_anchor(
    sclient: TestClient, buyer: tuple[str, dict[str, str]]
) -> None:
    """Monthly caps inside a yearly cycle: months counted from the subscription's anchor."""
    c, (cid, auth) = sclient, buyer
    sub = subscribe(c, cid, "yearly")
    assert sub["current_period_end"] == "2029-01-31T17:00:00Z"
    assert calls_admitted(c, auth, 6) == (5, "2028-02-29T17:00:00Z")
    advance(c, datetime(2028, 2, 1, tzinfo=UTC))
    assert calls_admitted(c, auth, 1) == (0, "2028-02-29T17:00:00Z")
    advance(c, datetime(2028, 2, 29, 17, tzinfo=UTC))  # no renewal: the next anchored month
    assert period(c, auth) == {
        "start": "2028-02-29T17:00:00Z",
        "end": "2028-03-31T17:00:00Z",
        "source": "subscription",
    }
    assert calls_admitted(c, auth, 6) == (5, "2028-03-31T17:00:00Z")
    advance(c, datetime(2028, 4, 30, 17, tzinfo=UTC))  # Apr 30 (clamped) → May 31
    assert period(c, auth)["start"] == "2028-04-30T17:00:00Z"
    assert period(c, auth)["end"] == "2028-05-31T17:00:00Z"


def test_cancel_goes_back_to_calendar_months(sclient: TestClient, buyer: tuple[str, dict[str, str]]) -> None:
    c, (cid, auth) = sclient, buyer
    sid = subscribe(c, cid, "pro")["id"]
    assert period(c, auth)["source"] == "subscription"
    r = c.post(f"/admin/subscriptions/{sid}/cancel", json={"at_period_end": False})
    assert r.status_code == 200, r.text
    assert period(c, auth)["source"] == "calendar"


def _wallet_periods(tk: Tollkeep, cid: str) -> tuple[Any, ...]:
    w = Wallet.__table__
    with tk.db.scope(write=False) as s:
        row = s.execute(
            select(w.c.period_anchor, w.c.period_since, w.c.period_until).where(w.c.customer_id == cid)
        ).one()
    return tuple(row)


def _storm(tk: Tollkeep, cid: str, n: int) -> int:
    """``n`` calls at once from as many threads: how many the cap admitted."""
    go = threading.Event()

    def one(i: int) -> bool:
        go.wait(timeout=30)
        try:
            tk.ledger.record_usage(UsageRequest(cid, "call", None, f"storm-{next(_n)}-{i}"))
        except CapExceeded:
            return False
        return True

    with ThreadPoolExecutor(max_workers=n) as pool:
        futures = [pool.submit(one, i) for i in range(n)]
        go.set()
        return sum(f.result() for f in futures)


def test_a_cap_admits_exactly_n_per_subscription_period_under_concurrency(
    stk: Tollkeep, sclient: TestClient, buyer: tuple[str, dict[str, str]]
) -> None:
    c, (cid, _) = sclient, buyer
    sid = subscribe(c, cid, "pro")["id"]
    assert _wallet_periods(stk, cid) == (START, START, datetime(2028, 3, 3, 17, tzinfo=UTC))  # end + grace
    assert _storm(stk, cid, 16) == 5
    advance(c, datetime(2028, 2, 1, tzinfo=UTC))
    assert _storm(stk, cid, 16) == 0  # the calendar month turned: nothing reset
    advance(c, datetime(2028, 2, 29, 17, tzinfo=UTC))
    settle_open_invoice(c, sid)
    assert _wallet_periods(stk, cid)[2] == datetime(2028, 4, 3, 17, tzinfo=UTC)
    assert _storm(stk, cid, 16) == 5
    assert _storm(stk, cid, 4) == 0
