"""`GET /admin/audit` pages newest first: `next` is passed back as `before`; filters by action,
actor and target; a read-only admin token may read it."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.audit.conftest import Entries
from tests.conftest import bearer


def test_pages_follow_the_next_cursor_newest_first(client: TestClient, entries: Entries) -> None:
    cid = client.post("/admin/customers", json={"external_id": "pages"}).json()["id"]
    for n in range(7):
        r = client.post(f"/admin/customers/{cid}/grants", json={"amount": n + 1, "idempotency_key": f"p{n}"})
        assert r.status_code == 201
    everything = [e["id"] for e in entries()]
    assert len(everything) == 8 and everything == sorted(everything, reverse=True)
    seen: list[int] = []
    params: dict[str, int] = {"limit": 3}
    pages = 0
    while True:
        page = client.get("/admin/audit", params=params).json()
        pages += 1
        seen += [e["id"] for e in page["data"]]
        if page["next"] is None:
            break
        params = {"limit": 3, "before": page["next"]}
    assert pages == 3 and seen == everything
    amounts = [e["after"]["amount"] for e in entries(action="grant.create")]
    assert amounts == [7, 6, 5, 4, 3, 2, 1]


def test_filters_and_a_read_only_reader(client: TestClient, entries: Entries) -> None:
    a = client.post("/admin/customers", json={"external_id": "a"}).json()["id"]
    b = client.post("/admin/customers", json={"external_id": "b"}).json()["id"]
    ops = client.post("/admin/admin-tokens", json={"name": "ops", "role": "admin"}).json()
    client.post(f"/admin/customers/{b}/overdraft", headers=bearer(ops["key"]), json={"limit": 9})
    assert [e["action"] for e in entries(target=b)] == ["overdraft.set", "customer.create"]
    assert [e["target"]["id"] for e in entries(action="customer.create")] == [b, a]
    assert [e["action"] for e in entries(actor=ops["id"])] == ["overdraft.set"]
    ro = client.post("/admin/admin-tokens", json={"name": "dash", "role": "read_only"}).json()
    r = client.get("/admin/audit", headers=bearer(ro["key"]), params={"limit": 2})
    assert r.status_code == 200 and [e["action"] for e in r.json()["data"]] == [
        "admin_key.create",
        "overdraft.set",
    ]
