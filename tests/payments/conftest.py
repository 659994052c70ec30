"""Fixtures of the payments tests: a runtime with the test provider registered."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.conftest import ADMIN
from tests.payments.fakes.testpay import FakePay
from tollkeep.app import create_app
from tollkeep.runtime import Tollkeep


@pytest.fixture
def testpay(tk: Tollkeep) -> FakePay:
    provider = FakePay()
    tk.providers.register(provider)
    return provider


@pytest.fixture
def pay_client(tk: Tollkeep, testpay: FakePay) -> Iterator[TestClient]:
    with TestClient(create_app(runtime=tk)) as c:
        c.headers["Authorization"] = f"Bearer {ADMIN}"
        yield c
