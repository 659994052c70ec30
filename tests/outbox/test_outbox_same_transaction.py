"""The outbox row is written in the transaction of the change it reports: it commits with it and
rolls back with it, one row per change, and nothing is written on the debit path."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tollkeep.customers.events import CustomerStatusChanged
from tollkeep.kit.db import Tx
from tollkeep.kit.errors import Conflict
from tollkeep.ledger.service import UsageRequest
from tollkeep.runtime import Tollkeep


def rows(tk: Tollkeep, topic: str | None = None) -> list[dict[str, Any]]:
    return tk.outbox.recent(topic=topic)


def test_a_status_change_and_a_grant_are_written_to_the_outbox(tk: Tollkeep) -> None:
    cid = tk.customers.create("outbound")["id"]
    assert [r["topic"] for r in rows(tk)] == ["customer.created"]
    tk.customers.update(cid, status="suspended")
    grant = tk.ledger.grant(cid, 25, source="purchase", idempotency_key="pay-1")
    status, granted = rows(tk, "customer.status_changed"), rows(tk, "credits.granted")
    assert [r["payload"] for r in status] == [
        {"customer_id": cid, "status": "suspended", "previous": "active"}
    ]
    assert len(granted) == 1 and granted[0]["customer_id"] == cid
    assert granted[0]["payload"] == {
        "customer_id": cid,
        "grant_id": grant["id"],
        "operation_id": grant["operation_id"],
        "amount": 25,
        "source": "purchase",
        "unit": grant["unit"],
        "idempotency_key": "pay-1",
        "expires_at": None,
    }
    assert all(r["delivered_at"] is None and r["attempts"] == 0 for r in rows(tk))


def test_a_replayed_grant_writes_no_second_row(tk: Tollkeep) -> None:
    cid = tk.customers.create("replayed")["id"]
    tk.ledger.grant(cid, 5, idempotency_key="once")
    assert tk.ledger.grant(cid, 5, idempotency_key="once")["duplicate"] is True
    assert len(rows(tk, "credits.granted")) == 1


def test_the_row_rolls_back_with_a_failing_command_and_not_with_its_neighbour(tk: Tollkeep) -> None:
    cid = tk.customers.create("rolled-back")["id"]
    tk.ledger.grant(cid, 10, idempotency_key="g")
    before = len(rows(tk))

    def change(status: str, *, fail: bool) -> Any:
        def fn(s: Tx) -> None:
            tk.events.emit(s, CustomerStatusChanged(cid, status, "active"))
            if fail:
                raise Conflict("refused after the event was emitted", code="test_failure")

        return fn

    started, release = threading.Event(), threading.Event()

    def block(s: Tx) -> None:
        started.set()
        release.wait(5)

    blocker = tk.executor.submit(block, key=cid)
    assert started.wait(5)
    ok = tk.executor.submit(change("suspended", fail=False), key=cid)
    bad = tk.executor.submit(change("closed", fail=True), key=cid)
    release.set()
    blocker.result()
    ok.result()
    with pytest.raises(Conflict):
        bad.result()
    statuses = [r["payload"]["status"] for r in rows(tk, "customer.status_changed")]
    assert statuses == ["suspended"] and len(rows(tk)) == before + 1

    with pytest.raises(Conflict):  # alone in its transaction
        tk.executor.call(change("closed", fail=True), key=cid)
    assert len(rows(tk)) == before + 1


def test_a_grant_that_fails_writes_nothing(tk: Tollkeep) -> None:
    cid = tk.customers.create("failed-grant")["id"]
    before = rows(tk)
    with pytest.raises(Exception, match="expires_at"):
        tk.ledger.grant(cid, 5, idempotency_key="g", expires_at=tk.clock.now())
    assert rows(tk) == before


def test_the_debit_path_writes_nothing_to_the_outbox(tk: Tollkeep) -> None:
    cid = tk.customers.create("debits")["id"]
    tk.ledger.grant(cid, 100, idempotency_key="g")
    before = len(rows(tk))
    for i in range(5):
        tk.ledger.record_usage(UsageRequest(cid, "api_call", None, f"u{i}"))
    hold = tk.ledger.create_hold(cid, idempotency_key="h", amount=3)
    tk.ledger.resolve_hold(cid, hold["id"], action="settle", amount=2)
    assert len(rows(tk)) == before
