"""The ledger's closed vocabularies. Each member *is* the string stored in the database (a
``StrEnum``), so rows written before these types existed read back unchanged."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["CHARGE_KINDS", "EntryKind", "GrantSource", "HoldStatus", "OpKind"]


class OpKind(StrEnum):
    """``operations.kind``. Idempotency keys are unique per (wallet, kind)."""

    USAGE = "usage"  # a metered event, charged
    GRANT = "grant"  # credits granted (the admin, a sign-up's anonymous allowance)
    HOLD = "hold"  # credits reserved
    SETTLE = "settle"  # a hold charged (key ``hold:<id>``)
    RELEASE = "release"  # a hold released, or expired by the sweeper (key ``hold:<id>``)
    REFUND = "refund"  # credits given back for a charge
    EXPIRE = "expire"  # grants past their end zeroed by the sweeper
    ALLOWANCE = "allowance"  # a plan's allowance for a period (written by the plans domain)
    PLAN_CHANGE = "plan_change"  # allowances closed, free allowance carried over (plans domain)
    CLAWBACK = "clawback"  # credits taken back because the payment for them was refunded


# operations that charge: a usage event, a settled hold (listed as usage, refundable)
CHARGE_KINDS = frozenset({OpKind.USAGE, OpKind.SETTLE})


class EntryKind(StrEnum):
    """``journal_entries.kind``: why a grant's remaining (or the overdraft position) moved."""

    GRANT = "grant"  # a grant's credits arrive
    DEBIT = "debit"  # a charge draws (usage, the extra a settle takes)
    HOLD = "hold"  # a hold draws
    RELEASE = "release"  # a hold gives back (release, expiry, settling for less)
    REFUND = "refund"  # a refund gives back to where the charge drew from
    REPAY = "repay"  # a new grant repays the overdraft
    EXPIRE = "expire"  # a grant past its end loses what is left
    CLOSE = "close"  # credits given back to a closed grant end again at once
    PLAN_CHANGE = "plan_change"  # a plan change closes an allowance grant
    CLAWBACK = "clawback"  # credits taken back (their payment was refunded), overdraft last


class GrantSource(StrEnum):
    """``grants.source``; the default spend priority of each is ``domain.DEFAULT_PRIORITY``."""

    PLAN_ALLOWANCE = "plan_allowance"
    PURCHASE = "purchase"
    PROMO = "promo"
    REFUND = "refund"
    ADJUSTMENT = "adjustment"


class HoldStatus(StrEnum):
    """``holds.status``: open until it resolves, once."""

    OPEN = "open"
    SETTLED = "settled"
    RELEASED = "released"
    EXPIRED = "expired"
