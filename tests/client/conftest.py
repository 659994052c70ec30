"""The client's tests run against one real ``tollkeep serve`` (SQLite) for the whole session;
each test makes its own customer. The ledger is verified when the server stops."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.factories import admin_http, new_customer, served

_names = itertools.count(1)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("client-server")
    with served(f"sqlite:///{tmp / 'tollkeep.db'}", tmp) as base:
        yield base


@pytest.fixture(scope="session")
def admin(server: str) -> Iterator[httpx.Client]:
    with admin_http(server) as c:
        yield c


@pytest.fixture
def customer(admin: httpx.Client) -> Callable[[int], tuple[str, str]]:
    """``customer(credits)``: a new customer with a buyer key and that many credits: (id, key)."""

    def make(credits: int = 100) -> tuple[str, str]:
        return new_customer(admin, f"client-{next(_names)}", credits)

    return make
