"""BTCPay Server (Greenfield API v1): bitcoin and lightning invoices of the seller's own store.

Webhook (``POST /webhooks/btcpay``): BTCPay signs the raw body with the webhook's secret,
``BTCPay-Sig: sha256=<hex HMAC-SHA256>``. The body names its delivery (``deliveryId``); a
redelivery (``isRedelivery``, from the store's webhook settings) has a new ``deliveryId`` and
``originalDeliveryId`` = the first one, so the inbox's deduplication id is ``originalDeliveryId``
when present, else ``deliveryId``: a redelivered event is the same inbox event.

- ``InvoiceSettled`` → :class:`PaymentSettled`, ``payment_id`` = the invoice id. The webhook
  carries neither amount nor currency, so the invoice is fetched
  (``GET /api/v1/stores/{store}/invoices/{id}``) and its metadata (``tollkeep_customer``,
  ``tollkeep_pack``, ``tollkeep_plan``, ``tollkeep_checkout``, ``buyerEmail``), amount and
  currency are what is applied. The amount is a decimal string, converted exactly to minor units
  (cents; satoshis for BTC; ``SATS`` already is satoshis), see :mod:`.money`.
  An invoice with no tollkeep metadata (made by another app on the same store) is only recorded.
- ``InvoiceExpired``, ``InvoiceInvalid``, ``InvoiceProcessing``, ``InvoiceReceivedPayment`` →
  :class:`Recorded`. Other types are not handled (the inbox marks them ignored).

Checkout: ``POST /api/v1/stores/{store}/invoices`` with our checkout id as ``orderId`` and the
tollkeep metadata; the invoice's ``checkoutLink`` is the page. Reconcile: settled invoices
*created* since the given time (BTCPay's ``startDate`` filters on creation), paged with
``skip``/``take``; each is shaped like an ``InvoiceSettled`` webhook with the invoice inside
(``event_id`` ``reconcile:<invoice id>``), so it yields the same ``payment_id``.

Renewal and upgrade invoices of subscriptions (``create_invoice``, the subscriptions domain's
``InvoiceProvider``): ``POST /api/v1/stores/{store}/invoices`` in the invoice's currency, with
OUR invoice id as ``orderId`` and ``tollkeep_invoice`` in the metadata. ``orderId`` is indexed by
BTCPay: before creating, the invoices of that ``orderId`` are listed
(``GET …/invoices?orderId=<id>``) and one still payable (or paid) for the same amount and currency
is answered instead, so a retry after a crash creates nothing twice. ``InvoiceSettled`` of such an
invoice is a :class:`PaymentSettled` with ``invoice_id``: the applier settles our invoice.

API key permissions: ``btcpay.store.cancreateinvoice`` and ``btcpay.store.canviewinvoices``
(the API key header is ``Authorization: token <key>``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar
from urllib.parse import quote

from tollkeep.catalog import Catalog
from tollkeep.config import Settings
from tollkeep.kit.errors import TollkeepError
from tollkeep.payments.providers import _http
from tollkeep.payments.providers.base import (
    META_CHECKOUT,
    META_CUSTOMER,
    META_INVOICE,
    META_PACK,
    META_PLAN,
    Action,
    Buyer,
    CannotApply,
    CheckoutCreated,
    CheckoutRequest,
    MalformedEvent,
    PaymentSettled,
    ProviderUnavailable,
    Recorded,
    SignatureInvalid,
    VerifiedEvent,
    lower_headers,
)
from tollkeep.payments.providers.money import from_minor_units, to_minor_units
from tollkeep.subscriptions import InvoiceProviderError, InvoiceRequest, ProviderInvoice

__all__ = ["RECONCILE_PAGE_SIZE", "BTCPay", "from_settings"]

RECONCILE_PAGE_SIZE = 100
_REUSABLE = frozenset({"New", "Processing", "Settled"})  # an invoice for an orderId worth reusing
_RECORDED = {
    "InvoiceExpired": "BTCPay invoice {id} expired unpaid",
    "InvoiceInvalid": "BTCPay invoice {id} is invalid (payment failed to confirm, or marked invalid)",
    "InvoiceProcessing": "BTCPay invoice {id} is paid, waiting for confirmations",
    "InvoiceReceivedPayment": "BTCPay invoice {id} received a payment",
}


class BTCPay:
    name: ClassVar[str] = "btcpay"
    kept_headers: ClassVar[tuple[str, ...]] = ("btcpay-sig", "content-type", "user-agent")
    handled_types: ClassVar[frozenset[str]] = frozenset({"InvoiceSettled", *_RECORDED})

    def __init__(
        self,
        *,
        url: str,
        api_key: str,
        store_id: str,
        webhook_secret: str,
        timeout: float = 15.0,
        page_size: int = RECONCILE_PAGE_SIZE,
    ) -> None:
        if not webhook_secret:
            raise ValueError("the BTCPay webhook secret is empty")
        self._base = url.rstrip("/")
        self._api_key = api_key
        self._store = store_id
        self._secret = webhook_secret.encode()
        self._timeout = timeout
        self._page_size = page_size

    # ---- 1. verify ------------------------------------------------------------------------------
    def verify(self, body: bytes, headers: Mapping[str, str]) -> VerifiedEvent:
        given = lower_headers(headers).get("btcpay-sig", "").strip()
        if not given:
            raise SignatureInvalid("no BTCPay-Sig header: not a signed BTCPay delivery")
        expected = "sha256=" + hmac.new(self._secret, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise SignatureInvalid("BTCPay-Sig does not match the body and the webhook secret")
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise MalformedEvent("the body is not JSON") from None
        if not isinstance(payload, dict):
            raise MalformedEvent("the body is not a JSON object")
        event_id = payload.get("originalDeliveryId") or payload.get("deliveryId")
        if not isinstance(event_id, str) or not event_id:
            raise MalformedEvent("the delivery has no deliveryId")
        kind = payload.get("type")
        if not isinstance(kind, str) or not kind:
            raise MalformedEvent(f"delivery {event_id} has no type")
        return VerifiedEvent(
            event_id=event_id, type=kind, payload=payload, occurred_at=_unix(payload.get("timestamp"))
        )

    # ---- 2. interpret ---------------------------------------------------------------------------
    def interpret(self, event: VerifiedEvent, catalog: Catalog) -> Sequence[Action]:
        p = event.payload
        invoice_id = p.get("invoiceId")
        if not isinstance(invoice_id, str) or not invoice_id:
            if event.type in self.handled_types:
                raise MalformedEvent(f"BTCPay {event.type} event {event.event_id} has no invoiceId")
            return [Recorded(f"BTCPay event {event.type} is not handled")]
        store = p.get("storeId")
        if store and store != self._store:
            return [Recorded(f"BTCPay invoice {invoice_id} belongs to store {store}, not ours")]
        if event.type in _RECORDED:
            details = {"invoice_id": invoice_id, "type": event.type}
            for key in ("manuallyMarked", "overPaid", "partiallyPaid", "afterExpiration"):
                if key in p:
                    details[key] = p[key]
            return [Recorded(_RECORDED[event.type].format(id=invoice_id), details)]
        if event.type != "InvoiceSettled":
            return [Recorded(f"BTCPay event {event.type} is not handled")]

        embedded = p.get("invoice")  # put there by settled_since (the API's own answer)
        invoice = embedded if isinstance(embedded, Mapping) else self._get_invoice(invoice_id)
        metadata = invoice.get("metadata") or p.get("metadata") or {}
        if not isinstance(metadata, Mapping):
            metadata = {}
        pack, plan = _str(metadata.get(META_PACK)), _str(metadata.get(META_PLAN))
        checkout = _str(metadata.get(META_CHECKOUT))
        ours = _str(metadata.get(META_INVOICE))
        if ours:  # a subscription's renewal or upgrade invoice: settled by the applier
            amount, currency = _money(invoice, invoice_id)
            return [
                PaymentSettled(
                    payment_id=invoice_id,
                    buyer=Buyer(customer_id=_str(metadata.get(META_CUSTOMER))),
                    amount=amount,
                    currency=currency,
                    invoice_id=ours,
                )
            ]
        if not (pack or plan or checkout):
            return [Recorded(f"BTCPay invoice {invoice_id} was not created by tollkeep: nothing to apply")]
        if pack and catalog.pack(pack) is None:
            raise CannotApply(f"BTCPay invoice {invoice_id} is for pack {pack!r}, not in the catalog")
        if plan and catalog.plan(plan) is None:
            raise CannotApply(f"BTCPay invoice {invoice_id} is for plan {plan!r}, not in the catalog")
        amount, currency = _money(invoice, invoice_id)
        return [
            PaymentSettled(
                payment_id=invoice_id,
                buyer=Buyer(
                    customer_id=_str(metadata.get(META_CUSTOMER)),
                    email=_str(metadata.get("buyerEmail")),
                ),
                pack=pack,
                plan=plan,
                amount=amount,
                currency=currency,
                checkout_id=checkout or _str(metadata.get("orderId")),
            )
        ]

    # ---- 3. checkout ----------------------------------------------------------------------------
    def create_checkout(self, request: CheckoutRequest) -> CheckoutCreated:
        metadata: dict[str, Any] = dict(request.metadata)
        metadata.update({"orderId": request.checkout_id, META_CHECKOUT: request.checkout_id})
        if request.customer_id:
            metadata[META_CUSTOMER] = request.customer_id
        if request.pack is not None:
            metadata[META_PACK] = request.pack.key
            metadata["itemDesc"] = request.pack.name
        if request.plan is not None:
            metadata[META_PLAN] = request.plan.key
            metadata.setdefault("itemDesc", request.plan.name)
        if request.email:
            metadata["buyerEmail"] = request.email
        body = {
            "amount": from_minor_units(request.amount, request.currency),
            "currency": request.currency.upper(),
            "metadata": metadata,
            "checkout": {"redirectURL": request.success_url, "redirectAutomatically": True},
        }
        response = self._call("POST", self._store_path("invoices"), json=body)
        if response.status_code >= 400:
            raise ProviderUnavailable(
                f"BTCPay refused the invoice ({response.status_code}: {_http.error_text(response)})",
                details={"provider": self.name, "provider_status": response.status_code},
            )
        invoice = _json(response)
        url, ref = invoice.get("checkoutLink"), invoice.get("id")
        if not isinstance(url, str) or not isinstance(ref, str):
            raise ProviderUnavailable("BTCPay answered an invoice without id or checkoutLink")
        return CheckoutCreated(url=url, provider_ref=ref, expires_at=_unix(invoice.get("expirationTime")))

    # ---- subscriptions: renewal and upgrade invoices (the InvoiceProvider protocol) -------------
    def create_invoice(self, req: InvoiceRequest) -> ProviderInvoice:
        """Our invoice ``req.invoice_id`` at BTCPay (found first by its ``orderId``: a retry
        creates nothing twice). Any failure is :class:`InvoiceProviderError` (the renewal worker
        backs off)."""
        try:
            amount = from_minor_units(req.amount, req.currency)
            invoice = self._invoice_of_order(req.invoice_id, amount, req.currency)
            if invoice is None:
                body = {
                    "amount": amount,
                    "currency": req.currency.upper(),
                    "metadata": {
                        "orderId": req.invoice_id,
                        META_INVOICE: req.invoice_id,
                        META_CUSTOMER: req.customer_id,
                        "tollkeep_subscription": req.subscription_id,
                        "itemDesc": req.description,
                    },
                }
                response = self._call("POST", self._store_path("invoices"), json=body)
                if response.status_code >= 400:
                    raise ProviderUnavailable(
                        f"BTCPay refused the invoice ({response.status_code}: {_http.error_text(response)})"
                    )
                invoice = _json(response)
        except TollkeepError as exc:
            raise InvoiceProviderError(exc.message) from None
        except ValueError as exc:  # an amount the currency cannot express
            raise InvoiceProviderError(str(exc)) from None
        ref, url = invoice.get("id"), invoice.get("checkoutLink")
        if not isinstance(ref, str) or not isinstance(url, str):
            raise InvoiceProviderError("BTCPay answered an invoice without id or checkoutLink")
        return ProviderInvoice(ref=ref, pay_url=url)

    def _invoice_of_order(self, order_id: str, amount: str, currency: str) -> Mapping[str, Any] | None:
        response = self._call("GET", self._store_path("invoices"), params={"orderId": order_id, "take": 50})
        if response.status_code >= 400:
            raise ProviderUnavailable(
                f"BTCPay refused the invoice list ({response.status_code}: {_http.error_text(response)})"
            )
        for invoice in _json(response, list):
            if not isinstance(invoice, Mapping):
                continue
            raw = invoice.get("metadata")
            md: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
            if (
                md.get("orderId") == order_id
                and invoice.get("status") in _REUSABLE
                and str(invoice.get("currency", "")).upper() == currency.upper()
                and _same_amount(invoice.get("amount"), amount)
            ):
                return invoice
        return None

    # ---- 4. reconcile ---------------------------------------------------------------------------
    def settled_since(self, since: datetime) -> Sequence[VerifiedEvent]:
        start = int(since.timestamp()) if since.tzinfo else int(since.replace(tzinfo=UTC).timestamp())
        events: list[VerifiedEvent] = []
        seen: set[str] = set()
        skip = 0
        while True:
            response = self._call(
                "GET",
                self._store_path("invoices"),
                params={"status": "Settled", "startDate": start, "skip": skip, "take": self._page_size},
            )
            if response.status_code >= 400:
                raise ProviderUnavailable(
                    f"BTCPay refused the invoice list ({response.status_code}: {_http.error_text(response)})"
                )
            page = _json(response, list)
            for invoice in page:
                invoice_id = invoice.get("id") if isinstance(invoice, Mapping) else None
                if not isinstance(invoice_id, str) or invoice_id in seen:
                    continue
                if invoice.get("status") != "Settled":  # the filter is the server's: check it
                    continue
                seen.add(invoice_id)
                events.append(
                    VerifiedEvent(
                        event_id=f"reconcile:{invoice_id}",
                        type="InvoiceSettled",
                        payload={
                            "type": "InvoiceSettled",
                            "invoiceId": invoice_id,
                            "storeId": invoice.get("storeId", self._store),
                            "metadata": invoice.get("metadata") or {},
                            "invoice": dict(invoice),
                        },
                        occurred_at=_unix(invoice.get("createdTime")),
                    )
                )
            if len(page) < self._page_size:
                return events
            skip += len(page)

    # ---- the API --------------------------------------------------------------------------------
    def _store_path(self, *parts: str) -> str:
        tail = "/".join(quote(p, safe="") for p in parts)
        return f"{self._base}/api/v1/stores/{quote(self._store, safe='')}/{tail}"

    def _call(self, method: str, url: str, **kw: Any) -> Any:
        return _http.call(
            "BTCPay Server",
            method,
            url,
            headers={"Authorization": f"token {self._api_key}", "Accept": "application/json"},
            timeout=self._timeout,
            key_setting="TOLLKEEP_BTCPAY_API_KEY",
            **kw,
        )

    def _get_invoice(self, invoice_id: str) -> Mapping[str, Any]:
        response = self._call("GET", self._store_path("invoices", invoice_id))
        if response.status_code == 404:
            raise CannotApply(f"BTCPay has no invoice {invoice_id} in store {self._store}")
        if response.status_code >= 400:
            raise ProviderUnavailable(
                f"BTCPay refused invoice {invoice_id} ({response.status_code}: {_http.error_text(response)})"
            )
        invoice: Mapping[str, Any] = _json(response)
        return invoice


def from_settings(settings: Settings) -> BTCPay | None:
    url, key, store, secret = (
        settings.btcpay_url,
        settings.btcpay_api_key,
        settings.btcpay_store_id,
        settings.btcpay_webhook_secret,
    )
    if not (url and key and store and secret):
        return None
    if not (key.get_secret_value() and secret.get_secret_value()):
        return None
    return BTCPay(
        url=url,
        api_key=key.get_secret_value(),
        store_id=store,
        webhook_secret=secret.get_secret_value(),
        timeout=settings.provider_timeout_seconds,
    )


# ---- helpers ------------------------------------------------------------------------------------
def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _unix(value: Any) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return datetime.fromtimestamp(value, UTC)


def _json(response: Any, kind: type = dict) -> Any:
    try:
        body = response.json()
    except ValueError:
        raise ProviderUnavailable("BTCPay answered something that is not JSON") from None
    if not isinstance(body, kind):
        raise ProviderUnavailable(f"BTCPay answered a JSON {type(body).__name__}, not a {kind.__name__}")
    return body


def _same_amount(given: Any, wanted: str) -> bool:
    try:
        return Decimal(str(given)) == Decimal(wanted)
    except (InvalidOperation, ValueError):
        return False


def _money(invoice: Mapping[str, Any], invoice_id: str) -> tuple[int | None, str | None]:
    amount, currency = invoice.get("amount"), invoice.get("currency")
    if not isinstance(currency, str) or amount is None:
        return None, currency.lower() if isinstance(currency, str) else None
    try:
        return to_minor_units(str(amount), currency), currency.lower()
    except ValueError as exc:
        raise CannotApply(f"BTCPay invoice {invoice_id}: {exc}") from None
