"""Server-key mode (`tk_sk_…`, the seller's backend): every call names its customer
(`customer_id` in the body of POST /v1/usage and /v1/holds, `?customer_id=` on reads) and
`verify_key` checks a buyer's key, charging it if asked. The wire format is checked on a fake
network; the calls against a real server run once it has server keys (issue #7 item 1):
until then those tests are skipped, saying so."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from tests.conftest import bearer
from tests.factories import new_server_key
from tollkeep.client import Client

Customer = Callable[[int], tuple[str, str]]


def test_the_mode_follows_the_key_or_is_said_explicitly() -> None:
    assert Client("http://x", "tk_sk_abc").mode == "server"
    assert Client("http://x", "tk_live_abc").mode == "buyer"
    assert Client("http://x", "custom_prefix_abc", server_key=True).mode == "server"
    assert Client("http://x", "tk_sk_abc").with_key("tk_live_b").mode == "buyer"


def test_each_mode_refuses_the_other_ones_calls_before_sending() -> None:
    with Client("http://x", "tk_sk_abc") as server, pytest.raises(ValueError, match="customer_id"):
        server.charge("api_call")
    with pytest.raises(ValueError, match="customer_id"):
        server.hold(amount=1)
    with Client("http://x", "tk_live_abc") as buyer, pytest.raises(ValueError, match="server keys"):
        buyer.balance(customer_id="cus_1")
    with pytest.raises(ValueError, match="server key"):
        buyer.verify_key("tk_live_other")


def test_customer_ids_travel_in_the_body_of_writes_and_the_query_of_reads() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/v1/keys/verify":
            body = {"valid": True, "code": None, "customer_id": "cus_1", "balance": 9, "charged": 1}
        else:
            body = {"balance": 9, "available": 9, "unit": "credit", "customer_id": "cus_1"}
        return httpx.Response(200, json=body)

    with Client("http://tk", "tk_sk_abc", transport=httpx.MockTransport(answer)) as tk:
        tk.balance(customer_id="cus_1")
        tk.list_usage(customer_id="cus_1", limit=5)
        v = tk.verify_key("tk_live_buyer", charge={"meter": "api_call"})
    assert seen[0].url.params["customer_id"] == "cus_1" and seen[0].url.path == "/v1/balance"
    assert dict(seen[1].url.params) == {"customer_id": "cus_1", "limit": "5"}
    sent = json.loads(seen[2].content)
    assert sent["key"] == "tk_live_buyer" and sent["charge"]["meter"] == "api_call"
    assert sent["charge"]["idempotency_key"].startswith("tkc_")
    assert seen[2].headers["authorization"] == "Bearer tk_sk_abc"
    assert (v.valid, v.customer_id, v.charged) == (True, "cus_1", 1)

    def usage(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200,
            json={
                "event_id": "evt_1",
                "charged": 1,
                "balance": 8,
                "duplicate": False,
                "unit": "credit",
                "meter": "api_call",
                "quantity": "1",
                "catalog_version": "v",
                "created_at": "2026-01-01T00:00:00Z",
            },
        )

    with Client("http://tk", "tk_sk_abc", transport=httpx.MockTransport(usage)) as tk:
        tk.charge("api_call", customer_id="cus_1", idempotency_key="k")
    assert json.loads(seen[-1].content) == {
        "meter": "api_call",
        "idempotency_key": "k",
        "customer_id": "cus_1",
    }


@pytest.fixture(scope="module")
def server_key(server: str) -> str:
    key, why = new_server_key(server)
    if key is None:
        pytest.skip(f"{why}: server-key calls against a real server run once it is there")
    return key


def test_a_server_key_charges_and_reads_each_customer_by_id(
    server: str, server_key: str, customer: Customer
) -> None:
    a, _ = customer(10)
    b, _ = customer(20)
    with Client(server, server_key) as tk:
        assert tk.mode == "server"
        res = tk.charge("api_call", customer_id=a)
        assert (res.charged, res.balance) == (1, 9)
        assert tk.charge("search", 4, customer_id=b).balance == 18
        with tk.hold(amount=5, customer_id=b) as h:
            h.settle(amount=2)
        assert (tk.balance(customer_id=a).balance, tk.balance(customer_id=b).balance) == (9, 16)
        assert [e.charged for e in tk.list_usage(customer_id=b).data] == [2, 2]


def test_verify_key_says_whose_key_it_is_and_charges_it_once(
    server: str, server_key: str, customer: Customer
) -> None:
    cid, buyer = customer(10)
    probe = httpx.post(
        f"{server}/v1/keys/verify", json={"key": buyer, "charge": None}, headers=bearer(server_key)
    )
    if probe.status_code == 404 and probe.json()["error"]["code"] == "not_found":
        pytest.skip("the server has no POST /v1/keys/verify yet (issue #7 item 1): this runs once it lands")
    with Client(server, server_key) as tk:
        v = tk.verify_key(buyer)
        assert (v.valid, v.customer_id, v.charged) == (True, cid, None)
        charge = {"meter": "api_call", "idempotency_key": "verify-1"}
        first, again = tk.verify_key(buyer, charge=charge), tk.verify_key(buyer, charge=charge)
        assert (first.charged, first.balance) == (1, 9) and again.balance == 9
        bad = tk.verify_key("tk_live_" + "x" * 43)
        assert bad.valid is False and bad.code
        assert tk.balance(customer_id=cid).balance == 9
