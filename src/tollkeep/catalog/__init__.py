"""The catalog: credit unit, meters, prices and plans, loaded from TOML.

See ``README.md`` for the invariants and ``docs/catalog.md`` for the file format.
Rating lives in :mod:`tollkeep.pricing.rating`.
"""

from tollkeep.catalog.errors import CatalogError, InvalidQuantity, UnknownMeter, UnknownModel
from tollkeep.catalog.loader import (
    DEFAULT_CATALOG_TEXT,
    catalog_version,
    default_catalog,
    load_catalog,
    parse_catalog,
)
from tollkeep.catalog.model import (
    BUYER_KEY_SCOPES,
    Allowance,
    AnonymousPolicy,
    Cap,
    Catalog,
    CreditUnit,
    KeysPolicy,
    McpUpstream,
    Meter,
    Pack,
    Plan,
    Price,
    Route,
    Tier,
    TokenPrice,
    ToolPrice,
    ToolsPolicy,
)
from tollkeep.catalog.store import CatalogStore

__all__ = [
    "BUYER_KEY_SCOPES",
    "DEFAULT_CATALOG_TEXT",
    "Allowance",
    "AnonymousPolicy",
    "Cap",
    "Catalog",
    "CatalogError",
    "CatalogStore",
    "CreditUnit",
    "InvalidQuantity",
    "KeysPolicy",
    "McpUpstream",
    "Meter",
    "Pack",
    "Plan",
    "Price",
    "Route",
    "Tier",
    "TokenPrice",
    "ToolPrice",
    "ToolsPolicy",
    "UnknownMeter",
    "UnknownModel",
    "catalog_version",
    "default_catalog",
    "load_catalog",
    "parse_catalog",
]
