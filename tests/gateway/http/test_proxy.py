"""The HTTP gateway on priced routes: charged once on a delivered success, never on an upstream
error, retries with an Idempotency-Key never charged twice, what crosses and what does not."""

from __future__ import annotations

import httpx

from tests.factories import free_port
from tests.gateway.http.conftest import UPSTREAM_SECRET, Gateway, balance, customer
from tests.gateway.http.fake_upstream import Seen
from tollkeep.runtime import Tollkeep


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_priced_route_is_charged_once_and_credentials_are_swapped(
    gtk: Tollkeep, gateway: Gateway, seen: Seen
) -> None:
    cid, key = customer(gtk, credits=10)
    with gateway() as url, httpx.Client(base_url=url) as c:
        r = c.get(
            "/items/42?x=1",
            headers={
                **auth(key),
                "Connection": "keep-alive, x-hop",
                "X-Hop": "must not cross",
                "Keep-Alive": "timeout=5",
                "X-Api-Key": key,
                "X-Custom": "kept",
            },
        )
        assert r.status_code == 200, r.text
        assert r.json() == {"id": "42", "query": "x=1"}
        assert balance(gtk, cid) == 7
        got = seen.last()["headers"]
        assert got["authorization"] == f"Bearer {UPSTREAM_SECRET}"  # the upstream's own
        assert key not in str(got)  # the caller's key never crosses
        assert "x-hop" not in got and "keep-alive" not in got and "x-api-key" not in got
        assert got["x-custom"] == "kept"
        # X-API-Key works as the caller's credential too
        r = c.get("/items/1", headers={"X-API-Key": key})
        assert r.status_code == 200
        assert balance(gtk, cid) == 4


def test_idempotent_retry_is_not_forwarded_or_charged_again(
    gtk: Tollkeep, gateway: Gateway, seen: Seen
) -> None:
    cid, key = customer(gtk, credits=10)
    with gateway() as url, httpx.Client(base_url=url) as c:
        h = {**auth(key), "Idempotency-Key": "order-1"}
        assert c.get("/items/1", headers=h).status_code == 200
        r = c.get("/items/1", headers=h)
        assert r.status_code == 409 and r.json()["error"]["code"] == "idempotency_key_used"
        assert balance(gtk, cid) == 7
        assert len(seen.requests) == 1
        # a retry of a call that was NOT charged (the upstream failed) goes through, once
        h2 = {**auth(key), "Idempotency-Key": "order-2"}
        assert c.get("/status/503", headers=h2).status_code == 503
        assert balance(gtk, cid) == 7
        r = c.get("/status/200", headers=h2)  # the same key for another request
        assert r.status_code == 409 and r.json()["error"]["code"] == "idempotency_conflict"
        h3 = {**auth(key), "Idempotency-Key": "order-3"}
        assert c.get("/status/500", headers=h3).status_code == 500
        assert c.get("/status/500", headers=h3).status_code == 500
        assert balance(gtk, cid) == 7


def test_upstream_errors_are_not_charged(gtk: Tollkeep, gateway: Gateway) -> None:
    cid, key = customer(gtk, credits=10)
    with gateway() as url, httpx.Client(base_url=url) as c:
        for code in (500, 502, 404, 429):
            r = c.get(f"/status/{code}", headers=auth(key))
            assert r.status_code == code
        assert balance(gtk, cid) == 10
        assert c.get("/status/201", headers=auth(key)).status_code == 201
        assert balance(gtk, cid) == 8
    with gateway(upstream_url=f"http://127.0.0.1:{free_port()}") as url, httpx.Client(base_url=url) as c:
        r = c.get("/items/1", headers=auth(key))
        assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_unavailable"
    assert balance(gtk, cid) == 8


def test_charge_statuses_are_configurable(gtk: Tollkeep, gateway: Gateway) -> None:
    cid, key = customer(gtk, credits=10)
    with gateway(charge_statuses=frozenset({2, 3, 4})) as url, httpx.Client(base_url=url) as c:
        assert c.get("/status/404", headers=auth(key)).status_code == 404
        assert c.get("/status/500", headers=auth(key)).status_code == 500
    assert balance(gtk, cid) == 8


def test_who_may_call(gtk: Tollkeep, gateway: Gateway) -> None:
    cid, key = customer(gtk, credits=2)
    _, pro_key = customer(gtk, "bob", credits=5, plan="pro")
    ro = gtk.keys.create(cid, scopes=["balance:read"], force_new=True)["key"]
    with gateway() as url, httpx.Client(base_url=url) as c:
        r = c.get("/items/1")
        assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
        assert r.headers["www-authenticate"] == "Bearer"
        r = c.get("/items/1", headers=auth("tk_live_nope"))
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        r = c.get("/items/1", headers=auth(ro))
        assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope"
        r = c.get("/items/1", headers=auth(key))  # costs 3, has 2
        assert r.status_code == 402
        err = r.json()["error"]
        assert err["code"] == "insufficient_credits" and err["topup"]["url"].endswith("/v1/checkout")
        r = c.get("/chunks", headers=auth(key))  # needs the plan feature "priority"
        assert r.status_code == 403 and r.json()["error"]["code"] == "not_entitled"
        r = c.get("/chunks?n=3", headers=auth(pro_key))
        assert r.status_code == 200 and r.text == "chunk 0\nchunk 1\nchunk 2\n"
        # unpriced routes: forwarded free with a key by default
        r = c.get("/not-priced", headers=auth(key))
        assert r.status_code == 404  # the upstream's answer, forwarded
    assert balance(gtk, cid) == 2
    with gateway(unpriced="refuse", prices=()) as url, httpx.Client(base_url=url) as c:
        r = c.get("/nothing-here", headers=auth(key))
        assert r.status_code == 404 and r.json()["error"]["code"] == "route_not_priced"


def test_price_flags_override_the_catalog_and_meters_rate(
    gtk: Tollkeep, gateway: Gateway, seen: Seen
) -> None:
    from tollkeep.gateway.proxy import parse_price

    cid, key = customer(gtk, credits=20)
    with gateway(prices=(parse_price("GET /items/{id}=5"),)) as url, httpx.Client(base_url=url) as c:
        assert c.get("/items/9", headers=auth(key)).status_code == 200
        assert balance(gtk, cid) == 15
        r = c.post("/items", headers=auth(key), json={"name": "x"})  # meter api_call: 1
        assert r.status_code == 201 and r.json() == {"created": {"name": "x"}}
        assert balance(gtk, cid) == 14
        assert seen.last()["body"] == {"name": "x"}


def test_body_size_limit(gtk: Tollkeep, gateway: Gateway, seen: Seen) -> None:
    cid, key = customer(gtk, credits=5)
    with gateway(max_body_bytes=100) as url, httpx.Client(base_url=url) as c:
        r = c.post("/items", headers=auth(key), content=b"x" * 101)
        assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"

        def chunked() -> object:
            yield b"{" + b" " * 80
            yield b" " * 80 + b"}"

        r = c.post("/items", headers=auth(key), content=chunked())  # type: ignore[arg-type]
        assert r.status_code == 413
    assert seen.requests == [] or all(q["path"] != "/items" for q in seen.requests)
    assert balance(gtk, cid) == 5


def test_charged_calls_count_against_the_write_limit(gtk: Tollkeep, gateway: Gateway, seen: Seen) -> None:
    cid, key = customer(gtk, credits=20)
    with gateway(limit="2/minute") as url, httpx.Client(base_url=url) as c:
        assert c.get("/items/1", headers=auth(key)).status_code == 200
        assert c.get("/items/2", headers=auth(key)).status_code == 200
        r = c.get("/items/3", headers=auth(key))
        assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
        assert int(r.headers["retry-after"]) >= 1
    assert len(seen.requests) == 2
    assert balance(gtk, cid) == 14
