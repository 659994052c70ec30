"""Fixtures of the audit tests: the log as the API shows it, a runtime whose catalog is a file
(so it can be reloaded), and a customer with a key, credits and a charge to refund."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from tests.conftest import ADMIN, bearer, make_settings
from tollkeep.app import create_app
from tollkeep.catalog import DEFAULT_CATALOG_TEXT
from tollkeep.kit.clock import FrozenClock
from tollkeep.runtime import Tollkeep

Entries = Callable[..., list[dict[str, Any]]]


@pytest.fixture
def entries(client: TestClient) -> Entries:
    """``entries(**filters)``: the whole audit log through ``GET /admin/audit``, newest first."""

    def read(**params: Any) -> list[dict[str, Any]]:
        r = client.get("/admin/audit", params={"limit": 500, **params})
        assert r.status_code == 200, r.text
        data: list[dict[str, Any]] = r.json()["data"]
        return data

    return read


@pytest.fixture
def last_id(client: TestClient) -> Callable[[], int | None]:
    """The id of the newest audit entry (None: the log is empty)."""

    def read() -> int | None:
        data = client.get("/admin/audit", params={"limit": 1}).json()["data"]
        return data[0]["id"] if data else None

    return read


def audit_dump(tk: Tollkeep) -> tuple[int, str]:
    """(rows, every column of every row of ``audit_log`` as text): what a search of the table
    would find, whatever the column."""
    with tk.db.scope(write=False) as s:
        rows = list(s.execute(text("SELECT * FROM audit_log")))
    return len(rows), " ".join(json.dumps(v, default=str) for row in rows for v in row)


@pytest.fixture
def dump(tk: Tollkeep) -> Callable[[], tuple[int, str]]:
    return lambda: audit_dump(tk)


@pytest.fixture
def charged(client: TestClient) -> Callable[[str], tuple[str, str, str]]:
    """``charged(ext)``: a customer with a key, 10 credits and one 1-credit ``api_call`` charge:
    (customer id, buyer key, the charge's event id)."""

    def make(ext: str) -> tuple[str, str, str]:
        cid = client.post("/admin/customers", json={"external_id": ext}).json()["id"]
        key = client.post(f"/admin/customers/{cid}/keys").json()["key"]
        r = client.post(f"/admin/customers/{cid}/grants", json={"amount": 10, "idempotency_key": f"g-{ext}"})
        assert r.status_code == 201, r.text
        r = client.post(
            "/v1/usage", headers=bearer(key), json={"meter": "api_call", "idempotency_key": f"u-{ext}"}
        )
        assert r.status_code == 200, r.text
        return cid, key, r.json()["event_id"]

    return make


@pytest.fixture
def catalog_file(tmp_path: Path) -> Path:
    path = tmp_path / "tollkeep.toml"
    path.write_text(DEFAULT_CATALOG_TEXT)
    return path


@pytest.fixture
def reloadable(db_url: str, clock: FrozenClock, catalog_file: Path) -> Iterator[tuple[TestClient, Tollkeep]]:
    """An admin client of a runtime serving ``catalog_file`` (``POST /admin/catalog/reload``
    re-reads it)."""
    with Tollkeep(make_settings(db_url, catalog_path=str(catalog_file)), clock=clock) as rt:
        with TestClient(create_app(runtime=rt)) as c:
            c.headers["Authorization"] = f"Bearer {ADMIN}"
            yield c, rt
        assert rt.verify().ok
