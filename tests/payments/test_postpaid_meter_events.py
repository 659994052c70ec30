"""Postpaid metered plans: usage of a plan's Stripe meters goes to Stripe's Billing Meter Events
through the outbox, once per usage event (our event id is the meter event's identifier), off the
request path. The real SDK talks to the fake Stripe server (tests/payments/fakes/stripe_server.py)."""

from __future__ import annotations

import tempfile
from datetime import timedelta
from pathlib import Path

import pytest

from tests.payments.fakes import stripe_server as fakes
from tollkeep.catalog import DEFAULT_CATALOG_TEXT, CatalogError, load_catalog
from tollkeep.kit.clock import FrozenClock
from tollkeep.ledger import UsageRequest
from tollkeep.payments import repository as payments_repo
from tollkeep.payments.meters import METER_TOPIC
from tollkeep.payments.providers.stripe import StripeProvider
from tollkeep.runtime import Tollkeep

localstripe_url = fakes.localstripe_url
stripe_fake = fakes.stripe_fake

POSTPAID = """
[meters.team_call]
aggregation = "count"

[meters.team_tokens]
aggregation = "sum"

[plans.team]
name = "Team (billed monthly in arrears)"
prices = { usd = 0 }
billing = "postpaid"
stripe_price_id = "price_team_metered"
stripe_meters = { team_call = "team_calls", team_tokens = "team_tokens" }
"""


def _catalog(tk: Tollkeep, extra: str = POSTPAID) -> None:
    path = Path(tempfile.mkdtemp()) / "tollkeep.toml"
    path.write_text(DEFAULT_CATALOG_TEXT + extra)
    tk.catalogs._path = path
    tk.reload_catalog()


@pytest.fixture
def stripe(tk: Tollkeep, stripe_fake: fakes.StripeFake) -> StripeProvider:
    provider = StripeProvider(
        fakes.SECRET_KEY, fakes.WEBHOOK_SECRET, api_base=stripe_fake.url, timeout=5.0, max_network_retries=0
    )
    tk.providers.register(provider)
    _catalog(tk)
    return provider


def _customer(tk: Tollkeep, name: str, *, stripe_id: str | None) -> str:
    cid = str(tk.customers.create(name)["id"])
    if stripe_id is not None:  # what a Stripe checkout of the plan records
        now = tk.clock.now()
        tk.executor.call(lambda s: payments_repo.link_customer(s, "stripe", f"stripe:{stripe_id}", cid, now))
    return cid


def _use(tk: Tollkeep, cid: str, meter: str, key: str, quantity: int | None = None) -> str:
    from decimal import Decimal

    q = None if quantity is None else Decimal(quantity)
    return str(tk.ledger.record_usage(UsageRequest(cid, meter, q, key))["event_id"])


def _tick(clock: FrozenClock) -> None:
    clock.advance(timedelta(seconds=1))


def _drain(tk: Tollkeep, clock: FrozenClock) -> None:
    """Queue and send everything due (what the payments.meters and outbox.dispatch jobs do)."""
    tk.meters.scan()
    tk.outbox.dispatch()


def test_usage_of_a_postpaid_plan_is_reported_once_per_event(
    tk: Tollkeep, clock: FrozenClock, stripe: StripeProvider, stripe_fake: fakes.StripeFake
) -> None:
    cid = _customer(tk, "team-a", stripe_id="cus_team_a")
    tk.ledger.grant(cid, 100, idempotency_key="g1")
    early = _use(tk, cid, "team_call", "before-plan")  # on the free plan: not Stripe's to bill
    _tick(clock)
    tk.plans.change_plan(cid, "team")
    _tick(clock)
    calls = [_use(tk, cid, "team_call", f"c{i}") for i in range(3)]
    tokens = _use(tk, cid, "team_tokens", "t1", quantity=1234)
    priced = _use(tk, cid, "api_call", "a1")  # a meter the plan does not bill: credits, not Stripe
    _tick(clock)

    assert tk.meters.scan() == {"queued": 4}
    assert tk.meters.scan() == {}  # scanning again queues nothing
    tk.outbox.dispatch()

    events = stripe_fake.meter_events
    assert set(events) == {*calls, tokens}
    assert early not in events and priced not in events
    ev = events[tokens]
    assert ev["event_name"] == "team_tokens"
    assert ev["payload"] == {"stripe_customer_id": "cus_team_a", "value": "1234"}
    assert {events[c]["event_name"] for c in calls} == {"team_calls"}
    assert {events[c]["payload"]["value"] for c in calls} == {"1"}
    keys = {r.idempotency_key for r in stripe_fake.seen("POST", "/v1/billing/meter_events")}
    assert keys == {f"tollkeep-meter-{i}" for i in (*calls, tokens)}
    assert tk.meters.queued() == []  # nothing left to report
    # the postpaid meters cost no credits (the catalog refuses a priced one); api_call did
    assert tk.balance(cid)["balance"] < 100 + tk.catalog.plan("free").allowance.amount  # type: ignore[union-attr]


def test_a_retry_after_stripe_failed_or_lost_its_answer_reports_once(
    tk: Tollkeep, clock: FrozenClock, stripe: StripeProvider, stripe_fake: fakes.StripeFake
) -> None:
    cid = _customer(tk, "team-b", stripe_id="cus_team_b")
    tk.plans.change_plan(cid, "team")
    _tick(clock)
    first = _use(tk, cid, "team_call", "r1")
    _tick(clock)
    tk.meters.scan()
    stripe_fake.lose_next_answers(1)  # Stripe records it, the answer is a 500
    assert tk.outbox.dispatch()["failed"] == 1
    assert set(stripe_fake.meter_events) == {first}
    (row,) = tk.meters.queued()
    assert "500" in (row["last_error"] or "")
    stripe_fake.forget_idempotency_keys()  # the retry is a new request: Stripe's identifier catches it
    clock.advance(timedelta(minutes=2))
    assert tk.outbox.dispatch() == {"delivered": 1, "failed": 0}
    assert set(stripe_fake.meter_events) == {first}
    statuses = [r.status for r in stripe_fake.seen("POST", "/v1/billing/meter_events")]
    assert statuses == [500, 400]  # the second answer: identifier already exists

    second = _use(tk, cid, "team_call", "r2")
    _tick(clock)
    tk.meters.scan()
    stripe_fake.fail_next(1)  # a 500 before Stripe did anything
    assert tk.outbox.dispatch()["failed"] == 1
    clock.advance(timedelta(minutes=2))
    assert tk.outbox.dispatch() == {"delivered": 1, "failed": 0}
    assert set(stripe_fake.meter_events) == {first, second}
    assert tk.meters.queued() == []


def test_a_customer_without_a_stripe_id_stays_queued_visibly(
    tk: Tollkeep, clock: FrozenClock, stripe: StripeProvider, stripe_fake: fakes.StripeFake
) -> None:
    cid = _customer(tk, "team-c", stripe_id=None)
    tk.plans.change_plan(cid, "team")
    _tick(clock)
    op = _use(tk, cid, "team_call", "n1")
    _tick(clock)
    _drain(tk, clock)
    assert stripe_fake.meter_events == {}
    (row,) = tk.meters.queued()
    assert row["topic"] == METER_TOPIC and row["payload"]["identifier"] == op
    assert "no Stripe customer id" in row["last_error"]
    assert row["attempts"] == 1
    # the operator links the customer (a Stripe checkout does it): the next attempt reports it
    now = clock.now()
    tk.executor.call(lambda s: payments_repo.link_customer(s, "stripe", "stripe:cus_team_c", cid, now))
    clock.advance(timedelta(minutes=2))
    assert tk.outbox.dispatch() == {"delivered": 1, "failed": 0}
    assert stripe_fake.meter_events[op]["payload"]["stripe_customer_id"] == "cus_team_c"


def test_leaving_the_plan_reports_its_usage_and_nothing_after(
    tk: Tollkeep, clock: FrozenClock, stripe: StripeProvider, stripe_fake: fakes.StripeFake
) -> None:
    cid = _customer(tk, "team-d", stripe_id="cus_team_d")
    tk.plans.change_plan(cid, "team")
    _tick(clock)
    during = [_use(tk, cid, "team_call", f"d{i}") for i in range(2)]
    _tick(clock)
    tk.plans.change_plan(cid, "free")  # before any scan: the change queues the plan's usage
    assert {r["payload"]["identifier"] for r in tk.meters.queued()} == set(during)
    _tick(clock)
    after = _use(tk, cid, "team_call", "after")  # on the free plan now
    _tick(clock)
    _drain(tk, clock)
    assert set(stripe_fake.meter_events) == set(during)
    assert after not in stripe_fake.meter_events
    # a settled hold of a postpaid meter is usage too
    tk.plans.change_plan(cid, "team")
    _tick(clock)
    hold = tk.ledger.create_hold(cid, meter="team_call", quantity=1, idempotency_key="h1")
    _tick(clock)
    settled = tk.ledger.resolve_hold(cid, hold["id"], action="settle", quantity=1)
    _tick(clock)
    _drain(tk, clock)
    assert settled["operation_id"] in stripe_fake.meter_events


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (POSTPAID.replace('stripe_price_id = "price_team_metered"\n', ""), "needs the Stripe Price"),
        (POSTPAID.replace("team_call = ", "api_call = "), "would pay twice"),
        (POSTPAID.replace('billing = "postpaid"\n', ""), 'only a plan with billing = "postpaid"'),
        (POSTPAID.replace("team_call = ", "nope = "), "unknown meter 'nope'"),
        (POSTPAID.replace('billing = "postpaid"', 'billing = "arrears"'), "must be one of"),
    ],
)
def test_the_catalog_refuses_a_postpaid_plan_that_cannot_work(
    extra: str, message: str, tmp_path: Path
) -> None:
    path = tmp_path / "tollkeep.toml"
    path.write_text(DEFAULT_CATALOG_TEXT + extra)
    with pytest.raises(CatalogError) as err:
        load_catalog(path)
    assert message in str(err.value)


def test_a_postpaid_plan_loads(tmp_path: Path) -> None:
    path = tmp_path / "tollkeep.toml"
    path.write_text(DEFAULT_CATALOG_TEXT + POSTPAID)
    team = load_catalog(path).plan("team")
    assert team is not None and team.postpaid
    assert dict(team.stripe_meters) == {"team_call": "team_calls", "team_tokens": "team_tokens"}


def test_the_cli_lists_what_waits_for_stripe(
    db_url: str, tk: Tollkeep, clock: FrozenClock, stripe: StripeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from typer.testing import CliRunner

    from tollkeep.cli.main import app

    cid = _customer(tk, "team-cli", stripe_id=None)
    tk.plans.change_plan(cid, "team")
    _tick(clock)
    op = _use(tk, cid, "team_call", "cli1")
    _tick(clock)
    _drain(tk, clock)
    monkeypatch.setenv("TOLLKEEP_DATABASE_URL", db_url)
    res = CliRunner().invoke(app, ["payments", "meter-events", "--json"])
    assert res.exit_code == 0, res.output
    (row,) = json.loads(res.output)["data"]
    assert row["payload"]["identifier"] == op and "no Stripe customer id" in row["last_error"]


def test_a_backlog_is_queued_page_by_page(
    tk: Tollkeep, clock: FrozenClock, stripe: StripeProvider, stripe_fake: fakes.StripeFake
) -> None:
    cid = _customer(tk, "team-e", stripe_id="cus_team_e")
    tk.plans.change_plan(cid, "team")
    _tick(clock)
    ops = []
    for i in range(7):
        ops.append(_use(tk, cid, "team_call", f"e{i}"))
        _tick(clock)
    tk.meters.batch_size = 3
    assert [tk.meters.scan() for _ in range(4)] == [{"queued": 3}, {"queued": 3}, {"queued": 1}, {}]
    tk.outbox.dispatch()
    assert set(stripe_fake.meter_events) == set(ops)
