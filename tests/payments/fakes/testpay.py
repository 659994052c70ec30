"""A minimal provider for the inbox's own tests: HMAC-signed JSON events (``X-Testpay-Sig``),
as a real provider signs them. Tests of the real adapters live beside this (stripe, github, …);
this one lets the inbox, the applier and the checkout be tested without any of them."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar

from tollkeep.catalog import Catalog
from tollkeep.payments.providers.base import (
    Action,
    Buyer,
    CannotApply,
    CheckoutCreated,
    CheckoutRequest,
    MalformedEvent,
    PaymentFailed,
    PaymentRefunded,
    PaymentSettled,
    PlanCancelled,
    PlanChanged,
    ProviderUnavailable,
    SignatureInvalid,
    VerifiedEvent,
    lower_headers,
)

SECRET = b"testpay-secret"


def sign(body: bytes, secret: bytes = SECRET) -> dict[str, str]:
    return {
        "X-Testpay-Sig": hmac.new(secret, body, hashlib.sha256).hexdigest(),
        "Content-Type": "application/json",
    }


def event(event_id: str, type: str, **data: Any) -> bytes:
    return json.dumps({"id": event_id, "type": type, "data": data}).encode()


class FakePay:
    name: ClassVar[str] = "testpay"
    kept_headers: ClassVar[tuple[str, ...]] = ("x-testpay-sig",)
    handled_types: ClassVar[frozenset[str]] = frozenset(
        {"paid", "failed", "refunded", "plan", "cancelled", "flaky"}
    )

    def __init__(self) -> None:
        self.down = False  # interpret raises ProviderUnavailable while True
        self.settled: list[VerifiedEvent] = []

    def verify(self, body: bytes, headers: Mapping[str, str]) -> VerifiedEvent:
        sig = lower_headers(headers).get("x-testpay-sig", "")
        good = hmac.new(SECRET, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(sig, good):
            raise SignatureInvalid("bad X-Testpay-Sig")
        try:
            doc = json.loads(body)
            return VerifiedEvent(str(doc["id"]), str(doc["type"]), doc)
        except (ValueError, KeyError, TypeError):
            raise MalformedEvent("not a testpay event") from None

    def interpret(self, event: VerifiedEvent, catalog: Catalog) -> Sequence[Action]:
        if self.down:
            raise ProviderUnavailable("testpay API is down")
        d = event.payload["data"]
        buyer = Buyer(customer_id=d.get("customer"), email=d.get("email"), external_ref=d.get("account"))
        if event.type == "paid":
            return [
                PaymentSettled(
                    payment_id=d["payment"],
                    buyer=buyer,
                    pack=d.get("pack"),
                    plan=d.get("plan"),
                    amount=d.get("amount"),
                    currency=d.get("currency", "usd"),
                    checkout_id=d.get("checkout"),
                )
            ]
        if event.type == "failed":
            return [PaymentFailed(d["payment"], buyer, reason="card declined", amount=d.get("amount"))]
        if event.type == "refunded":
            return [PaymentRefunded(d["payment"], d["refund"], buyer, d["amount"], "usd", d.get("total"))]
        if event.type == "plan":
            at = datetime.fromisoformat(d["at"]) if d.get("at") else None
            return [PlanChanged(event.event_id, buyer, d["plan"], at)]
        if event.type == "cancelled":
            at = datetime.fromisoformat(d["at"]) if d.get("at") else None
            return [PlanCancelled(event.event_id, buyer, d.get("plan"), at)]
        raise CannotApply(f"testpay cannot apply {event.type}")

    def create_checkout(self, request: CheckoutRequest) -> CheckoutCreated:
        if self.down:
            raise ProviderUnavailable("testpay API is down")
        return CheckoutCreated(
            url=f"https://testpay.invalid/pay/{request.checkout_id}", provider_ref="tp_" + request.checkout_id
        )

    def settled_since(self, since: datetime) -> Sequence[VerifiedEvent]:
        if self.down:
            raise ProviderUnavailable("testpay API is down")
        return list(self.settled)
