"""The catalog domain's SQL: ``catalog_versions`` (every version ever loaded, so a charge's
``catalog_version`` can always be re-rated by ``ledger verify``) is written here only."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import insert, select

from tollkeep.catalog.model import Catalog
from tollkeep.catalog.models import CatalogVersion
from tollkeep.kit.db import Tx
from tollkeep.kit.models import table_of

__all__ = ["record_version"]

V = table_of(CatalogVersion)


def record_version(s: Tx, cat: Catalog, now: datetime) -> bool:
    """Store ``cat``'s text under its version once; True if it was new."""
    if s.execute(select(V.c.version).where(V.c.version == cat.version)).first() is not None:
        return False
    s.execute(insert(V).values(version=cat.version, source=cat.source, text=cat.text, loaded_at=now))
    return True
