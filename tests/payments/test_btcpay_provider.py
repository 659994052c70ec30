"""BTCPay Server against a fake Greenfield API over real HTTP: BTCPay-Sig, redelivery dedup,
invoices as checkouts, settled invoices as payments (fetched), reconcile pages."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from tests.payments.fakes import btcpay_server as fake_btcpay
from tests.payments.fakes.btcpay_server import Delivery, FakeBTCPay
from tests.payments.fakes.catalogs import checkout_request, provider_catalog
from tollkeep.config import Settings
from tollkeep.payments.providers import btcpay
from tollkeep.payments.providers.base import (
    Buyer,
    CannotApply,
    MalformedEvent,
    PaymentSettled,
    Provider,
    ProviderUnavailable,
    Recorded,
    SignatureInvalid,
)
from tollkeep.payments.providers.btcpay import BTCPay

CATALOG = provider_catalog()
btcpay_server = fake_btcpay.btcpay_server  # the fixture


def make(fake: FakeBTCPay, **kw: object) -> BTCPay:
    args: dict = {
        "url": fake.url,
        "api_key": fake.api_key,
        "store_id": fake.store_id,
        "webhook_secret": fake.webhook_secret,
        "timeout": 2.0,
    }
    args.update(kw)
    return BTCPay(**args)


@pytest.fixture
def provider(btcpay_server: FakeBTCPay) -> BTCPay:
    return make(btcpay_server)


def tollkeep_invoice(fake: FakeBTCPay, **kw: object) -> dict:
    metadata = {
        "orderId": "chk_1",
        "tollkeep_checkout": "chk_1",
        "tollkeep_customer": "cus_1",
        "tollkeep_pack": "starter",
        "buyerEmail": "buyer@example.com",
    }
    args: dict = {"amount": "10.50", "currency": "USD", "metadata": metadata}
    args.update(kw)
    return fake.add_invoice(**args)


# ---- verification ---------------------------------------------------------------------------------
def test_a_signed_delivery_verifies(btcpay_server: FakeBTCPay, provider: BTCPay) -> None:
    invoice = tollkeep_invoice(btcpay_server)
    d = btcpay_server.settle(invoice["id"])
    event = provider.verify(d.body, d.headers)
    assert event.event_id == d.payload["deliveryId"]
    assert event.type == "InvoiceSettled" and event.type in provider.handled_types
    assert event.payload["invoiceId"] == invoice["id"]
    assert event.occurred_at is not None


def test_a_redelivery_is_the_same_inbox_event(btcpay_server: FakeBTCPay, provider: BTCPay) -> None:
    invoice = tollkeep_invoice(btcpay_server)
    first = btcpay_server.settle(invoice["id"])
    again = btcpay_server.redeliver(first)
    assert again.payload["deliveryId"] != first.payload["deliveryId"] and again.payload["isRedelivery"]
    assert (
        provider.verify(again.body, again.headers).event_id
        == provider.verify(first.body, first.headers).event_id
    )


def test_without_original_delivery_id_the_delivery_id_is_the_event_id(
    btcpay_server: FakeBTCPay,
    provider: BTCPay,
) -> None:
    payload = {
        "deliveryId": "D1",
        "type": "InvoiceExpired",
        "invoiceId": "I1",
        "storeId": btcpay_server.store_id,
    }
    body = json.dumps(payload).encode()
    assert provider.verify(body, {"BTCPay-Sig": btcpay_server.sign(body)}).event_id == "D1"


def test_wrong_secret_is_refused(btcpay_server: FakeBTCPay) -> None:
    d = btcpay_server.settle(tollkeep_invoice(btcpay_server)["id"])
    with pytest.raises(SignatureInvalid):
        make(btcpay_server, webhook_secret="another-secret").verify(d.body, d.headers)


def test_forged_signature_is_refused(btcpay_server: FakeBTCPay, provider: BTCPay) -> None:
    d = btcpay_server.settle(tollkeep_invoice(btcpay_server)["id"])
    forged = "sha256=" + hmac.new(b"guess", d.body, hashlib.sha256).hexdigest()
    with pytest.raises(SignatureInvalid):
        provider.verify(d.body, {**d.headers, "BTCPay-Sig": forged})


@pytest.mark.parametrize("header", [None, "", "sha256=", "sha1=00"])
def test_a_missing_signature_is_refused(
    btcpay_server: FakeBTCPay,
    provider: BTCPay,
    header: str | None,
) -> None:
    d = btcpay_server.settle(tollkeep_invoice(btcpay_server)["id"])
    headers = {k: v for k, v in d.headers.items() if k != "BTCPay-Sig"}
    if header is not None:
        headers["btcpay-sig"] = header
    with pytest.raises(SignatureInvalid):
        provider.verify(d.body, headers)


@pytest.mark.parametrize("where", [0, 7, -1])
def test_a_body_changed_by_one_byte_is_refused(
    btcpay_server: FakeBTCPay,
    provider: BTCPay,
    where: int,
) -> None:
    d = btcpay_server.settle(tollkeep_invoice(btcpay_server)["id"])
    body = bytearray(d.body)
    body[where] ^= 0x20
    with pytest.raises(SignatureInvalid):
        provider.verify(bytes(body), d.headers)


@pytest.mark.parametrize(
    "body", [b"not json", b"[1, 2]", b'{"type": "InvoiceSettled"}', b'{"deliveryId": "d"}']
)
def test_signed_but_unreadable_is_malformed(btcpay_server: FakeBTCPay, provider: BTCPay, body: bytes) -> None:
    with pytest.raises(MalformedEvent):
        provider.verify(body, {"BTCPay-Sig": btcpay_server.sign(body)})


# ---- interpretation -------------------------------------------------------------------------------
def expected(invoice: dict) -> PaymentSettled:
    return PaymentSettled(
        payment_id=invoice["id"],
        buyer=Buyer(customer_id="cus_1", email="buyer@example.com"),
        pack="starter",
        amount=1050,
        currency="usd",
        checkout_id="chk_1",
    )


@pytest.mark.parametrize("with_metadata", [True, False])
def test_a_settled_invoice_is_a_payment(
    btcpay_server: FakeBTCPay,
    provider: BTCPay,
    with_metadata: bool,
) -> None:
    invoice = tollkeep_invoice(btcpay_server)
    d = btcpay_server.settle(invoice["id"], with_metadata=with_metadata)
    actions = provider.interpret(provider.verify(d.body, d.headers), CATALOG)
    assert list(actions) == [expected(invoice)]
    # amount and currency are only on the invoice: it is fetched
    assert any(r.method == "GET" and r.path.endswith(invoice["id"]) for r in btcpay_server.requests)


def test_a_bitcoin_invoice_is_in_satoshis(btcpay_server: FakeBTCPay, provider: BTCPay) -> None:
    invoice = tollkeep_invoice(btcpay_server, amount="0.00012345", currency="BTC")
    d = btcpay_server.settle(invoice["id"])
    [action] = provider.interpret(provider.verify(d.body, d.headers), CATALOG)
    assert isinstance(action, PaymentSettled) and (action.amount, action.currency) == (12345, "btc")


@pytest.mark.parametrize(
    ("kind", "make_delivery"),
    [
        ("InvoiceExpired", FakeBTCPay.expire),
        ("InvoiceInvalid", FakeBTCPay.invalidate),
        ("InvoiceProcessing", lambda f, i: f.webhook(i, "InvoiceProcessing", overPaid=False)),
        (
            "InvoiceReceivedPayment",
            lambda f, i: f.webhook(i, "InvoiceReceivedPayment", afterExpiration=False),
        ),
    ],
)
def test_other_invoice_events_are_recorded(
    btcpay_server: FakeBTCPay,
    provider: BTCPay,
    kind: str,
    make_delivery: Callable[[FakeBTCPay, str], Delivery],
) -> None:
    invoice = tollkeep_invoice(btcpay_server)
    d = make_delivery(btcpay_server, invoice["id"])
    event = provider.verify(d.body, d.headers)
    assert event.type == kind and kind in provider.handled_types
    [action] = provider.interpret(event, CATALOG)
    assert isinstance(action, Recorded) and action.details["invoice_id"] == invoice["id"]


def test_invoice_created_is_not_handled(btcpay_server: FakeBTCPay, provider: BTCPay) -> None:
    d = btcpay_server.webhook(tollkeep_invoice(btcpay_server)["id"], "InvoiceCreated")
    assert provider.verify(d.body, d.headers).type not in provider.handled_types


def test_an_invoice_not_made_by_tollkeep_is_only_recorded(
    btcpay_server: FakeBTCPay, provider: BTCPay
) -> None:
    invoice = btcpay_server.add_invoice(metadata={"orderId": "woo-42"})
    d = btcpay_server.settle(invoice["id"])
    [action] = provider.interpret(provider.verify(d.body, d.headers), CATALOG)
    assert isinstance(action, Recorded)


def test_an_unknown_pack_cannot_apply(btcpay_server: FakeBTCPay, provider: BTCPay) -> None:
    invoice = tollkeep_invoice(btcpay_server, metadata={"tollkeep_pack": "gone", "tollkeep_checkout": "c"})
    d = btcpay_server.settle(invoice["id"])
    with pytest.raises(CannotApply, match="gone"):
        provider.interpret(provider.verify(d.body, d.headers), CATALOG)


def test_an_invoice_btcpay_does_not_know_cannot_apply(btcpay_server: FakeBTCPay, provider: BTCPay) -> None:
    d = btcpay_server.webhook("NoSuchInvoice", "InvoiceSettled", with_metadata=False)
    with pytest.raises(CannotApply, match="NoSuchInvoice"):
        provider.interpret(provider.verify(d.body, d.headers), CATALOG)


def test_another_stores_event_is_only_recorded(btcpay_server: FakeBTCPay, provider: BTCPay) -> None:
    invoice = tollkeep_invoice(btcpay_server)
    d = btcpay_server.webhook(invoice["id"], "InvoiceSettled", storeId="OtherStore")
    [action] = provider.interpret(provider.verify(d.body, d.headers), CATALOG)
    assert isinstance(action, Recorded)


# ---- checkout -------------------------------------------------------------------------------------
def test_checkout_creates_an_invoice_carrying_our_metadata(
    btcpay_server: FakeBTCPay, provider: BTCPay
) -> None:
    created = provider.create_checkout(checkout_request(checkout_id="chk_9", customer_id="cus_9"))
    invoice = btcpay_server.invoices[created.provider_ref]
    assert created.url == invoice["checkoutLink"]
    assert created.expires_at == datetime.fromtimestamp(invoice["expirationTime"], UTC)
    assert (invoice["amount"], invoice["currency"]) == ("10.50", "USD")
    assert invoice["metadata"] == {
        "orderId": "chk_9",
        "tollkeep_checkout": "chk_9",
        "tollkeep_customer": "cus_9",
        "tollkeep_pack": "starter",
        "itemDesc": "Starter pack",
        "buyerEmail": "buyer@example.com",
    }
    assert invoice["checkout"]["redirectURL"] == "https://seller.example/thanks"
    # and its settlement comes back as the payment of that checkout
    d = btcpay_server.settle(created.provider_ref)
    [action] = provider.interpret(provider.verify(d.body, d.headers), CATALOG)
    assert isinstance(action, PaymentSettled)
    assert (action.payment_id, action.checkout_id, action.buyer.customer_id) == (
        created.provider_ref,
        "chk_9",
        "cus_9",
    )
    assert (action.pack, action.amount, action.currency) == ("starter", 1050, "usd")


def test_checkout_for_a_plan_in_bitcoin(btcpay_server: FakeBTCPay, provider: BTCPay) -> None:
    created = provider.create_checkout(
        checkout_request(pack=None, plan="basic", currency="btc", amount=12345)
    )
    invoice = btcpay_server.invoices[created.provider_ref]
    assert (invoice["amount"], invoice["currency"]) == ("0.00012345", "BTC")
    assert invoice["metadata"]["tollkeep_plan"] == "basic" and "tollkeep_pack" not in invoice["metadata"]


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_checkout_when_btcpay_fails(btcpay_server: FakeBTCPay, provider: BTCPay, status: int) -> None:
    btcpay_server.fail_status = status
    with pytest.raises(ProviderUnavailable, match=str(status)):
        provider.create_checkout(checkout_request())


def test_checkout_when_btcpay_times_out(btcpay_server: FakeBTCPay) -> None:
    btcpay_server.delay = 2.0
    with pytest.raises(ProviderUnavailable, match="did not answer"):
        make(btcpay_server, timeout=0.2).create_checkout(checkout_request())


def test_checkout_when_btcpay_is_down() -> None:
    with FakeBTCPay() as fake:
        provider = make(fake)
    with pytest.raises(ProviderUnavailable, match="could not be reached"):
        provider.create_checkout(checkout_request())


def test_a_refused_api_key_says_which_setting_and_not_the_key(btcpay_server: FakeBTCPay) -> None:
    with pytest.raises(ProviderUnavailable) as err:
        make(btcpay_server, api_key="wrong-key-123").create_checkout(checkout_request())
    assert "TOLLKEEP_BTCPAY_API_KEY" in err.value.message
    assert "wrong-key-123" not in str(err.value.to_dict())


def test_interpret_when_btcpay_fails_is_retried_later(btcpay_server: FakeBTCPay, provider: BTCPay) -> None:
    d = btcpay_server.settle(tollkeep_invoice(btcpay_server)["id"])
    event = provider.verify(d.body, d.headers)
    btcpay_server.fail_status = 503
    with pytest.raises(ProviderUnavailable):
        provider.interpret(event, CATALOG)
    btcpay_server.fail_status = None
    assert isinstance(provider.interpret(event, CATALOG)[0], PaymentSettled)


def test_a_refused_invoice_is_unavailable_with_btcpays_reason(
    btcpay_server: FakeBTCPay, provider: BTCPay
) -> None:
    with pytest.raises(ProviderUnavailable, match="422"):
        provider.create_checkout(checkout_request(amount=0))


# ---- reconcile ------------------------------------------------------------------------------------
def test_reconcile_pages_through_settled_invoices_since(btcpay_server: FakeBTCPay) -> None:
    provider = make(btcpay_server, page_size=3)
    since = datetime(2024, 5, 1, tzinfo=UTC)
    t0 = int(since.timestamp())
    old = tollkeep_invoice(btcpay_server, created=t0 - 10)
    settled = [tollkeep_invoice(btcpay_server, created=t0 + i) for i in range(7)]
    unpaid = tollkeep_invoice(btcpay_server, created=t0 + 100)
    for inv in [old, *settled]:
        btcpay_server.settle(inv["id"])
    btcpay_server.requests.clear()

    events = provider.settled_since(since)

    assert sorted(e.event_id for e in events) == sorted(f"reconcile:{i['id']}" for i in settled)
    assert unpaid["id"] not in {e.payload["invoiceId"] for e in events}
    pages = [r for r in btcpay_server.requests if r.method == "GET"]
    assert [r.query["skip"] for r in pages] == [["0"], ["3"], ["6"]]
    assert all(r.query["status"] == ["Settled"] and r.query["startDate"] == [str(t0)] for r in pages)
    # each yields the payment the webhook would have, without fetching the invoice again
    btcpay_server.requests.clear()
    for event in events:
        [action] = provider.interpret(event, CATALOG)
        invoice = btcpay_server.invoices[event.payload["invoiceId"]]
        assert action == expected(invoice)
        d = btcpay_server.webhook(invoice["id"], "InvoiceSettled")
        assert provider.interpret(provider.verify(d.body, d.headers), CATALOG) == [action]
    assert sum(r.path.endswith("/invoices") for r in btcpay_server.requests) == 0


def test_reconcile_of_an_exact_multiple_of_the_page_size(btcpay_server: FakeBTCPay) -> None:
    provider = make(btcpay_server, page_size=2)
    for _ in range(4):
        btcpay_server.settle(tollkeep_invoice(btcpay_server)["id"])
    assert len(provider.settled_since(datetime(2000, 1, 1, tzinfo=UTC))) == 4


def test_reconcile_when_btcpay_fails(btcpay_server: FakeBTCPay, provider: BTCPay) -> None:
    btcpay_server.fail_status = 500
    with pytest.raises(ProviderUnavailable):
        provider.settled_since(datetime(2024, 1, 1, tzinfo=UTC))


# ---- configuration --------------------------------------------------------------------------------
def test_from_settings() -> None:
    assert btcpay.from_settings(Settings()) is None
    assert btcpay.from_settings(Settings(btcpay_url="https://b.example", btcpay_api_key="k")) is None
    p = btcpay.from_settings(
        Settings(
            btcpay_url="https://b.example/",
            btcpay_api_key="k",
            btcpay_store_id="s",
            btcpay_webhook_secret="w",
            provider_timeout_seconds=3,
        )
    )
    assert isinstance(p, BTCPay) and isinstance(p, Provider) and p.name == "btcpay"
    assert "btcpay-sig" in p.kept_headers
