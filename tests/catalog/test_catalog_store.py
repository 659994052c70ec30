"""CatalogStore: atomic swap, history, and keeping the old version on a bad file."""

from __future__ import annotations

import threading
from decimal import Decimal as D
from pathlib import Path

import pytest

from tollkeep.catalog import CatalogError, CatalogStore, default_catalog, parse_catalog
from tollkeep.kit.errors import TollkeepError
from tollkeep.pricing import rate

V1 = """
version = "v1"
[meters.api_call.price]
model = "flat"
amount = 1
"""
V2 = V1.replace('"v1"', '"v2"').replace("amount = 1", "amount = 2")


def test_store_from_path_reload(tmp_path: Path) -> None:
    path = tmp_path / "tollkeep.toml"
    path.write_text(V1, encoding="utf-8")
    store = CatalogStore(path)
    first = store.current
    assert first.label == "v1" and store.path == path
    assert store.reload() is first  # unchanged file: same catalog, no new history entry
    assert store.versions == [first.version]

    path.write_text(V2, encoding="utf-8")
    second = store.reload()
    assert second.label == "v2" and store.current is second
    assert rate(store.current, "api_call", D(1)).amount == 2
    assert store.versions == [first.version, second.version]
    assert store.get(first.version) is first


def test_reload_keeps_old_version_on_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "tollkeep.toml"
    path.write_text(V1, encoding="utf-8")
    store = CatalogStore(path)
    good = store.current
    path.write_text(V1.replace("amount = 1", "amount = -1"), encoding="utf-8")
    with pytest.raises(CatalogError) as info:
        store.reload()
    assert info.value.details["issues"][0]["key"] == "meters.api_call.price.amount"
    assert info.value.details["issues"][0]["file"] == str(path)
    assert store.current is good and store.versions == [good.version]

    path.write_text("this is [not toml", encoding="utf-8")
    with pytest.raises(CatalogError):
        store.reload()
    path.unlink()
    with pytest.raises(CatalogError):
        store.reload()
    assert store.current is good


def test_store_from_catalog_and_load_text() -> None:
    store = CatalogStore(default_catalog())
    assert store.path is None
    with pytest.raises(TollkeepError) as info:
        store.reload()
    assert info.value.code == "catalog_reload_unavailable"
    new = store.load_text(V1)
    assert store.current is new and len(store.versions) == 2
    with pytest.raises(CatalogError):
        store.load_text("[meters.x]\naggregation = 'nope'\n")
    assert store.current is new


def test_store_from_catalog_reloads_from_its_source(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(V1, encoding="utf-8")
    store = CatalogStore(parse_catalog(V1, source=str(path)))
    path.write_text(V2, encoding="utf-8")
    assert store.reload().label == "v2"


def test_concurrent_reads_during_reloads(tmp_path: Path) -> None:
    path = tmp_path / "tollkeep.toml"
    path.write_text(V1, encoding="utf-8")
    store = CatalogStore(path)
    versions = {parse_catalog(V1).version.split("+")[1], parse_catalog(V2).version.split("+")[1]}
    seen: list[str] = []
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            for _ in range(300):
                catalog = store.current
                assert rate(catalog, "api_call", D(1)).amount in (1, 2)
                seen.append(catalog.version.split("+")[1])
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(20):
        store.load_text(V2 if i % 2 == 0 else V1)
    for t in threads:
        t.join()
    assert not errors
    assert set(seen) <= versions
