"""A runtime with a catalog of subscribable plans and the test clock on (SQLite and PostgreSQL);
the ledger is verified after every test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import ADMIN, make_settings, verified_runtime
from tollkeep.app import create_app
from tollkeep.kit.clock import FrozenClock
from tollkeep.runtime import Tollkeep

CATALOG = """
version = "subs-test"
default_plan = "free"

[credits]
unit = "credit"
per_credit = 1

[anonymous]
allowance = 0

[meters.api_call]
aggregation = "count"
unit = "call"

[meters.api_call.price]
model = "flat"
amount = 1

[plans.free]
name = "Free"

[plans.free.allowance]
amount = 10
period = "lifetime"

[plans.pro]
name = "Pro"
period = "month"
grace_days = 3
suspend_keys_on_cancel = true

[plans.pro.prices]
usd = 2900

[plans.pro.allowance]
amount = 1000
period = "month"

[plans.starter]
name = "Starter"
period = "month"
grace_days = 3

[plans.starter.prices]
usd = 900

[plans.starter.allowance]
amount = 300
period = "month"

[plans.team]
name = "Team"
period = "month"
grace_days = 3
features = ["sso"]

[plans.team.prices]
usd = 9900

[plans.team.allowance]
amount = 5000
period = "month"

[plans.enterprise]
name = "Enterprise"
period = "month"
grace_days = 3

[plans.enterprise.prices]
usd = 29900

[plans.enterprise.allowance]
amount = 20000
period = "month"

[plans.yearly]
name = "Yearly"
period = "year"
trial_days = 14

[plans.yearly.prices]
usd = 29000
eur = 27000

[plans.yearly.allowance]
amount = 2000
period = "month"
"""


@pytest.fixture
def catalog_file(tmp_path: Path) -> Path:
    path = tmp_path / "tollkeep.toml"
    path.write_text(CATALOG)
    return path


@pytest.fixture
def settings_kw() -> dict[str, object]:
    """Extra settings of a module's runtime (override in a module)."""
    return {}


@pytest.fixture
def stk(
    db_url: str, clock: FrozenClock, catalog_file: Path, settings_kw: dict[str, object]
) -> Iterator[Tollkeep]:
    kw: dict[str, object] = {"catalog_path": str(catalog_file), "test_clock": True, **settings_kw}
    with verified_runtime(make_settings(db_url, **kw), clock) as runtime:
        yield runtime


@pytest.fixture
def sclient(stk: Tollkeep) -> Iterator[TestClient]:
    with TestClient(create_app(runtime=stk)) as c:
        c.headers["Authorization"] = f"Bearer {ADMIN}"
        yield c
