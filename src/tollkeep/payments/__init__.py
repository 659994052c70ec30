"""Payments: provider adapters behind one protocol, the durable webhook inbox, checkout, and
the application of payments to the ledger (grants, plan changes, take-backs), exactly once."""

from tollkeep.payments.apply import Applier, Outcome, credits_to_take_back
from tollkeep.payments.events import PaymentFailedEvent, PaymentRefundedEvent, PaymentSucceeded
from tollkeep.payments.inbox import Inbox, InboxSettings
from tollkeep.payments.providers import Providers, public_url
from tollkeep.payments.service import PaymentsService

__all__ = [
    "Applier",
    "Inbox",
    "InboxSettings",
    "Outcome",
    "PaymentFailedEvent",
    "PaymentRefundedEvent",
    "PaymentSucceeded",
    "PaymentsService",
    "Providers",
    "credits_to_take_back",
    "public_url",
]
