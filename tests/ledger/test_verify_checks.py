"""``ledger verify`` catches what the journal-agrees-with-itself checks let through (issue #5,
item 7): each test damages a real ledger the way a bug would, keeping grant remaining and journal
in agreement, and expects verify to name the problem."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import text

from tollkeep.catalog import parse_catalog
from tollkeep.kit.clock import FrozenClock
from tollkeep.ledger.service import UsageRequest
from tollkeep.runtime import Tollkeep

from ..conftest import make_settings

CATALOG = """
[meters.llm_tokens]
aggregation = "sum"
[meters.llm_tokens.price]
model = "tokens"
per = 1000
[meters.llm_tokens.price.models."m"]
input = 1
output = 2
[plans.starter]
name = "Starter"
[plans.starter.allowance]
amount = 20
period = "month"
"""


@pytest.fixture
def tk(db_url: str) -> Iterator[Tollkeep]:  # no verify at teardown: these tests break the ledger
    runtime = Tollkeep(make_settings(db_url), clock=FrozenClock(datetime(2026, 5, 10, tzinfo=UTC)))
    runtime.catalogs.set(parse_catalog(CATALOG))
    try:
        yield runtime
    finally:
        runtime.close()


def run_sql(tk: Tollkeep, sql: str, **params: object) -> None:
    tk.executor.call(lambda s: s.execute(text(sql), params))


def problems(tk: Tollkeep) -> list[str]:
    return tk.verify().problems


def test_clean_ledger_verifies(tk: Tollkeep) -> None:
    cid = tk.customers.create("a", plan="starter")["id"]
    tk.ledger.record_usage(UsageRequest(cid, "llm_tokens", None, "k", {"model": "m", "input_tokens": 5}))
    hold = tk.ledger.create_hold(cid, idempotency_key="h", amount=10)
    tk.plans.change_plan(cid, None)
    tk.ledger.resolve_hold(cid, hold["id"], action="release")
    assert problems(tk) == []


def test_token_quantity_recorded_as_one(tk: Tollkeep) -> None:
    cid = tk.customers.create("a", plan="starter")["id"]
    out = tk.ledger.record_usage(
        UsageRequest(cid, "llm_tokens", None, "k", {"model": "m", "input_tokens": 2719, "output_tokens": 1})
    )
    run_sql(tk, "UPDATE operations SET quantity = '1' WHERE id = :id", id=out["event_id"])
    assert any("input + output tokens are 2720" in p for p in problems(tk))


def test_credit_into_a_closed_grant(tk: Tollkeep) -> None:
    cid = tk.customers.create("a", plan="starter")["id"]
    tk.plans.change_plan(cid, None)
    gid = tk.executor.call(lambda s: s.execute(text("SELECT id, wallet_id FROM grants")).one())
    run_sql(
        tk,
        "INSERT INTO journal_entries (wallet_id, grant_id, operation_id, hold_id, kind, delta, created_at) "
        "VALUES (:w, :g, 'op_forged', NULL, 'release', 7, '2026-05-11 00:00:00')",
        w=gid.wallet_id,
        g=gid.id,
    )
    run_sql(tk, "UPDATE grants SET remaining = 7 WHERE id = :g", g=gid.id)
    found = problems(tk)
    assert any("closed but holds 7" in p for p in found)
    assert any("put 7 into it after it ended" in p for p in found)


def test_charge_that_took_more_than_it_charged(tk: Tollkeep) -> None:
    cid = tk.customers.create("a", plan="starter")["id"]
    out = tk.ledger.record_usage(
        UsageRequest(cid, "llm_tokens", Decimal(1000), "k", {"model": "m", "input_tokens": 1000})
    )
    # the charge's row claims less than its entries took (the shape of the refund-attribution bug)
    run_sql(tk, "UPDATE operations SET amount = 0 WHERE id = :id", id=out["event_id"])
    found = problems(tk)
    assert any("amount 0 but it took 1" in p for p in found)


def test_refund_that_put_back_more_than_the_charge_took(tk: Tollkeep) -> None:
    cid = tk.customers.create("a")["id"]
    gid = tk.ledger.grant(cid, 20, idempotency_key="g")["id"]
    hold = tk.ledger.create_hold(cid, idempotency_key="h", amount=2)
    charge = tk.ledger.resolve_hold(cid, hold["id"], action="settle", amount=2)
    refund = tk.ledger.refund(charge["operation_id"], idempotency_key="r")
    assert problems(tk) == []
    wid = tk.executor.call(lambda s: s.execute(text("SELECT wallet_id FROM grants")).scalar())
    # one more refund entry into the grant, grant and journal kept in agreement
    run_sql(
        tk,
        "INSERT INTO journal_entries (wallet_id, grant_id, operation_id, hold_id, kind, delta, created_at) "
        "VALUES (:w, :g, :op, NULL, 'refund', 3, '2026-05-10 00:00:00')",
        w=wid,
        g=gid,
        op=refund["id"],
    )
    run_sql(tk, "UPDATE grants SET remaining = remaining + 3 WHERE id = :g", g=gid)
    found = problems(tk)
    assert any(f"refunds return 5 to {gid}, which it took 2 from" in p for p in found), found
