"""Zaprite against a fake API over real HTTP: webhooks are not trusted (every order is fetched),
orders as checkouts, paid orders as payments keyed by the order id, reconcile pages."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from tests.payments.fakes import zaprite_server as fake_zaprite
from tests.payments.fakes.catalogs import checkout_request, provider_catalog
from tests.payments.fakes.zaprite_server import FakeZaprite
from tollkeep.config import Settings
from tollkeep.payments.providers import zaprite
from tollkeep.payments.providers.base import (
    Buyer,
    CannotApply,
    MalformedEvent,
    PaymentSettled,
    Provider,
    ProviderUnavailable,
    Recorded,
)
from tollkeep.payments.providers.zaprite import Zaprite

CATALOG = provider_catalog()
zaprite_server = fake_zaprite.zaprite_server  # the fixture

METADATA = {"tollkeep_checkout": "chk_1", "tollkeep_customer": "cus_1", "tollkeep_pack": "starter"}


def make(fake: FakeZaprite, **kw: object) -> Zaprite:
    args: dict = {"url": fake.url, "api_key": fake.api_key, "timeout": 2.0}
    args.update(kw)
    return Zaprite(**args)


@pytest.fixture
def provider(zaprite_server: FakeZaprite) -> Zaprite:
    return make(zaprite_server)


def tollkeep_order(fake: FakeZaprite, **kw: object) -> dict:
    args: dict = {
        "amount": 1050,
        "currency": "USD",
        "metadata": dict(METADATA),
        "external_uniq_id": "chk_1",
        "customer_data": {"email": "buyer@example.com"},
    }
    args.update(kw)
    return fake.add_order(**args)


def expected(order: dict) -> PaymentSettled:
    return PaymentSettled(
        payment_id=order["id"],
        buyer=Buyer(customer_id="cus_1", email="buyer@example.com"),
        pack="starter",
        amount=1050,
        currency="usd",
        checkout_id="chk_1",
    )


def run(provider: Zaprite, body: bytes, headers: dict | None = None) -> list:
    return list(provider.interpret(provider.verify(body, headers or {}), CATALOG))


# ---- verify: parse only ---------------------------------------------------------------------------
def test_a_webhook_names_its_order(zaprite_server: FakeZaprite, provider: Zaprite) -> None:
    order = tollkeep_order(zaprite_server)
    d = zaprite_server.mark_paid(order["id"])
    event = provider.verify(d.body, d.headers)
    assert event.type == "order" and event.type in provider.handled_types
    assert event.payload["orderId"] == order["id"]
    assert event.event_id.startswith(f"zaprite:{order['id']}:")


@pytest.mark.parametrize(
    "payload",
    [
        {"orderId": "od_1"},
        {"order": {"id": "od_1"}},
        {"data": {"id": "od_1"}},
        {"data": {"orderId": "od_1"}},
        {"id": "od_1"},
    ],
)
def test_the_order_id_is_found_in_each_shape(provider: Zaprite, payload: dict) -> None:
    assert provider.verify(json.dumps(payload).encode(), {}).payload["orderId"] == "od_1"


def test_the_same_delivery_is_one_event_and_another_body_another(provider: Zaprite) -> None:
    body = b'{"orderId": "od_1", "status": "PAID"}'
    assert provider.verify(body, {}).event_id == provider.verify(body, {}).event_id
    forged_first = provider.verify(b'{"orderId": "od_1", "status": "PAID", "x": 1}', {})
    assert forged_first.event_id != provider.verify(body, {}).event_id


@pytest.mark.parametrize("body", [b"not json", b"[]", b"{}", b'{"orderId": ""}', b'{"orderId": 5}', b"\xff"])
def test_a_body_without_an_order_is_malformed(provider: Zaprite, body: bytes) -> None:
    with pytest.raises(MalformedEvent):
        provider.verify(body, {})


# ---- interpret: the API decides -------------------------------------------------------------------
@pytest.mark.parametrize("status", ["PAID", "OVERPAID", "COMPLETE"])
def test_a_paid_order_is_a_payment_keyed_by_the_order_id(
    zaprite_server: FakeZaprite, provider: Zaprite, status: str
) -> None:
    order = tollkeep_order(zaprite_server)
    d = zaprite_server.mark_paid(order["id"], status)
    assert run(provider, d.body, d.headers) == [expected(order)]


def test_every_webhook_of_one_order_gives_the_same_payment_id(
    zaprite_server: FakeZaprite, provider: Zaprite
) -> None:
    order = tollkeep_order(zaprite_server)
    first = zaprite_server.mark_paid(order["id"], "PAID")
    second = zaprite_server.mark_paid(order["id"], "COMPLETE")
    assert provider.verify(first.body, {}).event_id != provider.verify(second.body, {}).event_id
    assert run(provider, first.body) == run(provider, second.body) == [expected(order)]


def test_a_forged_webhook_for_an_unpaid_order_grants_nothing(
    zaprite_server: FakeZaprite, provider: Zaprite
) -> None:
    order = tollkeep_order(zaprite_server)  # PENDING
    forged = {
        "eventType": "order.change",
        "orderId": order["id"],
        "status": "PAID",
        "order": {"id": order["id"], "status": "PAID", "amount": 999999, "metadata": METADATA},
    }
    [action] = run(provider, json.dumps(forged).encode())
    assert isinstance(action, Recorded) and action.details["status"] == "PENDING"
    assert any(r.method == "GET" and r.path == f"/v1/order/{order['id']}" for r in zaprite_server.requests)


def test_a_forged_webhook_for_a_nonexistent_order_grants_nothing(
    zaprite_server: FakeZaprite, provider: Zaprite
) -> None:
    [action] = run(provider, zaprite_server.webhook("od_forged", "PAID").body)
    assert isinstance(action, Recorded) and "no order" in action.note


@pytest.mark.parametrize("status", ["PENDING", "PROCESSING", "UNDERPAID", "EXPIRED"])
def test_unpaid_orders_are_recorded(zaprite_server: FakeZaprite, provider: Zaprite, status: str) -> None:
    order = tollkeep_order(zaprite_server, status=status)
    [action] = run(provider, zaprite_server.webhook(order["id"], "PAID").body)
    assert isinstance(action, Recorded) and action.details["status"] == status


def test_an_order_not_made_by_tollkeep_is_only_recorded(
    zaprite_server: FakeZaprite, provider: Zaprite
) -> None:
    order = zaprite_server.add_order(metadata={"shop": "other"})
    d = zaprite_server.mark_paid(order["id"])
    [action] = run(provider, d.body)
    assert isinstance(action, Recorded)


def test_an_unknown_plan_cannot_apply(zaprite_server: FakeZaprite, provider: Zaprite) -> None:
    order = tollkeep_order(zaprite_server, metadata={"tollkeep_checkout": "c", "tollkeep_plan": "gone"})
    d = zaprite_server.mark_paid(order["id"])
    with pytest.raises(CannotApply, match="gone"):
        run(provider, d.body)


def test_an_amount_that_is_not_minor_units_cannot_apply(
    zaprite_server: FakeZaprite, provider: Zaprite
) -> None:
    order = tollkeep_order(zaprite_server)
    d = zaprite_server.mark_paid(order["id"])
    zaprite_server.orders[order["id"]]["amount"] = "10.50"
    with pytest.raises(CannotApply, match="minor units"):
        run(provider, d.body)


def test_interpret_when_zaprite_fails_is_retried_later(
    zaprite_server: FakeZaprite, provider: Zaprite
) -> None:
    order = tollkeep_order(zaprite_server)
    event = provider.verify(zaprite_server.mark_paid(order["id"]).body, {})
    zaprite_server.fail_status = 502
    with pytest.raises(ProviderUnavailable):
        provider.interpret(event, CATALOG)
    zaprite_server.fail_status = None
    assert list(provider.interpret(event, CATALOG)) == [expected(order)]


# ---- checkout -------------------------------------------------------------------------------------
def test_checkout_creates_an_order_carrying_our_metadata(
    zaprite_server: FakeZaprite, provider: Zaprite
) -> None:
    created = provider.create_checkout(checkout_request(checkout_id="chk_9", customer_id="cus_9"))
    order = zaprite_server.orders[created.provider_ref]
    assert created.url == order["checkoutUrl"]
    assert (order["amount"], order["currency"], order["externalUniqId"]) == (1050, "USD", "chk_9")
    assert order["metadata"] == {
        "tollkeep_checkout": "chk_9",
        "tollkeep_customer": "cus_9",
        "tollkeep_pack": "starter",
    }
    assert order["redirectUrl"] == "https://seller.example/thanks"
    assert order["customerData"] == {"email": "buyer@example.com"}
    assert order["label"] == "Starter pack"
    [action] = run(provider, zaprite_server.mark_paid(created.provider_ref).body)
    assert isinstance(action, PaymentSettled)
    assert (action.payment_id, action.checkout_id, action.buyer.customer_id) == (
        created.provider_ref,
        "chk_9",
        "cus_9",
    )


@pytest.mark.parametrize("status", [500, 503])
def test_checkout_when_zaprite_fails(zaprite_server: FakeZaprite, provider: Zaprite, status: int) -> None:
    zaprite_server.fail_status = status
    with pytest.raises(ProviderUnavailable, match=str(status)):
        provider.create_checkout(checkout_request())


def test_checkout_when_zaprite_times_out(zaprite_server: FakeZaprite) -> None:
    zaprite_server.delay = 2.0
    with pytest.raises(ProviderUnavailable, match="did not answer"):
        make(zaprite_server, timeout=0.2).create_checkout(checkout_request())


def test_a_refused_api_key_says_which_setting_and_not_the_key(zaprite_server: FakeZaprite) -> None:
    with pytest.raises(ProviderUnavailable) as err:
        make(zaprite_server, api_key="zk-wrong-456").create_checkout(checkout_request())
    assert "TOLLKEEP_ZAPRITE_API_KEY" in err.value.message
    assert "zk-wrong-456" not in str(err.value.to_dict())


# ---- reconcile ------------------------------------------------------------------------------------
def test_reconcile_pages_through_paid_orders_since(zaprite_server: FakeZaprite) -> None:
    provider = make(zaprite_server, page_size=2)
    since = datetime.now(UTC) - timedelta(hours=1)
    old = tollkeep_order(zaprite_server, created_at=since - timedelta(days=2))
    zaprite_server.mark_paid(old["id"], paid_at=since - timedelta(days=1))
    paid = [tollkeep_order(zaprite_server) for _ in range(5)]
    for i, order in enumerate(paid):
        zaprite_server.mark_paid(order["id"], "PAID" if i % 2 else "COMPLETE")
    tollkeep_order(zaprite_server)  # pending
    zaprite_server.requests.clear()

    events = provider.settled_since(since)

    assert sorted(e.event_id for e in events) == sorted(f"reconcile:{o['id']}" for o in paid)
    assert [r.query["page"] for r in zaprite_server.requests] == [["1"], ["2"], ["3"], ["4"]]
    for event in events:
        order = zaprite_server.orders[event.payload["orderId"]]
        [action] = provider.interpret(event, CATALOG)
        assert action == expected(order)
        assert run(provider, zaprite_server.webhook(order["id"]).body) == [action]


def test_reconcile_when_zaprite_fails(zaprite_server: FakeZaprite, provider: Zaprite) -> None:
    zaprite_server.fail_status = 500
    with pytest.raises(ProviderUnavailable):
        provider.settled_since(datetime(2024, 1, 1, tzinfo=UTC))


# ---- configuration --------------------------------------------------------------------------------
def test_from_settings() -> None:
    assert zaprite.from_settings(Settings()) is None
    assert zaprite.from_settings(Settings(zaprite_url="https://api.zaprite.com")) is None
    p = zaprite.from_settings(Settings(zaprite_url="https://api.zaprite.com", zaprite_api_key="k"))
    assert isinstance(p, Zaprite) and isinstance(p, Provider) and p.name == "zaprite"
