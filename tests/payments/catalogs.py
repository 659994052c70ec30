"""Catalog edits for payments tests: the default catalog plus a pack, loaded as a new version."""

from __future__ import annotations

import tempfile
from pathlib import Path

from tollkeep.catalog import DEFAULT_CATALOG_TEXT
from tollkeep.runtime import Tollkeep


def with_pack(tk: Tollkeep, key: str, credits: int, *, extra: str = "") -> None:
    text = DEFAULT_CATALOG_TEXT + f"\n[packs.{key}]\ncredits = {credits}\nprices = {{ usd = 1000 }}\n{extra}"
    path = Path(tempfile.mkdtemp()) / "tollkeep.toml"
    path.write_text(text)
    tk.catalogs._path = path
    tk.reload_catalog()
