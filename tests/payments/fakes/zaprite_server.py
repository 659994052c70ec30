"""A fake Zaprite API (orders) over real HTTP, shaped as ``payments/providers/zaprite.py``
assumes (see its docstring: the public documentation is thin, so the fake is the contract).

Routes (``Authorization: Bearer <api_key>`` required, else 401):

- ``POST /v1/order`` - create (``amount`` integer minor units, ``currency``, ``externalUniqId``,
  ``redirectUrl``, ``label``, ``metadata``, ``customerData``); answers the order with
  ``checkoutUrl``.
- ``GET  /v1/order/{id}`` - one order (404 when unknown).
- ``GET  /v1/order?page=N&limit=M`` - ``{"items": [...], "meta": {"pagesCount", "itemsCount"}}``,
  newest first.

Test controls: :meth:`FakeZaprite.mark_paid` (status ``PAID`` by default, or ``COMPLETE``,
``UNDERPAID``...) returns the unsigned webhook :class:`Delivery` Zaprite would POST;
:meth:`webhook` builds one for any order id and status (what a forger could send);
``fail_status`` / ``delay`` make the API fail or time out.

End to end: ``TOLLKEEP_ZAPRITE_URL=<fake.url>``, ``TOLLKEEP_ZAPRITE_API_KEY=<fake.api_key>``;
``fake.mark_paid(order_id).deliver(f"{server_url}/webhooks/zaprite")``.
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.payments.fakes._server import Delivery, FakeServer, Reply, Request, one

__all__ = ["Delivery", "FakeZaprite", "zaprite_server"]


class FakeZaprite(FakeServer):
    def __init__(self, *, api_key: str = "zaprite-test-api-key") -> None:
        super().__init__()
        self.api_key = api_key
        self.orders: dict[str, dict[str, Any]] = {}
        self._seq = 0

    def __enter__(self) -> FakeZaprite:
        self.start()
        return self

    def handle(self, req: Request) -> tuple[int, Any]:
        if req.headers.get("authorization") != f"Bearer {self.api_key}":
            raise Reply(401, {"message": "Unauthorized"})
        parts = req.path.strip("/").split("/")
        if parts[:2] != ["v1", "order"]:
            raise Reply(404, {"message": "Not found"})
        if len(parts) == 2 and req.method == "POST":
            return 200, self._create(req.body)
        if len(parts) == 2 and req.method == "GET":
            page, limit = int(one(req.query, "page") or 1), int(one(req.query, "limit") or 100)
            rows = sorted(self.orders.values(), key=lambda o: o["_seq"], reverse=True)
            items = [_public(o) for o in rows[(page - 1) * limit : page * limit]]
            pages = max(1, math.ceil(len(rows) / limit))
            return 200, {"items": items, "meta": {"pagesCount": pages, "itemsCount": len(rows)}}
        if len(parts) == 3 and req.method == "GET":
            order = self.orders.get(parts[2])
            if order is None:
                raise Reply(404, {"message": "Order not found"})
            return 200, _public(order)
        raise Reply(405, {"message": req.method})

    def _create(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("amount"), int) or body["amount"] <= 0:
            raise Reply(400, {"message": "amount must be a positive integer (minor units)"})
        if not isinstance(body.get("currency"), str):
            raise Reply(400, {"message": "currency is required"})
        return _public(
            self.add_order(
                amount=body["amount"],
                currency=body["currency"],
                metadata=body.get("metadata") or {},
                external_uniq_id=body.get("externalUniqId"),
                redirect_url=body.get("redirectUrl"),
                label=body.get("label"),
                customer_data=body.get("customerData"),
            )
        )

    # ---- test controls --------------------------------------------------------------------------
    def add_order(
        self,
        *,
        amount: int = 1000,
        currency: str = "USD",
        metadata: dict[str, Any] | None = None,
        external_uniq_id: str | None = None,
        redirect_url: str | None = None,
        label: str | None = None,
        customer_data: dict[str, Any] | None = None,
        status: str = "PENDING",
        created_at: datetime | None = None,
    ) -> dict[str, Any]:
        self._seq += 1
        order_id = "od_" + secrets.token_hex(10)
        created = (created_at or datetime.now(UTC)).isoformat()
        order = {
            "_seq": self._seq,
            "id": order_id,
            "status": status,
            "amount": amount,
            "currency": currency,
            "externalUniqId": external_uniq_id,
            "redirectUrl": redirect_url,
            "label": label,
            "metadata": dict(metadata or {}),
            "customerData": customer_data,
            "checkoutUrl": f"{self.url}/pay/{order_id}",
            "createdAt": created,
            "paidAt": None,
        }
        self.orders[order_id] = order
        return order

    def mark_paid(self, order_id: str, status: str = "PAID", *, paid_at: datetime | None = None) -> Delivery:
        with self.lock:
            self.orders[order_id].update(status=status, paidAt=(paid_at or datetime.now(UTC)).isoformat())
        return self.webhook(order_id, status)

    def webhook(self, order_id: str, status: str = "PAID") -> Delivery:
        payload = {
            "eventType": "order.change",
            "orderId": order_id,
            "status": status,
            "createdAt": datetime.now(UTC).isoformat(),
        }
        body = json.dumps(payload, separators=(",", ":")).encode()
        return Delivery(body=body, headers={"Content-Type": "application/json"}, payload=payload)


def _public(order: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in order.items() if not k.startswith("_")}


@pytest.fixture
def zaprite_server() -> Iterator[FakeZaprite]:
    with FakeZaprite() as fake:
        yield fake
