"""Fixtures of the webhooks tests: a real receiver, and a runtime that may send to it (loopback
endpoints allowed) with a frozen clock."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.conftest import ADMIN, make_settings, verified_runtime
from tests.webhooks.receiver import Receiver
from tollkeep.app import create_app
from tollkeep.kit.clock import FrozenClock
from tollkeep.runtime import Tollkeep


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def wtk(db_url: str, clock: FrozenClock) -> Iterator[Tollkeep]:
    """A runtime that may send to loopback (the receiver), on SQLite and PostgreSQL; the ledger
    is verified after the test."""
    with verified_runtime(make_settings(db_url, webhooks_allow_private=True), clock) as runtime:
        yield runtime


@pytest.fixture
def wclient(wtk: Tollkeep) -> Iterator[TestClient]:
    with TestClient(create_app(runtime=wtk)) as c:
        c.headers["Authorization"] = f"Bearer {ADMIN}"
        yield c
