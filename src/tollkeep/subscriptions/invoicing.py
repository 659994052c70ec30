"""Where renewal invoices are created: a small provider protocol for the renewal worker.

``manual`` creates nothing outside: the invoice is settled by an operator
(``POST /admin/invoices/{id}/settle``) or by the payments applier calling
:meth:`SubscriptionService.settle_invoice_fn` when a provider's webhook says it was paid. The
BTCPay and Zaprite payment providers implement this protocol (``create_invoice``: our invoice id
in the provider invoice's metadata, and the key that finds it again on a retry) and the runtime
registers the configured ones; a subscription's ``provider`` column chooses. Stripe invoices its
own subscriptions (``following.py`` follows its webhooks instead)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["InvoiceProvider", "InvoiceProviderError", "InvoiceRequest", "ManualInvoicing", "ProviderInvoice"]


class InvoiceProviderError(Exception):
    """The provider could not create the invoice now (the renewal backs off and retries)."""


@dataclass(frozen=True)
class InvoiceRequest:
    invoice_id: str  # also the idempotency key at the provider: a retry creates nothing twice
    subscription_id: str
    customer_id: str
    cycle: int
    currency: str
    amount: int  # minor units of ``currency``
    description: str


@dataclass(frozen=True)
class ProviderInvoice:
    ref: str | None
    pay_url: str | None = None


@runtime_checkable
class InvoiceProvider(Protocol):
    name: str

    def create_invoice(self, req: InvoiceRequest) -> ProviderInvoice: ...


class ManualInvoicing:
    name = "manual"
    offline = True  # creates nothing outside: the renewal is invoiced in one unit of work

    def create_invoice(self, req: InvoiceRequest) -> ProviderInvoice:
        return ProviderInvoice(ref=None)
