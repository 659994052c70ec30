"""Subscriptions: a customer's recurring plan, its cycles and their invoices, the renewal worker.

The service is imported by the runtime from ``tollkeep.subscriptions.service``: the plans domain
reads this domain's table (``models``), so this package's import stays light."""

from tollkeep.subscriptions.events import (
    CodeRedeemed,
    SubscriptionCanceled,
    SubscriptionCreated,
    SubscriptionLapsed,
    SubscriptionPastDue,
    SubscriptionPaused,
    SubscriptionPlanChanged,
    SubscriptionRenewalFailed,
    SubscriptionRenewalPending,
    SubscriptionRenewed,
    SubscriptionResumed,
)
from tollkeep.subscriptions.invoicing import (
    InvoiceProvider,
    InvoiceProviderError,
    InvoiceRequest,
    ManualInvoicing,
    ProviderInvoice,
)
from tollkeep.subscriptions.rates import FixedRates, Rate, RateSource, RateUnavailable

__all__ = [
    "CodeRedeemed",
    "FixedRates",
    "InvoiceProvider",
    "InvoiceProviderError",
    "InvoiceRequest",
    "ManualInvoicing",
    "ProviderInvoice",
    "Rate",
    "RateSource",
    "RateUnavailable",
    "SubscriptionCanceled",
    "SubscriptionCreated",
    "SubscriptionLapsed",
    "SubscriptionPastDue",
    "SubscriptionPaused",
    "SubscriptionPlanChanged",
    "SubscriptionRenewalFailed",
    "SubscriptionRenewalPending",
    "SubscriptionRenewed",
    "SubscriptionResumed",
]
