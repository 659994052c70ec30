"""Integer amounts keep their meaning; ``"unit"`` names the ledger's integer unit honestly and a
``display`` object shows them in credits (and money, where the catalog states a credit's value)
(issue #7 item 8). The ledger is verified after every test."""

from __future__ import annotations

from decimal import Decimal

import pytest
from fastapi.testclient import TestClient

from tests.conftest import bearer
from tests.factories import new_customer
from tollkeep.catalog import CatalogError, parse_catalog
from tollkeep.catalog.model import CreditUnit
from tollkeep.runtime import Tollkeep

MILLI = """
[credits]
unit = "credit"
per_credit = 1000
value = { usd = "0.01", EUR = 0.009 }
[meters.api_call.price]
model = "flat"
amount = 1500
"""


def test_per_credit_1000_reads_in_credits_and_money(client: TestClient, tk: Tollkeep) -> None:
    tk.catalogs.set(parse_catalog(MILLI))
    cid, key = new_customer(client, "alice")
    g = client.post(
        f"/admin/customers/{cid}/grants",
        json={"amount": 5_000_000, "source": "purchase", "idempotency_key": "g"},
    ).json()
    assert g["amount"] == 5_000_000 and g["unit"] == "millicredit"
    assert g["display"] == {
        "unit": "credit",
        "amount": "5000",
        "balance": "5000",
        "money": {
            "usd": {"amount": "50.00", "balance": "50.00"},
            "eur": {"amount": "45.000", "balance": "45.000"},
        },
    }
    bal = client.get("/v1/balance", headers=bearer(key)).json()
    assert (bal["balance"], bal["unit"]) == (5_000_000, "millicredit")
    assert bal["display"]["balance"] == "5000" and bal["display"]["money"]["usd"]["balance"] == "50.00"
    assert bal["display"]["held"] == "0"

    u = client.post(
        "/v1/usage", headers=bearer(key), json={"meter": "api_call", "idempotency_key": "u"}
    ).json()
    assert (u["charged"], u["balance"], u["unit"]) == (1500, 4_998_500, "millicredit")
    assert u["display"]["charged"] == "1.5" and u["display"]["balance"] == "4998.5"
    assert u["display"]["money"]["usd"] == {"charged": "0.015", "balance": "49.985"}
    again = client.post("/v1/usage", headers=bearer(key), json={"meter": "api_call", "idempotency_key": "u"})
    assert again.json()["display"] == u["display"]

    h = client.post("/v1/holds", headers=bearer(key), json={"amount": 2500, "idempotency_key": "h"}).json()
    assert h["display"]["amount"] == "2.5" and h["display"]["settled_amount"] is None
    got = client.get(f"/v1/holds/{h['id']}", headers=bearer(key)).json()
    assert got["display"]["amount"] == "2.5" and "balance" not in got["display"]
    ext = client.post(f"/v1/holds/{h['id']}/extend", headers=bearer(key), json={"ttl_seconds": 600}).json()
    assert ext["display"]["balance"] == "4996"
    s = client.post(f"/v1/holds/{h['id']}/settle", headers=bearer(key), json={"amount": 1000}).json()
    assert s["display"]["charged"] == "1" and s["display"]["balance"] == "4997.5"
    r = client.post(f"/admin/charges/{s['operation_id']}/refund", json={"idempotency_key": "r"}).json()
    assert r["display"]["amount"] == "1" and r["display"]["balance"] == "4998.5"
    # nothing of it is stored: the replay cache holds the answer without display
    assert client.get("/v1/pricing").json()["credits"]["ledger_unit"] == "millicredit"


def test_whole_credits_show_the_same_numbers_as_strings(client: TestClient) -> None:
    _, key = new_customer(client, "bob", credits=42)
    u = client.post(
        "/v1/usage", headers=bearer(key), json={"meter": "api_call", "idempotency_key": "u"}
    ).json()
    assert u["unit"] == "credit"
    assert u["display"] == {"unit": "credit", "charged": str(u["charged"]), "balance": str(u["balance"])}
    bal = client.get("/v1/balance", headers=bearer(key)).json()
    assert bal["display"]["balance"] == str(bal["balance"]) and "money" not in bal["display"]


def test_the_ledger_unit_can_be_named_and_is_checked() -> None:
    named = parse_catalog(
        '[credits]\nper_credit = 100\nledger_unit = "cent-credit"\n' + MILLI.split("\n", 5)[5]
    )
    assert named.credits.ledger_name == "cent-credit"
    assert CreditUnit(per_credit=100).ledger_name == "centicredit"
    assert CreditUnit(per_credit=7).ledger_name == "1/7 credit"
    assert CreditUnit(name="token").ledger_name == "token"
    for bad in (
        'ledger_unit = ""',
        'value = { dollars = "1" }',
        'value = { usd = "-1" }',
        'value = { usd = "x" }',
    ):
        with pytest.raises(CatalogError):
            parse_catalog(f"[credits]\n{bad}\n")


def test_display_is_exact() -> None:
    unit = CreditUnit(per_credit=10**6, value={"usd": Decimal("0.0001")})
    d = unit.display(a=1, b=-3_000_000, c=None)
    assert d["a"] == "0.000001" and d["b"] == "-3" and d["c"] is None
    assert d["money"]["usd"] == {"a": "0.0000000001", "b": "-0.0003", "c": None}
