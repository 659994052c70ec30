"""Every write licensing makes (tests/architecture: SQL writes live in repositories)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import insert, update

from tollkeep.kit.db import Tx
from tollkeep.kit.models import table_of
from tollkeep.licensing.models import License, LicenseMachine, LicenseSigningKey

L = table_of(License)
M = table_of(LicenseMachine)
K = table_of(LicenseSigningKey)


def insert_signing_key(s: Tx, **values: Any) -> None:
    s.execute(insert(K).values(**values))


def retire_signing_keys(s: Tx, now: datetime) -> None:
    s.execute(update(K).where(K.c.retired_at.is_(None)).values(retired_at=now))


def insert_license(s: Tx, **values: Any) -> None:
    s.execute(insert(L).values(**values))


def update_license(s: Tx, license_id: str, **values: Any) -> None:
    s.execute(update(L).where(L.c.id == license_id).values(**values))


def insert_machine(s: Tx, **values: Any) -> None:
    s.execute(insert(M).values(**values))


def update_machines(s: Tx, machine_ids: Sequence[str], **values: Any) -> None:
    s.execute(update(M).where(M.c.id.in_(list(machine_ids))).values(**values))
