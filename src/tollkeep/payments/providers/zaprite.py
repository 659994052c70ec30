"""Zaprite: bitcoin, lightning and fiat checkouts ("orders").

Zaprite's webhooks are not signed, so a webhook is never believed: it is only a hint that an
order changed. :meth:`Zaprite.verify` parses the body and finds the order id in it (``orderId``,
``order.id``, ``data.id`` / ``data.orderId``, or ``id``); :meth:`Zaprite.interpret` fetches the
order from the API (``GET {zaprite_url}/v1/order/{id}``, ``Authorization: Bearer <key>``) and acts
on what the API says: a paid order (status ``PAID``, ``OVERPAID`` or ``COMPLETE``) with tollkeep
metadata is a :class:`PaymentSettled` whose ``payment_id`` is the order id; anything else (an
unpaid, underpaid or unknown order) is :class:`Recorded`. A forged webhook therefore grants
nothing: at most it makes tollkeep look at an order sooner.

Deduplication: the ``payment_id`` (the order id) makes a payment take effect once however many
webhooks name it. The inbox ``event_id`` is ``zaprite:<order id>:<sha256 of the body, 16 hex>``:
a retried delivery (the same bytes) is one inbox event, and a forged body cannot take the id of
the genuine delivery that follows it (which would then be dropped as a duplicate).

Every verified Zaprite event has type ``order`` (the body's own event name is recorded in the
payload but not trusted). Reconcile lists orders (``GET /v1/order?page=N&limit=100``, pages until
``meta.pagesCount``), keeps the paid ones created or paid since the given time, and gives each as
an ``order`` event with ``event_id`` ``reconcile:<order id>``; interpret re-fetches it like any
other, so it yields the same ``payment_id`` as the webhook.

Assumptions, from Zaprite's public API documentation as far as it goes (checked against the
fake in ``tests/payments/fakes/zaprite_server.py``): amounts are integers in the currency's minor
units (cents; satoshis for BTC; anything else is refused, not guessed at), an order has ``id``,
``status``, ``amount``, ``currency``, ``externalUniqId``, ``metadata``, ``checkoutUrl``,
``customerData.email``, ``createdAt``, ``paidAt``; create takes ``amount``, ``currency``,
``externalUniqId``, ``redirectUrl``, ``label``, ``metadata`` and ``customerData``.

Renewal and upgrade invoices of subscriptions (``create_invoice``, the subscriptions domain's
``InvoiceProvider``): an order with OUR invoice id as ``externalUniqId`` and ``tollkeep_invoice``
in its metadata, in the invoice's currency (minor units). Zaprite documents no look-up by
``externalUniqId`` and no idempotency key, so before creating, the newest orders (up to
:data:`LOOKBACK_PAGES` pages) are scanned for one of that ``externalUniqId``, same amount and
currency, not expired or cancelled: a retry after a crash (minutes later) finds it and creates
nothing twice. A paid order with ``tollkeep_invoice`` is a :class:`PaymentSettled` with
``invoice_id``: the applier settles our invoice.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
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
    VerifiedEvent,
)
from tollkeep.subscriptions import InvoiceProviderError, InvoiceRequest, ProviderInvoice

__all__ = ["PAID_STATUSES", "Zaprite", "from_settings"]

PAID_STATUSES = frozenset({"PAID", "OVERPAID", "COMPLETE"})
_MAX_PAGES = 10_000
LOOKBACK_PAGES = 3  # newest orders scanned for an invoice's order before creating one
_DEAD = frozenset({"EXPIRED", "CANCELLED", "CANCELED", "VOID", "ARCHIVED"})


class Zaprite:
    name: ClassVar[str] = "zaprite"
    kept_headers: ClassVar[tuple[str, ...]] = ("content-type", "user-agent")
    handled_types: ClassVar[frozenset[str]] = frozenset({"order"})

    def __init__(self, *, url: str, api_key: str, timeout: float = 15.0, page_size: int = 100) -> None:
        self._base = url.rstrip("/")
        self._api_key = api_key
        self._timeout = timeout
        self._page_size = page_size

    # ---- 1. verify: parse only (Zaprite does not sign its webhooks) -----------------------------
    def verify(self, body: bytes, headers: Mapping[str, str]) -> VerifiedEvent:
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise MalformedEvent("the body is not JSON") from None
        if not isinstance(payload, dict):
            raise MalformedEvent("the body is not a JSON object")
        order_id = _order_id(payload)
        if order_id is None:
            raise MalformedEvent("the body names no order (orderId, order.id, data.id or id)")
        digest = hashlib.sha256(body).hexdigest()[:16]
        return VerifiedEvent(
            event_id=f"zaprite:{order_id}:{digest}",
            type="order",
            payload={"orderId": order_id, "webhook": payload},
        )

    # ---- 2. interpret: what the API says, never what the webhook says ---------------------------
    def interpret(self, event: VerifiedEvent, catalog: Catalog) -> Sequence[Action]:
        order_id = event.payload.get("orderId")
        if not isinstance(order_id, str) or not order_id:
            raise MalformedEvent(f"Zaprite event {event.event_id} names no order")
        order = self._get_order(order_id)
        if order is None:
            return [Recorded(f"Zaprite has no order {order_id}: nothing to apply", {"order_id": order_id})]
        if order.get("id") not in (None, order_id):
            raise ProviderUnavailable(f"Zaprite answered order {order.get('id')!r} for {order_id!r}")
        status = str(order.get("status") or "").upper()
        if status not in PAID_STATUSES:
            return [
                Recorded(
                    f"Zaprite order {order_id} is {status or 'without status'}: nothing to apply",
                    {"order_id": order_id, "status": status},
                )
            ]
        raw_metadata = order.get("metadata")
        metadata: Mapping[str, Any] = raw_metadata if isinstance(raw_metadata, Mapping) else {}
        ours = _str(metadata.get(META_INVOICE))
        if ours:  # a subscription's renewal or upgrade invoice: settled by the applier
            amount, currency = _money(order, order_id)
            return [
                PaymentSettled(
                    payment_id=order_id,
                    buyer=Buyer(customer_id=_str(metadata.get(META_CUSTOMER))),
                    amount=amount,
                    currency=currency,
                    invoice_id=ours,
                )
            ]
        pack, plan = _str(metadata.get(META_PACK)), _str(metadata.get(META_PLAN))
        checkout = _str(metadata.get(META_CHECKOUT)) or _str(order.get("externalUniqId"))
        if not (pack or plan or _str(metadata.get(META_CHECKOUT))):
            return [Recorded(f"Zaprite order {order_id} was not created by tollkeep: nothing to apply")]
        if pack and catalog.pack(pack) is None:
            raise CannotApply(f"Zaprite order {order_id} is for pack {pack!r}, not in the catalog")
        if plan and catalog.plan(plan) is None:
            raise CannotApply(f"Zaprite order {order_id} is for plan {plan!r}, not in the catalog")
        customer_data = order.get("customerData")
        email = customer_data.get("email") if isinstance(customer_data, Mapping) else None
        amount, currency = _money(order, order_id)
        return [
            PaymentSettled(
                payment_id=order_id,
                buyer=Buyer(customer_id=_str(metadata.get(META_CUSTOMER)), email=_str(email)),
                pack=pack,
                plan=plan,
                amount=amount,
                currency=currency,
                checkout_id=checkout,
            )
        ]

    # ---- 3. checkout ----------------------------------------------------------------------------
    def create_checkout(self, request: CheckoutRequest) -> CheckoutCreated:
        metadata: dict[str, str] = dict(request.metadata)
        metadata[META_CHECKOUT] = request.checkout_id
        if request.customer_id:
            metadata[META_CUSTOMER] = request.customer_id
        label = "tollkeep"
        if request.pack is not None:
            metadata[META_PACK] = request.pack.key
            label = request.pack.name
        if request.plan is not None:
            metadata[META_PLAN] = request.plan.key
            label = request.plan.name if request.pack is None else label
        body: dict[str, Any] = {
            "amount": request.amount,
            "currency": request.currency.upper(),
            "externalUniqId": request.checkout_id,
            "redirectUrl": request.success_url,
            "label": label,
            "metadata": metadata,
        }
        if request.email:
            body["customerData"] = {"email": request.email}
        response = self._call("POST", f"{self._base}/v1/order", json=body)
        if response.status_code >= 400:
            raise ProviderUnavailable(
                f"Zaprite refused the order ({response.status_code}: {_http.error_text(response)})",
                details={"provider": self.name, "provider_status": response.status_code},
            )
        order = _json(response)
        url, ref = order.get("checkoutUrl"), order.get("id")
        if not isinstance(url, str) or not isinstance(ref, str):
            raise ProviderUnavailable("Zaprite answered an order without id or checkoutUrl")
        return CheckoutCreated(url=url, provider_ref=ref, expires_at=_iso(order.get("expiresAt")))

    # ---- subscriptions: renewal and upgrade invoices (the InvoiceProvider protocol) -------------
    def create_invoice(self, req: InvoiceRequest) -> ProviderInvoice:
        """Our invoice ``req.invoice_id`` as a Zaprite order (an existing one found first: a
        retry creates nothing twice). Any failure is :class:`InvoiceProviderError`."""
        try:
            order = self._order_of_invoice(req)
            if order is None:
                body: dict[str, Any] = {
                    "amount": req.amount,
                    "currency": req.currency.upper(),
                    "externalUniqId": req.invoice_id,
                    "label": req.description,
                    "metadata": {
                        META_INVOICE: req.invoice_id,
                        META_CUSTOMER: req.customer_id,
                        "tollkeep_subscription": req.subscription_id,
                    },
                }
                response = self._call("POST", f"{self._base}/v1/order", json=body)
                if response.status_code >= 400:
                    raise ProviderUnavailable(
                        f"Zaprite refused the order ({response.status_code}: {_http.error_text(response)})"
                    )
                order = _json(response)
        except TollkeepError as exc:
            raise InvoiceProviderError(exc.message) from None
        ref, url = order.get("id"), order.get("checkoutUrl")
        if not isinstance(ref, str) or not isinstance(url, str):
            raise InvoiceProviderError("Zaprite answered an order without id or checkoutUrl")
        return ProviderInvoice(ref=ref, pay_url=url)

    def _order_of_invoice(self, req: InvoiceRequest) -> Mapping[str, Any] | None:
        for page in range(1, LOOKBACK_PAGES + 1):
            response = self._call(
                "GET", f"{self._base}/v1/order", params={"page": page, "limit": self._page_size}
            )
            if response.status_code >= 400:
                raise ProviderUnavailable(
                    f"Zaprite refused the order list ({response.status_code}: {_http.error_text(response)})"
                )
            body = _json(response)
            items = body.get("items")
            if not isinstance(items, list):
                raise ProviderUnavailable("Zaprite answered an order list without items")
            for order in items:
                if (
                    isinstance(order, Mapping)
                    and order.get("externalUniqId") == req.invoice_id
                    and order.get("amount") == req.amount
                    and str(order.get("currency") or "").upper() == req.currency.upper()
                    and str(order.get("status") or "").upper() not in _DEAD
                ):
                    return order
            meta = body.get("meta")
            pages = meta.get("pagesCount") if isinstance(meta, Mapping) else None
            if not items or not isinstance(pages, int) or page >= pages:
                return None
        return None

    # ---- 4. reconcile ---------------------------------------------------------------------------
    def settled_since(self, since: datetime) -> Sequence[VerifiedEvent]:
        since = since if since.tzinfo else since.replace(tzinfo=UTC)
        events: list[VerifiedEvent] = []
        seen: set[str] = set()
        page = 1
        while page <= _MAX_PAGES:
            response = self._call(
                "GET", f"{self._base}/v1/order", params={"page": page, "limit": self._page_size}
            )
            if response.status_code >= 400:
                raise ProviderUnavailable(
                    f"Zaprite refused the order list ({response.status_code}: {_http.error_text(response)})"
                )
            body = _json(response)
            items = body.get("items")
            if not isinstance(items, list):
                raise ProviderUnavailable("Zaprite answered an order list without items")
            for order in items:
                if not isinstance(order, Mapping):
                    continue
                order_id = _str(order.get("id"))
                if order_id is None or order_id in seen:
                    continue
                if str(order.get("status") or "").upper() not in PAID_STATUSES:
                    continue
                when = _iso(order.get("paidAt")) or _iso(order.get("createdAt"))
                if when is not None and when < since:
                    continue
                seen.add(order_id)
                events.append(
                    VerifiedEvent(
                        event_id=f"reconcile:{order_id}",
                        type="order",
                        payload={"orderId": order_id, "reconcile": True},
                        occurred_at=when,
                    )
                )
            meta = body.get("meta")
            pages = meta.get("pagesCount") if isinstance(meta, Mapping) else None
            if not items or not isinstance(pages, int) or page >= pages:
                return events
            page += 1
        return events

    # ---- the API --------------------------------------------------------------------------------
    def _call(self, method: str, url: str, **kw: Any) -> Any:
        return _http.call(
            "Zaprite",
            method,
            url,
            headers={"Authorization": f"Bearer {self._api_key}", "Accept": "application/json"},
            timeout=self._timeout,
            key_setting="TOLLKEEP_ZAPRITE_API_KEY",
            **kw,
        )

    def _get_order(self, order_id: str) -> Mapping[str, Any] | None:
        response = self._call("GET", f"{self._base}/v1/order/{quote(order_id, safe='')}")
        if response.status_code in (400, 404):  # an id Zaprite does not know (or will not parse)
            return None
        if response.status_code >= 400:
            raise ProviderUnavailable(
                f"Zaprite refused order {order_id} ({response.status_code}: {_http.error_text(response)})"
            )
        order: Mapping[str, Any] = _json(response)
        return order


def from_settings(settings: Settings) -> Zaprite | None:
    if not settings.zaprite_url or settings.zaprite_api_key is None:
        return None
    key = settings.zaprite_api_key.get_secret_value()
    if not key:
        return None
    return Zaprite(url=settings.zaprite_url, api_key=key, timeout=settings.provider_timeout_seconds)


# ---- helpers ------------------------------------------------------------------------------------
def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _order_id(payload: Mapping[str, Any]) -> str | None:
    candidates: list[Any] = [payload.get("orderId")]
    for key in ("order", "data", "object"):
        nested = payload.get(key)
        if isinstance(nested, Mapping):
            candidates += [nested.get("id"), nested.get("orderId")]
    candidates.append(payload.get("id"))
    for value in candidates:
        if isinstance(value, str) and value.strip() and len(value) <= 200:
            return value.strip()
    return None


def _iso(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _json(response: Any) -> Any:
    try:
        body = response.json()
    except ValueError:
        raise ProviderUnavailable("Zaprite answered something that is not JSON") from None
    if not isinstance(body, dict):
        raise ProviderUnavailable(f"Zaprite answered a JSON {type(body).__name__}, not an object")
    return body


def _money(order: Mapping[str, Any], order_id: str) -> tuple[int | None, str | None]:
    """The order's amount, an integer of minor units (a decimal string or a float is refused
    rather than guessed at: "10" could be cents or dollars)."""
    amount, currency = order.get("amount"), order.get("currency")
    cur = currency.lower() if isinstance(currency, str) and currency else None
    if amount is None:
        return None, cur
    if isinstance(amount, int) and not isinstance(amount, bool) and amount >= 0:
        return amount, cur
    raise CannotApply(f"Zaprite order {order_id} has amount {amount!r}, not an integer of minor units")
