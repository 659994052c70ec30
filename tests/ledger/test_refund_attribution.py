"""Where refund attribution comes from: the charge's journal entries and the amounts of its
earlier refunds (``rules.refund_left``), not the replay cache. Older versions stored each
refund's attribution in ``operations.result``: databases written by them keep working (it is
read, and a replay leaves it out of the answer). ``ledger verify`` checks refunds against their
own journal entries (test_verify_checks.py)."""

from __future__ import annotations

import json

from sqlalchemy import select, text

from tollkeep.kit.models import table_of
from tollkeep.ledger import repository as repo
from tollkeep.ledger.domain import Draw
from tollkeep.ledger.models import Operation
from tollkeep.ledger.service import UsageRequest
from tollkeep.runtime import Tollkeep

O = table_of(Operation)  # noqa: E741


def left(tk: Tollkeep, cid: str, ids: dict[str, str]) -> dict[str, int]:
    """What each named grant holds now."""
    by_id = {g["id"]: g["remaining"] for g in tk.balance(cid)["grants"]}
    return {name: by_id.get(gid, 0) for name, gid in ids.items()}


def two_grant_charge(tk: Tollkeep) -> tuple[str, str, dict[str, str]]:
    """A charge of 10 that took 4 from grant "first" (spent first) and 6 from "second"."""
    cid = str(tk.customers.create("refunds")["id"])
    ids = {
        "first": tk.ledger.grant(cid, 4, idempotency_key="g1", priority=1)["id"],
        "second": tk.ledger.grant(cid, 20, idempotency_key="g2", priority=2)["id"],
    }
    charge = tk.ledger.record_usage(UsageRequest(cid, "api_call", None, "e"))  # flat 1 by default
    assert charge["charged"] == 1
    # a bigger charge, through a hold settled for 10
    hold = tk.ledger.create_hold(cid, idempotency_key="h", amount=10)
    settled = tk.ledger.resolve_hold(cid, hold["id"], action="settle", amount=10)
    return cid, str(settled["operation_id"]), ids


def test_refunds_walk_newest_part_first_and_store_only_the_answer(tk: Tollkeep) -> None:
    cid, charge, ids = two_grant_charge(tk)
    # the hold took 3 from "first" (1 went to the usage event) and 7 from "second"
    assert left(tk, cid, ids) == {"first": 0, "second": 13}
    r1 = tk.ledger.refund(charge, idempotency_key="r1", amount=5)
    assert left(tk, cid, ids) == {"first": 0, "second": 18}  # newest part first
    r2 = tk.ledger.refund(charge, idempotency_key="r2", amount=4)
    assert left(tk, cid, ids) == {"first": 2, "second": 20}  # 2 left of "second", then "first"
    r3 = tk.ledger.refund(charge, idempotency_key="r3")
    assert r3["amount"] == 1 and left(tk, cid, ids) == {"first": 3, "second": 20}
    with tk.db.scope(write=False) as s:
        stored = s.execute(select(O.c.id, O.c.result).where(O.c.kind == "refund")).all()
    assert {r.id for r in stored} == {r1["id"], r2["id"], r3["id"]}
    assert all("attribution" not in r.result for r in stored), "the replay cache holds the answer only"


def test_refunds_recorded_by_older_versions_keep_their_attribution(tk: Tollkeep) -> None:
    """A database written before: the first refund's result carries its attribution."""
    cid, charge, ids = two_grant_charge(tk)
    r1 = tk.ledger.refund(charge, idempotency_key="r1", amount=5)
    legacy = {**r1, "attribution": {"parts": [[ids["second"], 5]], "overdraft": 0}}
    for k in ("balance", "duplicate"):
        legacy.pop(k)
    sql = text("UPDATE operations SET result = :r WHERE id = :id")
    tk.executor.call(lambda s: s.execute(sql, {"r": json.dumps(legacy), "id": r1["id"]}))
    with tk.db.scope(write=False) as s:  # read as recorded
        assert repo.earlier_refunds(s, charge) == [(5, Draw(((ids["second"], 5),), 0))]
    again = tk.ledger.refund(charge, idempotency_key="r1", amount=5)
    assert again["duplicate"] is True and "attribution" not in again
    # the first answer again, with the balance now (nothing changed since: the same)
    assert {k: v for k, v in again.items() if k != "duplicate"} == {
        k: v for k, v in r1.items() if k != "duplicate"
    }
    tk.ledger.refund(charge, idempotency_key="r2")  # the rest: 2 of "second", then 3 of "first"
    assert left(tk, cid, ids) == {"first": 3, "second": 20}
