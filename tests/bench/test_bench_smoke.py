"""The issue #10 benchmarks (bench/licensing.py, bench/renewals.py) run at a tiny size, so they
cannot rot: every part runs and its report renders. No timing is asserted - the numbers are
docs/benchmarks.md's business, measured by ``make bench``."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pytest

from bench import licensing, renewals

pytestmark = pytest.mark.slow


def _args(**kw: object) -> argparse.Namespace:
    return argparse.Namespace(machine="test", load_start=(0.0, 0.0, 0.0), load_end=(0.0, 0.0, 0.0), **kw)


def test_licensing_offline_verify_and_its_baselines(tmp_path: Path) -> None:
    key, jwks = licensing.issue_in_process(tmp_path)
    off = licensing.bench_offline(key, jwks, seconds=0.02)
    cases = {r["case"] for r in off["rows"]}
    assert {"tollkeep.licensing.verify", "bare Ed25519 verify (cryptography)"} <= cases
    assert off["verify_per_s"] > 0 and off["bare_per_s"] > 0
    text = licensing.render(off, [], _args(seconds=1.0))
    assert text.startswith(licensing.SECTION) and "offline verify >= 10,000/s" in text


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (make bench-tools)")
def test_licensing_online_validate_through_the_server(tmp_path: Path) -> None:
    key, jwks = licensing.issue_in_process(tmp_path)
    off = licensing.bench_offline(key, jwks, seconds=0.02)
    online = licensing.bench_online(
        "SQLite", f"sqlite:///{tmp_path}/online.db", tmp_path, [2], seconds=1.0, service_seconds=0.05
    )
    (row,) = online["rows"]
    v = row["validate"]
    assert v["ok"] > 0 and v["valid"] == v["ok"] and v["errors"] == 0, v
    assert row["health"]["ok"] > 0
    assert online["service"]["per_s"] > 0 and online["service"]["statements_per_call"] >= 1
    assert "validate p99 < 10 ms at 2 clients" in licensing.render(off, [online], _args(seconds=1.0))


def test_renewals_one_invoice_per_subscription_and_the_profile(tmp_path: Path) -> None:
    run = renewals.bench_db("SQLite", f"sqlite:///{tmp_path}/r.db", tmp_path, n=8, batch=3)
    assert run["checks"]["ok"] and run["checks"]["doubles"] == 0, run["checks"]
    assert run["counts"]["invoiced"] == 8 and run["runs"] >= 3  # 3 per run_due: 3 + 3 + 2, then none
    prof = renewals.profile_run(f"sqlite:///{tmp_path}/p.db", tmp_path, n=4, batch=4)
    assert prof["statements_per_sub"] > 0 and prof["top"]
    text = renewals.render([run], None, prof, _args(batch=3, profile_db="SQLite"))
    assert text.startswith(renewals.SECTION) and "renewal worker >= 200 subscriptions/s" in text


@pytest.mark.postgres
def test_renewals_two_worker_processes_on_postgres(pg_schema_url: str, tmp_path: Path) -> None:
    two = renewals.bench_two_workers(pg_schema_url, tmp_path, n=6, batch=2)
    assert two["checks"]["ok"] and two["checks"]["doubles"] == 0, two["checks"]
    assert two["invoiced"] == 6 and two["claimed"] == 6
    text = renewals.render([], two, None, _args(batch=2, profile_db="SQLite"))
    assert "no cycle invoiced twice" in text
