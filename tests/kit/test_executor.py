"""The write executor survives faults: a batch whose transaction cannot even begin fails its
callers with the error, and the lane goes on serving the next commands."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError, OperationalError

from tollkeep.runtime import Tollkeep


def test_lane_survives_a_failed_begin(tk: Tollkeep) -> None:
    failures = {"left": 6}  # more than the batch's own retries

    def fail_begin(conn: Any) -> None:
        if failures["left"] > 0:
            failures["left"] -= 1
            raise OperationalError("BEGIN", {}, Exception("disk I/O error (injected)"))

    event.listen(tk.db.engine, "begin", fail_begin)
    try:
        with pytest.raises(OperationalError, match="injected"):
            tk.executor.call(lambda s: s.execute(text("SELECT 1")).scalar())
    finally:
        event.remove(tk.db.engine, "begin", fail_begin)
    assert tk.executor.call(lambda s: s.execute(text("SELECT 1")).scalar()) == 1
    cid = tk.customers.create("after-fault")["id"]
    assert tk.ledger.grant(cid, 3, idempotency_key="g")["balance"] == 3


def test_failed_command_rolls_back_alone(tk: Tollkeep) -> None:
    cid = tk.customers.create("savepoints")["id"]
    tk.ledger.grant(cid, 10, idempotency_key="g")
    futures = [
        tk.executor.submit(tk.ledger.grant_fn(cid, 1, idempotency_key="a"), key=cid),
        tk.executor.submit(lambda s: s.execute(text("SELECT * FROM no_such_table")), key=cid),
        tk.executor.submit(tk.ledger.grant_fn(cid, 2, idempotency_key="b"), key=cid),
    ]
    assert futures[0].result()["amount"] == 1
    with pytest.raises(DBAPIError):
        futures[1].result()
    assert futures[2].result()["amount"] == 2
    assert tk.balance(cid)["balance"] == 13
