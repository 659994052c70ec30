"""Per-key spend limits, inside the ledger's units of work.

A charge, a hold or a settle made with an API key (``api_key_id``) is counted in ``key_spend``
(one row per key and UTC day: ``spent`` and ``held``) in the transaction that writes its
journal entries, while the customer's wallet is locked: a key belongs to one customer, so every
writer of a key's rows holds that lock (PostgreSQL row lock; SQLite's one writer), and two
parallel calls of one key can never both pass its limit.

* a hold counts its amount as ``held`` on the day it was opened; settling moves it to
  ``spent`` (the actual amount, on that same day), releasing or expiring frees it;
* a charge (``POST /v1/usage``) counts as ``spent`` on its day;
* before credits are taken, the key's limits (read in the same transaction through the
  ``key_limits`` hook the runtime gives the ledger: the keys domain owns them) are checked
  with :func:`~tollkeep.ledger.rules.key_spend_refusal`: 402 ``key_spend_limit``, nothing
  charged. Settling a hold for no more than it reserved is never refused.

Refunds give credits back to the wallet, not to a key's budget. ``ledger verify`` recomputes
every row from the operations and holds.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from tollkeep.kit.db import Tx
from tollkeep.ledger import repository as repo
from tollkeep.ledger.rules import KeyLimits, KeySpendLimitExceeded, key_spend_refusal, key_use

__all__ = ["KeyLimitsOf", "admit", "count", "day_of"]

# (tx, key id) -> a buyer API key's limits (KeyLimits() when it has none), None when the id is
# not a buyer API key (a server key's)
KeyLimitsOf = Callable[[Tx, str], KeyLimits | None]


def day_of(when: datetime) -> str:
    """The UTC day a charge (or a hold, by its opening) counts on."""
    return when.astimezone(UTC).date().isoformat()  # YYYY-MM-DD (a few µs less than strftime)


def admit(s: Tx, limits_of: KeyLimitsOf | None, key_id: str | None, amount: int, day: str) -> str | None:
    """Raise 402 ``key_spend_limit`` when ``amount`` more, counted on ``day``, would pass one of
    the key's limits. Returns the key to count the call under: ``key_id`` when it is a buyer's
    API key, None otherwise (no key; a server key, whose id the operation still records, is
    neither limited nor counted: it acts for many customers, and one row shared by all of
    them would serialize their charges)."""
    if key_id is None or limits_of is None:
        return None
    limits = limits_of(s, key_id)
    if limits is None:
        return None
    if amount <= 0 or not limits.any:
        return key_id
    if limits.total is not None:
        since = None
    elif limits.monthly is not None:
        since = day[:8] + "01"
    else:
        since = day
    use = key_use(repo.key_spend_rows(s, key_id, since), day)
    refused = key_spend_refusal(limits, use, amount)
    if refused is None:
        return key_id
    window, limit, used = refused
    raise KeySpendLimitExceeded(
        f"this API key's {window} spend limit is {limit}: {used} used, {amount} more refused",
        details={
            "window": window,
            "limit": limit,
            "used": used,
            "requested": amount,
            "remaining": max(limit - used, 0),
            "api_key_id": key_id,
        },
    )


def count(s: Tx, key_id: str | None, day: str, *, spent: int = 0, held: int = 0) -> None:
    """Add to a key's row of ``day`` (nothing for an unkeyed call or a zero change)."""
    if key_id is None or (spent == 0 and held == 0):
        return
    repo.add_key_spend(s, key_id, day, spent=spent, held=held)
