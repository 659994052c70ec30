"""Granting credit inside a unit of work: the one call every domain uses to add a grant.

The ledger's own grant use case (``LedgerService.grant``), the plans domain's allowances and
carry-overs, refunds and hold give-backs all make their grants here, so a grant always gets
its priority default, its journal entry and its metadata the same way.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tollkeep.kit.db import Tx
from tollkeep.kit.ids import new_id
from tollkeep.ledger import repository as repo
from tollkeep.ledger.domain import DEFAULT_PRIORITY, GrantState, WalletState

__all__ = ["GrantMeta", "grant_once", "new_grant"]

GrantMeta = dict[str, dict[str, Any]]  # grant id -> {"operation_id", "note"}: written with the grant


def new_grant(
    st: WalletState,
    meta: GrantMeta,
    *,
    amount: int,
    source: str,
    now: datetime,
    operation_id: str,
    priority: int | None = None,
    effective_at: datetime | None = None,
    expires_at: datetime | None = None,
    meter: str | None = None,
    note: str | None = None,
    hold_id: str | None = None,
) -> GrantState:
    """Add a grant of ``amount`` to ``st`` (journal entry included) under ``operation_id``."""
    g = GrantState(
        id=new_id("grt"),
        amount=amount,
        remaining=0,
        source=source,
        priority=DEFAULT_PRIORITY.get(source, 50) if priority is None else priority,
        effective_at=effective_at or now,
        expires_at=expires_at,
        created_at=now,
        meter=meter,
    )
    st.add_grant(g, now=now, operation_id=operation_id, hold_id=hold_id)
    meta[g.id] = {"operation_id": operation_id, "note": note}
    return g


def grant_once(
    s: Tx,
    wallet: Any,
    st: WalletState,
    meta: GrantMeta,
    *,
    kind: str,
    key: str,
    amount: int,
    source: str,
    now: datetime,
    catalog_version: str | None = None,
    priority: int | None = None,
    effective_at: datetime | None = None,
    expires_at: datetime | None = None,
    note: str | None = None,
) -> GrantState | None:
    """Grant ``amount`` once per (wallet, ``kind``, ``key``): an operation of that kind and key is
    recorded with the grant; if one exists already, nothing is granted and None is returned.
    The caller persists ``st`` (``repository.persist``) in the same unit of work."""
    if repo.find_operation(s, wallet.id, kind, key) is not None:
        return None
    op_id = new_id("op")
    repo.insert_operation(
        s,
        id=op_id,
        wallet_id=wallet.id,
        customer_id=wallet.customer_id,
        kind=kind,
        idempotency_key=key,
        amount=amount,
        catalog_version=catalog_version,
        created_at=now,
    )
    return new_grant(
        st,
        meta,
        amount=amount,
        source=source,
        now=now,
        operation_id=op_id,
        priority=priority,
        effective_at=effective_at,
        expires_at=expires_at,
        note=note,
    )
