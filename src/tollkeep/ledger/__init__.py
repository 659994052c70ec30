"""The ledger: wallets, grants, holds, charges, refunds, caps and the journal.

Other domains use it through this surface only: the service (use cases, each its own unit of
work) and its request type, the vocabularies (operation kinds, grant sources, hold statuses),
and, inside a unit of work of their own (the plans domain's plan changes, the customers
domain's sign-up), the wallet lock, the wallet state and its rules, the grant calls and
``persist``, which writes a state's changes and their journal entries together.
"""

from tollkeep.ledger.context import BeforeSpend
from tollkeep.ledger.domain import Draw, GrantState, WalletState
from tollkeep.ledger.events import CreditsExhausted, CreditsGranted, CreditsLow
from tollkeep.ledger.grants import grant_once
from tollkeep.ledger.kinds import EntryKind, GrantSource, HoldStatus, OpKind
from tollkeep.ledger.repository import (
    insert_operation,
    load_state,
    lock_wallet,
    lock_wallet_of_customer,
    open_allowance_grant_ids,
    open_wallet,
    persist,
    try_lock_wallet,
)
from tollkeep.ledger.requests import UsageRequest
from tollkeep.ledger.rules import GrantMeta, KeyLimits, KeySpendLimitExceeded, new_grant
from tollkeep.ledger.service import LedgerService

__all__ = [
    "BeforeSpend",
    "CreditsExhausted",
    "CreditsGranted",
    "CreditsLow",
    "Draw",
    "EntryKind",
    "GrantMeta",
    "GrantSource",
    "GrantState",
    "HoldStatus",
    "KeyLimits",
    "KeySpendLimitExceeded",
    "LedgerService",
    "OpKind",
    "UsageRequest",
    "WalletState",
    "grant_once",
    "insert_operation",
    "load_state",
    "lock_wallet",
    "lock_wallet_of_customer",
    "new_grant",
    "open_allowance_grant_ids",
    "open_wallet",
    "persist",
    "try_lock_wallet",
]
