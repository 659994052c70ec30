"""Every ledger route documents its answer and its real errors (issue #7 item 7): the schemas in
/openapi.json are not empty, and real answers validate against them with no field left out or
added (the response models forbid extra fields)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from pydantic import BaseModel

from tests.conftest import bearer
from tests.factories import new_customer
from tollkeep.ledger import schemas as sc
from tollkeep.runtime import Tollkeep

ROUTES = {
    ("get", "/v1/balance"): ("BalanceOut", {401, 403, 404, 422}),
    ("post", "/v1/usage"): ("UsageOut", {401, 402, 403, 404, 409, 413, 422, 429}),
    ("get", "/v1/usage"): ("UsagePageOut", {401, 403, 422}),
    ("post", "/v1/holds"): ("HoldOut", {401, 402, 403, 404, 409, 413, 422, 429}),
    ("get", "/v1/holds/{hold_id}"): ("HoldOut", {401, 403, 404}),
    ("post", "/v1/holds/{hold_id}/settle"): ("HoldResolutionOut", {401, 402, 403, 404, 409, 413, 422, 429}),
    ("post", "/v1/holds/{hold_id}/release"): ("HoldResolutionOut", {401, 403, 404, 409, 429}),
    ("post", "/v1/holds/{hold_id}/extend"): ("HoldOut", {401, 403, 404, 409, 413, 422, 429}),
    ("post", "/v1/keys/verify"): ("KeyVerifyOut", {401, 403, 409, 413, 422, 429}),
    ("post", "/admin/customers/{customer_id}/grants"): ("GrantOut", {401, 403, 404, 409, 413, 422}),
    ("get", "/admin/customers/{customer_id}/balance"): ("BalanceOut", {401, 404}),
    ("post", "/admin/charges/{event_id}/refund"): ("RefundOut", {401, 403, 404, 409, 413, 422}),
    ("post", "/admin/customers/{customer_id}/overdraft"): ("OverdraftOut", {401, 403, 404, 413, 422}),
    ("get", "/admin/customers/{customer_id}/ledger"): ("JournalPageOut", {401, 404, 422}),
    ("post", "/admin/sweep"): ("SweepOut", {401, 403}),
}


def test_the_spec_names_each_answer_and_its_errors(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    for (method, path), (model, statuses) in ROUTES.items():
        op = doc["paths"][path][method]
        ok = next(c for c in op["responses"] if c.startswith("2"))
        ref = op["responses"][ok]["content"]["application/json"]["schema"]["$ref"]
        assert ref.rsplit("/", 1)[-1] == model, (path, ref)
        assert schemas[model]["properties"], model
        errors = {int(c) for c in op["responses"] if not c.startswith("2")} - {422} | (statuses & {422})
        assert errors == statuses, (method, path, errors)
    assert "display" in schemas["BalanceOut"]["properties"]


def check(model: type[BaseModel], body: dict[str, Any]) -> dict[str, Any]:
    model.model_validate(body)  # extra fields are forbidden: the model is the whole answer
    return body


def test_real_answers_validate_against_their_models(client: TestClient, tk: Tollkeep) -> None:
    cid, key = new_customer(client, "alice", credits=100)
    me = bearer(key)
    sk = bearer(client.post("/admin/server-keys", json={"name": "b"}).json()["key"])
    check(sc.BalanceOut, client.get("/v1/balance", headers=me).json())
    check(sc.BalanceOut, client.get(f"/admin/customers/{cid}/balance").json())
    u = check(
        sc.UsageOut,
        client.post("/v1/usage", headers=me, json={"meter": "api_call", "idempotency_key": "u"}).json(),
    )
    check(
        sc.UsageOut,
        client.post("/v1/usage", headers=me, json={"meter": "api_call", "idempotency_key": "u"}).json(),
    )
    check(sc.UsagePageOut, client.get("/v1/usage", headers=me).json())
    check(sc.UsagePageOut, client.get(f"/admin/customers/{cid}/usage").json())
    check(sc.JournalPageOut, client.get(f"/admin/customers/{cid}/ledger").json())
    for k in ("h", "h"):  # made, then replayed
        h = check(
            sc.HoldOut, client.post("/v1/holds", headers=me, json={"amount": 5, "idempotency_key": k}).json()
        )
    check(sc.HoldOut, client.get(f"/v1/holds/{h['id']}", headers=me).json())
    check(sc.HoldOut, client.post(f"/v1/holds/{h['id']}/extend", headers=me, json={"ttl_seconds": 60}).json())
    for _ in range(2):
        s = check(
            sc.HoldResolutionOut,
            client.post(f"/v1/holds/{h['id']}/settle", headers=me, json={"amount": 3}).json(),
        )
    h2 = client.post("/v1/holds", headers=me, json={"amount": 2, "idempotency_key": "h2"}).json()
    check(sc.HoldResolutionOut, client.post(f"/v1/holds/{h2['id']}/release", headers=me).json())
    for _ in range(2):
        check(
            sc.GrantOut,
            client.post(f"/admin/customers/{cid}/grants", json={"amount": 5, "idempotency_key": "g"}).json(),
        )
        check(
            sc.RefundOut,
            client.post(
                f"/admin/charges/{s['operation_id']}/refund", json={"idempotency_key": "r", "amount": 1}
            ).json(),
        )
    check(sc.OverdraftOut, client.post(f"/admin/customers/{cid}/overdraft", json={"limit": 10}).json())
    check(sc.SweepOut, client.post("/admin/sweep").json())
    check(
        sc.KeyVerifyOut, client.post("/v1/keys/verify", headers=sk, json={"key": key, "charge": None}).json()
    )
    charge = {"meter": "api_call", "idempotency_key": "v"}
    check(
        sc.KeyVerifyOut,
        client.post("/v1/keys/verify", headers=sk, json={"key": key, "charge": charge}).json(),
    )
    check(
        sc.KeyVerifyOut,
        client.post("/v1/keys/verify", headers=sk, json={"key": "tk_live_nope", "charge": None}).json(),
    )
    poor, poor_key = new_customer(client, "bob")
    refused = client.post("/v1/keys/verify", headers=sk, json={"key": poor_key, "charge": charge}).json()
    assert refused["valid"] is False and check(sc.KeyVerifyOut, refused)
    assert u["display"]["charged"] == str(u["charged"]) and poor
