"""A fake BTCPay Server speaking the Greenfield API v1 for one store, over real HTTP.

Routes (``Authorization: token <api_key>`` required, else 401; another store: 404):

- ``POST /api/v1/stores/{store}/invoices`` - create (``amount`` decimal string, ``currency``,
  ``metadata``, ``checkout``); answers the invoice (``id``, ``checkoutLink``, ``expirationTime``...).
- ``GET  /api/v1/stores/{store}/invoices/{id}`` - one invoice (404 when unknown).
- ``GET  /api/v1/stores/{store}/invoices?status=Settled&startDate=<unix>&orderId=&skip=&take=`` -
  newest first, ``startDate`` filtering on creation time, ``orderId`` on ``metadata.orderId``, as
  BTCPay does.

Test controls: :meth:`FakeBTCPay.settle` (or :meth:`expire`, :meth:`invalidate`, :meth:`webhook`)
changes an invoice and returns the :class:`Delivery` BTCPay would POST: the JSON body and the
``BTCPay-Sig: sha256=<hmac>`` header, signed with the webhook secret. :meth:`redeliver` is the
"Redeliver" button (new ``deliveryId``, same ``originalDeliveryId``). ``fail_status`` and
``delay`` make the API fail or time out.

End to end against a running tollkeep (``TOLLKEEP_BTCPAY_URL=<fake.url>``,
``TOLLKEEP_BTCPAY_API_KEY``/``_STORE_ID``/``_WEBHOOK_SECRET`` = the fake's)::

    with FakeBTCPay() as btcpay:
        ...  # tollkeep creates an invoice through a checkout
        btcpay.settle(invoice_id).deliver(f"{server_url}/webhooks/btcpay")
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation
from typing import Any

import pytest

from tests.payments.fakes._server import Delivery, FakeServer, Reply, Request, one

__all__ = ["Delivery", "FakeBTCPay", "btcpay_server"]


def _id(n: int = 22) -> str:
    alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"  # base58, as BTCPay's
    return "".join(secrets.choice(alphabet) for _ in range(n))


class FakeBTCPay(FakeServer):
    def __init__(
        self,
        *,
        api_key: str = "btcpay-test-api-key",
        store_id: str = "StoreTest1",
        webhook_secret: str = "btcpay-test-webhook-secret",
        webhook_id: str = "WebhookTest1",
    ) -> None:
        super().__init__()
        self.api_key, self.store_id, self.webhook_secret, self.webhook_id = (
            api_key,
            store_id,
            webhook_secret,
            webhook_id,
        )
        self.invoices: dict[str, dict[str, Any]] = {}
        self.clock: float | None = None  # unix seconds; None: the real time

    def now(self) -> int:
        return int(self.clock if self.clock is not None else time.time())

    def __enter__(self) -> FakeBTCPay:
        self.start()
        return self

    # ---- the API --------------------------------------------------------------------------------
    def handle(self, req: Request) -> tuple[int, Any]:
        if req.headers.get("authorization") != f"token {self.api_key}":
            raise Reply(401, {"code": "unauthenticated", "message": "Authentication is required"})
        parts = req.path.strip("/").split("/")
        if parts[:3] != ["api", "v1", "stores"] or len(parts) < 5 or parts[4] != "invoices":
            raise Reply(404, {"code": "not-found", "message": "no such route"})
        if parts[3] != self.store_id:
            raise Reply(404, {"code": "store-not-found", "message": "The store was not found"})
        if len(parts) == 5 and req.method == "POST":
            return 200, self._create(req.body)
        if len(parts) == 5 and req.method == "GET":
            return 200, self._list(req.query)
        if len(parts) == 6 and req.method == "GET":
            invoice = self.invoices.get(parts[5])
            if invoice is None:
                raise Reply(404, {"code": "invoice-not-found", "message": "The invoice was not found"})
            return 200, invoice
        raise Reply(405, {"code": "method-not-allowed", "message": req.method})

    def _create(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise Reply(400, {"code": "invalid-json", "message": "a JSON object is expected"})
        errors = []
        try:
            if Decimal(str(body.get("amount"))) <= 0:
                errors.append({"path": "amount", "message": "amount should be more than 0"})
        except InvalidOperation:
            errors.append({"path": "amount", "message": "amount is not a number"})
        if not isinstance(body.get("currency"), str):
            errors.append({"path": "currency", "message": "currency is required"})
        if errors:
            raise Reply(422, errors)
        return self.add_invoice(
            amount=str(body["amount"]),
            currency=body["currency"],
            metadata=body.get("metadata") or {},
            checkout=body.get("checkout") or {},
        )

    def _list(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        statuses = set(query.get("status", []))
        orders = set(query.get("orderId", []))  # indexed metadata.orderId, as BTCPay filters it
        start = one(query, "startDate")
        skip, take = int(one(query, "skip") or 0), int(one(query, "take") or 100)
        rows = sorted(self.invoices.values(), key=lambda i: (i["createdTime"], i["id"]), reverse=True)
        rows = [
            i
            for i in rows
            if (not statuses or i["status"] in statuses)
            and (start is None or i["createdTime"] >= int(start))
            and (not orders or i["metadata"].get("orderId") in orders)
        ]
        return rows[skip : skip + take]

    # ---- test controls --------------------------------------------------------------------------
    def add_invoice(
        self,
        *,
        amount: str = "10.00",
        currency: str = "USD",
        metadata: dict[str, Any] | None = None,
        checkout: dict[str, Any] | None = None,
        status: str = "New",
        created: int | None = None,
    ) -> dict[str, Any]:
        invoice_id = _id()
        created = self.now() if created is None else created
        invoice = {
            "id": invoice_id,
            "storeId": self.store_id,
            "amount": amount,
            "currency": currency,
            "type": "Standard",
            "checkoutLink": f"{self.url}/i/{invoice_id}",
            "createdTime": created,
            "expirationTime": created + 900,
            "monitoringExpiration": created + 3600,
            "status": status,
            "additionalStatus": "None",
            "availableStatusesForManualMarking": ["Settled", "Invalid"],
            "archived": False,
            "metadata": dict(metadata or {}),
            "checkout": dict(checkout or {}),
            "receipt": {"enabled": True},
        }
        self.invoices[invoice_id] = invoice
        return invoice

    def sign(self, body: bytes) -> str:
        return "sha256=" + hmac.new(self.webhook_secret.encode(), body, hashlib.sha256).hexdigest()

    def webhook(self, invoice_id: str, type: str, *, with_metadata: bool = True, **extra: Any) -> Delivery:
        """The delivery BTCPay sends for ``type`` about ``invoice_id`` (signed)."""
        delivery_id = _id()
        payload: dict[str, Any] = {
            "deliveryId": delivery_id,
            "webhookId": self.webhook_id,
            "originalDeliveryId": delivery_id,
            "isRedelivery": False,
            "type": type,
            "timestamp": self.now(),
            "storeId": self.store_id,
            "invoiceId": invoice_id,
        }
        if with_metadata:
            payload["metadata"] = self.invoices.get(invoice_id, {}).get("metadata", {})
        payload.update(extra)
        return self._signed(payload)

    def redeliver(self, delivery: Delivery) -> Delivery:
        payload = dict(delivery.payload)
        payload.update(
            deliveryId=_id(),
            originalDeliveryId=delivery.payload["originalDeliveryId"],
            isRedelivery=True,
            timestamp=self.now(),
        )
        return self._signed(payload)

    def settle(self, invoice_id: str, *, with_metadata: bool = True) -> Delivery:
        with self.lock:
            self.invoices[invoice_id].update(status="Settled", additionalStatus="None")
        return self.webhook(
            invoice_id, "InvoiceSettled", with_metadata=with_metadata, manuallyMarked=False, overPaid=False
        )

    def expire(self, invoice_id: str) -> Delivery:
        with self.lock:
            self.invoices[invoice_id]["status"] = "Expired"
        return self.webhook(invoice_id, "InvoiceExpired", partiallyPaid=False, paidAfterExpiration=False)

    def invalidate(self, invoice_id: str) -> Delivery:
        with self.lock:
            self.invoices[invoice_id]["status"] = "Invalid"
        return self.webhook(invoice_id, "InvoiceInvalid", manuallyMarked=True)

    def _signed(self, payload: dict[str, Any]) -> Delivery:
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "BTCPayServer",
            "BTCPay-Sig": self.sign(body),
        }
        return Delivery(body=body, headers=headers, payload=payload)


@pytest.fixture
def btcpay_server() -> Iterator[FakeBTCPay]:
    with FakeBTCPay() as fake:
        yield fake
