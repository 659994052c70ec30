"""The examples run against a real `tollkeep serve` (SQLite, and PostgreSQL when it answers):
each example app runs in-process, its tollkeep calls go over HTTP to the server subprocess,
and the balances must move exactly as the prices say; the ledger verifies at the end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from examples.llm_token_hold import app as llm_example
from examples.per_call_fastapi import app as per_call_example
from examples.server_key_backend import app as backend_example
from fastapi.testclient import TestClient

from tests.conftest import bearer
from tests.factories import admin_http, new_customer, new_server_key, served

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def wallet(admin: httpx.Client, cid: str) -> dict[str, Any]:
    r = admin.get(f"/admin/customers/{cid}/balance")
    assert r.status_code == 200, r.text
    return dict(r.json())


def charges(admin: httpx.Client, cid: str) -> list[dict[str, Any]]:
    r = admin.get(f"/admin/customers/{cid}/usage")
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


def test_per_call_app_charges_one_credit_a_call(db_url: str, tmp_path: Path) -> None:
    with served(db_url, tmp_path) as base, admin_http(base) as admin:
        cid, key = new_customer(admin, "quote-buyer", 3)
        with TestClient(per_call_example.create_app(base)) as web:
            first = web.get("/quote", headers=bearer(key))
            assert first.status_code == 200, first.text
            assert first.json()["charged"] == 1 and first.json()["balance"] == 2
            retried = {**bearer(key), "Idempotency-Key": "q-1"}
            assert web.get("/quote", params={"topic": "ledgers"}, headers=retried).json()["balance"] == 1
            again = web.get("/quote", params={"topic": "ledgers"}, headers=retried)
            assert again.json()["balance"] == 1  # the caller's retry was free
            assert web.get("/quote", headers=bearer(key)).json()["balance"] == 0
            broke = web.get("/quote", headers=bearer(key))
            assert broke.status_code == 402
            assert broke.json()["error"]["code"] == "insufficient_credits"
            assert broke.json()["error"]["available"] == 0
            anonymous = web.get("/quote")
            assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "missing_api_key"
        assert wallet(admin, cid)["balance"] == 0
        assert [c["charged"] for c in charges(admin, cid)] == [1, 1, 1]


def test_llm_app_holds_the_worst_case_and_settles_the_actual_tokens(db_url: str, tmp_path: Path) -> None:
    catalog = EXAMPLES / "llm_token_hold" / "catalog.toml"
    with served(db_url, tmp_path, catalog=catalog) as base, admin_http(base) as admin:
        cid, key = new_customer(admin, "llm-buyer", 10_000)  # 10 credits, in milli-credits
        poor, poor_key = new_customer(admin, "llm-poor", 100)
        with TestClient(llm_example.create_app(base)) as web:
            r = web.post(
                "/v1/completions",
                json={"prompt": "one two three four five", "max_tokens": 20},
                headers=bearer(key),
            )
            assert r.status_code == 200, r.text
            out = r.json()
            assert out["usage"] == {"input_tokens": 5, "output_tokens": 10}
            # toy-small: 2 per input token, 6 per output token; held for 20 output tokens
            assert (out["held"], out["charged"], out["balance"]) == (2 * 5 + 6 * 20, 2 * 5 + 6 * 10, 9930)

            big = web.post(
                "/v1/completions",
                json={"model": "toy-large", "prompt": "a b c", "max_tokens": 2},
                headers=bearer(key),
            )
            assert (big.json()["held"], big.json()["charged"]) == (10 * 3 + 30 * 2, 90)

            crash = web.post("/v1/completions", json={"prompt": "please crash now"}, headers=bearer(key))
            assert crash.status_code == 502  # the hold was released: nothing charged
            after = wallet(admin, cid)
            assert (after["balance"], after["held"]) == (9930 - 90, 0)

            refused = web.post(
                "/v1/completions", json={"prompt": "hello", "max_tokens": 4096}, headers=bearer(poor_key)
            )
            assert refused.status_code == 402
            assert refused.json()["error"]["required"] == 2 * 1 + 6 * 4096
            assert refused.json()["error"]["available"] == 100
        events = charges(admin, cid)
        assert [(e["meter"], e["charged"], e["quantity"]) for e in events] == [
            ("llm_tokens", 90, "5"),
            ("llm_tokens", 70, "15"),
        ]
        assert events[1]["properties"] == {"model": "toy-small", "input_tokens": 5, "output_tokens": 10}
        assert wallet(admin, poor)["balance"] == 100 and charges(admin, poor) == []


def test_server_key_backend_meters_its_users_by_customer_id(db_url: str, tmp_path: Path) -> None:
    with served(db_url, tmp_path) as base, admin_http(base) as admin:
        server_key, why = new_server_key(base)
        if server_key is None:
            pytest.skip(f"{why}: this example runs once it is there")
        alice, _ = new_customer(admin, "alice", 10)
        bob, _ = new_customer(admin, "bob", 5)
        users = {"alice": alice, "bob": bob}
        with TestClient(backend_example.create_app(base, server_key, users)) as web:
            hit = web.get("/search", params={"q": "toll"}, headers={"X-User": "alice"})
            assert hit.status_code == 200, hit.text
            assert len(hit.json()["results"]) == 3 and hit.json()["charged"] == 2  # 3 x 0.5, rounded up
            retry = {"X-User": "bob", "X-Request-Id": "r-1"}
            assert web.get("/search", params={"q": "ledger"}, headers=retry).json()["charged"] == 1
            web.get("/search", params={"q": "ledger"}, headers=retry)  # the same request: charged once
            nothing = web.get("/search", params={"q": "zzz"}, headers={"X-User": "bob"})
            assert nothing.json() == {"q": "zzz", "results": [], "charged": 0}
            assert web.get("/credits", headers={"X-User": "alice"}).json() == {
                "available": 8,
                "unit": "credit",
            }
            assert web.get("/credits", headers={"X-User": "bob"}).json()["available"] == 4
            assert web.get("/credits", headers={"X-User": "mallory"}).status_code == 401
        assert (wallet(admin, alice)["balance"], wallet(admin, bob)["balance"]) == (8, 4)
