"""The local development provider: when no real provider is configured, a checkout "pays" when
its page on our own server is opened (``GET /pay/local/{checkout}``), so the whole purchase
loop runs offline (``make demo``). Clearly marked, and refused when ``TOLLKEEP_ENV=production``
unless ``TOLLKEEP_LOCAL_PAYMENTS=true``. It takes no webhooks from outside: its events are written
by that page, straight into the inbox, and processed like any provider's."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar

from tollkeep.catalog import Catalog
from tollkeep.payments.providers.base import (
    Action,
    Buyer,
    CheckoutCreated,
    CheckoutRequest,
    MalformedEvent,
    PaymentSettled,
    Recorded,
    SignatureInvalid,
    VerifiedEvent,
)

__all__ = ["LocalProvider", "paid_event"]

PAID = "checkout.paid"


class LocalProvider:
    name: ClassVar[str] = "local"
    kept_headers: ClassVar[tuple[str, ...]] = ()
    handled_types: ClassVar[frozenset[str]] = frozenset({PAID})

    def __init__(self, public_url: str) -> None:
        self.public_url = public_url.rstrip("/")

    def verify(self, body: bytes, headers: Mapping[str, str]) -> VerifiedEvent:
        raise SignatureInvalid(
            "the local provider takes no webhooks: its checkouts are paid on /pay/local/{id}",
            code="invalid_signature",
        )

    def interpret(self, event: VerifiedEvent, catalog: Catalog) -> Sequence[Action]:
        if event.type != PAID:
            return [Recorded(f"ignored: {event.type}")]
        p = event.payload
        try:
            return [
                PaymentSettled(
                    payment_id=str(p["checkout_id"]),
                    buyer=Buyer(customer_id=str(p["customer_id"]), email=p.get("email")),
                    pack=p.get("pack"),
                    plan=p.get("plan"),
                    amount=int(p["amount"]),
                    currency=str(p["currency"]),
                    checkout_id=str(p["checkout_id"]),
                )
            ]
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedEvent(f"local event without {exc}") from None

    def create_checkout(self, request: CheckoutRequest) -> CheckoutCreated:
        return CheckoutCreated(
            url=f"{self.public_url}/pay/local/{request.checkout_id}", provider_ref=request.checkout_id
        )

    def settled_since(self, since: datetime) -> Sequence[VerifiedEvent]:
        return []  # every local payment is written to the inbox as it happens


def paid_event(checkout: Any) -> tuple[str, str, bytes]:
    """The inbox event (event id, type, body) of a local checkout's payment."""
    body = {
        "checkout_id": checkout.id,
        "customer_id": checkout.customer_id,
        "email": checkout.email,
        "pack": checkout.pack,
        "plan": checkout.plan,
        "amount": checkout.amount,
        "currency": checkout.currency,
    }
    return f"local:{checkout.id}", PAID, json.dumps(body, sort_keys=True).encode()
