"""The renewal worker: conversion with the rate audit, back-off and stop after 5 failures,
cancel at period end, trials, early and duplicate renewals, and (PostgreSQL) two workers that
never invoice one cycle twice."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.conftest import make_settings
from tollkeep.kit.clock import FrozenClock
from tollkeep.ledger import UsageRequest
from tollkeep.outbox.models import OutboxEvent
from tollkeep.runtime import Tollkeep
from tollkeep.subscriptions import InvoiceProviderError, InvoiceRequest, ProviderInvoice
from tollkeep.subscriptions.models import Invoice


def at(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def customer(tk: Tollkeep, ext: str = "c1") -> str:
    return str(tk.customers.create(ext)["id"])


def until(tk: Tollkeep, when: str, extra: int = 1) -> dict[str, Any]:
    assert tk.test_clock is not None
    secs = int((at(when) - tk.clock.now()).total_seconds()) + extra
    return tk.advance_test_clock(max(secs, 0))


def balance(tk: Tollkeep, cid: str) -> int:
    return int(tk.balance(cid)["balance"])


def topics(tk: Tollkeep, topic: str) -> list[dict[str, Any]]:
    ob = OutboxEvent.__table__
    with tk.db.scope(write=False) as s:
        rows = s.execute(select(ob.c.payload).where(ob.c.topic == topic).order_by(ob.c.id)).all()
    return [r.payload for r in rows]


class Flaky:
    """A provider that fails ``fail`` times, then creates invoices (counting every call)."""

    name = "flaky"

    def __init__(self, fail: int = 10**9) -> None:
        self.fail = fail
        self.calls: list[InvoiceRequest] = []
        self.lock = threading.Lock()

    def create_invoice(self, req: InvoiceRequest) -> ProviderInvoice:
        with self.lock:
            self.calls.append(req)
            if len(self.calls) <= self.fail:
                raise InvoiceProviderError("provider down")
        return ProviderInvoice(ref=f"prov_{req.invoice_id}", pay_url=f"https://pay.example/{req.invoice_id}")


def test_invoice_creation_backs_off_then_stops_after_5_failures(stk: Tollkeep) -> None:
    flaky = Flaky()
    stk.subscriptions.register_provider(flaky)
    cid = customer(stk)
    sub = stk.subscriptions.create(cid, "pro", provider="flaky")
    until(stk, sub["current_period_end"])
    assert len(flaky.calls) == 1
    for n, wait in enumerate((300, 1800, 7200, 21600), start=2):
        stk.advance_test_clock(wait - 2)  # not yet
        assert len(flaky.calls) == n - 1
        stk.advance_test_clock(2)
        assert len(flaky.calls) == n
    view = stk.subscriptions.get(sub["id"])
    assert view["status"] == "past_due"
    assert view["renewal"] == {
        "failures": 5,
        "error": "InvoiceProviderError: provider down",
        "next_attempt_at": None,
        "stopped": True,
    }
    [inv] = stk.subscriptions.invoices(sub["id"])
    assert (inv["status"], inv["attempts"], inv["cycle"]) == ("draft", 5, 2)
    assert inv["last_error"] == "InvoiceProviderError: provider down"
    stk.advance_test_clock(43200)
    assert len(flaky.calls) == 5  # stopped
    failed = topics(stk, "subscription.renewal_failed")
    assert [e["failures"] for e in failed] == [1, 2, 3, 4, 5]
    assert [e["stopped"] for e in failed] == [False] * 4 + [True]

    # the operator retries once the provider is back: the same invoice (one per cycle) opens
    flaky.fail = 0
    stk.subscriptions.retry_renewal(sub["id"])
    stk.advance_test_clock(0)
    [inv] = stk.subscriptions.invoices(sub["id"])
    assert inv["status"] == "open" and inv["provider_invoice_ref"] == f"prov_{inv['id']}"
    assert inv["pay_url"] and {c.invoice_id for c in flaky.calls} == {inv["id"]}
    assert topics(stk, "subscription.renewal_pending")[-1]["invoice_id"] == inv["id"]
    # the grace still runs from the period's end: lapsed 3 days after it
    until(stk, stk.subscriptions.get(sub["id"])["grace_until"])
    assert stk.subscriptions.get(sub["id"])["status"] == "lapsed"


@pytest.fixture
def settings_kw(request: pytest.FixtureRequest) -> dict[str, object]:
    return dict(getattr(request, "param", {}))


@pytest.mark.parametrize(
    "settings_kw",
    [{"subscriptions_invoice_currency": "BTC", "subscriptions_fixed_rates": {"USD/BTC": "0.00001234567"}}],
    indirect=True,
)
def test_invoices_in_another_currency_record_the_rate(stk: Tollkeep) -> None:
    cid = customer(stk)
    sub = stk.subscriptions.create(cid, "pro")
    assert (sub["currency"], sub["invoice_currency"]) == ("USD", "BTC")
    until(stk, sub["current_period_end"])
    [inv] = stk.subscriptions.invoices(sub["id"])
    # 29.00 USD x 0.00001234567 = 0.000358024430 BTC = 35802.443 sats → 35802 (half up, once)
    assert (inv["amount"], inv["currency"]) == (35802, "BTC")
    assert inv["rate_audit"] == {
        "listed_currency": "USD",
        "listed_amount": 2900,
        "rate": "0.00001234567",
        "rate_source": "fixed",
        "rated_at": inv["opened_at"],
        "rounding": "half_up",
    }


@pytest.mark.parametrize("settings_kw", [{"subscriptions_invoice_currency": "BTC"}], indirect=True)
def test_a_missing_rate_is_a_failure_that_backs_off(stk: Tollkeep) -> None:
    cid = customer(stk)
    sub = stk.subscriptions.create(cid, "pro")
    until(stk, sub["current_period_end"])
    view = stk.subscriptions.get(sub["id"])
    assert view["renewal"]["failures"] == 1 and "no USD/BTC rate" in view["renewal"]["error"]
    assert view["renewal"]["next_attempt_at"] is not None
    assert stk.subscriptions.invoices(sub["id"]) == []  # nothing to invoice without a rate


def test_cancel_at_period_end_cancels_instead_of_invoicing(stk: Tollkeep) -> None:
    cid = customer(stk)
    key_id = stk.keys.create(cid)["id"]
    sub = stk.subscriptions.create(cid, "pro")
    out = stk.subscriptions.cancel(sub["id"], at_period_end=True)
    assert out["status"] == "active" and out["cancel_at_period_end"] is True
    until(stk, sub["current_period_end"])
    view = stk.subscriptions.get(sub["id"])
    assert view["status"] == "canceled" and view["canceled_at"]
    assert stk.subscriptions.invoices(sub["id"]) == []
    assert stk.customers.get(cid)["plan"] == "free"
    assert stk.keys.get(key_id)["status"] == "suspended"  # pro says suspend_keys_on_cancel
    assert [e["at_period_end"] for e in topics(stk, "subscription.canceled")] == [True]


def test_cancel_now_voids_the_open_invoice(stk: Tollkeep) -> None:
    cid = customer(stk)
    sub = stk.subscriptions.create(cid, "pro")
    until(stk, sub["current_period_end"])
    [inv] = stk.subscriptions.invoices(sub["id"])
    stk.subscriptions.cancel(sub["id"])
    assert stk.subscriptions.get_invoice(inv["id"])["status"] == "void"
    from tollkeep.kit.errors import Conflict

    with pytest.raises(Conflict) as e:
        stk.subscriptions.settle_invoice(inv["id"])
    assert e.value.code == "invoice_void"


def test_a_trial_then_the_first_paid_cycle_in_the_chosen_currency(stk: Tollkeep) -> None:
    cid = customer(stk)
    sub = stk.subscriptions.create(cid, "yearly", currency="eur")
    assert sub["status"] == "trialing" and sub["trial_end"] == sub["current_period_end"]
    assert at(sub["current_period_end"]) - at(sub["current_period_start"]) == timedelta(days=14)
    until(stk, sub["current_period_end"])
    [inv] = stk.subscriptions.invoices(sub["id"])
    assert (inv["cycle"], inv["amount"], inv["currency"]) == (2, 27000, "EUR")
    start, end = at(inv["period_start"]), at(inv["period_end"])
    assert start == at(sub["current_period_end"]) and (end.year, end.month, end.day) == (
        start.year + 1,
        start.month,
        start.day,
    )


def test_early_and_duplicate_renewals_never_double_the_allowance(stk: Tollkeep) -> None:
    cid = customer(stk)
    sub = stk.subscriptions.create(cid, "pro")
    assert balance(stk, cid) == 1010  # 10 free carried over + cycle 1
    stk.ledger.record_usage(UsageRequest(cid, "api_call", None, idempotency_key="u1"))
    # early: the worker, the calendar renewal and a refresh before the period ends change nothing
    for _ in range(3):
        stk.advance_test_clock(86400)
        stk.plans.renew_allowances()
        stk.executor.call(stk.plans.refresh_allowance_fn(cid))
    assert balance(stk, cid) == 1009 and stk.subscriptions.invoices(sub["id"]) == []
    until(stk, sub["current_period_end"])
    [inv] = stk.subscriptions.invoices(sub["id"])
    # settled three times (a webhook delivered again, an operator clicking twice)
    outs = [stk.subscriptions.settle_invoice(inv["id"], "pay_1") for _ in range(3)]
    assert [o["changed"] for o in outs] == [True, False, False]
    for _ in range(3):
        stk.advance_test_clock(60)
        stk.executor.call(stk.plans.refresh_allowance_fn(cid))
    assert balance(stk, cid) == 10 + 1000  # cycle 1's allowance expired; cycle 2's granted once
    assert len(stk.subscriptions.invoices(sub["id"])) == 1
    renewed = topics(stk, "subscription.renewed")
    assert [(e["cycle"], e["reactivated"]) for e in renewed] == [(2, False)]
    assert stk.verify().ok


def test_a_settle_over_several_periods_late_catches_up_one_cycle_at_a_time(stk: Tollkeep) -> None:
    cid = customer(stk)
    sub = stk.subscriptions.create(cid, "pro")
    stk.advance_test_clock(100 * 86400)  # ~3 months, nobody paid: past_due → lapsed
    view = stk.subscriptions.get(sub["id"])
    assert view["status"] == "lapsed" and view["cycle"] == 1
    [inv2] = stk.subscriptions.invoices(sub["id"])
    stk.subscriptions.settle_invoice(inv2["id"])
    stk.advance_test_clock(0)  # cycle 2 is over already: cycle 3 is due at once
    view = stk.subscriptions.get(sub["id"])
    assert view["cycle"] == 2 and view["status"] in ("past_due", "lapsed")
    assert [i["cycle"] for i in stk.subscriptions.invoices(sub["id"])] == [2, 3]


def test_two_workers_never_invoice_one_cycle_twice(
    db_url: str, clock: FrozenClock, catalog_file: Any
) -> None:
    settings = make_settings(db_url, catalog_path=str(catalog_file))
    counter = Flaky(fail=0)
    a, b = Tollkeep(settings, clock=clock), Tollkeep(settings, clock=clock, migrate=False)
    try:
        for rt in (a, b):
            rt.subscriptions.register_provider(counter)
        subs = [a.subscriptions.create(customer(a, f"c{i}"), "pro", provider="flaky") for i in range(30)]
        clock.advance(timedelta(days=32))
        results: list[dict[str, int]] = []

        def work(rt: Tollkeep) -> None:
            for _ in range(5):
                results.append(rt.subscriptions.run_due(limit=7))

        threads = [threading.Thread(target=work, args=(rt,)) for rt in (a, b, a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        a.subscriptions.run_due()
        inv = Invoice.__table__
        with a.db.scope(write=False) as s:
            per_cycle = s.execute(
                select(inv.c.subscription_id, inv.c.cycle, func.count()).group_by(
                    inv.c.subscription_id, inv.c.cycle
                )
            ).all()
        assert len(per_cycle) == len(subs) and all(n == 1 for *_, n in per_cycle)
        assert len(counter.calls) == len(subs)  # one provider invoice per cycle
        assert sum(r["invoiced"] for r in results) == len(subs)
        assert {a.subscriptions.get(x["id"])["status"] for x in subs} == {"past_due"}
        assert a.verify().ok
    finally:
        b.close()
        a.close()


def test_a_worker_killed_mid_renewal_leaves_one_invoice_for_the_cycle(stk: Tollkeep) -> None:
    from decimal import Decimal
    from functools import partial

    from tollkeep.kit.executor import Command
    from tollkeep.subscriptions import Rate
    from tollkeep.subscriptions import repository as repo

    counter = Flaky(fail=0)
    stk.subscriptions.register_provider(counter)
    cid = customer(stk)
    sub = stk.subscriptions.create(cid, "pro", provider="flaky")
    assert stk.test_clock is not None
    stk.test_clock.advance(at(sub["current_period_end"]) - stk.clock.now() + timedelta(seconds=1))
    now = stk.clock.now()
    # a worker claims it, stores the draft, and dies before calling the provider
    assert len(stk.executor.call(lambda s: repo.claim_due(s, now, now + timedelta(seconds=120), 10))) == 1
    svc = stk.subscriptions
    job, _, moved = stk.executor.call(Command(partial(svc._advance, sub_id=sub["id"]), cid))
    assert job is not None and moved == ["past_due"]
    draft = stk.executor.call(
        Command(partial(svc._draft, job=job, rate=Rate(Decimal(1), "identity", now), amount=2900), cid)
    )
    assert svc.run_due()["claimed"] == 0  # leased: nobody else takes it meanwhile
    stk.advance_test_clock(121)  # the lease ran out: another worker finishes the same invoice
    [inv] = svc.invoices(sub["id"])
    assert (inv["id"], inv["status"], inv["cycle"]) == (draft, "open", 2)
    assert [c.invoice_id for c in counter.calls] == [draft]


def test_the_payments_applier_settles_inside_its_own_unit_of_work(stk: Tollkeep) -> None:
    cid = customer(stk)
    sub = stk.subscriptions.create(cid, "pro")
    until(stk, sub["current_period_end"])
    [inv] = stk.subscriptions.invoices(sub["id"])
    cmd = stk.subscriptions.settle_invoice_fn(inv["id"], "btcpay:inv_42")
    out = stk.subscriptions.after_settle(stk.executor.call(lambda s: cmd(s)))
    assert out["changed"] is True and out["subscription"]["cycle"] == 2
    assert out["invoice"]["provider_payment_ref"] == "btcpay:inv_42"
    again = stk.subscriptions.after_settle(stk.executor.call(cmd))
    assert again["changed"] is False and balance(stk, cid) == 1010


def test_subscribing_to_the_plan_already_held_does_not_overlap_two_allowances(stk: Tollkeep) -> None:
    cid = customer(stk)
    stk.plans.change_plan(cid, "pro")  # on pro by calendar months (e.g. set by an operator)
    assert balance(stk, cid) == 10 + 1000
    stk.ledger.record_usage(UsageRequest(cid, "api_call", None, idempotency_key="u1"))
    sub = stk.subscriptions.create(cid, "pro")
    # the calendar month's allowance (999 left) ends; cycle 1's is granted: not both
    assert balance(stk, cid) == 10 + 1000
    until(stk, sub["current_period_end"])
    assert balance(stk, cid) == 10  # cycle 1 ended unpaid: no calendar allowance creeps back
    stk.plans.renew_allowances()
    assert balance(stk, cid) == 10
