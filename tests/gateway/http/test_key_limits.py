"""A key's own limits through the HTTP gateway: its route allowlist (403 tool_not_allowed) and
its rate limit (429 with Retry-After), nothing forwarded or charged when refused."""

from __future__ import annotations

import httpx

from tests.gateway.http.conftest import Gateway, balance, customer
from tests.gateway.http.fake_upstream import Seen
from tollkeep.runtime import Tollkeep


def limited_key(tk: Tollkeep, cid: str, **limits: object) -> str:
    return str(tk.keys.create(cid, force_new=True, limits=dict(limits))["key"])


def test_a_route_outside_the_keys_allowlist_is_refused(gtk: Tollkeep, gateway: Gateway, seen: Seen) -> None:
    cid, _ = customer(gtk, credits=10)
    key = limited_key(gtk, cid, tools=["GET /items/*"])
    with gateway() as url, httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as c:
        assert c.get("/items/1").status_code == 200
        r = c.post("/items", json={"name": "x"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "tool_not_allowed"
    assert balance(gtk, cid) == 7
    assert [r["method"] for r in seen.requests] == ["GET"]  # the refused call never crossed


def test_the_keys_rate_limit_answers_429_with_retry_after(gtk: Tollkeep, gateway: Gateway) -> None:
    cid, _ = customer(gtk, credits=10)
    key = limited_key(gtk, cid, rate_limit="2/minute")
    with gateway() as url, httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as c:
        assert [c.get("/items/1").status_code for _ in range(2)] == [200, 200]
        r = c.get("/items/1")
        assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
        assert int(r.headers["retry-after"]) >= 1
    assert balance(gtk, cid) == 4
