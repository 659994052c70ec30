"""The public API under rate limits: RateLimit headers on admitted calls of /v1/usage and the
holds routes, 429 with Retry-After and RateLimit headers (nothing charged), per-key overrides
set through the admin API; memory and Redis, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.conftest import ADMIN, bearer, make_settings
from tollkeep.app import create_app
from tollkeep.kit.clock import FrozenClock
from tollkeep.runtime import Tollkeep


@pytest.fixture
def limited(db_url: str, clock: FrozenClock, redis_url: str | None) -> Iterator[tuple[Tollkeep, TestClient]]:
    tk = Tollkeep(
        make_settings(
            db_url,
            redis_url=redis_url,
            rate_limit_key="3/minute",
            rate_limits={"route:POST /v1/holds*": "1/minute"},
        ),
        clock=clock,
    )
    try:
        with TestClient(create_app(runtime=tk)) as c:
            c.headers["Authorization"] = f"Bearer {ADMIN}"
            yield tk, c
        report = tk.verify()
        assert report.ok, report.problems
    finally:
        tk.close()


def new_key(c: TestClient, ext: str, **limits: object) -> tuple[str, str]:
    cid = c.post("/admin/customers", json={"external_id": ext}).json()["id"]
    r = c.post(
        f"/admin/customers/{cid}/grants",
        json={"amount": 100, "source": "purchase", "idempotency_key": f"g-{ext}"},
    )
    assert r.status_code == 201, r.text
    made = c.post(f"/admin/customers/{cid}/keys", json={"force_new": True, **limits}).json()
    return cid, made["key"]


def test_usage_shows_ratelimit_headers_then_429(limited: tuple[Tollkeep, TestClient]) -> None:
    tk, c = limited
    cid, key = new_key(c, "rl-usage")
    seen = []
    for i in range(3):
        r = c.post("/v1/usage", json={"meter": "api_call", "idempotency_key": f"u{i}"}, headers=bearer(key))
        assert r.status_code == 200, r.text
        seen.append(r.headers)
    assert [h["RateLimit-Remaining"] for h in seen] == ["2", "1", "0"]
    assert seen[0]["RateLimit-Limit"] == "3" and seen[0]["RateLimit-Policy"] == "3;w=60"
    r = c.post("/v1/usage", json={"meter": "api_call", "idempotency_key": "u3"}, headers=bearer(key))
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "rate_limited"
    assert int(r.headers["Retry-After"]) >= 1 and r.headers["RateLimit-Remaining"] == "0"
    assert r.headers["RateLimit-Limit"] == "3"
    assert tk.balance(cid)["balance"] == 97  # the refused call charged nothing


def test_holds_route_limit_and_key_override(limited: tuple[Tollkeep, TestClient]) -> None:
    tk, c = limited
    cid, key = new_key(c, "rl-holds", rate_limit="off")  # no key-wide limit; the route's applies
    r = c.post("/v1/holds", json={"amount": 5, "idempotency_key": "h1"}, headers=bearer(key))
    assert r.status_code == 201, r.text
    assert r.headers["RateLimit-Limit"] == "1" and r.headers["RateLimit-Remaining"] == "0"
    hid = r.json()["id"]
    r = c.post("/v1/holds", json={"amount": 5, "idempotency_key": "h2"}, headers=bearer(key))
    assert r.status_code == 429 and "Retry-After" in r.headers
    r = c.post(f"/v1/holds/{hid}/settle", json={"amount": 2}, headers=bearer(key))
    assert r.status_code == 429  # settle is its own route, but "POST /v1/holds*" covers it
    for i in range(5):  # /v1/usage: no route limit, and the key's own "off"
        r = c.post("/v1/usage", json={"meter": "api_call", "idempotency_key": f"u{i}"}, headers=bearer(key))
        assert r.status_code == 200 and "RateLimit-Limit" not in r.headers
    tk.ledger.resolve_hold(cid, hid, action="release")
    assert tk.balance(cid)["balance"] == 95
