"""Parity: the modules below run twice, with the raw-statement fast path (kit/rawsql.py) on and
off (``Settings.raw_sql``, SQLAlchemy's plain ``Session.execute``). The fast path may change
cost, never meaning: every assertion, and ``ledger verify`` after every test, must hold both
ways. ``test_rawsql_parity.py`` compares the two runs of one scenario row by row."""

from __future__ import annotations

import pytest

PARITY_MODULES = {
    "test_ledger_operations",
    "test_hold_settlement_and_caps",
    "test_refunds_plan_changes_and_token_quantities",
    "test_meter_caps_matrix",
    "test_exact_balances_and_bug_repros",
    "test_refund_attribution",
    "test_hold_fast_path",
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    if module in PARITY_MODULES and "raw_sql" in metafunc.fixturenames:
        metafunc.parametrize("raw_sql", [True, False], ids=["raw", "plain"], indirect=True)
